"""The IMAP driver end to end: ``postroom run`` against the real Dovecot test servers.

Each test writes a site file, runs the gateway as a subprocess (the real
reactor, the real TLS, the real store) and then reads the SQLite store and the
mailboxes. The servers come from the ``mail_servers`` fixture
(tests/integration): when they cannot be started these tests fail, they never
skip.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from postroom.kernel import Kernel
from postroom.model import Interaction
from tests.integration import sites
from tests.integration.servers import MailServers, make_message
from tests.integration.sites import explain, free_port, http, running_gateway

POSTROOM = Path(sys.executable).with_name("postroom")
RUN_TIMEOUT = 300


class Site(sites.Site):
    """The integration tests' site, with the store's interactions as objects."""

    def interactions(self, mailbox: str | None = None) -> list[Interaction]:
        kernel = Kernel(self.path)
        store = kernel.store_driver
        store.open()
        try:
            return list(store.list_interactions(limit=100_000, mailbox=mailbox))
        finally:
            store.close()


@pytest.fixture
def site(tmp_path: Path, mail_servers: MailServers) -> Site:
    return Site(tmp_path, mail_servers)


def messages(user: str, n: int, servers: MailServers, tag: str = "m") -> list[bytes]:
    return [
        make_message(subject=f"{tag} {i}", to=servers.address(user), body=f"Body {i}.\r\n")
        for i in range(n)
    ]


# ------------------------------------------------------------------ after-processing


def test_starttls_delete_mode_empties_the_inbox(site: Site, mail_servers: MailServers) -> None:
    mail_servers.clear("agent1")
    mail_servers.deliver_many("agent1", messages("agent1", 3, mail_servers, "starttls"))
    site.mailbox("support", "agent1", port="imap", security="starttls")
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    found = site.interactions("support")
    assert sorted(i.subject for i in found) == ["starttls 0", "starttls 1", "starttls 2"]
    assert mail_servers.message_count("agent1") == 0
    # nothing left, nothing new: a second run finds nothing
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    assert len(site.interactions("support")) == 3


def test_imaps_seen_mode_flags_and_the_cursor_skips(site: Site, mail_servers: MailServers) -> None:
    mail_servers.clear("agent2")
    uids = mail_servers.deliver_many("agent2", messages("agent2", 3, mail_servers, "seen"))
    site.mailbox("sales", "agent2", port="imaps", security="ssl", after_processing="seen")
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    assert len(site.interactions("sales")) == 3
    flags = mail_servers.flags("agent2")
    assert set(flags) == set(uids)
    assert all("\\Seen" in f for f in flags.values())
    more = mail_servers.deliver_many("agent2", messages("agent2", 1, mail_servers, "later"))
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    subjects = sorted(i.subject for i in site.interactions("sales"))
    assert subjects == ["later 0", "seen 0", "seen 1", "seen 2"]  # no duplicates
    assert "\\Seen" in mail_servers.flags("agent2")[more[0]]


def test_move_mode_moves_to_the_folder(site: Site, mail_servers: MailServers) -> None:
    mail_servers.clear("agent3")
    mail_servers.deliver_many(
        "agent3", messages("agent3", 2, mail_servers, "move"), mailbox="Support.In"
    )
    site.mailbox(
        "moves", "agent3", folder_path="Support.In", after_processing="move",
        move_to_folder="Support.Done",
    )  # fmt: skip
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    assert len(site.interactions("moves")) == 2
    assert mail_servers.message_count("agent3", "Support.In") == 0
    assert mail_servers.message_count("agent3", "Support.Done") == 2


def test_another_clients_deleted_mark_is_left_alone(site: Site, mail_servers: MailServers) -> None:
    """UID EXPUNGE removes only what postroom processed (Dovecot offers UIDPLUS)."""
    mail_servers.clear("agent4")
    [theirs] = mail_servers.deliver_many("agent4", messages("agent4", 1, mail_servers, "theirs"))
    mail_servers.doveadm("flags", "add", "-u", "agent4", "\\Deleted", "mailbox", "INBOX",
                         "uid", str(theirs))  # fmt: skip
    mail_servers.deliver_many("agent4", messages("agent4", 2, mail_servers, "ours"))
    site.mailbox("ours", "agent4")
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    assert sorted(i.subject for i in site.interactions("ours")) == ["ours 0", "ours 1"]
    assert mail_servers.search("agent4") == [theirs]


# ------------------------------------------------------------- connection security


def test_none_on_the_plain_port_works_and_starttls_there_is_an_error(
    site: Site, mail_servers: MailServers
) -> None:
    mail_servers.clear("agent5", "agent6")
    mail_servers.deliver_many("agent5", messages("agent5", 2, mail_servers, "clear"))
    mail_servers.deliver_many("agent6", messages("agent6", 1, mail_servers, "never"))
    site.mailbox("plain", "agent5", port="imap_notls", security="none")
    site.mailbox("strict", "agent6", port="imap_notls", security="starttls")
    done = site.run_once()
    assert done.returncode == 1, explain(done)
    assert len(site.interactions("plain")) == 2
    assert mail_servers.message_count("agent5") == 0
    assert site.interactions("strict") == []
    assert mail_servers.message_count("agent6") == 1
    port = mail_servers.ports["imap_notls"]
    assert f"server 127.0.0.1:{port} does not offer STARTTLS" in done.stderr, explain(done)
    assert "mailbox strict" in done.stderr


def test_a_certificate_that_does_not_verify_is_a_clear_error(
    site: Site, mail_servers: MailServers
) -> None:
    mail_servers.clear("agent7")
    mail_servers.deliver_many("agent7", messages("agent7", 1, mail_servers, "badcert"))
    site.mailbox("badcert", "agent7", port="imaps_badcert", security="ssl")
    done = site.run_once()
    assert done.returncode == 1, explain(done)
    port = mail_servers.ports["imaps_badcert"]
    assert f"TLS with server 127.0.0.1:{port} failed: certificate does not verify" in done.stderr, (
        explain(done)
    )
    assert mail_servers.message_count("agent7") == 1
    assert site.interactions("badcert") == []


def test_wrong_password_on_one_of_three_mailboxes(site: Site, mail_servers: MailServers) -> None:
    mail_servers.clear("agent1", "agent2", "agent8")
    for user in ("agent1", "agent2", "agent8"):
        mail_servers.deliver_many(user, messages(user, 2, mail_servers, user))
    site.mailbox("one", "agent1")
    wrong = site.mailbox("two", "agent2", port="imaps", security="ssl")
    wrong["password"] = "not-the-password-42"
    site.mailbox("three", "agent8")
    done = site.run_once()
    assert done.returncode == 1, explain(done)
    assert len(site.interactions("one")) == 2
    assert len(site.interactions("three")) == 2
    assert site.interactions("two") == []
    port = mail_servers.ports["imaps"]
    assert f"login refused for mailbox two on server 127.0.0.1:{port}: " in done.stderr
    assert "not-the-password-42" not in done.stderr + done.stdout
    assert mail_servers.message_count("agent2") == 2


def test_unreachable_server_is_a_clear_error(site: Site, mail_servers: MailServers) -> None:
    closed = free_port()
    entry = site.mailbox("gone", "agent9")
    entry["port"] = closed
    done = site.run_once()
    assert done.returncode == 1, explain(done)
    assert f"mailbox gone: cannot connect to server 127.0.0.1:{closed}" in done.stderr, explain(
        done
    )
    assert "refused" in done.stderr.lower()


def test_debug_trace_redacts_the_password(site: Site, mail_servers: MailServers) -> None:
    mail_servers.clear("agent9")
    site.mailbox("traced", "agent9", port="imap_notls", security="none", enable_debug=True)
    site.sections["logging"] = {"level": "debug"}
    done = site.run_once("-vv")
    assert done.returncode == 0, explain(done)
    assert "traced C: 0001 " in done.stderr or "traced C: 0002 " in done.stderr, explain(done)
    assert "<redacted>" in done.stderr
    assert mail_servers.password("agent9") not in done.stderr


# ------------------------------------------------------------------------ volume


def test_six_thousand_messages_are_listed_and_fetched(
    site: Site, mail_servers: MailServers
) -> None:
    mail_servers.clear("bulk1")
    n = 6000
    tiny = [b"From: c@shop.example\r\nSubject: b%d\r\nMessage-ID: <b%d@t>\r\n\r\nx\r\n" % (i, i)
            for i in range(n)]  # fmt: skip
    mail_servers.deliver_many("bulk1", tiny)
    site.mailbox("bulk", "bulk1")
    began = time.monotonic()
    done = site.run_once("-v")
    took = time.monotonic() - began
    assert done.returncode == 0, explain(done)
    assert "6000 new message(s)" in done.stderr
    found = site.interactions("bulk")
    assert len(found) == n
    assert len({i.subject for i in found}) == n
    assert mail_servers.message_count("bulk1") == 0
    print(f"\n6,000 messages: {took:.1f} s through the gateway ({n / took:.0f} msg/s)")


def test_a_fifty_megabyte_message_is_stored_byte_identical(
    site: Site, mail_servers: MailServers
) -> None:
    mail_servers.clear("bulk2")
    line = b"A" * 76 + b"\r\n"
    body = line * (50 * 1024 * 1024 // len(line))
    big = (
        b"From: c@shop.example\r\nTo: bulk2@example.test\r\nSubject: big\r\n"
        b"Message-ID: <big@shop.example>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain\r\n\r\n" + body
    )
    assert len(big) > 50_000_000
    mail_servers.deliver("bulk2", big)
    site.mailbox("big", "bulk2", port="imaps", security="ssl")
    site.write()
    proc = subprocess.Popen(
        [str(POSTROOM), "run", "-c", str(site.path), "--once"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    # The child's own high-water mark (VmHWM: reset by exec, unlike the
    # ru_maxrss of wait4, which keeps the forking test process's size).
    peak_kb = 0
    deadline = time.monotonic() + RUN_TIMEOUT
    while proc.poll() is None:
        assert time.monotonic() < deadline, "postroom run --once did not finish"
        with contextlib.suppress(OSError, ValueError):
            status = Path(f"/proc/{proc.pid}/status").read_text()
            # a process that just exited (a zombie) has no VmHWM line any more
            hwm = next((ln for ln in status.splitlines() if ln.startswith("VmHWM:")), None)
            if hwm is not None:
                peak_kb = max(peak_kb, int(hwm.split()[1]))
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)  # paces the poll
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    assert proc.returncode == 0, output
    [stored] = site.interactions("big")
    raw = site.raw(stored.id)
    assert len(raw) == len(big)
    assert hashlib.sha256(raw).hexdigest() == hashlib.sha256(big).hexdigest()
    assert mail_servers.message_count("bulk2") == 0
    peak_mb = peak_kb / 1024
    # the gateway process alone: the message is over maximum-msg-size, so no worker parses it
    print(f"\n50 MB message: peak RSS of the gateway process {peak_mb:.0f} MB")
    assert peak_mb < 150, f"the gateway held the message in memory: peak RSS {peak_mb:.0f} MB"


# ------------------------------------------------------------------------ IDLE


def test_idle_brings_new_mail_without_polling(site: Site, mail_servers: MailServers) -> None:
    mail_servers.clear("agent6")
    site.mailbox("pushed", "agent6", poll_interval="01:00:00", enable_debug=True)
    log_path = site.dir / "gateway.log"
    with running_gateway(site, "pushed", "-vv") as running:

        def idling() -> bool:
            running()
            return "pushed S: + idling" in log_path.read_text(errors="replace")

        mail_servers.wait_for(idling, 30, "the gateway to enter IDLE")
        delivered = time.monotonic()
        mail_servers.deliver("agent6", make_message(subject="pushed", to="agent6@example.test"))

        def ingested() -> bool:
            running()
            _status, health = http(site.api_port, "/health")
            return bool(health["mailboxes"]["pushed"]["ingested"] >= 1)

        mail_servers.wait_for(ingested, 30, "the pushed message to become an interaction")
        latency = time.monotonic() - delivered
        print(f"\nIDLE: delivered to interaction in {latency:.2f} s (poll interval 1 h)")
        assert [i.subject for i in site.interactions("pushed")] == ["pushed"]
    text = log_path.read_text(errors="replace")
    assert "pushed C: DONE" in text and "LOGOUT" in text
    mail_servers.wait_for(lambda: mail_servers.message_count("agent6") == 0, 10, "an empty INBOX")
