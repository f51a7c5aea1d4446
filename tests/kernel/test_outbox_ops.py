"""``postroom outbox list|show|retry|cancel`` (a subprocess, as a user runs it, with
no gateway running) and ``/outbox`` over HTTP; a retry made by another process is
sent by a running gateway at its outbox worker's next poll (an injected clock)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from twisted.internet import task

from postroom.api import hookimpl
from postroom.model import Interaction, OutboundRequest
from postroom.services.gateway import Gateway
from tests.conftest import run
from tests.kernel.test_cli import SCHEMA, json_lines, postroom
from tests.kernel.test_gateway import make_kernel
from tests.kernel.test_web import Server, serving


class DownOnce:
    """The mail server is down for the first *failures* attempts (a temporary failure)."""

    def __init__(self, failures: int = 1) -> None:
        self.failures = failures

    @hookimpl
    def postroom_envelope(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("mx.example.org: connection refused")


def queue(config: Path, *args: str) -> str:
    """``postroom send`` without ``--now``: queued for a gateway; the id."""
    done = postroom("send", "-c", str(config), "--to", "ann@c.example", "--subject", "Hi",
                    "--text", "Hello", *args)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[0]


def entries(stdout: str) -> list[dict]:
    """``outbox list --json``: one entry per line."""
    return [json.loads(line) for line in stdout.splitlines()]


def show(config: Path, entry_id: str) -> dict:
    done = postroom("outbox", "show", "-c", str(config), entry_id, "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


# ------------------------------------------------------------------------ CLI


@pytest.mark.parametrize("action", [None, "list", "show", "retry", "cancel"])
def test_each_outbox_command_has_help(action: str | None) -> None:
    done = postroom("outbox", *([action] if action else []), "--help")
    assert done.returncode == 0 and "usage: postroom outbox" in done.stdout


def test_a_failed_attempt_and_its_error_are_shown_without_a_gateway(quickstart: Path) -> None:
    """The last error and each attempt, from the store: no gateway runs."""
    outbox = quickstart.parent / "outbox"
    shutil.rmtree(outbox, ignore_errors=True)
    outbox.write_text("a file where the file sender's folder should be")
    sent = postroom("send", "-c", str(quickstart), "--to", "ann@c.example", "--text", "x",
                    "--subject", "Hi", "--now")  # fmt: skip
    assert sent.returncode == 1 and "queued for retry" in sent.stderr
    entry_id = sent.stdout.split()[0]

    listed = postroom("outbox", "list", "-c", str(quickstart))
    assert listed.returncode == 0, listed.stderr
    [head, row] = listed.stdout.splitlines()
    assert head.split()[:4] == ["ID", "STATE", "ATTEMPTS", "NEXT"]
    assert row.split()[:3] == [entry_id[:8], "queued", "1"] and "cannot write" in row

    shown = show(quickstart, entry_id[:8])  # a prefix is enough
    assert shown["id"] == entry_id and shown["state"] == "queued" and shown["attempts"] == 1
    assert "outbox" in shown["last_error"] and shown["next_attempt_at"] is not None
    [attempt] = shown["history"]
    assert (attempt["result"], attempt["counted"]) == ("retry", True)
    assert attempt["error"] == shown["last_error"]
    text = postroom("outbox", "show", "-c", str(quickstart), entry_id)
    assert f"last error:   {shown['last_error']}" in text.stdout
    assert "attempts:     1" in text.stdout and " retry " in text.stdout

    # the folder is back: retried now, then sent by a gateway; every attempt counted
    outbox.unlink()
    outbox.mkdir()
    retried = postroom("outbox", "retry", "-c", str(quickstart), entry_id)
    assert retried.returncode == 0 and "due now" in retried.stdout
    assert show(quickstart, entry_id)["next_attempt_at"] is None
    done = postroom("send", "-c", str(quickstart), "--to", "bob@c.example", "--text", "y",
                    "--subject", "Hi", "--now")  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = show(quickstart, entry_id)
    assert (shown["state"], shown["attempts"], shown["status"]) == ("sent", 2, "Sent")
    assert [h["result"] for h in shown["history"]] == ["retry", "retry-requested", "sent"]
    assert shown["delivery"][0]["recipient"] == "ann@c.example"
    assert shown["delivery"][0]["status"] == "sent"
    # the interaction shows its outbox entry and delivery too, as the schema says
    got = postroom("interactions", "show", "-c", str(quickstart), entry_id, "--json")
    assert got.returncode == 0, got.stderr
    [data] = json_lines(got.stdout)
    jsonschema.validate(data, SCHEMA)
    assert data["outbox"]["attempts"] == 2 and len(data["outbox"]["history"]) == 3
    assert data["delivery"][0]["status"] == "sent"


def test_list_pages_filters_and_cancels(quickstart: Path) -> None:
    ids = [queue(quickstart) for _ in range(3)]
    first = postroom("outbox", "list", "-c", str(quickstart), "--limit", "2", "--json")
    assert first.returncode == 0
    assert [e["id"] for e in entries(first.stdout)] == ids[:2]
    cursor = first.stderr.split("--after ")[1].split()[0]
    rest = postroom("outbox", "list", "-c", str(quickstart), "--after", cursor, "--json")
    assert [e["id"] for e in entries(rest.stdout)] == ids[2:] and rest.stderr == ""

    cancelled = postroom("outbox", "cancel", "-c", str(quickstart), ids[0], ids[1])
    assert cancelled.returncode == 0
    assert cancelled.stdout.splitlines() == [f"{ids[0]} cancelled", f"{ids[1]} cancelled"]
    again = postroom("outbox", "cancel", "-c", str(quickstart), ids[0])
    assert again.returncode == 1 and "it was cancelled" in again.stderr
    listed = postroom("outbox", "list", "-c", str(quickstart), "--state", "cancelled", "--json")
    assert [e["id"] for e in entries(listed.stdout)] == ids[:2]
    got = postroom("interactions", "show", "-c", str(quickstart), ids[0], "--json")
    assert json_lines(got.stdout)[0]["status"] == "Cancelled"
    # a run sends only the one left
    done = postroom("run", "-c", str(quickstart), "--once")
    assert done.returncode == 0, done.stderr
    assert show(quickstart, ids[2])["state"] == "sent"
    assert show(quickstart, ids[0])["state"] == "cancelled"

    unknown = postroom("outbox", "show", "-c", str(quickstart), "0000")
    assert unknown.returncode == 1 and "no outbox entry '0000'" in unknown.stderr
    bad = postroom("outbox", "list", "-c", str(quickstart), "--state", "lost")
    assert bad.returncode == 2


def test_an_entry_being_sent_cannot_be_cancelled(quickstart: Path) -> None:
    entry_id = queue(quickstart)
    kernel = make_kernel(quickstart)
    run(kernel.open())
    try:
        [claimed] = run(kernel.store.claim_outbound(0.0))  # a gateway is sending it
        assert claimed.id == entry_id
        refused = postroom("outbox", "cancel", "-c", str(quickstart), entry_id)
        assert refused.returncode == 1
        assert "being sent right now" in refused.stderr
        assert run(kernel.store.get_outbox(entry_id)).state == "sending"
    finally:
        run(kernel.close())


def test_attempts_after_one_successful_send_is_one(quickstart: Path) -> None:
    sent = postroom("send", "-c", str(quickstart), "--to", "ann@c.example", "--text", "x",
                    "--subject", "Hi", "--now")  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    shown = show(quickstart, sent.stdout.split()[0])
    assert (shown["state"], shown["attempts"]) == ("sent", 1)
    [line] = shown["history"]
    assert line["result"] == "sent" and line["counted"] is True


# ------------------------------------------------------ a running gateway


def test_a_retry_from_another_process_is_sent_at_the_next_poll(quickstart: Path) -> None:
    clock = task.Clock()
    kernel = make_kernel(quickstart, plugins=[("down", DownOnce())], clock=clock)
    gateway = Gateway(kernel, mailboxes=False)
    gateway.startService()
    try:
        interaction = run(
            gateway.send(OutboundRequest(to=["ann@c.example"], subject="Hi", text="x"))
        )
        entry = run(kernel.store.get_outbox(interaction.id))
        assert (entry.state, entry.attempts) == ("queued", 1)
        assert entry.next_attempt_at.timestamp() >= clock.seconds() + 15  # back-off
        clock.advance(1)  # a poll: not due yet
        assert run(kernel.store.get_outbox(interaction.id)).state == "queued"

        retried = postroom("outbox", "retry", "-c", str(quickstart), interaction.id)
        assert retried.returncode == 0, retried.stderr
        clock.advance(gateway.outbound.poll_interval)  # the next poll finds it due
        entry = run(kernel.store.get_outbox(interaction.id))
        assert (entry.state, entry.attempts) == ("sent", 2)
        assert len(list((quickstart.parent / "outbox").glob("*.eml"))) == 1
    finally:
        run(gateway.stopService())


# ------------------------------------------------------------------------ HTTP


def test_the_outbox_over_http(quickstart: Path, caplog: pytest.LogCaptureFixture) -> None:
    down = DownOnce(failures=1)
    with serving(caplog, quickstart, plugins=[("down", down)]) as api:
        code, first = api.send({"to": ["ann@c.example"], "subject": "a", "text": "x"})
        assert code == 202
        code, second = api.send({"to": ["bob@c.example"], "subject": "b", "text": "y"})
        code, page = api.get("/outbox?limit=1")
        assert code == 200 and [e["id"] for e in page["entries"]] == [first["id"]]
        assert page["entries"][0]["state"] == "queued" and page["next"]
        code, page = api.get(f"/outbox?limit=1&after={page['next']}")
        assert [e["id"] for e in page["entries"]] == [second["id"]] and page["next"] is None
        code, page = api.get("/outbox?state=sent")
        assert [e["id"] for e in page["entries"]] == [second["id"]]
        assert page["entries"][0]["attempts"] == 1

        code, shown = api.get(f"/outbox/{first['id'][:8]}")
        assert code == 200 and shown["id"] == first["id"] and shown["attempts"] == 1
        assert "connection refused" in shown["last_error"]
        assert [h["result"] for h in shown["history"]] == ["retry"]

        code, retried = api.send(b"", path=f"/outbox/{first['id']}/retry")
        assert code == 200 and retried["state"] == "queued"
        # woken: sent at once
        code, shown = api.get(f"/outbox/{first['id']}")
        assert (shown["state"], shown["attempts"], shown["status"]) == ("sent", 2, "Sent")
        code, refused = api.send(b"", path=f"/outbox/{first['id']}/cancel")
        assert code == 409 and "sent already" in refused["error"]

        # being sent: a claimed entry
        store = api.kernel.store
        entry = run(store.queue_outbound(
            Interaction(message_id="<busy@x>"), OutboundRequest(to=["c@x.example"])))  # fmt: skip
        run(store.claim_outbound(0.0))
        code, refused = api.send(b"", path=f"/outbox/{entry.id}/cancel")
        assert code == 409 and "being sent right now" in refused["error"]

        code, interaction = api.get(f"/interactions/{first['id']}")
        jsonschema.validate(interaction, SCHEMA)
        assert interaction["outbox"]["attempts"] == 2
        assert interaction["delivery"][0]["recipient"] == "ann@c.example"

        assert api.get("/outbox/ffffffff")[0] == 404
        assert api.get("/outbox?state=lost")[0] == 400
        assert api.get("/outbox?limit=0")[0] == 400
        assert api.send(b"", path="/outbox/ffffffff/retry")[0] == 404


def test_a_cancel_over_http(quickstart: Path, caplog: pytest.LogCaptureFixture) -> None:
    with serving(caplog, quickstart) as api:
        entry = run(api.kernel.store.queue_outbound(
            Interaction(message_id="<q@x>"), OutboundRequest(to=["c@x.example"])))  # fmt: skip
        code, cancelled = api.send(b"", path=f"/outbox/{entry.id}/cancel")
        assert code == 200 and cancelled["state"] == "cancelled"
        code, shown = api.get(f"/outbox/{entry.id}")
        assert shown["status"] == "Cancelled" and shown["history"][-1]["result"] == "cancelled"


_ = Server  # the API server these tests drive (tests.kernel.test_web)
