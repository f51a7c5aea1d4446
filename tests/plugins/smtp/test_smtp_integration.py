"""The ``smtp`` sender against real Postfix (submission, Dovecot SASL) and Dovecot.

Each test runs ``drive_sender.py`` in a subprocess (a real reactor and the
kernel's thread pool; see its docstring) with a site configuration built from
the ``mail_servers`` fixture, then reads what arrived over IMAP (STARTTLS,
verified against the run's CA). Mailboxes are shared with other tests and keep
their content, so every message is found by its own Message-ID rather than by
counting.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import json
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from tests.integration.servers import MailServers

DRIVER = Path(__file__).with_name("drive_sender.py")
ROOT = Path(__file__).resolve().parents[3]
POSTROOM = Path(sys.executable).with_name("postroom")
#: the headers Postfix and Dovecot put on top of a delivered message
TRACE_HEADERS = (b"return-path", b"received", b"delivered-to")
BOUNDARIES = (8192, 16384, 32768, 65536)


# ------------------------------------------------------------------- helpers


def smtp_section(
    servers: MailServers,
    *,
    user: str | None = "agent1",
    password: str | None = None,
    port: str = "submission",
    ca_file: bool = True,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    section = {
        "server-type": "smtp",
        "server": servers.host,
        "port": str(servers.ports[port]),
        "smtp-connection-security": "starttls",
        "connect-timeout": "00:00:10",
        "protocol-timeout": "00:00:30",
    }
    if ca_file:
        section["ca-file"] = servers.ca_file
    if user is not None:
        section["enable-authentication"] = "true"
        section["user"] = user
        section["password"] = password if password is not None else servers.users[user]
    section.update(extra or {})
    return section


def drive(
    section: dict[str, str], sends: list[dict[str, Any]], concurrent: bool = False
) -> tuple[dict[str, Any], str]:
    """Run the sender in a subprocess; its JSON answer and its stderr (the trace)."""
    job = {
        "config": {"tenant-id": 1, "store": {"driver": "memory"}, "smtp-client": section},
        "sends": sends,
        "concurrent": concurrent,
    }
    with tempfile.TemporaryDirectory(prefix="postroom-smtp-test-") as tmp:
        job_file = Path(tmp) / "job.json"  # holds a test password: never in the checkout
        job_file.write_text(json.dumps(job), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, str(DRIVER), str(job_file)],
            capture_output=True,
            timeout=180,
            check=False,
            cwd=ROOT,
        )
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 0, f"drive_sender failed ({done.returncode}):\n{stderr[-4000:]}"
    return json.loads(done.stdout), stderr


def a_send(
    message: bytes,
    mail_from: str,
    rcpt_to: list[str],
    mail_options: list[str] | None = None,
    rcpt_options: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "message": base64.b64encode(message).decode(),
        "mail_from": mail_from,
        "rcpt_to": rcpt_to,
        "mail_options": mail_options or [],
        "rcpt_options": rcpt_options or [],
        "message_id": message_id_of(message),
    }


def message_id_of(message: bytes) -> str:
    match = re.search(rb"^Message-ID: (<[^>]+>)", message, re.MULTILINE | re.IGNORECASE)
    return match.group(1).decode() if match else ""


def new_message_id() -> str:
    return f"<{uuid.uuid4().hex}@postroom-smtp.test>"  # always the same length


def headers(servers: MailServers, message_id: str, to: str, subject: str, sender: str) -> bytes:
    return (
        f"From: {sender}\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        "Date: Fri, 28 Nov 2025 10:00:00 +0000\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
    ).encode()


def dotted_message(servers: MailServers, message_id: str) -> bytes:
    """A CRLF message with a line ``.`` starting exactly at each of BOUNDARIES, and
    ``..``, ``...``, ``.x`` lines, a ``QUIT`` line and a final ``.`` line."""
    out = headers(
        servers,
        message_id,
        servers.address("agent2"),
        "dots at chunk boundaries",
        servers.address("agent1"),
    )
    n = 0
    for boundary in BOUNDARIES:
        while len(out) + 80 <= boundary - 80:
            n += 1
            out += f"line {n:06d} ".encode() + b"x" * 66 + b"\r\n"
        pad = boundary - len(out) - 2
        assert pad >= 1
        out += b"y" * pad + b"\r\n"
        assert len(out) == boundary
        out += b".\r\n"
    out += b"..\r\n...\r\n.x\r\nQUIT\r\n. \r\nlast line\r\n.\r\n"
    return out


def served(
    servers: MailServers, user: str, message_id: str, *, header: bool = True
) -> bytes | None:
    """The newest message of *user*'s INBOX with *message_id* in its Message-ID
    header (or, ``header=False``, anywhere in its text), as IMAP serves it; or None."""
    imap = imaplib.IMAP4(servers.host, servers.ports["imap"], timeout=30)
    try:
        imap.starttls(ssl_context=servers.tls_context())
        imap.login(user, servers.users[user])
        imap.select("INBOX", readonly=True)
        criteria = ("HEADER", "Message-ID", message_id) if header else ("TEXT", message_id)
        typ, data = imap.uid("SEARCH", *criteria)
        uids = data[0].split() if typ == "OK" and data and data[0] else []
        if not uids:
            return None
        typ, fetched = imap.uid("FETCH", uids[-1], "(BODY.PEEK[])")
        for item in fetched:
            if isinstance(item, tuple):
                return bytes(item[1])
        return None
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            imap.logout()


def wait_served(servers: MailServers, user: str, message_id: str) -> bytes:
    return servers.wait_for(
        lambda: served(servers, user, message_id), 30, f"{message_id} in {user}'s INBOX"
    )


def strip_trace_headers(message: bytes) -> bytes:
    """*message* without the Return-Path, Received and Delivered-To fields the
    servers put on top (each with its continuation lines), and nothing else."""
    pos = 0
    while True:
        end = message.index(b"\r\n", pos)
        name = message[pos:end].split(b":", 1)[0].strip().lower()
        if name not in TRACE_HEADERS:
            return message[pos:]
        pos = end + 2
        while message[pos : pos + 1] in (b" ", b"\t"):  # folded continuation
            pos = message.index(b"\r\n", pos) + 2


def queue_id(result: dict[str, Any]) -> str:
    match = re.search(r"queued as (\w+)", result["detail"])
    assert match, result
    return match.group(1)


def smtpd_session(servers: MailServers, queue_ids: list[str]) -> str:
    """The ``disconnect from`` line of the one smtpd session that took *queue_ids*."""
    log = servers.logs["postfix"].read_text(errors="replace").splitlines()
    pids = set()
    last = 0
    for i, line in enumerate(log):
        for qid in queue_ids:
            if f": {qid}: client=" in line:
                match = re.search(r"smtpd\[(\d+)\]", line)
                assert match, line
                pids.add(match.group(1))
                last = max(last, i)
    assert len(pids) == 1, f"queue ids {queue_ids} came through smtpd processes {pids}"
    pid = pids.pop()
    for line in log[last:]:
        if f"smtpd[{pid}]: disconnect from" in line:
            return line
    return ""


# --------------------------------------------------------------------- tests


def test_messages_arrive_byte_for_byte_over_one_connection(mail_servers: MailServers) -> None:
    ms = mail_servers
    agent1, agent2 = ms.address("agent1"), ms.address("agent2")
    crlf = dotted_message(ms, new_message_id())
    bare_lf = dotted_message(ms, new_message_id())
    utf8 = headers(ms, new_message_id(), agent2, "8-bit body", agent1) + (
        "Grüße aus Köln\r\n..\r\n.\r\nçà et là\r\n".encode()
    )
    for message in (crlf, bare_lf):
        assert all(message[b : b + 3] == b".\r\n" for b in BOUNDARIES)
    sends = [
        a_send(crlf, agent1, [agent2]),
        a_send(bare_lf.replace(b"\r\n", b"\n"), agent1, [agent2]),  # sent with bare LFs
        a_send(utf8, agent1, [agent2]),
    ]
    answer, trace = drive(smtp_section(ms, extra={"enable-debug": "true"}), sends)

    assert [r["ok"] for r in answer["results"]] == [True, True, True], answer
    assert answer["stats"]["opened"] == 1 and answer["messages_sent"] == 3
    for expected in (crlf, bare_lf, utf8):  # the bare-LF one arrives as CRLF
        delivered = wait_served(ms, "agent2", message_id_of(expected))
        assert strip_trace_headers(delivered) == expected
    # Postfix saw one session with three transactions
    session = ms.wait_for(
        lambda: smtpd_session(ms, [queue_id(r) for r in answer["results"]]),
        10,
        "the smtpd disconnect line",
    )
    assert " mail=3 " in session and " data=3 " in session and " quit=1 " in session, session
    # the trace went through the Tracer, AUTH redacted, bodies summarised
    assert "C: STARTTLS" in trace and "C: AUTH PLAIN <redacted>" in trace
    assert "S: 235 2.7.0 Authentication successful" in trace
    secret = ms.users["agent1"]
    assert secret not in trace
    assert base64.b64encode(f"\0agent1\0{secret}".encode()).decode() not in trace
    assert "<message body: " in trace and "line 000001" not in trace
    assert "BODY=8BITMIME" in trace  # declared for the 8-bit message


def test_send_as_another_user_is_refused_plainly(mail_servers: MailServers) -> None:
    ms = mail_servers
    message = headers(ms, new_message_id(), ms.address("agent3"), "send-as", ms.address("agent2"))
    answer, _trace = drive(
        smtp_section(ms),
        [a_send(message + b"hi\r\n", ms.address("agent2"), [ms.address("agent3")])],
    )
    result = answer["results"][0]
    assert not result["ok"] and result["permanent"]
    assert result["error"].startswith(
        "the server refused to let agent1 send as agent2@example.test: grant send-as rights or "
        "use the user's own address (server said: 553 5.7.1 <agent2@example.test>: Sender "
        "address rejected: not owned by user agent1"
    ), result["error"]


def test_a_wrong_password_is_a_clear_temporary_error(mail_servers: MailServers) -> None:
    ms = mail_servers
    message = headers(ms, new_message_id(), ms.address("agent2"), "x", ms.address("agent1"))
    answer, trace = drive(
        smtp_section(ms, password="not-the-password"),
        [a_send(message + b"x\r\n", ms.address("agent1"), [ms.address("agent2")])],
    )
    result = answer["results"][0]
    assert not result["ok"] and not result["permanent"]
    assert result["error"].startswith(
        f"the SMTP server {ms.host}:{ms.ports['submission']} refused the login of user agent1 "
        "with AUTH PLAIN (server said: 535 5.7.8"
    ), result["error"]
    assert "not-the-password" not in result["error"] and "not-the-password" not in trace
    assert answer["stats"]["open_failures"] == 1


def test_the_certificate_is_verified(mail_servers: MailServers) -> None:
    """Without the run's CA (system CAs only) STARTTLS must fail, never go on."""
    ms = mail_servers
    message = headers(ms, new_message_id(), ms.address("agent2"), "x", ms.address("agent1"))
    answer, _trace = drive(
        smtp_section(ms, ca_file=False),
        [a_send(message + b"x\r\n", ms.address("agent1"), [ms.address("agent2")])],
    )
    result = answer["results"][0]
    assert not result["ok"] and not result["permanent"]
    assert "could not be verified" in result["error"] and "set ca-file" in result["error"]
    assert served(ms, "agent2", message_id_of(message)) is None


def test_starttls_without_authentication_on_the_plain_smtp_port(mail_servers: MailServers) -> None:
    ms = mail_servers
    customer = "customer@shop.example"
    message = headers(ms, new_message_id(), ms.address("agent2"), "no auth", customer)
    message += b"From the outside, over STARTTLS.\r\n"
    answer, trace = drive(
        smtp_section(ms, user=None, port="smtp", extra={"enable-debug": "true"}),
        [a_send(message, customer, [ms.address("agent2")])],
    )
    assert answer["results"][0]["ok"], answer
    assert "C: STARTTLS" in trace and "AUTH" not in trace
    delivered = wait_served(ms, "agent2", message_id_of(message))
    assert strip_trace_headers(delivered) == message
    assert b"(using TLS" in delivered  # Postfix's Received header: the session was encrypted


def test_dsn_options_produce_a_real_bounce_with_the_envelope_id(mail_servers: MailServers) -> None:
    ms = mail_servers
    message_id = new_message_id()
    message = headers(ms, message_id, "nobody@example.test", "to nobody", ms.address("agent1"))
    answer, _trace = drive(
        smtp_section(ms),
        [
            a_send(
                message + b"Nobody reads this.\r\n",
                ms.address("agent1"),
                ["nobody@example.test"],
                mail_options=["RET=HDRS", "ENVID=abc"],
                rcpt_options=["NOTIFY=SUCCESS,FAILURE"],
            )
        ],
    )
    assert answer["results"][0]["ok"], answer  # accepted at RCPT, bounced later

    def bounce() -> bytes | None:
        report = served(ms, "agent1", message_id, header=False)  # our headers are returned
        return report if report and b"Original-Envelope-Id: abc" in report else None

    report = ms.wait_for(bounce, 30, "the DSN for nobody@example.test in agent1's INBOX")
    assert b"multipart/report" in report and b"report-type=delivery-status" in report
    assert b"Final-Recipient: rfc822; nobody@example.test" in report
    assert b"Action: failed" in report
    assert b"text/rfc822-headers" in report  # RET=HDRS: headers only


def test_the_pool_limits_concurrent_connections(mail_servers: MailServers) -> None:
    ms = mail_servers
    messages = [
        headers(ms, new_message_id(), ms.address("agent2"), f"pool {n}", ms.address("agent1"))
        + f"message {n}\r\n".encode()
        for n in range(5)
    ]
    answer, _trace = drive(
        smtp_section(ms, extra={"cnx-pool-size": "2"}),
        [a_send(m, ms.address("agent1"), [ms.address("agent2")]) for m in messages],
        concurrent=True,
    )
    assert all(r["ok"] for r in answer["results"]), answer
    stats = answer["stats"]
    assert stats["opened"] == 2, stats
    assert stats["waited"] == 3 and stats["reused"] == 3, stats
    for m in messages:
        assert strip_trace_headers(wait_served(ms, "agent2", message_id_of(m))) == m


def test_end_to_end_through_the_outbox(mail_servers: MailServers, tmp_path: Path) -> None:
    """``postroom send``: the kernel's outbox builds the message and calls the driver."""
    ms = mail_servers
    config = {
        "tenant-id": 1,
        "store": {"driver": "sqlite", "path": str(tmp_path / "postroom.db")},
        "email-processing": {"default-domain": "example.test"},
        "smtp-client": smtp_section(ms),
    }
    config_file = tmp_path / "postroom.yaml"
    config_file.write_text(json.dumps(config), encoding="utf-8")
    text = "Line one.\n.\n..\nThe end.\n"
    done = subprocess.run(
        [str(POSTROOM), "send", "-c", str(config_file), "--from", ms.address("agent1"),
         "--to", ms.address("agent2"), "--subject", "through the outbox", "--text", text,
         "--now"],
        capture_output=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode(errors="replace")
    _id, message_id, status = out.split()
    assert status == "Sent"
    delivered = wait_served(ms, "agent2", message_id)
    head, _, body = strip_trace_headers(delivered).partition(b"\r\n\r\n")
    assert b"Subject: through the outbox" in head
    assert body == b"Line one.\r\n.\r\n..\r\nThe end.\r\n"


def test_implicit_tls_on_the_starttls_port_says_what_to_change(mail_servers: MailServers) -> None:
    """`ssl` is the kernel's default security; on port 587 it meets plain SMTP."""
    ms = mail_servers
    message = headers(ms, new_message_id(), ms.address("agent2"), "x", ms.address("agent1"))
    answer, _trace = drive(
        smtp_section(ms, extra={"smtp-connection-security": "ssl"}),
        [a_send(message + b"x\r\n", ms.address("agent1"), [ms.address("agent2")])],
    )
    result = answer["results"][0]
    assert not result["ok"] and not result["permanent"]
    assert "WRONG_VERSION_NUMBER" in result["error"]
    assert "use smtp-connection-security: starttls" in result["error"]
