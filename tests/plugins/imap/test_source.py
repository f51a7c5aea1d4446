"""IMAPSource against the scripted fake server, on a fake clock."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, error
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface.verify import verifyClass

import postroom_imap.source as source_module
from postroom.drivers import SourceItem, load_driver
from postroom.errors import AuthenticationFailed, ConfigError, ConnectionDown, SourceError
from postroom.interfaces import ISource
from postroom.model import Cursor, FetchedMessage
from postroom_imap.source import IMAPSource
from tests.conftest import run
from tests.plugins.imap.conftest import FakeAuthenticator
from tests.plugins.imap.fakeserver import (
    DEFAULT_CAPS,
    FakeIMAPServer,
    FakeTransport,
    Message,
    connect_source,
    settle,
)

Make = Callable[..., IMAPSource]


def message(n: int, size: int = 0) -> bytes:
    head = f"From: c{n}@shop.example\r\nSubject: m{n}\r\n\r\n".encode()
    return head + b"x" * max(0, size - len(head))


def connected(
    make_source: Make,
    reactor: MemoryReactorClock,
    server: FakeIMAPServer | None = None,
    **opts: Any,
) -> tuple[IMAPSource, FakeIMAPServer]:
    server = server or FakeIMAPServer(reactor)
    source = make_source(**opts)
    run(connect_source(source, server, reactor))
    return source, server


def commands(server: FakeIMAPServer, since: int = 0) -> list[bytes]:
    """Commands without their tags."""
    return [c.split(b" ", 1)[1] if b" " in c else c for c in server.commands[since:]]


def pump(reactor: MemoryReactorClock, d: defer.Deferred[Any]) -> Any:
    settle(reactor)
    return run(d)


# ---------------------------------------------------------------- the driver


def test_entry_point_and_interface() -> None:
    assert load_driver("postroom.sources", "imap") is IMAPSource
    verifyClass(ISource, IMAPSource)


def test_options_are_declared_for_imap_only() -> None:
    from tests.plugins.imap.conftest import imap_schema

    schema = imap_schema()
    names = {o.name: o for o in schema if o.types == ("imap",)}
    for name in ("server", "port", "mailbox", "password", "pop-connection-security",
                 "ca-file", "connect-timeout", "protocol-timeout", "enable-debug",
                 "folder-path", "after-processing", "move-to-folder", "allow-plain-expunge",
                 "idle-timeout", "mail.imap.fetchsize", "mail.imap.partialfetch"):  # fmt: skip
        assert name in names, name
    assert names["folder-path"].default == "INBOX"
    assert names["after-processing"].choices == ("delete", "move", "seen")
    assert names["idle-timeout"].default == "00:25:00"
    assert names["idle-timeout"].maximum is not None and names["idle-timeout"].maximum < 29 * 60 + 1


def test_port_follows_security_unless_written(make_source: Make) -> None:
    assert make_source(pop_connection_security="ssl").settings.port == 993
    assert make_source(pop_connection_security="starttls").settings.port == 143
    assert make_source(pop_connection_security="none").settings.port == 143
    assert make_source(pop_connection_security="starttls", port=10143).settings.port == 10143


def test_the_sites_proxy_and_the_mailboxs_own_properties(make_source: Make) -> None:
    from postroom.api import ProxySettings

    site_proxy = {"useProxy": True, "host": "proxy.test", "port": 3128, "type": "http",
                  "user": "pu", "password": "pp"}  # fmt: skip
    assert make_source(proxy=site_proxy).settings.proxy == ProxySettings(
        kind="http", host="proxy.test", port=3128, user="pu", password="pp"
    )
    own = make_source(
        proxy=site_proxy, **{"mail.imap.socks.host": "socks.test", "mail.imap.socks.port": 1081}
    )
    assert own.settings.proxy == ProxySettings(kind="socks5", host="socks.test", port=1081)
    assert make_source().settings.proxy is None


def test_move_without_a_folder_is_a_config_error(make_source: Make) -> None:
    with pytest.raises(ConfigError, match="move-to-folder"):
        make_source(after_processing="move")


# ------------------------------------------------------------ connection security


def test_starttls_is_negotiated_with_a_verifying_context_before_login(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    source, server = connected(make_source, reactor)
    assert server.tls
    assert server.transport is not None and server.transport.tls_context is not None
    assert commands(server)[:3] == [b"STARTTLS", b"CAPABILITY", b'LOGIN "agent" "pa ss\\"w\\\\ord"']
    assert source.uidvalidity == 42
    assert source.supports_push
    assert source.events == [("support", "login-ok", "PLAIN on server imap.test:143")]  # type: ignore[attr-defined]


def test_the_verifying_context_checks_the_configured_host(
    make_source: Make, reactor: MemoryReactorClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, Any]] = []

    def fake_tls(host: str, ca_file: Any = None) -> str:
        seen.append((host, ca_file))
        return "context"

    monkeypatch.setattr("postroom.net.server.twisted_client_tls", fake_tls)
    connected(make_source, reactor, ca_file=Path("/etc/ca.pem"))
    assert seen == [("imap.test", "/etc/ca.pem")]


def test_starttls_not_offered_is_an_error_and_nothing_is_sent_in_clear(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor, caps=("IMAP4rev1", "AUTH=PLAIN"))
    source = make_source()
    d = connect_source(source, server, reactor)
    settle(reactor)
    with pytest.raises(SourceError) as info:
        run(d)
    assert "does not offer STARTTLS" in str(info.value)
    assert "server imap.test:143" in str(info.value)
    assert not any(c.split(b" ")[1] in (b"LOGIN", b"AUTHENTICATE") for c in server.commands)
    assert server.closed


def test_implicit_tls_connects_through_the_tls_endpoint(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    source, server = connected(make_source, reactor, pop_connection_security="ssl")
    [endpoint] = source.endpoints  # type: ignore[attr-defined]
    assert (endpoint.settings.host, endpoint.settings.port) == ("imap.test", 993)
    assert endpoint.settings.security == "ssl"
    assert b"STARTTLS" not in commands(server)
    # the real one: TCP to imap.test:993 (connect-timeout), TLS on top
    real = IMAPSource.endpoint(source)
    real.connect(source_module._ClientFactory(source, defer.Deferred()))
    reactor.advance(0)
    _host, port, factory, timeout, _bind = reactor.tcpClients[-1]
    assert (port, timeout) == (993, 30)
    wrapping = factory.buildProtocol(None)  # the endpoint's, around TLS around the client
    assert "TLS" in type(wrapping._wrappedProtocol).__name__


def test_none_logs_in_over_clear_text_only_when_chosen(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor, caps=("IMAP4rev1", "STARTTLS"))
    _source, server = connected(make_source, reactor, server, pop_connection_security="none")
    assert not server.tls
    assert commands(server)[0].startswith(b"LOGIN ")


def test_logindisabled_is_reported(make_source: Make, reactor: MemoryReactorClock) -> None:
    server = FakeIMAPServer(reactor, caps=("IMAP4rev1", "LOGINDISABLED"))
    source = make_source(pop_connection_security="none")
    with pytest.raises(SourceError, match="LOGINDISABLED"):
        pump(reactor, connect_source(source, server, reactor))


def test_tls_failure_names_server_and_reason(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    from OpenSSL import SSL

    source = make_source(pop_connection_security="ssl")
    d = source.connect()
    client = source.endpoints[0].build()  # type: ignore[attr-defined]
    client.makeConnection(StringTransport())
    client.connectionLost(Failure(SSL.Error([("SSL routines", "", "certificate verify failed")])))
    with pytest.raises(SourceError) as info:
        run(d)
    assert "TLS with server imap.test:993 failed: certificate does not verify" in str(info.value)


# ------------------------------------------------------------------- login


def test_wrong_password_is_a_clear_error_without_the_password(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    auth = FakeAuthenticator(secret="wrong-secret-123")
    source = make_source(auth=auth)
    server = FakeIMAPServer(reactor)
    with pytest.raises(SourceError) as info:
        pump(reactor, connect_source(source, server, reactor))
    text = str(info.value)
    assert text == (
        "login refused for mailbox support on server imap.test:143: "
        "[AUTHENTICATIONFAILED] Authentication failed."
    )
    assert isinstance(info.value, AuthenticationFailed)  # the login policy's back-off
    assert "wrong-secret-123" not in text
    assert auth.invalidated == 1
    assert source.events[-1][1] == "login-failed"  # type: ignore[attr-defined]
    assert server.closed


def test_authenticate_plain_is_used_when_offered_after_tls(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor, caps=("IMAP4rev1", "STARTTLS", "SASL-IR", "AUTH=PLAIN"))
    # the fake server keeps AUTH=PLAIN after STARTTLS
    _source, server = connected(make_source, reactor, server)
    assert commands(server)[2].startswith(b"AUTHENTICATE PLAIN ")


def test_xoauth2_credentials_use_authenticate_xoauth2(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(
        reactor, caps=(*DEFAULT_CAPS, "AUTH=XOAUTH2"), users={"agent@example.org": "ya29.token"}
    )
    auth = FakeAuthenticator("agent@example.org", "ya29.token", "XOAUTH2")
    _source, server = connected(make_source, reactor, server, auth=auth)
    assert commands(server)[2].startswith(b"AUTHENTICATE XOAUTH2 ")


OAUTH_CAPS = (*DEFAULT_CAPS, "AUTH=XOAUTH2", "AUTH=OAUTHBEARER")


def oauth_server(reactor: MemoryReactorClock, **kw: Any) -> FakeIMAPServer:
    kw.setdefault("caps", OAUTH_CAPS)
    return FakeIMAPServer(reactor, users={"agent@example.org": "fresh-token"}, **kw)


def failed_connect(source: IMAPSource, server: FakeIMAPServer, reactor: MemoryReactorClock) -> Any:
    d = connect_source(source, server, reactor)
    settle(reactor)
    with pytest.raises(SourceError) as info:
        run(d)
    return info.value


def test_oauthbearer_is_preferred_and_carries_host_and_port(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    auth = FakeAuthenticator("agent@example.org", "fresh-token", "BEARER")
    _source, server = connected(make_source, reactor, oauth_server(reactor), auth=auth)
    expected = base64.b64encode(
        b"n,a=agent@example.org,\x01host=imap.test\x01port=143\x01auth=Bearer fresh-token\x01\x01"
    )
    assert commands(server)[2] == b"AUTHENTICATE OAUTHBEARER " + expected
    assert server.logged_in


def test_forced_mechanism_is_honoured(make_source: Make, reactor: MemoryReactorClock) -> None:
    auth = FakeAuthenticator("agent@example.org", "fresh-token", "BEARER")
    _source, server = connected(
        make_source,
        reactor,
        oauth_server(reactor),
        auth=auth,
        **{"mail.imap.auth.mechanisms": "XOAUTH2"},
    )
    assert commands(server)[2].startswith(b"AUTHENTICATE XOAUTH2 ")


def test_no_oauth_mechanism_offered_is_a_clear_error(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    auth = FakeAuthenticator("agent@example.org", "s3cr3t-t0ken", "BEARER")
    source = make_source(auth=auth)
    server = FakeIMAPServer(reactor, caps=(*DEFAULT_CAPS, "AUTH=PLAIN"))
    problem = failed_connect(source, server, reactor)
    assert str(problem) == (
        "mailbox support: server imap.test:143 offers AUTH=PLAIN, not XOAUTH2 or OAUTHBEARER: "
        "cannot log in with the access token"
    )
    assert not isinstance(problem, AuthenticationFailed)
    assert not any(b"AUTHENTICATE" in c for c in server.commands)


def test_forced_mechanism_not_offered_names_the_option(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    auth = FakeAuthenticator("agent@example.org", "t", "BEARER")
    source = make_source(auth=auth, **{"mail.imap.auth.mechanisms": "OAUTHBEARER"})
    server = FakeIMAPServer(reactor, caps=(*DEFAULT_CAPS, "AUTH=XOAUTH2"))
    problem = failed_connect(source, server, reactor)
    assert "offers AUTH=XOAUTH2, not OAUTHBEARER (mail.imap.auth.mechanisms)" in str(problem)


@pytest.mark.parametrize("sasl_ir", [True, False])
def test_refused_token_is_refreshed_and_retried_once_on_the_same_connection(
    make_source: Make, reactor: MemoryReactorClock, sasl_ir: bool
) -> None:
    """The D9 loop: expired token -> NO -> refresh -> OK, without the login back-off."""
    caps = OAUTH_CAPS if sasl_ir else tuple(c for c in OAUTH_CAPS if c != "SASL-IR")
    auth = FakeAuthenticator(
        "agent@example.org", "old-token", "XOAUTH2", refreshed=("fresh-token",)
    )
    source, server = connected(
        make_source, reactor, oauth_server(reactor, caps=caps), auth=auth,
        **{"mail.imap.auth.mechanisms": "XOAUTH2"},
    )  # fmt: skip
    assert server.tokens_seen == ["old-token", "fresh-token"]
    assert server.error_replies == [b""]  # the error challenge was answered (empty, XOAUTH2)
    assert len(source.endpoints) == 1  # type: ignore[attr-defined]
    assert auth.invalidated == 1
    events = source.events  # type: ignore[attr-defined]
    assert [e[1] for e in events] == ["login-failed", "login-ok"]
    assert events[0][2] == (
        "[AUTHENTICATIONFAILED] Authentication failed. "
        "(token refused by the server (status 401, scope mail))"
    )
    assert source.uidvalidity == 42


def test_refused_again_after_the_refresh_is_an_authentication_failure(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    auth = FakeAuthenticator("agent@example.org", "old-token", "BEARER", refreshed=("revoked",))
    source = make_source(auth=auth)
    server = oauth_server(reactor)
    problem = failed_connect(source, server, reactor)
    assert isinstance(problem, AuthenticationFailed)
    assert str(problem) == (
        "login refused for mailbox support on server imap.test:143: [AUTHENTICATIONFAILED] "
        "Authentication failed. (token refused by the server (status invalid_token))"
    )
    assert server.tokens_seen == ["old-token", "revoked"]
    assert server.error_replies == [b"AQ==", b"AQ=="]  # OAUTHBEARER's %x01, twice
    assert auth.invalidated == 2
    assert "old-token" not in str(problem) and "revoked" not in str(problem)


def test_the_same_token_again_is_not_retried(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    auth = FakeAuthenticator("agent@example.org", "bad-token", "XOAUTH2")
    server = oauth_server(reactor)
    problem = failed_connect(make_source(auth=auth), server, reactor)
    assert isinstance(problem, AuthenticationFailed)
    assert server.tokens_seen == ["bad-token"]


def test_temporary_auth_failure_is_not_an_authentication_failure(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    auth = FakeAuthenticator("agent@example.org", "fresh-token", "XOAUTH2")
    server = oauth_server(reactor)
    server.temporary_auth = True
    source = make_source(auth=auth)
    problem = failed_connect(source, server, reactor)
    assert not isinstance(problem, AuthenticationFailed)
    assert str(problem) == (
        "mailbox support: server imap.test:143 cannot check the login now: "
        "[UNAVAILABLE] Temporary authentication failure."
    )
    assert auth.invalidated == 0 and source.events == []  # type: ignore[attr-defined]


def test_the_token_never_reaches_the_trace(
    make_source: Make, reactor: MemoryReactorClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    auth = FakeAuthenticator("agent@example.org", "old-t0ken", "BEARER", refreshed=("fresh-token",))
    server = oauth_server(reactor)
    connected(make_source, reactor, server, auth=auth, enable_debug=True)
    trace = "\n".join(r.getMessage() for r in caplog.records if r.name == "postroom.trace")
    assert "AUTHENTICATE OAUTHBEARER <redacted>" in trace
    assert "t0ken" not in trace and "fresh-token" not in trace


def test_capabilities_are_asked_after_login_when_not_sent(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor)
    original = server._login

    def plain_ok(tag: bytes, user: str, password: str) -> None:
        server.logged_in = True
        server.send(tag + b" OK Logged in")

    server._login = plain_ok  # type: ignore[method-assign]
    source, server = connected(make_source, reactor, server)
    assert commands(server)[3] == b"CAPABILITY"
    assert "UIDPLUS" in source.capabilities
    del original


# ------------------------------------------------------------------- listing


def test_listing_is_paged_by_sequence_numbers_and_skips_deleted(
    make_source: Make, reactor: MemoryReactorClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source_module, "LIST_PAGE", 100)
    server = FakeIMAPServer(reactor)
    for n in range(250):
        server.add(message(n), {"\\Deleted"} if n == 7 else set())
    source, server = connected(make_source, reactor, server)
    mark = len(server.commands)
    items = pump(reactor, source.list_new(None))
    fetches = [c for c in commands(server, mark) if c.startswith(b"FETCH")]
    assert fetches == [
        b"FETCH 1:100 (UID RFC822.SIZE FLAGS)",
        b"FETCH 101:200 (UID RFC822.SIZE FLAGS)",
        b"FETCH 201:250 (UID RFC822.SIZE FLAGS)",
    ]
    assert len(items) == 249
    assert items[0] == SourceItem(source_key="42:1", size=len(message(0)), cursor="42:1")
    assert "42:8" not in {i.source_key for i in items}
    assert [i.source_key for i in items] == sorted(
        (i.source_key for i in items), key=lambda k: int(k.split(":")[1])
    )


def test_empty_folder_lists_nothing(make_source: Make, reactor: MemoryReactorClock) -> None:
    source, server = connected(make_source, reactor)
    assert pump(reactor, source.list_new(None)) == []
    assert not any(c.startswith(b"FETCH") for c in commands(server))


def test_delete_mode_ignores_the_cursor(make_source: Make, reactor: MemoryReactorClock) -> None:
    server = FakeIMAPServer(reactor)
    for n in range(5):
        server.add(message(n))
    source, server = connected(make_source, reactor, server)
    items = pump(reactor, source.list_new(Cursor("support", "42:3")))
    assert [i.source_key for i in items] == ["42:1", "42:2", "42:3", "42:4", "42:5"]


def test_seen_mode_lists_after_the_cursor_and_earlier_unseen(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor)
    for n in range(6):
        server.add(message(n), {"\\Seen"} if n != 1 else set())  # UID 2 failed earlier
    source, server = connected(make_source, reactor, server, after_processing="seen")
    items = pump(reactor, source.list_new(Cursor("support", "42:4")))
    assert [i.source_key for i in items] == ["42:2", "42:5", "42:6"]
    # a changed UIDVALIDITY: every message again (deduplication keys catch re-fetches)
    items = pump(reactor, source.list_new(Cursor("support", "41:4")))
    assert len(items) == 6
    assert len(pump(reactor, source.list_new(None))) == 6


# ------------------------------------------------------------------- fetching


def test_fetch_streams_partial_chunks_into_the_spool(
    make_source: Make, reactor: MemoryReactorClock, tmp_path: Path
) -> None:
    server = FakeIMAPServer(reactor)
    data = message(1, 2600) + bytes(range(256))
    server.add(data)
    source, server = connected(make_source, reactor, server, **{"mail.imap.fetchsize": 1024})
    [item] = pump(reactor, source.list_new(None))
    mark = len(server.commands)
    fetched: FetchedMessage = pump(reactor, source.fetch(item))
    assert commands(server, mark) == [
        b"UID FETCH 1 (UID BODY.PEEK[]<0.1024>)",
        b"UID FETCH 1 (UID BODY.PEEK[]<1024.1024>)",
        b"UID FETCH 1 (UID BODY.PEEK[]<2048.1024>)",
    ]
    assert Path(fetched.raw.path).read_bytes() == data
    assert fetched.raw.size == len(data)
    assert fetched.raw.sha256 == hashlib.sha256(data).hexdigest()
    assert fetched.server_size == len(data)
    assert fetched.source_key == "42:1"
    assert Path(fetched.raw.path).parent == tmp_path / "spool"
    pump(reactor, source.release(fetched))
    assert not Path(fetched.raw.path).exists()
    assert server.uids() == [1]  # release leaves it on the server


def test_concurrent_fetches_share_one_command_and_large_ones_continue_alone(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor)
    bodies = [message(n, 300) for n in range(5)]
    bodies[2] = message(2, 2600)  # larger than a piece: the rest comes in its own commands
    for data in bodies:
        server.add(data)
    source, server = connected(make_source, reactor, server, **{"mail.imap.fetchsize": 1024})
    items = pump(reactor, source.list_new(None))
    mark = len(server.commands)
    first = [source.fetch(i) for i in items[:3]]  # asked in the same turn, as the kernel does
    later = [source.fetch(i) for i in items[3:]]
    settle(reactor)
    fetched = [run(d) for d in [*first, *later]]
    assert commands(server, mark) == [
        b"UID FETCH 1:5 (UID BODY.PEEK[]<0.1024>)",
        b"UID FETCH 3 (UID BODY.PEEK[]<1024.1024>)",
        b"UID FETCH 3 (UID BODY.PEEK[]<2048.1024>)",
    ]
    for got, data in zip(fetched, bodies, strict=True):
        assert Path(got.raw.path).read_bytes() == data
        assert got.raw.sha256 == hashlib.sha256(data).hexdigest()


def test_fetches_asked_while_a_batch_is_on_the_wire_go_in_the_next(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor)
    for n in range(4):
        server.add(message(n, 200))
    source, server = connected(make_source, reactor, server)
    items = pump(reactor, source.list_new(None))
    mark = len(server.commands)
    first = source.fetch(items[0])
    reactor.advance(0)  # sent alone: nothing else was asked yet
    rest = [source.fetch(i) for i in items[1:]]
    settle(reactor)
    assert [run(d).source_key for d in [first, *rest]] == [i.source_key for i in items]
    assert commands(server, mark) == [
        b"UID FETCH 1 (UID BODY.PEEK[]<0.1048576>)",
        b"UID FETCH 2:4 (UID BODY.PEEK[]<0.1048576>)",
    ]


def test_fetch_of_an_exact_multiple_of_the_chunk(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor)
    data = message(1, 2048)
    server.add(data)
    source, server = connected(make_source, reactor, server, **{"mail.imap.fetchsize": 1024})
    [item] = pump(reactor, source.list_new(None))
    fetched = pump(reactor, source.fetch(item))
    assert Path(fetched.raw.path).read_bytes() == data


def test_fetch_without_partial_fetch_still_streams(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor)
    data = message(1, 5000)
    server.add(data)
    source, server = connected(make_source, reactor, server, **{"mail.imap.partialfetch": False})
    [item] = pump(reactor, source.list_new(None))
    mark = len(server.commands)
    fetched = pump(reactor, source.fetch(item))
    assert commands(server, mark) == [b"UID FETCH 1 (UID BODY.PEEK[])"]
    assert Path(fetched.raw.path).read_bytes() == data


def test_oversized_messages_are_still_downloaded(
    make_source: Make, reactor: MemoryReactorClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = FakeIMAPServer(reactor)
    data = message(1, 5000)
    server.add(data)
    source, server = connected(make_source, reactor, server, max_size=1024)
    [item] = pump(reactor, source.list_new(None))
    fetched = pump(reactor, source.fetch(item))
    assert fetched.server_size == 5000
    assert Path(fetched.raw.path).read_bytes() == data
    assert "over maximum-msg-size" in caplog.text


def test_vanished_message_is_a_source_error_and_leaves_no_spool(
    make_source: Make, reactor: MemoryReactorClock, tmp_path: Path
) -> None:
    server = FakeIMAPServer(reactor)
    server.add(message(1))
    source, server = connected(make_source, reactor, server)
    [item] = pump(reactor, source.list_new(None))
    server.folders["INBOX"].clear()  # another client expunged it
    with pytest.raises(SourceError, match="UID 1 is no longer in INBOX"):
        pump(reactor, source.fetch(item))
    assert os.listdir(tmp_path / "spool") == []


def test_connection_dropped_mid_fetch_fails_all_pending_fetches(
    make_source: Make, reactor: MemoryReactorClock, tmp_path: Path
) -> None:
    server = FakeIMAPServer(reactor)
    for n in range(3):
        server.add(message(n, 4000))
    source, server = connected(make_source, reactor, server)
    items = pump(reactor, source.list_new(None))
    server.drop_after_bytes = 1000
    fetches = [source.fetch(i) for i in items]  # concurrently, as the kernel does
    settle(reactor)
    for d in fetches:
        # ConnectionDown: the kernel counts one failure and abandons the pass
        with pytest.raises(
            ConnectionDown, match=re.escape("connection to server imap.test:143 lost")
        ):
            run(d)
    assert os.listdir(tmp_path / "spool") == []


def test_a_batch_cut_mid_message_blames_that_message_first(
    make_source: Make, reactor: MemoryReactorClock, tmp_path: Path
) -> None:
    """The kernel counts the first failure of a broken pass: it must be the
    message whose download broke, not whichever came first in the batch."""
    server = FakeIMAPServer(reactor)
    for n in range(4):
        server.add(message(n, 3000))
    source, server = connected(make_source, reactor, server)
    items = pump(reactor, source.list_new(None))
    server.drop_after_bytes, server.drop_uid = 1000, 3
    heard: list[str] = []
    fetches = [source.fetch(i) for i in items]
    for item, d in zip(items, fetches, strict=True):
        d.addErrback(lambda f, key=item.source_key: heard.append(key) or f)
    settle(reactor)
    assert heard[0] == items[2].source_key  # UID 3, whose literal was cut
    assert sorted(heard) == sorted(i.source_key for i in items)
    for d in fetches:
        with pytest.raises(ConnectionDown):
            run(d)
    assert os.listdir(tmp_path / "spool") == []


def test_uidvalidity_changed_between_listing_and_fetch(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    source, _ = connected(make_source, reactor)
    with pytest.raises(SourceError, match="UIDVALIDITY"):
        pump(reactor, source.fetch(SourceItem("41:1", 10, "41:1")))


# --------------------------------------------------------------- acknowledging


def fetch_all(source: IMAPSource, reactor: MemoryReactorClock) -> list[FetchedMessage]:
    items = pump(reactor, source.list_new(None))
    return [pump(reactor, source.fetch(i)) for i in items]


def test_delete_uses_uid_expunge_and_only_after_acknowledge(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor)
    for n in range(3):
        server.add(message(n))
    server.add(message(9), {"\\Deleted"})  # another client's mark: must survive
    source, server = connected(make_source, reactor, server)
    fetched = fetch_all(source, reactor)
    mark = len(server.commands)
    pump(reactor, source.acknowledge(fetched[0]))
    pump(reactor, source.acknowledge(fetched[2]))
    assert not any(c.startswith((b"UID STORE", b"UID EXPUNGE")) for c in commands(server, mark))
    assert not os.path.exists(fetched[0].raw.path)  # spool dropped at once
    pump(reactor, source.list_new(None))  # acknowledgements go first
    acted = [c for c in commands(server, mark) if c.startswith(b"UID ")]
    assert acted == [b"UID STORE 1,3 +FLAGS.SILENT (\\Deleted)", b"UID EXPUNGE 1,3"]
    assert server.uids() == [2, 4]
    assert b"EXPUNGE" not in commands(server, mark)


def test_acknowledgements_are_sent_in_batches(
    make_source: Make, reactor: MemoryReactorClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source_module, "ACK_BATCH", 2)
    server = FakeIMAPServer(reactor)
    for n in range(3):
        server.add(message(n))
    source, server = connected(make_source, reactor, server)
    fetched = fetch_all(source, reactor)
    mark = len(server.commands)
    for f in fetched:
        pump(reactor, source.acknowledge(f))
    assert [c for c in commands(server, mark) if c.startswith(b"UID ")] == [
        b"UID STORE 1:2 +FLAGS.SILENT (\\Deleted)",
        b"UID EXPUNGE 1:2",
    ]
    pump(reactor, source.disconnect())
    assert server.uids() == []
    assert commands(server)[-1] == b"LOGOUT"


def test_without_uidplus_messages_stay_flagged_with_one_warning(
    make_source: Make, reactor: MemoryReactorClock, caplog: pytest.LogCaptureFixture
) -> None:
    source_module._warned_no_expunge.clear()
    server = FakeIMAPServer(reactor, after_login_caps=("IMAP4rev1", "IDLE"))
    for n in range(2):
        server.add(message(n))
    source, server = connected(make_source, reactor, server, name="nouidplus")
    for f in fetch_all(source, reactor):
        pump(reactor, source.acknowledge(f))
        pump(reactor, source.list_new(None))
    assert not any(b"EXPUNGE" in c for c in server.commands)
    assert all("\\Deleted" in m.flags for m in server.box)
    assert caplog.text.count("has no UIDPLUS") == 1
    # flagged messages are not listed again
    assert pump(reactor, source.list_new(None)) == []


def test_without_uidplus_plain_expunge_when_allowed(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor, after_login_caps=("IMAP4rev1", "IDLE"))
    server.add(message(1))
    source, server = connected(make_source, reactor, server, allow_plain_expunge=True)
    [f] = fetch_all(source, reactor)
    pump(reactor, source.acknowledge(f))
    pump(reactor, source.list_new(None))
    assert b"EXPUNGE" in commands(server)
    assert server.uids() == []


def test_move_uses_uid_move_and_creates_the_folder(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor)
    server.add(message(1))
    source, server = connected(
        make_source, reactor, server, after_processing="move", move_to_folder="Done"
    )
    [f] = fetch_all(source, reactor)
    mark = len(server.commands)
    pump(reactor, source.acknowledge(f))
    pump(reactor, source.list_new(None))
    assert [c for c in commands(server, mark) if not c.startswith((b"NOOP", b"FETCH"))] == [
        b'UID MOVE 1 "Done"',
        b'CREATE "Done"',
        b'UID MOVE 1 "Done"',
    ]
    assert server.uids() == [] and len(server.folders["Done"]) == 1


def test_move_without_move_copies_then_deletes(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor, after_login_caps=("IMAP4rev1", "UIDPLUS"))
    server.folders["Done"] = []
    server.add(message(1))
    source, server = connected(
        make_source, reactor, server, after_processing="move", move_to_folder="Done"
    )
    [f] = fetch_all(source, reactor)
    mark = len(server.commands)
    pump(reactor, source.acknowledge(f))
    pump(reactor, source.disconnect())
    assert [c for c in commands(server, mark)] == [
        b'UID COPY 1 "Done"',
        b"UID STORE 1 +FLAGS.SILENT (\\Deleted)",
        b"UID EXPUNGE 1",
        b"LOGOUT",
    ]


def test_seen_marks_seen(make_source: Make, reactor: MemoryReactorClock) -> None:
    server = FakeIMAPServer(reactor)
    server.add(message(1))
    source, server = connected(make_source, reactor, server, after_processing="seen")
    [f] = fetch_all(source, reactor)
    pump(reactor, source.acknowledge(f))
    pump(reactor, source.list_new(Cursor("support", "42:1")))
    assert b"UID STORE 1 +FLAGS.SILENT (\\Seen)" in commands(server)
    assert server.box[0].flags == {"\\Seen"}
    assert pump(reactor, source.list_new(Cursor("support", "42:1"))) == []


def test_refused_acknowledgement_is_a_source_error(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor)
    server.add(message(1))
    source, server = connected(
        make_source, reactor, server, after_processing="move", move_to_folder="Done"
    )
    [f] = fetch_all(source, reactor)
    server.cmd_CREATE = lambda tag, args: server.send(tag + b" NO [NOPERM] not allowed")  # type: ignore[method-assign]
    pump(reactor, source.acknowledge(f))
    with pytest.raises(
        SourceError, match=re.escape("refused by server imap.test:143: NO [NOPERM]")
    ):
        pump(reactor, source.list_new(None))


# ---------------------------------------------------------------------- waiting


def test_wait_for_new_idles_and_fires_on_exists(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    source, server = connected(make_source, reactor)
    pump(reactor, source.list_new(None))
    mark = len(server.commands)
    d = source.wait_for_new(3600)
    settle(reactor)
    assert commands(server, mark) == [b"IDLE"]
    reactor.advance(100)
    assert not d.called
    server.add(message(1))  # the server pushes "* 1 EXISTS"
    settle(reactor)
    assert d.called
    assert commands(server, mark) == [b"IDLE", b"DONE"]
    assert [i.source_key for i in pump(reactor, source.list_new(None))] == ["42:1"]


def test_idle_is_reissued_before_the_idle_timeout(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    source, server = connected(make_source, reactor, idle_timeout=25 * 60.0)
    mark = len(server.commands)
    d = source.wait_for_new(3600)
    settle(reactor)
    reactor.advance(25 * 60)
    settle(reactor)
    assert commands(server, mark) == [b"IDLE", b"DONE", b"IDLE"]
    assert not d.called
    reactor.advance(25 * 60)
    settle(reactor)
    assert commands(server, mark) == [b"IDLE", b"DONE", b"IDLE", b"DONE", b"IDLE"]
    reactor.advance(10 * 60)  # the poll interval is over: fire
    settle(reactor)
    assert d.called
    assert commands(server, mark)[-1] == b"DONE"


def test_wait_flushes_acknowledgements_first(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor)
    server.add(message(1))
    source, server = connected(make_source, reactor, server)
    [f] = fetch_all(source, reactor)
    pump(reactor, source.acknowledge(f))
    mark = len(server.commands)
    d = source.wait_for_new(60)
    settle(reactor)
    assert commands(server, mark) == [
        b"UID STORE 1 +FLAGS.SILENT (\\Deleted)",
        b"UID EXPUNGE 1",
        b"IDLE",
    ]
    reactor.advance(60)
    pump(reactor, d)


def test_exists_seen_during_a_pass_makes_the_wait_return_at_once(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    server = FakeIMAPServer(reactor)
    source, server = connected(make_source, reactor, server)
    pump(reactor, source.list_new(None))
    server.folders["INBOX"].append(Message(5, b"x"))
    pump(reactor, source.client.noop())  # type: ignore[union-attr]  # "* 1 EXISTS" mid-pass
    mark = len(server.commands)
    d = source.wait_for_new(3600)
    settle(reactor)
    assert d.called
    assert b"IDLE" not in commands(server, mark)


def test_without_idle_polls_with_noop(make_source: Make, reactor: MemoryReactorClock) -> None:
    server = FakeIMAPServer(reactor, after_login_caps=("IMAP4rev1", "UIDPLUS"))
    source, server = connected(make_source, reactor, server, idle_timeout=600.0)
    assert not source.supports_push
    mark = len(server.commands)
    d = source.wait_for_new(3600)
    settle(reactor)
    assert commands(server, mark) == []
    reactor.advance(600)
    settle(reactor)
    assert commands(server, mark) == [b"NOOP"]  # keep-alive, nothing new
    assert not d.called
    server.add(message(1))
    reactor.advance(600)
    settle(reactor)
    assert d.called  # the NOOP showed the new message
    d2 = source.wait_for_new(60)
    reactor.advance(60)
    settle(reactor)
    assert d2.called


def test_cancelling_the_wait_ends_idle_and_disconnect_logs_out(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    source, server = connected(make_source, reactor)
    mark = len(server.commands)
    d = source.wait_for_new(3600)
    settle(reactor)
    d.cancel()
    with pytest.raises(defer.CancelledError):
        run(d)
    done = source.disconnect()
    settle(reactor)
    run(done)
    assert commands(server, mark) == [b"IDLE", b"DONE", b"LOGOUT"]
    assert server.closed


def test_lost_connection_during_idle_fails_the_wait(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    source, server = connected(make_source, reactor)
    d = source.wait_for_new(3600)
    settle(reactor)
    server.send(b"* BYE Shutting down")
    server.close(error.ConnectionDone())
    settle(reactor)
    with pytest.raises(SourceError, match="BYE Shutting down"):
        run(d)
    run(source.disconnect())


# --------------------------------------------------------------------- timeouts


def test_connect_timeout_without_greeting(make_source: Make, reactor: MemoryReactorClock) -> None:
    source = make_source(connect_timeout=30.0)
    d = source.connect()
    server = FakeIMAPServer(reactor)  # connects, says nothing
    client = source.endpoints[0].build()  # type: ignore[attr-defined]
    assert client is not None
    client.makeConnection(FakeTransport(server))
    server.client = client
    reactor.advance(29)
    assert not d.called
    reactor.advance(2)
    settle(reactor)
    with pytest.raises(
        SourceError, match=re.escape("no greeting from server imap.test:143 within 30 s")
    ):
        run(d)


def test_protocol_timeout_on_a_silent_server(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    source, server = connected(make_source, reactor, protocol_timeout=60.0)
    server.silent = True
    d = source.list_new(None)
    settle(reactor)
    reactor.advance(61)
    settle(reactor)
    with pytest.raises(
        ConnectionDown, match=re.escape("no answer from server imap.test:143 within 60 s to NOOP")
    ):
        run(d)
    assert server.closed


def test_connection_refused_is_a_clear_error(
    make_source: Make, reactor: MemoryReactorClock
) -> None:
    source = make_source()
    d = source.connect()
    source.endpoints[0].fail(error.ConnectionRefusedError("Connection refused"))  # type: ignore[attr-defined]
    with pytest.raises(SourceError) as info:
        run(d)
    assert "mailbox support: cannot connect to server imap.test:143" in str(info.value)
    assert "Connection refused" in str(info.value)


def test_folder_that_does_not_exist(make_source: Make, reactor: MemoryReactorClock) -> None:
    source = make_source(folder_path="Nope")
    with pytest.raises(SourceError, match="cannot open folder 'Nope'"):
        pump(reactor, connect_source(source, FakeIMAPServer(reactor), reactor))


def test_custom_folder(make_source: Make, reactor: MemoryReactorClock) -> None:
    server = FakeIMAPServer(reactor)
    server.add(message(1), folder="Support/In")
    source, server = connected(make_source, reactor, server, folder_path="Support/In")
    assert b'SELECT "Support/In"' in commands(server)
    assert len(pump(reactor, source.list_new(None))) == 1


# ------------------------------------------------------------------------ trace


def test_enable_debug_traces_with_the_password_redacted(
    make_source: Make, reactor: MemoryReactorClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    connected(make_source, reactor, enable_debug=True)
    trace = [r.getMessage() for r in caplog.records if r.name == "postroom.trace"]
    assert any("C: 0001 STARTTLS" in t for t in trace)
    assert any("S: * OK [CAPABILITY" in t for t in trace)
    assert any("LOGIN" in t and "<redacted>" in t for t in trace)
    assert not any("ss" in t.split("LOGIN", 1)[-1] for t in trace if "LOGIN" in t)
    assert not any("pa ss" in t for t in trace)


def test_no_trace_without_enable_debug(
    make_source: Make, reactor: MemoryReactorClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    connected(make_source, reactor)
    assert not [r for r in caplog.records if r.name == "postroom.trace"]
