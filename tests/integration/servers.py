"""The real mail servers of the integration tests, and helpers to drive them.

:func:`start_mail_servers` runs ``contrib/scripts/mail-test-servers start
--json`` (it installs the Debian packages when missing and starts Dovecot and
Postfix on 127.0.0.1, or reuses the ones already running for this port base)
and returns a :class:`MailServers`. When they cannot be started it raises
:class:`MailServersUnavailable` with the script's explanation: the tests then
fail, they never skip. The ``mail_servers`` fixture (session scope) wraps it;
see ``tests/integration/conftest.py``.

Ports come from ``POSTROOM_TEST_PORT_BASE`` (default 24000); the offsets, the
users and where the logs are: ``contrib/mail-servers/README.md``.

Mailbox helpers go through ``doveadm`` (as root) on the main Dovecot instance;
all three Dovecot instances share the same mailboxes. Mailboxes keep their
content between tests and runs of the same servers: a test that counts
messages starts with :meth:`MailServers.clear`.
"""

from __future__ import annotations

import email.utils
import grp
import json
import os
import pwd
import re
import smtplib
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "contrib" / "scripts" / "mail-test-servers"
START_TIMEOUT = 900  # seconds: the first start may install packages
_FETCH_RECORD = re.compile(rb"size\.physical: (\d+)\ntext:\n")
DEFAULT_MAILBOXES = frozenset({"INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive"})

T = TypeVar("T")


class MailServersUnavailable(RuntimeError):
    """The mail test servers could not be started (the message says why)."""


def start_mail_servers() -> MailServers:
    """Start (or reuse) the servers through the script; raise when that fails."""
    return MailServers(run_start_script(SCRIPT, MailServersUnavailable))


def run_start_script(script: Path, unavailable: type[Exception]) -> dict[str, Any]:
    """Run a test-server script's ``start --json`` (idempotent) and return the
    state it prints; *unavailable* carries why it failed (timeout, exit status
    with the script's stderr, no JSON)."""
    try:
        done = subprocess.run(
            [sys.executable, str(script), "start", "--json"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=START_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise unavailable(f"{script} start took over {START_TIMEOUT}s") from None
    if done.returncode != 0:
        raise unavailable(
            f"{script} start exited {done.returncode}:\n"
            + done.stderr.decode(errors="replace").strip()
        )
    try:
        state: dict[str, Any] = json.loads(done.stdout)
    except ValueError as exc:
        raise unavailable(f"{script} start printed no JSON state: {exc}") from None
    return state


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    what: str = "the condition",
) -> T:
    """Poll *predicate* until it returns something truthy, and return that.

    Raises AssertionError (a test failure) naming *what* after *timeout* seconds.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    pacer = threading.Event()  # never set: its wait() only paces the polling below
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        # Pacing a poll with a deadline, not timing: short, growing pauses
        # between checks of the real condition, never longer than what is left.
        pacer.wait(min(pause, remaining))
        pause = min(pause * 2, 0.1)


class MailServers:
    """What a test needs to talk to the servers, and helpers to set mailboxes up.

    Attributes: ``host`` ("127.0.0.1"), ``ports`` (name -> port: imap, imaps,
    pop3, pop3s, imap_notls, pop3_notls, imaps_badcert, pop3s_badcert,
    submission, smtp; the OAuth ones: tests/integration/oauth.py),
    ``ca_file`` (the run's CA, PEM), ``users`` (name ->
    password), ``domain`` ("example.test"), ``base`` (the port base),
    ``state_dir``, ``logs`` (name -> log file), ``lmtp_socket``, ``state``
    (the raw state.json).
    """

    #: the port :meth:`submit` uses
    _submission = "submission"

    def __init__(self, state: Mapping[str, Any]) -> None:
        self.state = dict(state)
        self.host: str = state["host"]
        self.base: int = int(state["base"])
        self.ports: dict[str, int] = {k: int(v) for k, v in state["ports"].items()}
        self.ca_file: str = state["ca_file"]
        self.users: dict[str, str] = dict(state["users"])
        self.domain: str = state["domain"]
        self.state_dir = Path(state["dir"])
        self.logs: dict[str, Path] = {k: Path(v) for k, v in state["logs"].items()}
        self.lmtp_socket: str = state["lmtp_socket"]
        self._doveconf: str = state["dovecot_config"]["main"]
        self._mail_ids = (
            pwd.getpwnam(state["mail_user"]).pw_uid,
            grp.getgrnam(state["mail_group"]).gr_gid,
        )
        self._sequence = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<MailServers {self.host} base {self.base} in {self.state_dir}>"

    # --- names ---------------------------------------------------------------------

    def address(self, user: str) -> str:
        """``user@example.test``."""
        return f"{user}@{self.domain}"

    def password(self, user: str) -> str:
        return self.users[user]

    def tls_context(self) -> ssl.SSLContext:
        """A client context that trusts the run's CA only (and checks host names)."""
        return ssl.create_default_context(cafile=self.ca_file)

    # --- putting mail in -----------------------------------------------------------

    def deliver(self, user: str, message: bytes, mailbox: str = "INBOX") -> int:
        """Store one message in *user*'s *mailbox*; returns its UID."""
        return self.deliver_many(user, [message], mailbox)[0]

    def deliver_many(
        self, user: str, messages: Iterable[bytes], mailbox: str = "INBOX"
    ) -> list[int]:
        """Store messages in *user*'s *mailbox* (made when missing), in order; their UIDs.

        Written straight into the Maildir the way an MDA does (tmp/, then a
        rename into new/), then Dovecot syncs the mailbox once and assigns the
        UIDs in the order given (file names sort by time, then microseconds):
        thousands of messages a second (10,000-20,000 on an idle machine, 2,000
        to 3,000 when the disk is busy; LMTP does ~300, `doveadm save` ~40).
        The bytes are stored as given, with CRLF made LF as Dovecot stores them
        (IMAP and POP3 serve CRLF); no header is added. IDLE clients see the new
        messages at once (inotify).
        """
        directory = self._maildir(user, mailbox)
        tmp_dir, new_dir = str(directory / "tmp"), str(directory / "new")
        uid, gid = self._mail_ids
        names = []
        with self._lock:
            now = int(time.time())
            for message in messages:
                data = bytes(message).replace(b"\r\n", b"\n")
                self._sequence += 1
                seq = self._sequence
                # <secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>,W=<size with CRLF>
                name = (
                    f"{now + seq // 1_000_000}.M{seq % 1_000_000}P{os.getpid()}Q{seq}"
                    f".postroom-test,S={len(data)},W={len(data) + data.count(10)}"
                )
                tmp = f"{tmp_dir}/{name}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    os.fchown(fd, uid, gid)
                    out.write(data)
                os.rename(tmp, f"{new_dir}/{name}")
                names.append(name)
        if not names:
            return []
        self.message_count(user, mailbox)  # Dovecot syncs: UIDs assigned now
        uids = _uidlist(directory)
        missing = [n for n in names if n not in uids]
        if missing:
            raise RuntimeError(f"Dovecot did not pick up {len(missing)} of {len(names)} messages")
        return [uids[n] for n in names]

    def deliver_lmtp(self, user: str, messages: Iterable[bytes], sender: str = "") -> None:
        """Deliver through Dovecot's LMTP (one connection; ~250-350 messages a second).

        The real delivery path (Sieve-less): Dovecot adds Return-Path,
        Delivered-To and Received headers. INBOX only.
        """
        lmtp = smtplib.LMTP(self.lmtp_socket)
        try:
            lmtp.ehlo("localhost")
            for message in messages:
                lmtp.sendmail(sender, [self.address(user)], message)
        finally:
            lmtp.quit()

    def inject(
        self,
        sender: str,
        recipients: Sequence[str],
        message: bytes,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> None:
        """Send as an outside sender through Postfix's plain SMTP port (no AUTH).

        Only recipients in the test domain are accepted; delivery is asynchronous
        (wait with :meth:`wait_for_messages`).
        """
        with smtplib.SMTP(self.host, self.ports["smtp"], timeout=30) as smtp:
            smtp.sendmail(sender, list(recipients), message, list(mail_options), list(rcpt_options))

    def submit(
        self,
        user: str,
        recipients: Sequence[str],
        message: bytes,
        sender: str | None = None,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> None:
        """Send as *user* through submission (STARTTLS verified, AUTH PLAIN).

        *sender* (envelope) defaults to the user's address. Mail to other domains
        lands in the mailbox of the user "outside". Asynchronous delivery.
        """
        with smtplib.SMTP(self.host, self.ports[self._submission], timeout=30) as smtp:
            smtp.starttls(context=self.tls_context())
            smtp.login(user, self.users[user])
            smtp.sendmail(
                sender if sender is not None else self.address(user),
                list(recipients),
                message,
                list(mail_options),
                list(rcpt_options),
            )

    # --- looking at mailboxes ------------------------------------------------------

    def message_count(self, user: str, mailbox: str = "INBOX") -> int:
        out = self.doveadm("mailbox", "status", "-u", user, "messages", mailbox).decode()
        match = re.search(r"messages=(\d+)", out)
        if not match:
            raise RuntimeError(f"doveadm mailbox status said {out!r}")
        return int(match.group(1))

    def mailboxes(self, user: str) -> list[str]:
        return self.doveadm("mailbox", "list", "-u", user).decode().splitlines()

    def search(self, user: str, query: str = "ALL", mailbox: str = "INBOX") -> list[int]:
        """UIDs matching a doveadm search query, e.g. "SEEN", "SUBJECT hello", "ALL"."""
        out = self.doveadm("search", "-u", user, "mailbox", mailbox, *query.split()).decode()
        return sorted(int(line.split()[1]) for line in out.splitlines() if line.strip())

    def flags(self, user: str, mailbox: str = "INBOX") -> dict[int, frozenset[str]]:
        """UID -> flags and keywords (without the session flag \\Recent)."""
        out = self.doveadm(
            "-f", "tab", "fetch", "-u", user, "uid flags", "mailbox", mailbox, "all"
        ).decode()
        result = {}
        for line in out.splitlines()[1:]:
            uid, _, flags = line.partition("\t")
            result[int(uid)] = frozenset(f for f in flags.split() if f != "\\Recent")
        return result

    def messages(self, user: str, mailbox: str = "INBOX", crlf: bool = True) -> list[bytes]:
        """Every message of *mailbox* in UID order, as IMAP serves them (CRLF).

        ``crlf=False``: as stored (LF line ends).
        """
        out = self.doveadm("fetch", "-u", user, "size.physical text", "mailbox", mailbox, "all")
        found = []
        pos = 0
        while pos < len(out):
            # "size.physical: N\ntext:\n", N bytes, "\n" when they did not end
            # with one, and "\f\n" between records
            match = _FETCH_RECORD.match(out, pos)
            if not match:
                raise RuntimeError(
                    f"unexpected doveadm fetch output at {pos}: {out[pos : pos + 80]!r}"
                )
            size = int(match.group(1))
            body = out[match.end() : match.end() + size]
            found.append(re.sub(rb"(?<!\r)\n", b"\r\n", body) if crlf else body)
            pos = match.end() + size
            if not body.endswith(b"\n") and out.startswith(b"\n", pos):
                pos += 1
            if out.startswith(b"\f\n", pos):
                pos += 2
        return found

    def wait_for(
        self, predicate: Callable[[], T | None], timeout: float = 10.0, what: str = "the condition"
    ) -> T:
        """See the module function :func:`wait_for`."""
        return wait_for(predicate, timeout, what)

    def wait_for_messages(
        self, user: str, count: int = 1, mailbox: str = "INBOX", timeout: float = 20.0
    ) -> int:
        """Wait until *mailbox* holds at least *count* messages; returns how many."""

        def enough() -> int | None:
            n = self.message_count(user, mailbox)
            return n if n >= count else None

        return wait_for(enough, timeout, f"{count} message(s) in {user}'s {mailbox}")

    # --- cleaning up ---------------------------------------------------------------

    def clear(self, *users: str) -> None:
        """Expunge every message of every mailbox, and delete the mailboxes a test made.

        No argument: every user. INBOX, Drafts, Sent, Trash, Junk and Archive stay.
        """
        for selection in [["-A"]] if not users else [["-u", u] for u in users]:
            self.doveadm("expunge", *selection, "mailbox", "*", "all")
            rows = self.doveadm("-f", "tab", "mailbox", "list", *selection).decode()
            extra: dict[str, list[str]] = {}
            for row in rows.splitlines()[1:]:  # the first row names the columns
                columns = row.split("\t")
                user, name = columns if selection == ["-A"] else (selection[1], columns[0])
                if name not in DEFAULT_MAILBOXES:
                    extra.setdefault(user, []).append(name)
            for user, names in extra.items():
                # Children ("A.B") before their parents ("A"); a parent that only
                # existed through its children is gone with them.
                for name in sorted(names, reverse=True):
                    try:
                        self.doveadm("mailbox", "delete", "-s", "-u", user, name)
                    except RuntimeError as exc:
                        if "doesn't exist" not in str(exc):
                            raise

    # --- plumbing --------------------------------------------------------------------

    def doveadm(self, *args: str, input: bytes | None = None) -> bytes:
        """Run ``doveadm -c <main instance config> ARGS`` as root; its stdout."""
        argv = ["doveadm", "-c", self._doveconf, *args]
        done = subprocess.run(argv, input=input, capture_output=True, check=False, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {done.returncode}: "
                + done.stderr.decode(errors="replace").strip()
            )
        return done.stdout

    def _maildir(self, user: str, mailbox: str) -> Path:
        if user not in self.users:
            raise KeyError(f"no test user {user!r} (known: {', '.join(self.users)})")
        if mailbox.upper() != "INBOX":
            try:
                self.doveadm("mailbox", "create", "-u", user, mailbox)
            except RuntimeError as exc:
                if "already exists" not in str(exc):
                    raise
        path = Path(self.doveadm("mailbox", "path", "-u", user, mailbox).decode().strip())
        uid, gid = self._mail_ids
        for part in (path, path / "tmp", path / "new", path / "cur"):
            if not part.is_dir():
                part.mkdir(mode=0o700)
                os.chown(part, uid, gid)
        return path


def _uidlist(directory: Path) -> dict[str, int]:
    """Maildir base file name -> UID, from Dovecot's dovecot-uidlist."""
    uids = {}
    lines = (directory / "dovecot-uidlist").read_text(errors="replace").splitlines()
    for line in lines[1:]:  # the first line is the header
        head, sep, name = line.partition(":")
        if sep and head.split() and head.split()[0].isdigit():
            uids[name.partition(":")[0]] = int(head.split()[0])
    return uids


def make_message(
    subject: str = "test",
    body: str = "Hello.\r\n",
    sender: str = "customer@shop.example",
    to: str = "agent1@example.test",
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """A small, valid RFC 5322 message (CRLF line ends) for seeding mailboxes."""
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(localtime=False)}",
        f"Message-ID: {email.utils.make_msgid(domain='test.postroom')}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
