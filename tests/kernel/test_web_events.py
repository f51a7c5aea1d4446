"""``GET /events`` (server-sent events) and ``POST /interactions/{id}/retry-handoff``
over real sockets on 127.0.0.1 (the server on a reactor of its own, driven by
the test; the gateway's clock is a ``task.Clock``)."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from postroom.events import PRUNE_INTERVAL
from postroom.model import EventType
from tests.conftest import run
from tests.kernel.test_cli import SCHEMA
from tests.kernel.test_handoff_targets import Target, commit
from tests.kernel.test_web import PATIENCE, TOKEN, Server

AUTH = {"Authorization": f"Bearer {TOKEN}"}
_DATA = re.compile(rb"^data: (.*)$", re.M)


class EventClient:
    """A client of the stream reading what arrives, as a dashboard would."""

    def __init__(
        self, server: Server, path: str = "/events", headers: dict[str, str] | None = None,
        receive_buffer: int | None = None,
    ) -> None:
        self.server = server
        self.sock = socket.socket()
        if receive_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.connect(("127.0.0.1", server.port.getHost().port))
        self.sock.setblocking(False)
        head = {"Host": "127.0.0.1", **AUTH, **(headers or {})}
        raw = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
        self.sock.sendall(raw.encode() + b"\r\n")
        self.data = b""
        self.closed = False

    def pump(self) -> None:
        self.server.reactor.iterate(0.005)
        try:
            got = self.sock.recv(65536)
        except BlockingIOError:
            return
        except ConnectionResetError:
            self.closed = True
            return
        if not got:
            self.closed = True
        self.data += got

    def read_until(self, needle: bytes, count: int = 1) -> None:
        deadline = time.monotonic() + PATIENCE
        while self.data.count(needle) < count and not self.closed:
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} x{count} not received: {self.data[-300:]!r}")
            self.pump()

    def settle(self, rounds: int = 40) -> None:
        for _ in range(rounds):
            self.pump()

    @property
    def status(self) -> int:
        return int(self.data.split(b" ", 2)[1])

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(m) for m in _DATA.findall(self.data)]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server(quickstart: Path) -> Iterator[Server]:
    api = Server(quickstart, plugins=[("webhook", Target(failures=1, error=_refusal()))])
    yield api
    api.close()


def _refusal() -> Exception:
    from postroom.api import HandoffError

    return HandoffError("HTTP 410 Gone", permanent=True)


def settled(server: Server) -> None:
    for _ in range(20):
        server.reactor.iterate(0.005)


def test_dashboards_see_interactions_created_and_handed_off_and_resume_where_they_left(
    server: Server, tmp_path: Path
) -> None:
    client = EventClient(server)
    client.read_until(b": stream open")
    assert client.status == 200 and b"text/event-stream" in client.data
    first = commit(server.gateway, tmp_path, 1)  # the webhook refuses it for good
    client.read_until(b"data: ", 2)
    created, refused = client.events()
    assert (created["type"], created["interaction_id"]) == ("interaction.created", first.id)
    assert (refused["type"], refused["target"], refused["reason"]) == (
        "interaction.handoff_refused", "webhook", "HTTP 410 Gone")  # fmt: skip
    assert refused["id"] > created["id"] and set(created) == {
        "id", "type", "time", "interaction_id", "target", "reason"}  # fmt: skip
    assert f"id: {refused['id']}\n".encode() in client.data
    client.close()

    second = commit(server.gateway, tmp_path, 2)  # missed while away (the webhook takes it)
    resumed = EventClient(server, headers={"Last-Event-ID": str(refused["id"])})
    resumed.read_until(b"data: ", 2)
    assert [(e["type"], e["interaction_id"]) for e in resumed.events()] == [
        ("interaction.created", second.id), ("interaction.handed_off", second.id)]  # fmt: skip
    resumed.close()

    # ?after= for a first connection, a filter by type; Last-Event-ID wins over ?after=
    only = EventClient(server, "/events?after=0&types=interaction.created")
    only.read_until(b"data: ", 2)
    only.settle()
    assert [e["interaction_id"] for e in only.events()] == [first.id, second.id]
    only.close()
    both = EventClient(server, "/events?after=0", headers={"Last-Event-ID": str(created["id"])})
    both.read_until(b"data: ", 3)
    both.settle()
    ids = [e["id"] for e in both.events()]
    assert len(ids) == 3 and ids[0] == refused["id"]  # after the created one only
    both.close()


def test_outbound_sends_are_on_the_stream(server: Server) -> None:
    client = EventClient(server, "/events?types=interaction.created,interaction.sent")
    client.read_until(b": stream open")
    code, body = server.send({"to": ["a@example.com"], "text": "Hi"})
    assert code == 202
    client.read_until(b"data: ")
    run(server.gateway.outbound.run_pass())
    client.read_until(b"data: ", 2)
    assert [(e["type"], e["interaction_id"]) for e in client.events()] == [
        ("interaction.created", body["id"]), ("interaction.sent", body["id"])]  # fmt: skip
    client.close()


def test_a_heartbeat_comes_on_the_gateway_clock(server: Server) -> None:
    client = EventClient(server)
    client.read_until(b": stream open")
    client.settle()
    assert b"keep-alive" not in client.data
    heartbeat = float(server.kernel.config.get("events", "heartbeat"))
    server.kernel.clock.advance(heartbeat)  # type: ignore[attr-defined]
    client.read_until(b": keep-alive\n\n")
    server.kernel.clock.advance(heartbeat)  # type: ignore[attr-defined]
    client.read_until(b": keep-alive\n\n", 2)
    client.close()


def test_a_client_that_goes_away_is_forgotten(server: Server) -> None:
    hub = server.kernel.events
    client = EventClient(server)
    client.read_until(b": stream open")
    assert len(hub.subscribers) == 1
    assert "postroom_event_clients 1.0" in server.kernel.metrics.render().decode()
    client.close()
    settled(server)
    assert hub.subscribers == []
    assert "postroom_event_clients 0.0" in server.kernel.metrics.render().decode()


def test_subscribers_are_capped_and_bad_requests_refused(quickstart: Path) -> None:
    with quickstart.open("a") as site:
        site.write("events: {max-subscribers: 1}\n")
    server = Server(quickstart)
    try:
        first = EventClient(server)
        first.read_until(b": stream open")
        second = EventClient(server)
        second.read_until(b"}")
        assert second.status == 503 and b"too many event stream clients" in second.data
        second.close()
        first.close()
        settled(server)
        third = EventClient(server)
        third.read_until(b": stream open")  # the place freed by the first
        third.close()
        for path, headers in (
            ("/events?types=interaction.nope", {}),
            ("/events", {"Last-Event-ID": "-1"}),
            ("/events?after=1e9", {}),
        ):
            code, _, raw = server.request("GET", path, headers={**AUTH, **headers})
            assert code == 400, (path, raw)
        code, _, _ = server.request("GET", "/events")
        assert code == 401  # behind the same token
    finally:
        server.close()


def test_a_client_too_slow_to_keep_up_is_dropped(quickstart: Path) -> None:
    with quickstart.open("a") as site:
        site.write("events: {client-buffer: 4096}\n")
    server = Server(quickstart)
    try:
        hub = server.kernel.events
        client = EventClient(server, receive_buffer=4096)
        client.read_until(b": stream open")
        # it reads nothing more; far more events than the connection holds arrive
        events = [(EventType.SENT.value, f"id-{n}", None, "x" * 400) for n in range(3000)]
        run(server.kernel.store.add_events(events))
        hub.poke()
        settled(server)
        assert hub.subscribers == []
        assert "postroom_event_clients_dropped_total 1.0" in server.kernel.metrics.render().decode()
        # what it missed is still there for when it comes back
        assert len(run(server.kernel.store.events_after(0, 5000))) == 3000
        client.close()
    finally:
        server.close()


def test_a_client_resuming_far_behind_catches_up_at_its_own_pace(quickstart: Path) -> None:
    with quickstart.open("a") as site:
        site.write("events: {client-buffer: 4096}\n")
    server = Server(quickstart)
    try:
        backlog = [(EventType.SENT.value, f"id-{n}", None, "x" * 400) for n in range(3000)]
        run(server.kernel.store.add_events(backlog))  # ~1.5 MB missed while away
        client = EventClient(server, "/events?after=0", receive_buffer=4096)
        client.read_until(b"data: ", 3000)
        assert not client.closed and len(server.kernel.events.subscribers) == 1
        assert [e["interaction_id"] for e in client.events()] == [f"id-{n}" for n in range(3000)]
        dropped = "postroom_event_clients_dropped_total 0.0"
        assert dropped in server.kernel.metrics.render().decode()
        client.close()
    finally:
        server.close()


def test_a_hand_off_is_retried_over_http_at_once(server: Server, tmp_path: Path) -> None:
    item = commit(server.gateway, tmp_path, 1)  # refused by the webhook
    code, shown = server.get(f"/interactions/{item.id}")
    assert code == 200 and shown["handoff_state"] == "refused"
    jsonschema.validate({k: v for k, v in shown.items() if k != "outbox"}, SCHEMA)
    [target] = shown["handoff"]["targets"]
    assert (target["target"], target["state"], target["last_error"]) == (
        "webhook", "refused", "HTTP 410 Gone")  # fmt: skip

    code, body = server.send({"target": "crm"}, path=f"/interactions/{item.id}/retry-handoff")
    assert code == 409 and "'crm' is not a target" in body["error"]
    code, body = server.send({"targets": 1}, path=f"/interactions/{item.id}/retry-handoff")
    assert code == 400
    code, body = server.send(b"", path="/interactions/nope/retry-handoff")
    assert code == 404

    code, body = server.send({"target": "webhook"},
                             path=f"/interactions/{item.id}/retry-handoff")  # fmt: skip
    assert code == 200 and body["retried"] == ["webhook"] and body["started"] is True
    assert body["handoff"]["state"] == "done"  # the retry ran at once (inline runner)
    assert body["handoff"]["targets"][0]["attempts"] == 2
    code, shown = server.get(f"/interactions/{item.id}")
    assert shown["handoff_state"] == "done" and shown["handoff"]["targets"][0]["state"] == "done"


def test_old_events_are_pruned_hourly_on_the_gateway_clock(quickstart: Path) -> None:
    with quickstart.open("a") as site:
        site.write("events: {keep-count: 100}\n")
    server = Server(quickstart)
    try:
        store = server.kernel.store
        run(store.add_events([(EventType.SENT.value, f"id-{n}", None, None) for n in range(150)]))
        server.kernel.clock.advance(PRUNE_INTERVAL - 1)  # type: ignore[attr-defined]
        assert len(run(store.events_after(0, 1000))) == 150
        server.kernel.clock.advance(1)  # type: ignore[attr-defined]
        kept = run(store.events_after(0, 1000))
        assert [e.interaction_id for e in kept] == [f"id-{n}" for n in range(50, 150)]
    finally:
        server.close()
