"""A server that drops the connection in the middle of a FETCH.

Real Dovecot (its clear-text instance, ``imap_notls``) behind :class:`CuttingProxy`,
a small TCP proxy in this module that forwards both ways and, when the server's
answer holds a ``FETCH`` response with a ``BODY[]`` literal it is told to cut,
forwards the response line and half of the literal, then closes both sockets:
to postroom it is the server dropping the connection mid-message.

- A cut once: the broken mailbox fails with a clear error naming the server,
  the other mailbox of the run is not disturbed, and the next run takes every
  message of the broken one, each exactly once.
- A cut on every fetch of one message (found by its size, unique in the
  mailbox): after ``gateway.max-attempts`` runs it is in quarantine, and the
  rest of the mailbox flows again.
- A cut after postroom flagged its processed messages \\Deleted and before its
  ``UID EXPUNGE`` (the proxy swallows that command and closes): the next run
  must still leave the mailbox empty.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.integration.servers import MailServers, make_message
from tests.integration.sites import Site, explain

#: a FETCH response line that introduces the message's bytes, e.g.
#: ``* 3 FETCH (UID 7 BODY[]<0> {312}`` (only the line, without its literal)
FETCH_LITERAL = re.compile(rb"\* \d+ FETCH \([^\r\n]*BODY\[\](?:<\d+>)? \{(\d+)\}\r\n")


@dataclass
class _Way:
    """One direction of a proxied connection."""

    source: socket.socket
    sink: socket.socket
    to_client: bool
    #: the bytes after the last line end seen (a line that recv cut in two)
    tail: bytes = b""
    pair: list[socket.socket] = field(default_factory=list)


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of *upstream* that drops connections mid-FETCH.

    It cuts a connection when the server sends a ``BODY[]`` literal of a
    message of *size* bytes (any size when None); or, given a *command*
    (e.g. ``b"UID EXPUNGE"``), when the client sends that command, which is
    not forwarded. At most *times* times (no limit when None). ``cuts`` lists
    the sizes of the literals cut (or the command lines), ``connections``
    counts the connections accepted. One thread with a selector; use it as a
    context manager.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        size: int | None = None,
        command: bytes | None = None,
        times: int | None = None,
    ) -> None:
        self.upstream = upstream
        self.size = size
        self.command = (
            re.compile(rb"^[^ \r\n]+ " + re.escape(command) + rb"\b[^\r\n]*\r\n", re.MULTILINE)
            if command is not None
            else None
        )
        self.times = times
        self.cuts: list[int | bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="cutting-proxy", daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for key in list(self._selector.get_map().values()):
            if isinstance(key.fileobj, socket.socket):
                key.fileobj.close()
        self._selector.close()

    # --- the loop ----------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _events in self._selector.select(timeout=0.05):
                if key.data is None:
                    self._accept()
                else:
                    self._pump(key.data)

    def _accept(self) -> None:
        try:
            client, _addr = self._listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        client.settimeout(10)
        self.connections += 1
        pair = [client, server]
        self._selector.register(
            client, selectors.EVENT_READ, _Way(client, server, False, pair=pair)
        )
        self._selector.register(server, selectors.EVENT_READ, _Way(server, client, True, pair=pair))

    def _pump(self, way: _Way) -> None:
        try:
            data = way.source.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._close(way.pair)
            return
        data, cut = self._inspect(way, data)
        try:
            way.sink.sendall(data)
        except OSError:
            self._close(way.pair)
            return
        if cut is not None:
            self.cuts.append(cut)
            self._close(way.pair)

    def _inspect(self, way: _Way, data: bytes) -> tuple[bytes, int | bytes | None]:
        """What to forward of *data*, and what was cut (None: nothing, go on)."""
        window = way.tail + data
        if self.times is None or len(self.cuts) < self.times:
            if self.command is not None and not way.to_client:
                match = self.command.search(window)
                if match:
                    return data[: max(0, match.start() - len(way.tail))], match.group(0)
            elif self.command is None and way.to_client:
                for match in FETCH_LITERAL.finditer(window):
                    size = int(match.group(1))
                    if self.size is None or size == self.size:
                        keep = match.end() - len(way.tail) + size // 2
                        return data[:keep], size
        way.tail = window[window.rfind(b"\n") + 1 :][-4096:]
        return data, None

    def _close(self, pair: list[socket.socket]) -> None:
        for sock in pair:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def served_size(message: bytes) -> int:
    """The size IMAP gives a message (CRLF line ends), as in the FETCH literal."""
    return len(message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def message_ids(messages: list[bytes]) -> list[str]:
    found = []
    for message in messages:
        match = re.search(rb"^Message-ID: (<[^>]+>)", message, re.MULTILINE)
        assert match
        found.append(match.group(1).decode())
    return found


def stored_ids(site: Site, mailbox: str) -> list[str]:
    """The Message-IDs of *mailbox*'s interactions, sorted (twice if stored twice)."""
    rows = site.query("SELECT message_id FROM interactions WHERE mailbox = ?", mailbox)
    return sorted(mid for (mid,) in rows)


def small(ms: MailServers, user: str, tag: str, count: int) -> list[bytes]:
    return [
        make_message(subject=f"{tag} {n}", to=ms.address(user), body=f"{tag} body {n}.\r\n")
        for n in range(count)
    ]


# ------------------------------------------------------------------------- tests


def test_a_cut_mid_fetch_fails_that_mailbox_clearly_and_the_next_run_takes_all(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    ms = mail_servers
    ms.clear("agent1", "agent2")
    broken_mail = small(ms, "agent1", "broken", 5)
    healthy_mail = small(ms, "agent2", "healthy", 5)
    ms.deliver_many("agent1", broken_mail)
    ms.deliver_many("agent2", healthy_mail)
    site = Site(tmp_path, ms)
    with CuttingProxy((ms.host, ms.ports["imap_notls"]), times=1) as proxy:
        site.mailbox("broken", "agent1", port=proxy.port, security="none")
        site.mailbox("healthy", "agent2")

        first = site.run_once()
        assert first.returncode == 1, explain(first)
        assert proxy.cuts == [served_size(broken_mail[0])]
        # the other mailbox: untouched by the failure
        assert stored_ids(site, "healthy") == sorted(message_ids(healthy_mail))
        assert ms.message_count("agent2") == 0
        # a clear error for the broken one, naming the server and the lost connection
        where = f"server 127.0.0.1:{proxy.port}"
        errors = [line for line in first.stderr.splitlines() if "mailbox broken: " in line]
        assert any(f"{where} closed the connection" in line for line in errors), explain(first)
        assert "healthy" not in "\n".join(errors)
        assert "Traceback" not in first.stderr, explain(first)
        # nothing lost meanwhile: each message is stored or still on the server
        on_server = ms.message_count("agent1")
        assert site.count("broken") + on_server >= len(broken_mail)
        assert on_server >= 1  # the one being fetched when the link broke

        second = site.run_once()
        assert second.returncode == 0, explain(second)
        assert proxy.cuts == [served_size(broken_mail[0])]  # it forwarded everything
        assert proxy.connections == 2

    assert stored_ids(site, "broken") == sorted(message_ids(broken_mail))  # each exactly once
    assert stored_ids(site, "healthy") == sorted(message_ids(healthy_mail))
    assert ms.message_count("agent1") == 0
    assert site.quarantine() == []
    print(f"\nfirst run's error: {errors[0]}")


def test_a_message_whose_every_fetch_is_cut_ends_in_quarantine_and_the_rest_flows(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    ms = mail_servers
    ms.clear("agent3")
    mail = small(ms, "agent3", "fine", 6)
    # the poisoned one: its size is its own in the mailbox, so the proxy knows it
    mail[2] = make_message(
        subject="poisoned", to=ms.address("agent3"), body="x" * 70 + "\r\n" * 40 + "end\r\n"
    )
    poisoned = served_size(mail[2])
    assert [served_size(m) for m in mail].count(poisoned) == 1
    uids = ms.deliver_many("agent3", mail)
    fine_ids = sorted(message_ids(mail[:2] + mail[3:]))

    site = Site(tmp_path, ms)
    site.sections["gateway"] = {"max-attempts": 2}
    with CuttingProxy((ms.host, ms.ports["imap_notls"]), size=poisoned) as proxy:
        site.mailbox("poison", "agent3", port=proxy.port, security="none")

        first = site.run_once()  # attempt 1
        assert first.returncode == 1, explain(first)
        assert "mailbox poison" in first.stderr and "Traceback" not in first.stderr
        assert site.quarantine() == []
        [(attempts,)] = site.query(
            "SELECT attempts FROM failures WHERE mailbox = 'poison' AND source_key LIKE ?",
            f"%:{uids[2]}",
        )
        assert attempts == 1

        second = site.run_once()  # attempt 2 = max-attempts: quarantined
        assert second.returncode == 1, explain(second)
        assert "quarantined after 2 attempts" in second.stderr, explain(second)
        [entry] = site.quarantine()
        assert "  poison  " in entry and f":{uids[2]}  " in entry and "attempts=2" in entry
        assert "held" in entry

        # Not stuck: the quarantined message is skipped, the rest is taken. A run
        # in which nothing failed exits 0: the quarantine was reported (exit 1)
        # by the run that filled it, and is the operator's list from then on
        # (`postroom quarantine list`); failing every later run for it would
        # make a cron job or a supervisor cry wolf forever.
        third = site.run_once()
        assert third.returncode == 0, explain(third)
        assert stored_ids(site, "poison") == fine_ids
        fourth = site.run_once()
        assert fourth.returncode == 0, explain(fourth)
        assert stored_ids(site, "poison") == fine_ids
        assert proxy.cuts == [poisoned, poisoned]  # never fetched once quarantined
        # It could never be fetched whole, so the store has no bytes of it: it
        # stays on the server, and nothing else does.
        assert ms.search("agent3") == [uids[2]]
        assert site.quarantine() == [entry]

        # Once the server is mended, the operator's replay releases an entry
        # without bytes, and the next pass fetches the message again.
        proxy.times = len(proxy.cuts)
        replay = site.cli("quarantine", "replay", entry.split()[0])
        assert replay.returncode == 0 and "released" in replay.stdout, explain(replay)
        fifth = site.run_once()
        assert fifth.returncode == 0, explain(fifth)

    assert stored_ids(site, "poison") == sorted(message_ids(mail))
    assert ms.message_count("agent3") == 0
    assert site.quarantine() == []
    print(f"\nquarantine: {entry}")


def test_a_cut_between_flagging_deleted_and_expunging_leaves_nothing_behind(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    """The link breaks after ``UID STORE +FLAGS.SILENT (\\Deleted)``, before ``UID EXPUNGE``.

    The messages are committed and flagged \\Deleted, not expunged. The listing
    skips \\Deleted messages (rightly, for other clients' marks), so unless the
    source finishes its own interrupted deletion (UID EXPUNGE of the \\Deleted
    UIDs whose source keys the store holds), they stay in the mailbox for good,
    although operations.md promises that a message committed but not yet removed
    is "fetched again and recognised as a duplicate ... then removed".
    """
    ms = mail_servers
    ms.clear("agent8")
    mail = small(ms, "agent8", "expunge", 3)
    uids = ms.deliver_many("agent8", mail)
    site = Site(tmp_path, ms)
    with CuttingProxy((ms.host, ms.ports["imap_notls"]), command=b"UID EXPUNGE", times=1) as proxy:
        site.mailbox("expunge", "agent8", port=proxy.port, security="none")
        first = site.run_once()
        # The pass itself went well; the deletion at the end was cut short.
        [cut] = proxy.cuts
        assert isinstance(cut, bytes) and b" UID EXPUNGE " in cut, proxy.cuts
        assert "not acknowledged before disconnecting" in first.stderr, explain(first)
        assert stored_ids(site, "expunge") == sorted(message_ids(mail))
        assert {uid: "\\Deleted" in f for uid, f in ms.flags("agent8").items()} == dict.fromkeys(
            uids, True
        )

        second = site.run_once()
        assert second.returncode == 0, explain(second)
        assert "Traceback" not in second.stderr, explain(second)
    assert stored_ids(site, "expunge") == sorted(message_ids(mail))  # nothing twice
    assert ms.search("agent8") == [], (
        "committed messages left flagged \\Deleted, never expunged: "
        f"{ms.flags('agent8')}\nfirst run:\n{first.stderr}"
    )
