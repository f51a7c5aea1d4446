"""The mail test servers are real and set up as the driver tests expect.

Standard-library clients only (imaplib, poplib, smtplib, ssl): these tests
check the servers and the fixture, not postroom.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import poplib
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage, Message
from pathlib import Path

import pytest

from tests.integration.servers import SCRIPT, MailServers, make_message


def imap_starttls(servers: MailServers, user: str = "agent1") -> imaplib.IMAP4:
    imap = imaplib.IMAP4(servers.host, servers.ports["imap"], timeout=30)
    imap.starttls(ssl_context=servers.tls_context())
    imap.login(user, servers.users[user])
    return imap


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def reports(message: Message) -> list[Message]:
    """The per-recipient blocks of a message/delivery-status part."""
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            assert isinstance(payload, list)
            # payload[0] is the per-message block (Reporting-MTA, Arrival-Date...)
            return [block for block in payload[1:] if isinstance(block, Message)]
    raise AssertionError("no message/delivery-status part")


# --- TLS and logins -----------------------------------------------------------------


def test_imap_starttls_login_verifies_the_certificate(mail_servers: MailServers) -> None:
    imap = imaplib.IMAP4(mail_servers.host, mail_servers.ports["imap"], timeout=30)
    assert "STARTTLS" in imap.capabilities
    imap.starttls(ssl_context=mail_servers.tls_context())
    sock = imap.sock
    assert isinstance(sock, ssl.SSLSocket)
    assert sock.version() in ("TLSv1.2", "TLSv1.3")
    assert imap.login("agent1", mail_servers.users["agent1"])[0] == "OK"
    assert imap.select("INBOX")[0] == "OK"
    imap.logout()


def test_imaps_login(mail_servers: MailServers) -> None:
    imap = imaplib.IMAP4_SSL(
        mail_servers.host, mail_servers.ports["imaps"], ssl_context=mail_servers.tls_context()
    )
    # The full address logs in as the same user.
    assert imap.login("agent2@example.test", mail_servers.users["agent2"])[0] == "OK"
    imap.logout()


def test_pop3_stls_and_pop3s_logins(mail_servers: MailServers) -> None:
    pop = poplib.POP3(mail_servers.host, mail_servers.ports["pop3"], timeout=30)
    assert "STLS" in pop.capa()
    pop.stls(context=mail_servers.tls_context())
    pop.user("agent1")
    assert pop.pass_(mail_servers.users["agent1"]).startswith(b"+OK")
    pop.quit()

    pops = poplib.POP3_SSL(
        mail_servers.host, mail_servers.ports["pop3s"], context=mail_servers.tls_context()
    )
    pops.user("agent1")
    assert pops.pass_(mail_servers.users["agent1"]).startswith(b"+OK")
    pops.quit()


def test_notls_instance_does_not_offer_starttls(mail_servers: MailServers) -> None:
    imap = imaplib.IMAP4(mail_servers.host, mail_servers.ports["imap_notls"], timeout=30)
    assert "STARTTLS" not in imap.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):  # asking anyway is refused
        imap._simple_command("STARTTLS")
    imap.logout()

    pop = poplib.POP3(mail_servers.host, mail_servers.ports["pop3_notls"], timeout=30)
    assert "STLS" not in pop.capa()
    with pytest.raises(poplib.error_proto, match="-ERR"):
        pop._shortcmd("STLS")  # type: ignore[attr-defined]
    # Same users and mailboxes, in clear text (loopback only).
    pop.user("agent1")
    assert pop.pass_(mail_servers.users["agent1"]).startswith(b"+OK")
    pop.quit()


def test_badcert_instance_fails_verification(mail_servers: MailServers) -> None:
    host, ports, context = mail_servers.host, mail_servers.ports, mail_servers.tls_context()
    with pytest.raises(ssl.SSLCertVerificationError, match=r"self.signed certificate"):
        imaplib.IMAP4_SSL(host, ports["imaps_badcert"], ssl_context=context)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"self.signed certificate"):
        poplib.POP3_SSL(host, ports["pop3s_badcert"], context=context)
    # It is the certificate, not a dead port: without verification both answer.
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    for name, greeting in (("imaps_badcert", b"* OK"), ("pop3s_badcert", b"+OK")):
        with (
            socket.create_connection((host, ports[name]), timeout=30) as raw,
            unverified.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.recv(100).startswith(greeting)


def test_wrong_password_is_refused_quickly(mail_servers: MailServers) -> None:
    # Dovecot's 2 s auth_failure_delay and its growing per-IP "auth penalty"
    # are off; 2.3 still answers a failure on its next 0.5 s tick.
    quick = 1.5
    imap = imaplib.IMAP4_SSL(
        mail_servers.host, mail_servers.ports["imaps"], ssl_context=mail_servers.tls_context()
    )
    for _ in range(3):  # repeated failures would grow the penalty
        began = time.monotonic()
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login("agent1", "wrong")
        assert time.monotonic() - began < quick
    imap.logout()

    pop = poplib.POP3_SSL(
        mail_servers.host, mail_servers.ports["pop3s"], context=mail_servers.tls_context()
    )
    pop.user("agent1")
    began = time.monotonic()
    with pytest.raises(poplib.error_proto, match="AUTH"):
        pop.pass_("wrong")
    assert time.monotonic() - began < quick
    pop.close()

    with smtplib.SMTP(mail_servers.host, mail_servers.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=mail_servers.tls_context())
        smtp.ehlo()
        smtp.user, smtp.password = "agent1", "wrong"
        began = time.monotonic()
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.auth("PLAIN", smtp.auth_plain)
        assert refused.value.smtp_code == 535
        assert time.monotonic() - began < quick


def test_many_connections_from_one_address(mail_servers: MailServers) -> None:
    def login(_: int) -> str:
        imap = imap_starttls(mail_servers, "agent3")
        typ = imap.select("INBOX")[0]
        return typ

    with ThreadPoolExecutor(max_workers=40) as pool:
        sessions = list(pool.map(login, range(40)))  # Dovecot's default limit is 10
    assert sessions == ["OK"] * 40


# --- SMTP -----------------------------------------------------------------------------


def test_submission_requires_starttls_and_auth(mail_servers: MailServers) -> None:
    message = make_message(to="agent2@example.test")
    with smtplib.SMTP(mail_servers.host, mail_servers.ports["submission"], timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth")  # not before TLS
        with pytest.raises(smtplib.SMTPSenderRefused) as no_tls:
            smtp.sendmail("agent1@example.test", ["agent2@example.test"], message)
        assert no_tls.value.smtp_code == 530
    with smtplib.SMTP(mail_servers.host, mail_servers.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=mail_servers.tls_context())
        smtp.ehlo()
        assert smtp.has_extn("auth") and smtp.has_extn("dsn")
        with pytest.raises(smtplib.SMTPRecipientsRefused):  # no AUTH yet
            smtp.sendmail("agent1@example.test", ["agent2@example.test"], message)


def test_submission_delivers_to_another_agent(mail_servers: MailServers) -> None:
    mail_servers.clear("agent2")
    message = make_message(
        "submitted", body="Hi agent2.\r\n", sender="agent1@example.test", to="agent2@example.test"
    )
    for mechanism in ("PLAIN", "LOGIN"):
        with smtplib.SMTP(mail_servers.host, mail_servers.ports["submission"], timeout=30) as smtp:
            smtp.starttls(context=mail_servers.tls_context())
            smtp.ehlo()
            smtp.user, smtp.password = "agent1", mail_servers.users["agent1"]
            authenticator = getattr(smtp, f"auth_{mechanism.lower()}")
            assert smtp.auth(mechanism, authenticator)[0] == 235
            assert smtp.sendmail("agent1@example.test", ["agent2@example.test"], message) == {}
    mail_servers.wait_for_messages("agent2", 2)
    received = [parse(raw) for raw in mail_servers.messages("agent2")]
    assert [m["Subject"] for m in received] == ["submitted", "submitted"]
    assert received[0]["Delivered-To"] == "agent2@example.test"
    assert any("ESMTPSA" in str(h) for h in received[0].get_all("Received", []))


def test_sending_as_someone_else_is_refused(mail_servers: MailServers) -> None:
    message = make_message(sender="agent2@example.test", to="agent3@example.test")
    with smtplib.SMTP(mail_servers.host, mail_servers.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=mail_servers.tls_context())
        smtp.login("agent1", mail_servers.users["agent1"])
        for sender in ("agent2@example.test", "someone@shop.example"):
            with pytest.raises(
                (smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError)
            ) as refused:
                smtp.sendmail(sender, ["agent3@example.test"], message)
            text = str(refused.value)
            assert "553" in text and "not owned by user agent1" in text, text


def test_unknown_local_recipient_gives_a_real_dsn(mail_servers: MailServers) -> None:
    mail_servers.clear("agent1")
    message = make_message("to nobody", sender="agent1@example.test", to="nobody@example.test")
    mail_servers.submit(
        "agent1",
        ["nobody@example.test"],
        message,
        mail_options=["RET=HDRS", "ENVID=env-4711"],
        rcpt_options=["NOTIFY=SUCCESS,FAILURE"],
    )
    mail_servers.wait_for_messages("agent1", 1)
    dsn = parse(mail_servers.messages("agent1")[0])
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["Auto-Submitted"] == "auto-replied"
    (report,) = reports(dsn)
    assert report["Action"] == "failed"
    assert report["Status"] == "5.1.1"
    assert report["Final-Recipient"] == "rfc822; nobody@example.test"
    assert "env-4711" in dsn.as_string()  # Original-Envelope-Id


def test_success_notice_says_relayed(mail_servers: MailServers) -> None:
    mail_servers.clear("agent1", "agent2")
    message = make_message("notify me", sender="agent1@example.test", to="agent2@example.test")
    mail_servers.submit("agent1", ["agent2@example.test"], message, rcpt_options=["NOTIFY=SUCCESS"])
    mail_servers.wait_for_messages("agent2", 1)
    mail_servers.wait_for_messages("agent1", 1)
    notice = parse(mail_servers.messages("agent1")[0])
    assert notice.get_param("report-type") == "delivery-status"
    (report,) = reports(notice)
    # Dovecot's LMTP does not announce DSN, so Postfix reports "relayed".
    assert report["Action"] == "relayed"
    assert report["Status"].startswith("2.")


def test_mail_to_other_domains_stays_on_the_machine(mail_servers: MailServers) -> None:
    mail_servers.clear("outside", "agent1")
    message = make_message("reply", sender="agent1@example.test", to="customer@shop.example")
    mail_servers.submit("agent1", ["Customer@Shop.Example"], message)
    mail_servers.wait_for_messages("outside", 1)
    received = parse(mail_servers.messages("outside")[0])
    assert received["Subject"] == "reply"
    # The envelope recipient, in the address detail.
    assert received["Delivered-To"] == "outside+Customer=Shop.Example@example.test"
    assert mail_servers.message_count("agent1") == 0  # no DSN asked for, none made

    # The plain SMTP port takes mail for the test domain only.
    mail_servers.clear("agent4")
    mail_servers.inject("customer@shop.example", ["agent4@example.test"], make_message("in"))
    with pytest.raises(smtplib.SMTPRecipientsRefused, match="Relay access denied"):
        mail_servers.inject("customer@shop.example", ["x@other.example"], make_message("out"))
    mail_servers.wait_for_messages("agent4", 1)


# --- the fixture's helpers -----------------------------------------------------------------


def test_deliver_many_is_fast_ordered_and_exact(mail_servers: MailServers) -> None:
    mail_servers.clear("bulk1")
    messages = [make_message(f"bulk {n}", body=f"n={n}\r\n.\r\n..\r\n") for n in range(200)]
    began = time.monotonic()
    uids = mail_servers.deliver_many("bulk1", messages)
    elapsed = time.monotonic() - began
    assert elapsed < 5.0, f"200 messages took {elapsed:.2f}s"
    assert uids == list(range(uids[0], uids[0] + 200))
    assert mail_servers.message_count("bulk1") == 200
    assert mail_servers.messages("bulk1") == messages

    imap = imap_starttls(mail_servers, "bulk1")
    imap.select("INBOX", readonly=True)
    typ, data = imap.uid("FETCH", f"{uids[0]}:{uids[-1]}", "(BODY.PEEK[])")
    assert typ == "OK"
    fetched = [item[1] for item in data if isinstance(item, tuple)]
    assert fetched == messages  # byte for byte, CRLF, in delivery order
    imap.logout()


def test_flags_search_folders_and_clear(mail_servers: MailServers) -> None:
    mail_servers.clear("agent5")
    first, second = mail_servers.deliver_many(
        "agent5", [make_message("alpha"), make_message("beta")]
    )
    mail_servers.deliver("agent5", make_message("filed"), mailbox="Projects.Big")
    assert "Projects.Big" in mail_servers.mailboxes("agent5")

    imap = imap_starttls(mail_servers, "agent5")
    imap.select("INBOX")
    imap.uid("STORE", str(second), "+FLAGS", r"(\Seen \Flagged $Done)")
    imap.logout()
    flags = mail_servers.flags("agent5")
    assert flags[first] == frozenset()
    assert flags[second] == frozenset({"\\Seen", "\\Flagged", "$Done"})
    assert mail_servers.search("agent5", "SEEN") == [second]
    assert mail_servers.search("agent5", "SUBJECT alpha") == [first]

    pop = poplib.POP3_SSL(
        mail_servers.host, mail_servers.ports["pop3s"], context=mail_servers.tls_context()
    )
    pop.user("agent5")
    pop.pass_(mail_servers.users["agent5"])
    assert pop.stat()[0] == 2
    pop.quit()

    mail_servers.clear("agent5")
    assert mail_servers.message_count("agent5") == 0
    assert "Projects.Big" not in mail_servers.mailboxes("agent5")


def test_idle_client_hears_of_new_mail_at_once(mail_servers: MailServers) -> None:
    mail_servers.clear("agent6")
    imap = imap_starttls(mail_servers, "agent6")
    imap.select("INBOX")
    tag = imap._new_tag()
    imap.send(tag + b" IDLE\r\n")
    assert imap.readline().startswith(b"+")
    began = time.monotonic()
    mail_servers.deliver("agent6", make_message("wake up"))
    imap.sock.settimeout(5.0)  # the deadline for the server's notice
    line = imap.readline()
    assert line.strip() == b"* 1 EXISTS", line
    assert time.monotonic() - began < 3.0
    imap.send(b"DONE\r\n")
    while not imap.readline().startswith(tag):
        pass
    imap.logout()


def test_lmtp_delivery_adds_trace_headers(mail_servers: MailServers) -> None:
    mail_servers.clear("agent7")
    mail_servers.deliver_lmtp("agent7", [make_message("via lmtp")], sender="x@shop.example")
    received = parse(mail_servers.messages("agent7")[0])
    assert received["Return-Path"] == "<x@shop.example>"
    assert received["Delivered-To"] == "agent7@example.test"


# --- how they run ------------------------------------------------------------------------


def _listening_inodes() -> dict[str, tuple[str, int]]:
    """Socket inode -> (local address, port) of every listening TCP socket."""
    found = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A":  # LISTEN
                continue
            address, port = local.split(":")
            if width == 8:
                shown = socket.inet_ntoa(bytes.fromhex(address)[::-1])
            else:
                shown = "[" + address + "]"  # raw; anything IPv6 is wrong here anyway
            found[inode] = (shown, int(port, 16))
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _mail_daemons() -> list[int]:
    """Every running Dovecot or Postfix master on the machine, ours or not."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                exe = (entry / "exe").readlink().as_posix()
            except OSError:
                continue
            if exe in ("/usr/sbin/dovecot", "/usr/lib/postfix/sbin/master"):
                pids.append(int(entry.name))
    return pids


def test_every_listener_is_on_loopback_only(mail_servers: MailServers) -> None:
    listening = _listening_inodes()
    bound = []
    for pid in [*_mail_daemons(), mail_servers.state["pids"]["idp"]]:  # the IdP is Python
        bound += [listening[i] for i in _socket_inodes(pid) if i in listening]
    assert bound, "no listening socket found for Dovecot, Postfix or the IdP"
    assert {address for address, _ in bound} == {"127.0.0.1"}, bound
    ports = {port for _, port in bound}
    assert set(mail_servers.ports.values()) <= ports
    assert not ports & {25, 110, 143, 465, 587, 993, 995}  # the packages' daemons never ran


def test_start_again_reuses_the_running_servers(mail_servers: MailServers) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "start", "--json"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert b'"started": "' + mail_servers.state["started"].encode() in done.stdout
    status = subprocess.run(
        [sys.executable, str(SCRIPT), "status"], capture_output=True, check=False, timeout=120
    )
    assert status.returncode == 0, status.stdout.decode()
