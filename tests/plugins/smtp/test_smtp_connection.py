"""One connection's logic against a scripted peer: bytes written, replies mapped to errors.

The peer (:class:`~tests.plugins.smtp.fakes.ScriptedServer`) is a fake for the
client's logic only; interoperability is proven by the integration tests
against Postfix and Dovecot.
"""

from __future__ import annotations

import base64
import logging
import socket
from typing import Any

import pytest

from postroom.drivers import Credentials
from postroom_smtp.connection import (
    ConnectionSettings,
    SMTPConnection,
    SMTPSendError,
    TracingSMTP,
)
from tests.plugins.smtp.fakes import ScriptedServer, client_factory

SETTINGS = ConnectionSettings(
    host="mail.example.test", port=587, security="none", protocol_timeout=120, helo_name="gw.test"
)
PASSWORD = Credentials("agent1", "secret")


def connect(
    server: ScriptedServer,
    credentials: Credentials | None = None,
    settings: ConnectionSettings = SETTINGS,
) -> SMTPConnection:
    return SMTPConnection.open(settings, credentials, 1, client_factory=client_factory(server))


def open_error(server: ScriptedServer, **kw: Any) -> SMTPSendError:
    with pytest.raises(SMTPSendError) as info:
        connect(server, **kw)
    return info.value


def send_error(
    conn: SMTPConnection, message: bytes = b"Subject: x\r\n\r\nhi\r\n", **kw: Any
) -> SMTPSendError:
    args: dict[str, Any] = {"mail_from": "agent1@example.test", "rcpt_to": ["agent2@example.test"]}
    args.update(kw)
    with pytest.raises(SMTPSendError) as info:
        conn.send(message, **args)
    return info.value


def written(server: ScriptedServer) -> bytes:
    return bytes(server.written)


# ------------------------------------------------------------------ AUTH bytes


def test_xoauth2_initial_response_on_the_auth_line() -> None:
    server = ScriptedServer(extensions=["AUTH PLAIN LOGIN XOAUTH2"], user="a@example.test")
    connect(server, Credentials("a@example.test", "tok", "XOAUTH2"))
    expected = base64.b64encode(b"user=a@example.test\x01auth=Bearer tok\x01\x01")
    assert b"\r\nAUTH XOAUTH2 " + expected + b"\r\n" in written(server)


def test_a_refused_xoauth2_token_answers_the_error_challenge_and_reports_it() -> None:
    challenge = base64.b64encode(b'{"status":"401","schemes":"bearer"}').decode()
    server = ScriptedServer(
        extensions=["AUTH XOAUTH2"],
        replies={"AUTH": (334, challenge), "": (535, "5.7.8 Username and Password not accepted")},
    )
    error = open_error(server, credentials=Credentials("a@example.test", "expired-tok", "XOAUTH2"))
    lines = written(server).split(b"\r\n")
    at = next(i for i, line in enumerate(lines) if line.startswith(b"AUTH XOAUTH2 "))
    assert lines[at + 1 : at + 3] == [b"", b"quit"]  # an empty answer to the error, then QUIT
    assert error.auth_failed and not error.permanent
    assert "refused the login of user a@example.test with AUTH XOAUTH2" in str(error)
    assert "token refused by the server (status 401)" in str(error)
    assert "expired-tok" not in str(error)


def test_plain_sends_utf8_credentials() -> None:
    server = ScriptedServer(extensions=["AUTH PLAIN LOGIN"], user="agent1", password="pässwörd")
    conn = connect(server, Credentials("agent1", "pässwörd", "PLAIN"))
    assert conn.user == "agent1"
    expected = base64.b64encode("\0agent1\0pässwörd".encode())
    assert b"AUTH PLAIN " + expected + b"\r\n" in written(server)


def test_login_when_the_server_has_no_plain() -> None:
    server = ScriptedServer(extensions=["AUTH LOGIN"])
    connect(server, PASSWORD)
    lines = written(server).split(b"\r\n")
    at = lines.index(b"AUTH LOGIN")
    assert lines[at + 1 : at + 3] == [base64.b64encode(b"agent1"), base64.b64encode(b"secret")]


def test_auth_failure_names_server_and_user_never_the_password() -> None:
    server = ScriptedServer(extensions=["AUTH PLAIN"], password="right")
    error = open_error(server, credentials=Credentials("agent1", "wrong-password"))
    assert str(error) == (
        "the SMTP server mail.example.test:587 refused the login of user agent1 with AUTH "
        "PLAIN (server said: 535 5.7.8 Error: authentication failed: bad credentials)"
    )
    assert error.auth_failed and not error.permanent
    assert "wrong-password" not in str(error)


def test_auth_not_offered_is_permanent() -> None:
    error = open_error(ScriptedServer(extensions=["SIZE 100"]), credentials=PASSWORD)
    assert error.permanent
    assert "does not offer AUTH" in str(error)


def test_no_usable_mechanism() -> None:
    error = open_error(ScriptedServer(extensions=["AUTH GSSAPI"]), credentials=PASSWORD)
    assert error.permanent
    assert "offers AUTH GSSAPI" in str(error)


def test_trace_redacts_auth_and_summarises_bodies(caplog: pytest.LogCaptureFixture) -> None:
    server = ScriptedServer(extensions=["AUTH PLAIN LOGIN", "DSN"])
    settings = ConnectionSettings(host="h", port=25, security="none", debug=True, helo_name="gw")
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    conn = connect(server, PASSWORD, settings=settings)
    conn.send(b"Subject: s\r\n\r\nbody text\r\n", "agent1@example.test", ["b@example.test"])
    trace = caplog.text
    assert "C: AUTH PLAIN <redacted>" in trace
    assert base64.b64encode(b"\0agent1\0secret").decode() not in trace
    assert "secret" not in trace
    assert "S: 235 2.7.0 Authentication successful" in trace
    assert "C: mail FROM:<agent1@example.test>" in trace
    assert "<message body: " in trace and "body text" not in trace
    assert "S: 250-fake.test" in trace  # multi-line replies traced line by line


def test_trace_redacts_login_continuations(caplog: pytest.LogCaptureFixture) -> None:
    server = ScriptedServer(extensions=["AUTH LOGIN"])
    settings = ConnectionSettings(host="h", port=25, security="none", debug=True, helo_name="gw")
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    connect(server, PASSWORD, settings=settings)
    assert "C: AUTH LOGIN" in caplog.text
    assert caplog.text.count("C: <redacted>") == 2
    assert base64.b64encode(b"secret").decode() not in caplog.text


def test_no_trace_without_enable_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    connect(ScriptedServer())
    assert caplog.text == ""


# --------------------------------------------------------------- transactions


def test_several_messages_on_one_connection() -> None:
    server = ScriptedServer()
    conn = connect(server)
    for n in range(3):
        conn.send(f"Subject: {n}\r\n\r\nx\r\n".encode(), "a@example.test", ["b@example.test"])
    assert [c.split(" ")[0] for c in server.commands].count("EHLO") == 1
    assert len(server.bodies) == 3 and conn.messages_sent == 3


@pytest.mark.parametrize("boundary", [8192, 16384, 32768, 65536])
def test_a_dot_line_at_a_chunk_boundary_is_stuffed(boundary: int) -> None:
    head = b"Subject: dots\r\n\r\n"
    filler = b"x" * 78 + b"\r\n"
    body = head
    while len(body) + len(filler) <= boundary:
        body += filler
    body += b"y" * (boundary - len(body) - 2) + b"\r\n"
    assert len(body) == boundary
    message = body + b".\r\nQUIT\r\n..\r\nlast\r\n"
    server = ScriptedServer()
    connect(server).send(message, "a@example.test", ["b@example.test"])
    sent = server.bodies[0]
    assert sent[boundary : boundary + 4] == b"..\r\n"
    assert b"\r\n...\r\n" in sent
    assert sent.replace(b"\r\n..", b"\r\n.") == message
    assert server.commands[-1] == "DATA"  # "QUIT" in the body was not a command


def test_bare_lf_message_goes_out_crlf() -> None:
    server = ScriptedServer()
    connect(server).send(b"Subject: lf\n\nline\n.\nend\n", "a@example.test", ["b@example.test"])
    assert server.bodies[0] == b"Subject: lf\r\n\r\nline\r\n..\r\nend\r\n"


def test_dsn_parameters_reach_mail_and_rcpt() -> None:
    server = ScriptedServer()
    connect(server).send(
        b"Subject: dsn\r\n\r\nx\r\n",
        "agent1@example.test",
        ["nobody@example.test"],
        ["RET=HDRS", "ENVID=abc"],
        ["NOTIFY=SUCCESS,FAILURE"],
    )
    mail = next(c for c in server.commands if c.startswith("MAIL"))
    rcpt = next(c for c in server.commands if c.startswith("RCPT"))
    assert mail == "MAIL FROM:<agent1@example.test> SIZE=19 RET=HDRS ENVID=abc"
    assert rcpt == "RCPT TO:<nobody@example.test> NOTIFY=SUCCESS,FAILURE"


def test_dsn_parameters_are_left_out_for_a_server_without_dsn() -> None:
    server = ScriptedServer(extensions=["SIZE 1000"])
    delivery = connect(server).send(
        b"x\r\n", "a@example.test", ["b@example.test"], ["RET=HDRS"], ["NOTIFY=NEVER"]
    )
    assert delivery.dropped == ("RET=HDRS", "NOTIFY=NEVER")
    assert "RET=" not in " ".join(server.commands) and "NOTIFY" not in " ".join(server.commands)


NOT_OWNED = (553, "5.7.1 <agent2@example.test>: Sender address rejected: not owned by user agent1")


@pytest.mark.parametrize("verb", ["MAIL", "RCPT"])  # Postfix delays it to RCPT by default
def test_send_as_refusal_says_so_plainly(verb: str) -> None:
    server = ScriptedServer(replies={verb: NOT_OWNED}, extensions=["AUTH PLAIN"])
    conn = connect(server, PASSWORD)
    error = send_error(conn, mail_from="agent2@example.test")
    assert str(error) == (
        "the server refused to let agent1 send as agent2@example.test: grant send-as rights or "
        "use the user's own address (server said: 553 5.7.1 <agent2@example.test>: Sender "
        "address rejected: not owned by user agent1)"
    )
    assert error.permanent and not error.broken
    assert server.commands[-1] == "RSET"


def test_exchange_send_as_denied_after_data() -> None:
    server = ScriptedServer(
        replies={
            "END": (554, "5.2.252 SendAsDenied; agent1@x.test not allowed to send as b@x.test")
        },
        extensions=["AUTH PLAIN"],
    )
    error = send_error(connect(server, PASSWORD), mail_from="b@x.test")
    assert str(error).startswith("the server refused to let agent1 send as b@x.test: grant")
    assert error.permanent


def test_other_sender_refusals() -> None:
    server = ScriptedServer(replies={"MAIL": (451, "4.3.0 try later")})
    conn = connect(server)
    error = send_error(conn)
    assert not error.permanent and not error.broken
    assert "refused the sender address <agent1@example.test>" in str(error)
    server.replies["MAIL"] = (530, "5.7.0 Authentication required")
    error = send_error(conn)
    assert not error.permanent and "enable-authentication: true" in str(error)


def test_some_recipients_refused_is_a_success_with_the_refusals() -> None:
    server = ScriptedServer(
        replies={"RCPT bad@example.test": (550, "5.1.1 <bad@example.test>: unknown")}
    )
    delivery = connect(server).send(
        b"x\r\n", "a@example.test", ["Good <good@example.test>", "bad@example.test"]
    )
    assert delivery.accepted == ["good@example.test"]
    assert delivery.refused == {"bad@example.test": "550 5.1.1 <bad@example.test>: unknown"}
    assert delivery.reply == "250 2.0.0 Ok: queued as FAKE1"


def test_every_recipient_refused() -> None:
    server = ScriptedServer(
        replies={
            "RCPT a@example.test": (550, "5.1.1 unknown"),
            "RCPT b@example.test": (550, "5.1.1 unknown"),
            "RCPT c@example.test": (450, "4.2.0 greylisted"),
        }
    )
    conn = connect(server)
    error = send_error(conn, rcpt_to=["a@example.test", "b@example.test"])
    assert error.permanent and not error.broken
    assert "refused every recipient: a@example.test (550 5.1.1 unknown)" in str(error)
    assert server.commands[-1] == "RSET"
    error = send_error(conn, rcpt_to=["a@example.test", "c@example.test"])
    assert not error.permanent  # one may come later
    assert "DATA" not in [c.upper() for c in server.commands]


def test_message_refused_after_data() -> None:
    server = ScriptedServer(replies={"END": (552, "5.3.4 Message too big")})
    error = send_error(connect(server))
    assert error.permanent and "refused the message (server said: 552 5.3.4" in str(error)
    server.replies["END"] = (451, "4.3.0 queue full")
    assert not send_error(connect(server)).permanent


def test_a_connection_lost_after_the_body_is_broken_temporary_and_may_be_delivered() -> None:
    server = ScriptedServer(hang_up_on={"END"})
    conn = connect(server)
    error = send_error(conn)
    assert error.broken and conn.broken and not error.permanent and not error.stale
    assert "broke during DATA" in str(error)
    assert "may have accepted it" in str(error)


def test_421_or_a_hang_up_at_mail_on_a_reused_connection_is_stale() -> None:
    server = ScriptedServer()
    conn = connect(server)
    conn.send(b"x\r\n", "a@example.test", ["b@example.test"])
    server.replies["MAIL"] = (421, "4.4.2 fake.test Error: timeout exceeded")
    error = send_error(conn)
    assert error.stale and error.broken and not error.permanent
    fresh = connect(ScriptedServer(hang_up_on={"MAIL"}))
    error = send_error(fresh)
    assert error.broken and not error.stale  # a new connection: a real problem


def test_protocol_timeout_is_temporary_and_names_the_option() -> None:
    server = ScriptedServer(stall_on={"RCPT"})
    error = send_error(connect(server))
    assert str(error) == (
        "the SMTP server mail.example.test:587 did not answer within 120 s "
        "(protocol-timeout) during RCPT TO"
    )
    assert error.broken and not error.permanent


def test_connect_timeout_is_temporary_and_names_the_option() -> None:
    class Unreachable(TracingSMTP):
        def _get_socket(self, host: str, port: int, timeout: float) -> Any:
            self.stage = "connect"
            raise TimeoutError("timed out")

    with pytest.raises(SMTPSendError) as info:
        SMTPConnection.open(SETTINGS, None, 1, client_factory=Unreachable)
    assert str(info.value) == (
        "timed out connecting to the SMTP server mail.example.test:587 after 30 s (connect-timeout)"
    )
    assert not info.value.permanent


def test_starttls_not_offered_is_permanent_and_nothing_is_sent_in_clear() -> None:
    settings = ConnectionSettings(host="mail.example.test", port=587, security="starttls")
    server = ScriptedServer(extensions=["AUTH PLAIN"])
    error = open_error(server, credentials=PASSWORD, settings=settings)
    assert error.permanent
    assert "does not offer STARTTLS" in str(error) and "clear text" in str(error)
    assert b"AUTH" not in written(server)


def test_greeting_refusal() -> None:
    error = open_error(ScriptedServer(greeting=(554, "5.3.2 no service for you")))
    assert "refused the connection (server said: 554 5.3.2 no service for you)" in str(error)


def test_noop_tells_a_live_connection_from_a_dead_one() -> None:
    server = ScriptedServer()
    conn = connect(server)
    assert conn.noop() is True
    server.hang_up_on.add("NOOP")
    assert conn.noop() is False and conn.broken


def test_close_quits_a_healthy_connection_only() -> None:
    server = ScriptedServer()
    conn = connect(server)
    conn.close()
    assert server.commands[-1] == "QUIT"
    server2 = ScriptedServer(hang_up_on={"END"})
    conn2 = connect(server2)
    send_error(conn2)
    conn2.close()
    assert "QUIT" not in server2.commands


def test_a_silent_server_hits_the_protocol_timeout_on_a_real_socket() -> None:
    """A real TCP listener that accepts (backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        settings = ConnectionSettings(
            host="127.0.0.1", port=port, security="none", protocol_timeout=0.3, helo_name="gw"
        )
        with pytest.raises(SMTPSendError) as info:
            SMTPConnection.open(settings, None, 1)
    assert str(info.value) == (
        f"the SMTP server 127.0.0.1:{port} did not answer within 0.3 s (protocol-timeout) "
        "during greeting"
    )
    assert not info.value.permanent


def test_nothing_listening_is_a_temporary_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        settings = ConnectionSettings(host="127.0.0.1", port=port, security="none")
        with pytest.raises(SMTPSendError) as info:
            SMTPConnection.open(settings, None, 1)
    assert str(info.value) == f"the SMTP server 127.0.0.1:{port} refused the connection"
    assert not info.value.permanent
