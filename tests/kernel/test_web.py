"""The HTTP API over real sockets on 127.0.0.1: the token and the body's size are
checked from the headers, before any byte of the body is read.

The server runs on a reactor of its own (not the global one), driven by the
test between socket operations; the client is a raw socket, so the test
decides exactly which bytes are sent, and when.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import selectreactor
from twisted.logger import globalLogPublisher

from postroom.errors import ConfigError
from postroom.services.gateway import Gateway
from postroom.web import ApiRequest, check_exposure, check_token, site_for
from tests.conftest import run
from tests.kernel.test_gateway import make_kernel
from tests.kernel.test_send_request import REFUSED

TOKEN = "a-token-of-twenty-chars"
LIMIT = 256 * 1024  # the body limit of the test site
#: how long the client waits for an answer: a server waiting for a body never gives one
PATIENCE = 15.0


class Server:
    """The API of a quickstart gateway on 127.0.0.1, and a raw client for it."""

    def __init__(
        self,
        quickstart: Path,
        plugins: list[tuple[str, object]] = (),  # type: ignore[assignment]
        enabled: list[str] | None = None,
    ) -> None:
        self.reactor = selectreactor.SelectReactor()
        self.kernel = make_kernel(quickstart, list(plugins), enabled=enabled or [])
        self.gateway = Gateway(self.kernel, mailboxes=False)
        self.gateway.startService()
        site = site_for(self.gateway, TOKEN, max_body=LIMIT, reactor=self.reactor)
        self.port = self.reactor.listenTCP(0, site, interface="127.0.0.1")
        self.outbox = quickstart.parent / "outbox"

    def close(self) -> None:
        self.port.stopListening()
        for _ in range(5):
            self.reactor.iterate(0)
        self.reactor.disconnectAll()
        run(self.gateway.stopService())

    def exchange(self, data: bytes | Iterator[bytes]) -> tuple[bytes, int]:
        """Send *data* as the server takes it; return the answer (read until the
        server closes the connection) and how many bytes were sent by then."""
        chunks = iter([data]) if isinstance(data, bytes) else data
        pending, sent, answer = next(chunks, b""), 0, b""
        deadline = time.monotonic() + PATIENCE
        with socket.create_connection(("127.0.0.1", self.port.getHost().port)) as sock:
            sock.setblocking(False)
            while time.monotonic() < deadline:
                self.reactor.iterate(0.005)
                while pending:
                    try:
                        n = sock.send(pending[:65536])
                    except BlockingIOError:
                        break
                    except (BrokenPipeError, ConnectionResetError):
                        pending = b""
                        chunks = iter([])
                        break
                    sent += n
                    pending = pending[n:] or next(chunks, b"")
                try:
                    got = sock.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    return answer, sent
                if not got:
                    return answer, sent
                answer += got
        raise AssertionError(f"no complete answer within {PATIENCE} s: {answer[:200]!r}")

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        head = {"Host": "127.0.0.1", "Connection": "close", **(headers or {})}
        if body:
            head.setdefault("Content-Length", str(len(body)))
        raw = f"{method} {path} HTTP/1.1\r\n".encode()
        raw += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in head.items())
        answer, _ = self.exchange(raw + b"\r\n" + body)
        return parse_answer(answer)

    def send(self, data: Any, token: str = TOKEN, path: str = "/send") -> tuple[int, Any]:
        body = json.dumps(data).encode() if not isinstance(data, bytes) else data
        code, _, raw = self.request("POST", path, body, {"Authorization": f"Bearer {token}"})
        return code, json.loads(raw)

    def get(self, path: str, token: str = TOKEN) -> tuple[int, Any]:
        code, _, raw = self.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        return code, json.loads(raw)

    def queued(self) -> int:
        return int(sum(run(self.kernel.store.outbox_counts()).values()))


def parse_answer(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@contextlib.contextmanager
def serving(
    caplog: pytest.LogCaptureFixture, quickstart: Path, **kwargs: Any
) -> Iterator[Server]:
    """The API; afterwards, no traceback may have been logged (Twisted's log or ours)."""
    failures: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    api = Server(quickstart, **kwargs)
    try:
        yield api
    finally:
        api.close()
        globalLogPublisher.removeObserver(observe)
    assert failures == [], "a traceback was logged"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.fixture
def server(quickstart: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Server]:
    with serving(caplog, quickstart) as api:
        yield api


def head_only(path: str = "/send", **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"


def test_a_valid_request_is_queued_and_sent(server: Server) -> None:
    code, body = server.send({"to": ["a@example.com, Anna <b@example.com>"], "text": "Hi"})
    assert code == 202 and body["to"] == ["a@example.com", "b@example.com"]
    assert server.queued() == 1
    code, _, raw = server.request("GET", "/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert code == 200 and json.loads(raw)["status"] == "ok"


def test_a_refused_smtp_login_shows_in_health_and_degrades_it(server: Server) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    code, _, raw = server.request("GET", "/health", headers=auth)
    assert code == 200 and json.loads(raw)["smtp_client"]["state"] == "connected"
    server.gateway.outbound.login_policy.refused("535 5.7.8 bad credentials")
    code, _, raw = server.request("GET", "/health", headers=auth)
    body = json.loads(raw)
    assert code == 503 and body["status"] == "degraded"
    assert body["smtp_client"]["state"] == "auth-failed"
    assert body["smtp_client"]["last_error"] == "535 5.7.8 bad credentials"
    assert body["smtp_client"]["auth_failures"] == 1 and body["smtp_client"]["next_attempt"]


def test_a_10_gb_body_without_a_token_is_refused_before_it_is_read(server: Server) -> None:
    """The headers only: a server that waited for the body would never answer."""
    answer, _ = server.exchange(head_only(**{"Content-Length": "10000000000"}))
    code, headers, body = parse_answer(answer)
    assert code == 401 and json.loads(body) == {"error": "a valid bearer token is required"}
    assert headers["connection"] == "close" and headers["www-authenticate"].startswith("Bearer")
    assert server.queued() == 0


def test_a_10_gb_body_with_the_token_is_refused_with_413_before_it_is_read(
    server: Server,
) -> None:
    answer, _ = server.exchange(
        head_only(**{"Content-Length": "10000000000", "Authorization": f"Bearer {TOKEN}"})
    )
    code, _, body = parse_answer(answer)
    assert code == 413 and f"over {LIMIT} bytes" in json.loads(body)["error"]
    assert server.queued() == 0


def test_no_100_continue_is_promised_to_a_refused_request(server: Server) -> None:
    answer, _ = server.exchange(
        head_only(**{"Content-Length": "10000000000", "Expect": "100-continue"})
    )
    assert answer.startswith(b"HTTP/1.1 401 ") and b"100 Continue" not in answer


def test_a_chunked_body_is_cut_off_at_the_limit_as_it_arrives(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept: list[int] = []
    parent = ApiRequest.__mro__[1]
    original = parent.handleContentChunk

    def counting(self: Any, data: bytes) -> None:
        kept.append(len(data))
        original(self, data)

    monkeypatch.setattr(parent, "handleContentChunk", counting)
    chunk = b"x" * 4096

    def body() -> Iterator[bytes]:
        yield head_only(**{"Transfer-Encoding": "chunked", "Authorization": f"Bearer {TOKEN}"})
        for _ in range(64 * 1024):  # 256 MiB if it were all read
            yield b"1000\r\n" + chunk + b"\r\n"

    answer, sent = server.exchange(body())
    code, _, raw = parse_answer(answer)
    assert code == 413 and f"over {LIMIT} bytes" in json.loads(raw)["error"]
    assert sum(kept) <= LIMIT  # never more than the limit kept
    assert sent < 64 * 1024 * 4096  # the connection was closed long before the end
    assert server.queued() == 0


def test_a_chunked_body_within_the_limit_is_read(server: Server) -> None:
    payload = json.dumps({"to": ["a@example.com"], "text": "x" * 10000}).encode()
    chunked = b"".join(
        f"{len(payload[i : i + 1000]):x}\r\n".encode() + payload[i : i + 1000] + b"\r\n"
        for i in range(0, len(payload), 1000)
    )
    headers = {"Transfer-Encoding": "chunked", "Authorization": f"Bearer {TOKEN}"}
    answer, _ = server.exchange(head_only(**headers) + chunked + b"0\r\n\r\n")
    assert parse_answer(answer)[0] == 202 and server.queued() == 1


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer tökén-with-non-ascii-bytes",
        "Bearer \udcff\udcfe",  # raw bytes 0xff 0xfe
        f"bearer{TOKEN}",
    ],
)
def test_a_missing_or_malformed_token_is_a_401(server: Server, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    raw = head_only("/health", **{"Content-Length": "0"})
    if authorization is not None:
        value = authorization.encode("utf-8", "surrogateescape")
        raw = raw[:-2] + b"Authorization: " + value + b"\r\n\r\n"
    answer, _ = server.exchange(raw)
    assert parse_answer(answer)[0] == 401, headers
    # the scheme is case-insensitive, one or more blanks may follow it
    code, _, _ = server.request("GET", "/health", headers={"Authorization": f"BEARER  {TOKEN}"})
    assert code == 200


def test_two_authorization_headers_are_a_401(server: Server) -> None:
    raw = head_only("/health").replace(
        b"\r\n\r\n",
        f"\r\nAuthorization: Bearer {TOKEN}\r\nAuthorization: Bearer x\r\n\r\n".encode(),
    )
    answer, _ = server.exchange(raw)
    assert parse_answer(answer)[0] == 401


@pytest.mark.parametrize(("data", "field"), REFUSED)
def test_every_refused_request_is_a_400_naming_the_field(
    server: Server, data: dict[str, Any], field: str
) -> None:
    code, body = server.send(data)
    assert code == 400 and body["field"] == field and body["error"].startswith(f"{field}: ")
    assert server.queued() == 0


@pytest.mark.parametrize(
    ("raw", "why", "field"),
    [
        (b"[" * 200_000, "nested more than", None),
        (b"[" * 17 + b"]" * 17, "nested more than", None),
        (b'{"to": ' * 100 + b"1" + b"}" * 100, "nested more than", "to"),
        (b'{"to": ' * 17 + b"1" + b"}" * 17, "nested more than", "to"),
        (b"{not json", "not valid JSON", None),
        (b"\xff\xfe\xfa", "not valid JSON", None),
        (b"[]", "must be an object", None),
        (b"", "not valid JSON", None),
    ],
)
def test_malformed_json_is_a_400_never_a_500(
    server: Server, raw: bytes, why: str, field: str | None
) -> None:
    code, body = server.send(raw)
    assert code == 400 and why in body["error"] and body["field"] == field
    assert server.queued() == 0


def test_no_to_and_no_in_reply_to_is_a_400_naming_to(server: Server) -> None:
    code, body = server.send({"subject": "x", "text": "y"})
    assert code == 400 and body["field"] == "to", body
    assert "required unless in_reply_to" in body["error"]
    assert server.queued() == 0


def test_in_reply_to_alone_fills_the_recipients_of_a_follow_up(server: Server) -> None:
    code, first = server.send({"to": ["a@example.com"], "subject": "Order", "text": "1"})
    assert code == 202, first
    code, reply = server.send({"text": "2", "in_reply_to": first["id"]})
    assert code == 202, reply
    assert reply["to"] == ["a@example.com"] and reply["subject"] == "Re: Order"
    assert reply["references"] == [first["message_id"]]


def test_in_reply_to_an_unknown_interaction_is_a_400(server: Server) -> None:
    code, body = server.send({"to": ["a@example.com"], "in_reply_to": "no-such-id"})
    assert code == 400 and body["field"] == "in_reply_to"
    assert server.queued() == 0


@pytest.mark.parametrize(
    "token", [" ", "               ", "\t" * 20, "short-token", "x" * 15, "a token with blanks"]
)
def test_weak_tokens_are_refused_at_start_up(token: str) -> None:
    with pytest.raises(ConfigError, match="at least 16 printable ASCII") as refused:
        check_token(token)
    assert refused.value.option == "http.token"
    assert token.strip() not in str(refused.value) or not token.strip()
    check_token("x" * 16)
    check_token(None)


def test_a_blank_token_does_not_open_the_api_to_other_hosts(quickstart: Path) -> None:
    """The issue: a token of one space was accepted for a non-loopback bind."""
    from postroom.web import check_token

    quickstart.write_text(quickstart.read_text() + "http: {bind: 0.0.0.0, port: 1, token: ' '}\n")
    with pytest.raises(ConfigError, match=r"http\.token"):  # refused when the site is read
        make_kernel(quickstart)
    with pytest.raises(ConfigError, match=r"http\.token"):  # and by start_web's own check
        check_token(" ")
    with pytest.raises(ConfigError, match=r"http\.token"):
        check_exposure("0.0.0.0", None)


def test_the_resource_checks_the_token_too_when_served_by_another_site(
    quickstart: Path,
) -> None:
    """Api served by a plain Site (no early check): a malformed token is still a 401."""
    from twisted.web import server

    from postroom.web import Api

    api = Server(quickstart)
    api.port.stopListening()
    plain = server.Site(Api(api.gateway, TOKEN), reactor=api.reactor)
    api.port = api.reactor.listenTCP(0, plain, interface="127.0.0.1")
    try:
        for value in (
            "Bearer t\u00f6ken-non-ascii".encode(),
            b"Basic x",
            f"Bearer {TOKEN}".encode(),
        ):
            raw = head_only("/health", **{"Content-Length": "0"}).replace(b"POST", b"GET", 1)
            answer, _ = api.exchange(raw[:-2] + b"Authorization: " + value + b"\r\n\r\n")
            assert parse_answer(answer)[0] == (200 if TOKEN.encode() in value else 401)
    finally:
        api.close()


# -- health and metrics for load balancers and scrapers (docs/operations.md)

SCRAPE_TOKEN = "a-scrape-token-of-twenty"


@pytest.fixture
def scraped(quickstart: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Server]:
    """The API with the API token and a scrape token."""
    with serving(caplog, quickstart) as api:
        api.port.stopListening()
        site = site_for(
            api.gateway, TOKEN, max_body=LIMIT, reactor=api.reactor, scrape_token=SCRAPE_TOKEN
        )
        api.port = api.reactor.listenTCP(0, site, interface="127.0.0.1")
        yield api


def test_health_without_a_token_is_a_bare_up(server: Server) -> None:
    code, headers, raw = server.request("GET", "/health")
    assert code == 200 and json.loads(raw) == {"status": "up"}
    assert headers["content-type"] == "application/json"


def test_head_health_without_a_token_is_the_status_alone(server: Server) -> None:
    code, headers, raw = server.request("HEAD", "/health")
    assert code == 200 and raw == b"" and headers["content-length"] == "16"


def test_a_degraded_gateway_is_still_up_for_the_load_balancer(server: Server) -> None:
    server.gateway.outbound.login_policy.refused("535 5.7.8 bad credentials")
    code, _, raw = server.request("GET", "/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert code == 503 and json.loads(raw)["status"] == "degraded"
    code, _, raw = server.request("GET", "/health")
    assert code == 200 and json.loads(raw) == {"status": "up"}


def test_a_store_that_does_not_answer_is_down(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from postroom.store.errors import StoreError

    def broken(mailbox: str) -> None:
        raise StoreError("database is locked")

    monkeypatch.setattr(server.kernel.store_driver, "get_cursor", broken)
    code, _, raw = server.request("GET", "/health")
    assert code == 503 and json.loads(raw) == {"status": "down"}
    assert any("database is locked" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/metrics"), ("POST", "/health"), ("GET", "/interactions/x")]
)
def test_without_a_token_only_the_bare_health_answers(
    server: Server, method: str, path: str
) -> None:
    code, _, raw = server.request(method, path)
    assert code == 401 and json.loads(raw) == {"error": "a valid bearer token is required"}


def test_a_body_without_a_token_is_refused_before_it_is_read_even_for_health(
    server: Server,
) -> None:
    answer, _ = server.exchange(head_only("/health", **{"Content-Length": "10000000000"}))
    assert parse_answer(answer)[0] == 401


def test_the_scrape_token_reads_health_details_and_metrics(scraped: Server) -> None:
    auth = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
    code, _, raw = scraped.request("GET", "/health", headers=auth)
    assert code == 200 and json.loads(raw)["status"] == "ok" and "smtp_client" in json.loads(raw)
    code, headers, raw = scraped.request("GET", "/metrics", headers=auth)
    assert code == 200 and headers["content-type"].startswith("text/plain")
    assert b"# TYPE " in raw
    # the API token still reads everything
    code, _, _ = scraped.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/interactions/x"), ("POST", "/render"), ("GET", "/nowhere"), ("DELETE", "/health")],
)
def test_the_scrape_token_reads_nothing_else(scraped: Server, method: str, path: str) -> None:
    code, _, raw = scraped.request(
        method, path, headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}
    )
    assert code == 403 and "scrape token" in json.loads(raw)["error"]


def test_a_body_with_the_scrape_token_is_refused_before_it_is_read(scraped: Server) -> None:
    answer, _ = scraped.exchange(
        head_only(**{"Content-Length": "10000000000", "Authorization": f"Bearer {SCRAPE_TOKEN}"})
    )
    code, _, raw = parse_answer(answer)
    assert code == 403 and "scrape token" in json.loads(raw)["error"]
    assert scraped.queued() == 0


@pytest.mark.parametrize(
    ("token", "scrape", "why"),
    [
        (TOKEN, "short", "at least 16"),
        (TOKEN, TOKEN, "must differ from http.token"),
        (None, SCRAPE_TOKEN, "needs http.token"),
    ],
)
def test_a_scrape_token_that_protects_nothing_is_refused(
    token: str | None, scrape: str, why: str
) -> None:
    from postroom.web import check_scrape_token

    with pytest.raises(ConfigError, match=why) as refused:
        check_scrape_token(token, scrape)
    assert refused.value.option == "http.scrape-token" and TOKEN not in str(refused.value)
    check_scrape_token(TOKEN, SCRAPE_TOKEN)
    check_scrape_token(None, None)
