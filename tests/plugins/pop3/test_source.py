"""POP3Source against a scripted server on a task.Clock: sessions, security, errors."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet import defer, error
from zope.interface.verify import verifyClass

from postroom.config.options import OptionSchema, Scope
from postroom.drivers import DriverContext, SourceItem, load_driver
from postroom.errors import AuthenticationFailed, SourceError
from postroom.interfaces import SOURCES_GROUP, ISource
from postroom.model import FetchedMessage
from postroom_pop3.source import POP3Source, describe
from tests.plugins.pop3.fakes import (
    Config,
    FakeAuthenticator,
    FakePOP3Server,
    Harness,
    SSLStringTransport,
    StringTransport,
)

WithStoreLookup = DriverContext  # it has the known_source_keys seam now


def msg(n: int, body: bytes = b"hello") -> bytes:
    return b"Message-ID: <m%d@example.test>\r\nSubject: message %d\r\n\r\n%s\r\n" % (n, n, body)


def three() -> list[tuple[str, bytes]]:
    return [(f"uid-{n}", msg(n)) for n in (1, 2, 3)]


def next_pass(h: Harness) -> None:
    """End the pass as the kernel does between two passes (QUIT, poll interval)."""
    waiting = h.source.wait_for_new(1)
    h.settle()
    h.clock.advance(1)
    h.settle(waiting)


def failure_of(h: Harness, d: defer.Deferred[Any]) -> BaseException:
    with pytest.raises(SourceError) as info:
        h.settle(d)
    return info.value


# ------------------------------------------------------------------ the driver


def test_entry_point_loads_and_implements_isource() -> None:
    cls = load_driver(SOURCES_GROUP, "pop3")
    assert cls is POP3Source
    verifyClass(ISource, POP3Source)
    assert POP3Source.supports_push is False


def test_declares_its_options() -> None:
    schema = OptionSchema()
    POP3Source.postroom_add_options(schema)
    names = {o.name: o for o in schema.select(Scope.MAILBOX, driver="pop3")}
    for name in (
        "server",
        "port",
        "mailbox",
        "password",
        "pop-connection-security",
        "ca-file",
        "connect-timeout",
        "protocol-timeout",
        "enable-debug",
        "after-processing",
        "mail.pop3.disabletop",
    ):
        assert name in names, name
    assert names["port"].default is None  # the usual port follows the security
    assert "995 with `ssl`" in names["port"].description
    assert names["after-processing"].choices == ("delete", "leave")
    assert names["after-processing"].default == "delete"
    assert names["mail.pop3.disabletop"].default == "false"
    assert not schema.select(Scope.MAILBOX, driver="imap")


@pytest.mark.parametrize(
    ("security", "given", "expected"),
    [
        ("ssl", None, 995),
        ("starttls", None, 110),
        ("none", None, 110),
        ("starttls", 995, 995),
        ("starttls", 2110, 2110),
    ],
)
def test_port_follows_security_when_not_given(
    tmp_path: Path, security: str, given: int | None, expected: int
) -> None:
    options: dict[str, Any] = {"pop_connection_security": security}
    if given is not None:
        options["port"] = given
    h = Harness(tmp_path, FakePOP3Server(), **options)
    if given is None:
        h.mailbox.lines.pop("port", None)
    assert h.source.settings.port == expected


# ------------------------------------------------------------------ a pass


def test_a_delete_pass_end_to_end(tmp_path: Path) -> None:
    server = FakePOP3Server(three())
    h = Harness(tmp_path, server)
    h.settle(h.source.connect())
    assert server.command_names() == ["CAPA", "STLS", "CAPA", "USER", "PASS"]
    assert h.tls_creators == [("verifying-creator", "pop.example.test", None)]
    assert h.events == [("box1", "login-ok", "PLAIN on server pop.example.test:110")]

    items = h.settle(h.source.list_new(None))
    assert [i.source_key for i in items] == ["uid-1", "uid-2", "uid-3"]
    assert [i.size for i in items] == [len(m) for _u, m in three()]

    fetched = [h.source.fetch(item) for item in items]  # the kernel fetches concurrently
    messages: list[FetchedMessage] = [h.settle(d) for d in fetched]
    retrs = [c for c in server.commands if c.startswith(b"RETR")]
    assert retrs == [b"RETR 1", b"RETR 2", b"RETR 3"]  # one at a time, in order
    for message, (uid, body) in zip(messages, three(), strict=True):
        assert message.source_key == uid
        assert message.mailbox == "box1"
        assert Path(message.raw.path).read_bytes() == body
        assert message.raw.size == len(body)
        assert message.server_size == len(body)
        assert Path(message.raw.path).parent == h.spool

    for message in messages[:2]:
        h.settle(h.source.acknowledge(message))
        assert not Path(message.raw.path).exists()
    h.settle(h.source.release(messages[2]))
    assert not Path(messages[2].raw.path).exists()
    assert len(server.maildrop) == 3  # DELE counts only at QUIT
    h.settle(h.source.disconnect())
    assert server.command_names()[-3:] == ["DELE", "DELE", "QUIT"]
    assert [u for u, _m in server.maildrop] == ["uid-3"]


def test_no_quit_means_nothing_deleted_and_a_refetch(tmp_path: Path) -> None:
    server = FakePOP3Server(three())
    h = Harness(tmp_path, server)
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    first = h.settle(h.source.fetch(items[0]))
    h.settle(h.source.acknowledge(first))
    server.drop()  # crash of the connection before QUIT
    assert len(server.maildrop) == 3
    # the next pass sees it again (the store will call it a duplicate, and it is acked again)
    items = h.settle(h.source.list_new(None))
    assert [i.source_key for i in items] == ["uid-1", "uid-2", "uid-3"]
    assert server.sessions == 2


def test_wait_for_new_quits_then_waits_on_the_clock(tmp_path: Path) -> None:
    server = FakePOP3Server(three())
    h = Harness(tmp_path, server)
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    message = h.settle(h.source.fetch(items[0]))
    h.settle(h.source.acknowledge(message))
    waiting = h.source.wait_for_new(60)
    h.settle()
    assert server.command_names()[-1] == "QUIT"
    assert [u for u, _m in server.maildrop] == ["uid-2", "uid-3"]
    h.clock.advance(59)
    assert not waiting.called
    h.clock.advance(1)
    assert h.settle(waiting) is None
    # new mail arrived meanwhile: the next pass logs in again and sees it
    server.maildrop.append(("uid-4", msg(4)))
    items = h.settle(h.source.list_new(None))
    assert [i.source_key for i in items] == ["uid-2", "uid-3", "uid-4"]
    assert server.sessions == 2


def test_disconnect_cancels_the_wait(tmp_path: Path) -> None:
    h = Harness(tmp_path, FakePOP3Server(three()))
    h.settle(h.source.connect())
    waiting = h.source.wait_for_new(600)
    h.settle()
    h.settle(h.source.disconnect())
    assert h.settle(waiting) is None
    assert not h.clock.getDelayedCalls()


def test_connection_dropped_mid_retr_fails_then_the_next_fetch_reconnects(
    tmp_path: Path,
) -> None:
    server = FakePOP3Server(three())
    h = Harness(tmp_path, server)
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))

    def half_then_drop(_line: bytes) -> None:
        server.proto.dataReceived(b"+OK\r\nSubject: half\r\n")
        server.drop()
        return None

    server.on[b"RETR 2"] = half_then_drop
    first = h.source.fetch(items[0])
    second = h.source.fetch(items[1])
    third = h.source.fetch(items[2])
    fetched_first = h.settle(first)
    assert fetched_first.source_key == "uid-1"
    problem = failure_of(h, second)
    assert "fetching message uid-2" in str(problem)
    assert "connection closed by the server" in str(problem)
    del server.on[b"RETR 2"]
    fetched_third = h.settle(third)
    assert Path(fetched_third.raw.path).read_bytes() == msg(3)
    # no half-written file left behind
    assert set(h.spool.iterdir()) == {Path(fetched_first.raw.path), Path(fetched_third.raw.path)}
    assert server.sessions == 2
    assert server.command_names()[-3:] == ["UIDL", "LIST", "RETR"]  # numbers read again


def test_fetch_of_a_message_gone_meanwhile(tmp_path: Path) -> None:
    server = FakePOP3Server(three())
    h = Harness(tmp_path, server)
    h.settle(h.source.connect())
    h.settle(h.source.list_new(None))
    problem = failure_of(h, h.source.fetch(SourceItem("uid-9", 10)))
    assert "uid-9 is no longer on server pop.example.test:110" in str(problem)


def test_retr_refused(tmp_path: Path) -> None:
    server = FakePOP3Server(three())
    server.on[b"RETR"] = lambda _l: b"-ERR [SYS/TEMP] disk error\r\n"
    h = Harness(tmp_path, server)
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    problem = failure_of(h, h.source.fetch(items[0]))
    assert "refused RETR of message uid-1: [SYS/TEMP] disk error" in str(problem)
    assert not list(h.spool.iterdir())


def test_dele_refused_is_an_error(tmp_path: Path) -> None:
    server = FakePOP3Server(three())
    server.on[b"DELE"] = lambda _l: b"-ERR read-only mailbox\r\n"
    h = Harness(tmp_path, server)
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    message = h.settle(h.source.fetch(items[0]))
    problem = failure_of(h, h.source.acknowledge(message))
    assert "refused DELE of message uid-1: read-only mailbox" in str(problem)


def test_a_large_message_in_tls_sized_chunks(tmp_path: Path) -> None:
    body = b"Subject: big\r\n\r\n" + b"".join(
        (b"." if i % 7 == 0 else b"") + b"line %07d " % i + b"x" * 60 + b"\r\n"
        for i in range(30000)
    )
    server = FakePOP3Server([("big", body)], chunk=16384)
    h = Harness(tmp_path, server)
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    message = h.settle(h.source.fetch(items[0]))
    assert Path(message.raw.path).read_bytes() == body


# ------------------------------------------------------------------ leave mode


def test_leave_mode_keeps_messages_and_skips_acknowledged_ones(tmp_path: Path) -> None:
    server = FakePOP3Server(three())
    config = Config()
    h = Harness(tmp_path, server, config=config, after_processing="leave")
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    for item in items[:2]:
        h.settle(h.source.acknowledge(h.settle(h.source.fetch(item))))
    waiting = h.source.wait_for_new(1)
    h.settle()
    h.clock.advance(1)
    h.settle(waiting)
    assert "DELE" not in server.command_names()
    assert len(server.maildrop) == 3
    assert [i.source_key for i in h.settle(h.source.list_new(None))] == ["uid-3"]
    # the kernel builds a new source after a connection failure: the set survives
    again = Harness(tmp_path, server, config=config, after_processing="leave")
    again.settle(again.source.connect())
    assert [i.source_key for i in again.settle(again.source.list_new(None))] == ["uid-3"]
    # another kernel (another SiteConfig) knows nothing
    other = Harness(tmp_path, server, config=Config(), after_processing="leave")
    other.settle(other.source.connect())
    assert len(other.settle(other.source.list_new(None))) == 3


def test_leave_mode_forgets_uidls_that_left_the_server(tmp_path: Path) -> None:
    server = FakePOP3Server(three())
    h = Harness(tmp_path, server, after_processing="leave")
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    for item in items:
        h.settle(h.source.acknowledge(h.settle(h.source.fetch(item))))
    assert h.source._seen == {"uid-1", "uid-2", "uid-3"}
    server.maildrop = server.maildrop[1:]  # another client deleted uid-1
    next_pass(h)
    assert h.settle(h.source.list_new(None)) == []
    assert h.source._seen == {"uid-2", "uid-3"}


def test_leave_mode_asks_the_store_when_the_kernel_offers_it(tmp_path: Path) -> None:
    server = FakePOP3Server(three())
    h = Harness(tmp_path, server, after_processing="leave")
    asked: list[tuple[str, list[str]]] = []

    def known(mailbox: str, keys: list[str]) -> defer.Deferred[set[str]]:
        asked.append((mailbox, keys))
        return defer.succeed({"uid-1"})

    h.source.context = WithStoreLookup(
        **{**attrs.asdict(h.context, recurse=False), "known_source_keys": known}
    )
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    assert [i.source_key for i in items] == ["uid-2", "uid-3"]
    assert asked == [("box1", ["uid-1", "uid-2", "uid-3"])]


# ------------------------------------------------------------------ no UIDL, TOP


def test_server_without_uidl_gets_keys_from_top(tmp_path: Path) -> None:
    messages = [("ignored", msg(1)), ("ignored", msg(2)), ("ignored", msg(1))]
    server = FakePOP3Server(messages, uidl=False)
    h = Harness(tmp_path, server)
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    keys = [i.source_key for i in items]
    assert all(k.startswith("top-") for k in keys)
    assert len(set(keys)) == 3 and keys[2] == keys[0] + "-2"
    assert [c for c in server.commands if c.startswith(b"TOP")] == [
        b"TOP 1 0",
        b"TOP 2 0",
        b"TOP 3 0",
    ]
    # stable across sessions
    next_pass(h)
    assert [i.source_key for i in h.settle(h.source.list_new(None))] == keys


def test_disabletop_never_sends_top(tmp_path: Path) -> None:
    server = FakePOP3Server(three())
    h = Harness(tmp_path, server, mail_pop3_disabletop=True)
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    for item in items:
        h.settle(h.source.acknowledge(h.settle(h.source.fetch(item))))
    h.settle(h.source.disconnect())
    assert "TOP" not in server.command_names()
    assert server.command_names().count("RETR") == 3


def test_disabletop_without_uidl_is_a_clear_error_and_no_top(tmp_path: Path) -> None:
    server = FakePOP3Server(three(), uidl=False)
    h = Harness(tmp_path, server, mail_pop3_disabletop=True)
    h.settle(h.source.connect())
    problem = failure_of(h, h.source.list_new(None))
    assert "has no UIDL, and mail.pop3.disabletop forbids TOP" in str(problem)
    assert "TOP" not in server.command_names()


# ------------------------------------------------------------------ security


def test_starttls_not_offered_is_an_error_before_any_credentials(tmp_path: Path) -> None:
    server = FakePOP3Server(three(), stls=False)
    h = Harness(tmp_path, server, pop_connection_security="starttls", port=110)
    problem = failure_of(h, h.source.connect())
    text = str(problem)
    assert "server pop.example.test:110 does not offer STLS" in text
    assert "refusing to go on in clear text" in text
    assert server.command_names() == ["CAPA"]
    assert server.transport.disconnecting


def test_ssl_logs_in_over_the_implicit_tls_transport(tmp_path: Path) -> None:
    server = FakePOP3Server(three(), transport_class=SSLStringTransport)
    h = Harness(tmp_path, server, pop_connection_security="ssl")
    h.settle(h.source.connect())
    assert server.command_names() == ["CAPA", "USER", "PASS"]  # no STLS inside TLS
    assert h.source._client is not None and not h.source._client.allowInsecureLogin


def test_none_logs_in_over_clear_text(tmp_path: Path) -> None:
    server = FakePOP3Server(three(), stls=True, transport_class=StringTransport)
    h = Harness(tmp_path, server, pop_connection_security="none", port=110)
    h.settle(h.source.connect())
    assert server.command_names() == ["CAPA", "USER", "PASS"]  # STLS offered, not wanted
    assert h.source._client is not None and h.source._client.allowInsecureLogin


def test_wrong_password_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    server = FakePOP3Server(three(), password="the-right-one")
    auth = FakeAuthenticator(secret="wrong-secret-123")
    h = Harness(tmp_path, server, authenticator=auth)
    problem = failure_of(h, h.source.connect())
    assert str(problem) == (
        "login refused for mailbox box1 on server pop.example.test:110: "
        "[AUTH] Authentication failed."
    )
    assert isinstance(problem, AuthenticationFailed)  # the login policy's back-off, not a retry
    assert "wrong-secret-123" not in repr(problem.__dict__)
    assert auth.invalidated == 1
    assert h.events == [("box1", "login-failed", "[AUTH] Authentication failed.")]


def test_mailbox_in_use_is_not_a_wrong_password(tmp_path: Path) -> None:
    server = FakePOP3Server(three())
    server.on[b"PASS"] = lambda _l: b"-ERR [IN-USE] Mailbox is locked by another session\r\n"
    auth = FakeAuthenticator()
    h = Harness(tmp_path, server, authenticator=auth)
    problem = failure_of(h, h.source.connect())
    assert "cannot open the mailbox now: [IN-USE]" in str(problem)
    assert not isinstance(problem, AuthenticationFailed)
    assert auth.invalidated == 0 and h.events == []


def xoauth2(user: str, token: str) -> bytes:
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode())


def test_xoauth2_login_one_line_by_default(tmp_path: Path) -> None:
    server = FakePOP3Server(three(), user="agent1@contoso.example", password="access-token")
    auth = FakeAuthenticator("agent1@contoso.example", "access-token", "XOAUTH2")
    h = Harness(tmp_path, server, authenticator=auth)
    h.settle(h.source.connect())
    assert server.command_names()[:4] == ["CAPA", "STLS", "CAPA", "AUTH"]
    assert server.commands[3] == b"AUTH XOAUTH2 " + xoauth2(
        "agent1@contoso.example", "access-token"
    )
    assert h.events[0][1] == "login-ok"


def test_xoauth2_two_line_form_when_asked(tmp_path: Path) -> None:
    server = FakePOP3Server(three(), user="agent1@contoso.example", password="access-token")
    auth = FakeAuthenticator("agent1@contoso.example", "access-token", "BEARER")
    h = Harness(
        tmp_path,
        server,
        authenticator=auth,
        mail_pop3_auth_xoauth2_two_line_authentication_format=True,
    )
    h.settle(h.source.connect())
    assert server.commands[3:5] == [
        b"AUTH XOAUTH2",
        xoauth2("agent1@contoso.example", "access-token"),
    ]


def test_oauthbearer_is_preferred_when_offered(tmp_path: Path) -> None:
    server = FakePOP3Server(three(), user="u@x.example", password="tok")
    server.sasl = ("PLAIN", "XOAUTH2", "OAUTHBEARER")
    h = Harness(tmp_path, server, authenticator=FakeAuthenticator("u@x.example", "tok", "BEARER"))
    h.settle(h.source.connect())
    expected = b"n,a=u@x.example,\x01host=pop.example.test\x01port=110\x01auth=Bearer tok\x01\x01"
    assert server.commands[3] == b"AUTH OAUTHBEARER " + base64.b64encode(expected)


def test_forced_mechanism_is_honoured(tmp_path: Path) -> None:
    server = FakePOP3Server(three(), user="u@x.example", password="tok")
    server.sasl = ("PLAIN", "XOAUTH2", "OAUTHBEARER")
    h = Harness(
        tmp_path,
        server,
        authenticator=FakeAuthenticator("u@x.example", "tok", "BEARER"),
        mail_pop3_auth_mechanisms="XOAUTH2",
    )
    h.settle(h.source.connect())
    assert server.commands[3].startswith(b"AUTH XOAUTH2 ")


def test_no_oauth_mechanism_offered_is_a_clear_error(tmp_path: Path) -> None:
    server = FakePOP3Server(three())
    server.sasl = ("PLAIN", "LOGIN")
    h = Harness(tmp_path, server, authenticator=FakeAuthenticator("u", "s3cr3t-t0k", "BEARER"))
    problem = failure_of(h, h.source.connect())
    assert str(problem) == (
        "mailbox box1: server pop.example.test:110 offers SASL PLAIN LOGIN, not XOAUTH2 or "
        "OAUTHBEARER: cannot log in with the access token"
    )
    assert not isinstance(problem, AuthenticationFailed)
    assert "AUTH" not in server.command_names()


def test_a_server_without_a_sasl_line_is_trusted_with_the_forced_mechanism(
    tmp_path: Path,
) -> None:
    server = FakePOP3Server(three(), user="u@x.example", password="tok")
    server.announce_sasl = False  # no SASL line in CAPA; AUTH XOAUTH2 works all the same
    h = Harness(
        tmp_path,
        server,
        authenticator=FakeAuthenticator("u@x.example", "tok", "BEARER"),
        mail_pop3_auth_mechanisms="XOAUTH2",
    )
    h.settle(h.source.connect())
    assert server.commands[3].startswith(b"AUTH XOAUTH2 ")
    assert h.events[0][1] == "login-ok"
    # without the forced mechanism, nothing says the server takes a token
    server = FakePOP3Server(three(), user="u@x.example", password="tok")
    server.announce_sasl = False
    h = Harness(tmp_path, server, authenticator=FakeAuthenticator("u@x.example", "tok", "BEARER"))
    problem = failure_of(h, h.source.connect())
    assert "offers no SASL mechanism (CAPA), not XOAUTH2 or OAUTHBEARER" in str(problem)


def test_refused_token_is_refreshed_and_retried_once_on_the_same_connection(
    tmp_path: Path,
) -> None:
    """The D9 loop: an expired token is refused, the auth driver refreshes it,
    and the next login succeeds at once (no login back-off)."""
    server = FakePOP3Server(three(), user="u", password="fresh-token")
    auth = FakeAuthenticator("u", "expired-token", "XOAUTH2", refreshed=("fresh-token",))
    h = Harness(tmp_path, server, authenticator=auth)
    h.settle(h.source.connect())
    assert server.tokens_seen == ["expired-token", "fresh-token"]
    assert server.error_replies == [b""]  # the error challenge was answered
    assert server.sessions == 1  # same connection
    assert auth.invalidated == 1
    assert [e[1] for e in h.events] == ["login-failed", "login-ok"]
    assert "token refused by the server (status 401, scope mail)" in h.events[0][2]


def test_refused_twice_is_an_authentication_failure(tmp_path: Path) -> None:
    server = FakePOP3Server(three(), user="u", password="good")
    auth = FakeAuthenticator("u", "expired", "XOAUTH2", refreshed=("revoked",))
    h = Harness(tmp_path, server, authenticator=auth)
    problem = failure_of(h, h.source.connect())
    assert isinstance(problem, AuthenticationFailed)
    assert str(problem) == (
        "login refused for mailbox box1 on server pop.example.test:110: [AUTH] Authentication "
        "failed. (token refused by the server (status 401, scope mail))"
    )
    assert server.tokens_seen == ["expired", "revoked"]
    assert auth.invalidated == 2
    assert "expired" not in str(problem) and "revoked" not in str(problem)


def test_the_same_token_again_is_not_retried(tmp_path: Path) -> None:
    server = FakePOP3Server(three(), user="u", password="good")
    auth = FakeAuthenticator("u", "bad", "XOAUTH2")
    h = Harness(tmp_path, server, authenticator=auth)
    assert isinstance(failure_of(h, h.source.connect()), AuthenticationFailed)
    assert server.tokens_seen == ["bad"]


def test_temporary_auth_failure_is_not_an_authentication_failure(tmp_path: Path) -> None:
    server = FakePOP3Server(three(), user="u", password="tok")
    server.temporary_auth = True
    auth = FakeAuthenticator("u", "tok", "XOAUTH2")
    h = Harness(tmp_path, server, authenticator=auth)
    problem = failure_of(h, h.source.connect())
    assert isinstance(problem, SourceError) and not isinstance(problem, AuthenticationFailed)
    assert "cannot open the mailbox now: [SYS/TEMP] Temporary authentication failure." in str(
        problem
    )
    assert auth.invalidated == 0 and h.events == []


def test_the_token_never_reaches_the_trace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    for two_line in (False, True):
        server = FakePOP3Server(three(), user="u", password="fresh-t0ken")
        auth = FakeAuthenticator("u", "old-t0ken", "XOAUTH2", refreshed=("fresh-t0ken",))
        h = Harness(
            tmp_path,
            server,
            authenticator=auth,
            enable_debug=True,
            mail_pop3_auth_xoauth2_two_line_authentication_format=two_line,
        )
        h.settle(h.source.connect())
    trace = "\n".join(r.getMessage() for r in caplog.records)
    assert "AUTH XOAUTH2 <redacted>" in trace
    assert "t0ken" not in trace
    assert xoauth2("u", "old-t0ken").decode() not in trace


# ------------------------------------------------------------------ timeouts


def test_connect_timeout_when_the_tcp_connect_hangs(tmp_path: Path) -> None:
    server = FakePOP3Server()
    server.never_connect = True
    h = Harness(tmp_path, server, connect_timeout=15.0)
    d = h.source.connect()
    h.clock.advance(14)
    assert not d.called
    h.clock.advance(1)
    problem = failure_of(h, d)
    assert "could not connect to server pop.example.test:110 within connect-timeout (15s" in str(
        problem
    )


def test_connect_timeout_when_no_greeting_comes(tmp_path: Path) -> None:
    server = FakePOP3Server()
    server.hang = True
    h = Harness(tmp_path, server, connect_timeout=10.0, protocol_timeout=100.0)
    d = h.source.connect()
    h.clock.advance(10)
    problem = failure_of(h, d)
    assert "within connect-timeout" in str(problem)
    assert server.transport.disconnecting


def test_protocol_timeout_mid_pass(tmp_path: Path) -> None:
    server = FakePOP3Server(three())
    h = Harness(tmp_path, server, protocol_timeout=120.0)
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    server.hang = True  # the server stops answering
    d = h.source.fetch(items[0])
    h.clock.advance(119)
    assert not d.called
    h.clock.advance(1)
    problem = failure_of(h, d)
    assert "fetching message uid-1: no answer in time" in str(problem)
    assert not list(h.spool.iterdir())


def test_connection_refused(tmp_path: Path) -> None:
    server = FakePOP3Server()
    server.refuse_connect = error.ConnectionRefusedError()
    h = Harness(tmp_path, server)
    problem = failure_of(h, h.source.connect())
    assert "cannot connect to server pop.example.test:110: connection refused" in str(problem)


# ------------------------------------------------------------------ descriptions


def test_describe_tls_failures() -> None:
    from OpenSSL import SSL
    from service_identity import VerificationError

    verify = SSL.Error([("SSL routines", "", "certificate verify failed")])
    assert describe(verify) == "TLS handshake failed: certificate verify failed"
    mismatch = VerificationError(errors=["DNSMismatch"])  # type: ignore[list-item]
    assert describe(mismatch).startswith("TLS certificate does not match the server's host name")
    assert describe(error.DNSLookupError("x")) == "host name not found"


def test_quit_failure_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakePOP3Server(three())
    h = Harness(tmp_path, server)
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    h.settle(h.source.acknowledge(h.settle(h.source.fetch(items[0]))))
    server.on[b"QUIT"] = lambda _l: b"-ERR could not expunge\r\n"
    with caplog.at_level(logging.WARNING):
        h.settle(h.source.disconnect())
    assert "1 deletion(s) not committed" in caplog.text


def test_disconnect_mid_pass_quits_after_queued_work_and_opens_no_new_session(
    tmp_path: Path,
) -> None:
    server = FakePOP3Server(three())
    h = Harness(tmp_path, server)
    h.settle(h.source.connect())
    items = h.settle(h.source.list_new(None))
    first = h.source.fetch(items[0])
    second = h.source.fetch(items[1])
    stopping = h.source.disconnect()  # the gateway stops while the pass goes on
    third = h.source.fetch(items[2])
    h.settle(stopping)
    one, two = h.settle(first), h.settle(second)
    problem = failure_of(h, third)
    assert "mailbox box1 is being disconnected" in str(problem)
    h.settle(h.source.acknowledge(one))  # stored after QUIT: left for the next start
    assert server.command_names()[-3:] == ["RETR", "RETR", "QUIT"]
    assert server.sessions == 1
    assert len(server.maildrop) == 3
    assert not Path(one.raw.path).exists()
    h.settle(h.source.release(two))


def test_a_mechanism_pop3_cannot_use_is_a_clear_error(tmp_path: Path) -> None:
    server = FakePOP3Server(three())
    h = Harness(tmp_path, server, authenticator=FakeAuthenticator("u", "s3cr3t-b34r3r", "GSSAPI"))
    problem = failure_of(h, h.source.connect())
    assert "gave GSSAPI credentials; POP3 takes a password (USER/PASS) or an OAuth" in str(problem)
    assert "USER" not in server.command_names() and "AUTH" not in server.command_names()
    assert "s3cr3t" not in str(problem)
