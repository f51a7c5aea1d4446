"""The ``imap`` source: one IMAP folder, read with IDLE, acknowledged by UID.

How it meets the kernel's contract (:class:`postroom.interfaces.ISource`):

- **connect**: TCP, implicit TLS (``ssl``) or ``STARTTLS`` with a verifying
  context from :func:`postroom.net.tls.twisted_client_tls`; ``starttls``
  configured but not offered is an error, never a clear-text fall-back; login
  (``AUTHENTICATE PLAIN``, ``LOGIN``, or with an access token ``AUTHENTICATE
  OAUTHBEARER``/``XOAUTH2`` as offered; a refused token is refreshed and tried
  once more); ``SELECT``. Directly or through the proxy (:meth:`endpoint`).
- **list_new**: pages ``FETCH a:b (UID RFC822.SIZE FLAGS)`` over the folder,
  so no response line grows with the folder. Keys and cursors are
  ``UIDVALIDITY:UID``.
- **fetch**: concurrent fetches share one ``UID FETCH`` (:mod:`postroom_imap.batching`),
  then partial chunks (``mail.imap.fetchsize``), streamed into a spool file;
  the body never sits in memory whole.
- **acknowledge**: delete (``UID EXPUNGE`` where UIDPLUS is offered), move
  (``UID MOVE``, else ``UID COPY`` + delete) or mark ``\\Seen``, batched and
  sent before the next listing, wait or disconnect.
- **wait_for_new**: IDLE (re-issued every ``idle-timeout``) or, without IDLE,
  a NOOP every ``idle-timeout`` up to the poll interval.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from postroom.api import (
    ConnectionDown,
    Credentials,
    Deadline,
    DriverContext,
    FetchedMessage,
    LoginRefused,
    OptionSchema,
    PostroomError,
    Scope,
    ServerSourceBase,
    SourceError,
    SourceItem,
    choose_mechanism,
    describe_connection_error,
    read_error_challenge,
)
from postroom_imap.batching import FetchBatcher
from postroom_imap.client import IdleCommand, IMAPClient, IMAPCommandError

log = logging.getLogger(__name__)

TYPES = ("imap",)
#: messages listed per FETCH: at most this many short lines per response
LIST_PAGE = 1000
#: acknowledged UIDs sent in one UID STORE/EXPUNGE/MOVE (also sent before each
#: listing, wait and disconnect, so nothing waits long)
ACK_BATCH = 200
#: the usual port for each pop-connection-security
PORTS = {"ssl": 993, "starttls": 143, "none": 143}

#: response codes (RFC 5530) of a login the server cannot check now: temporary
TEMPORARY_CODES = ("UNAVAILABLE", "INUSE", "SERVERBUG")

#: mailboxes already warned that \Deleted messages are left unexpunged
_warned_no_expunge: set[str] = set()


class IMAPSource(ServerSourceBase):
    supports_push = False  # True once the server offered IDLE
    protocol = "imap"
    types = TYPES
    ports = PORTS

    @classmethod
    def postroom_add_options(cls, schema: OptionSchema) -> None:
        cls.add_server_options(schema)
        add = schema.add
        add(
            "folder-path",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="INBOX",
            description="The IMAP folder read (e.g. `INBOX`, `Support/Inbound`).",
        )
        add(
            "after-processing",
            "choice",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="delete",
            choices=("delete", "move", "seen"),
            description="What is done to a message once stored: `delete` it (UID EXPUNGE "
            "where the server offers UIDPLUS), `move` it to `move-to-folder`, or mark it "
            "`seen` (the UID cursor then skips it).",
        )
        add(
            "move-to-folder",
            scope=Scope.MAILBOX,
            types=TYPES,
            description="Folder processed messages are moved to with `after-processing: move` "
            "(created when missing).",
        )
        add(
            "allow-plain-expunge",
            "bool",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="false",
            description="On a server without UIDPLUS, allow a plain EXPUNGE to delete "
            "processed messages; it also removes messages other clients flagged \\Deleted. "
            "When false they are left flagged \\Deleted (with a warning).",
        )
        add(
            "idle-timeout",
            "duration",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="00:25:00",
            minimum=1,
            maximum=29 * 60,
            description="IDLE is ended and issued again after this time, before servers "
            "drop an idle client (RFC 2177: 29 minutes at most); without IDLE, a NOOP is "
            "sent this often.",
        )
        add(
            "mail.imap.fetchsize",
            "size",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="1MB",
            minimum=1024,
            maximum=64 * 1024**2,
            description="Bytes asked for in one partial fetch (`BODY.PEEK[]<offset.length>`) "
            "while a message is streamed to the spool.",
        )
        add(
            "mail.imap.auth.mechanisms",
            scope=Scope.MAILBOX,
            types=TYPES,
            description="With an OAuth auth driver: the SASL mechanism to log in with "
            "(`XOAUTH2` or `OAUTHBEARER`; several, space-separated, in order of preference). "
            "When empty, OAUTHBEARER if the server offers it, else XOAUTH2.",
        )
        add(
            "mail.imap.partialfetch",
            "bool",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="true",
            description="Fetch messages in `mail.imap.fetchsize` chunks; `false` for a server "
            "whose partial fetch is broken (the body is still streamed to disk).",
        )

    def __init__(self, mailbox: Any, context: DriverContext) -> None:
        super().__init__(mailbox, context)
        self.folder = str(mailbox.get("folder-path"))
        self.after = str(mailbox.get("after-processing"))
        self.move_to: str | None = mailbox.get("move-to-folder")
        if self.after == "move" and not self.move_to:
            raise mailbox.error(
                "after-processing is 'move' but no move-to-folder is set", "move-to-folder"
            )
        self.allow_plain_expunge = bool(mailbox.get("allow-plain-expunge"))
        self.idle_timeout = float(mailbox.get("idle-timeout"))
        self.chunk = int(mailbox.get("mail.imap.fetchsize"))
        self.partial = bool(mailbox.get("mail.imap.partialfetch"))
        self.forced_mechanism: str | None = mailbox.get("mail.imap.auth.mechanisms") or None
        self._batcher = FetchBatcher(context.reactor, self.chunk if self.partial else None)
        self.client: IMAPClient | None = None
        self.uidvalidity: int | None = None
        self._pending_acks: list[int] = []
        self._new_mail = False
        self._cancelled = False
        self._waker: Deferred[bool] | None = None
        self._wait_task: Deferred[Any] | None = None

    # ------------------------------------------------------------ connection

    @property
    def capabilities(self) -> frozenset[str]:
        return self.client.capabilities if self.client is not None else frozenset()

    def connect(self) -> Deferred[None]:
        return ensureDeferred(self._connect())

    async def _connect(self) -> None:
        credentials = await self.credentials()
        client = await self._open()
        self.client = client
        try:
            await self._setup(client, credentials)
        except Exception as exc:
            client.abort(SourceError(f"connection to {self.where} abandoned"))
            self.client = None
            if isinstance(exc, PostroomError):
                raise
            raise SourceError(f"mailbox {self.name} on {self.where}: {exc}") from exc

    def _open(self) -> Deferred[IMAPClient]:
        """Connect (directly or through the proxy; TLS for ``ssl``) and wait
        for the greeting, all within connect-timeout."""
        result: Deferred[IMAPClient] = Deferred()
        factory = _ClientFactory(self, result)
        settings = self.settings
        try:
            endpoint = self.endpoint()
        except SourceError as exc:
            return defer.fail(exc)
        connecting: Deferred[Any] = endpoint.connect(factory)

        def not_connected(failure: Failure) -> None:
            if not result.called:
                value = failure.value
                described = describe_connection_error(value) if value is not None else None
                reason = described or failure.getErrorMessage()
                result.errback(
                    SourceError(f"mailbox {self.name}: cannot connect to {self.where}: {reason}")
                )

        connecting.addErrback(not_connected)

        def too_slow() -> None:
            if result.called:
                return
            failure = SourceError(
                f"mailbox {self.name}: no greeting from {self.where} within "
                f"{settings.connect_timeout:g} s"
            )
            result.errback(failure)
            if factory.client is not None:
                factory.client.abort(failure)
            elif not connecting.called:
                connecting.cancel()

        deadline = Deadline(self.context.clock, settings.connect_timeout, too_slow)

        def stop_deadline(value: Any) -> Any:
            deadline.cancel()
            return value

        result.addBoth(stop_deadline)
        return result

    async def _setup(self, client: IMAPClient, credentials: Credentials) -> None:
        caps = client.capabilities or await client.capability()
        if self.settings.security == "starttls":
            if "STARTTLS" not in caps:
                raise SourceError(
                    f"mailbox {self.name}: {self.where} does not offer STARTTLS, which "
                    "pop-connection-security 'starttls' requires; not logging in over "
                    "clear text"
                )
            caps = await client.starttls(self.tls())
        if client.state == "unauth":
            await self._login(client, credentials)
        try:
            info = await client.select_folder(self.folder)
        except IMAPCommandError as exc:
            raise SourceError(
                f"mailbox {self.name}: cannot open folder {self.folder!r} on {self.where}: "
                f"{exc.status} {exc.text}"
            ) from exc
        if "UIDVALIDITY" not in info:
            raise SourceError(
                f"mailbox {self.name}: {self.where} gave no UIDVALIDITY for {self.folder!r}"
            )
        self.uidvalidity = info["UIDVALIDITY"]
        self.supports_push = "IDLE" in client.capabilities
        client.on_new_mail = self._on_new_mail
        # DEBUG: the kernel logs the connection (docs/operations.md); this says more
        log.debug(
            "mailbox %s: connected to %s (%s), folder %s: %d message(s)%s",
            self.name,
            self.where,
            "TLS" if self.settings.encrypted else "clear text",
            self.folder,
            info.get("EXISTS", 0),
            ", IDLE" if self.supports_push else "",
            extra={"mailbox": self.name},
        )

    async def _login(self, client: IMAPClient, credentials: Credentials) -> None:
        await self.log_in(lambda creds: self._try_login(client, creds), credentials)
        if not client.capabilities_after_login:
            await client.capability()  # what the server offers once logged in

    async def _try_login(self, client: IMAPClient, credentials: Credentials) -> str:
        """One login; LoginRefused when the server refused the credentials,
        SourceError when it cannot check them now (``NO [UNAVAILABLE]``)."""
        caps = client.capabilities
        mechanism = credentials.mechanism.upper()
        try:
            if credentials.bearer:
                mechanism = self._oauth_mechanism(caps)
                result = await client.authenticate_bearer(
                    mechanism,
                    credentials.username,
                    credentials.secret,
                    self.settings.host,
                    self.settings.port,
                )
            elif mechanism == "PLAIN" and "AUTH=PLAIN" in caps:
                result = await client.authenticate_plain(credentials.username, credentials.secret)
            else:
                if "LOGINDISABLED" in caps:
                    raise SourceError(
                        f"mailbox {self.name}: {self.where} refuses LOGIN on this connection "
                        "(LOGINDISABLED); use pop-connection-security 'starttls' or 'ssl'"
                    )
                result = await client.login(credentials.username, credentials.secret)
        except IMAPCommandError as exc:
            if exc.code in TEMPORARY_CODES:
                raise SourceError(
                    f"mailbox {self.name}: {self.where} cannot check the login now: {exc.text}"
                ) from None
            challenge = read_error_challenge(exc.challenge) if exc.challenge else None
            detail = exc.text + (f" ({challenge.describe()})" if challenge else "")
            raise LoginRefused(detail) from None
        tagged = result[1] if isinstance(result, tuple) else b""
        client.capabilities_after_login = b"[CAPABILITY " in tagged.upper()
        return f"{mechanism} on {self.where}"

    def _oauth_mechanism(self, caps: frozenset[str]) -> str:
        """XOAUTH2 or OAUTHBEARER, as offered (and ``mail.imap.auth.mechanisms``)."""
        offered = [c[5:] for c in caps if c.startswith("AUTH=")]
        mechanism = choose_mechanism(offered, self.forced_mechanism)
        if mechanism is None:
            wanted = (
                f"{self.forced_mechanism} (mail.imap.auth.mechanisms)"
                if self.forced_mechanism
                else "XOAUTH2 or OAUTHBEARER"
            )
            raise SourceError(
                f"mailbox {self.name}: {self.where} offers "
                f"{' '.join(sorted('AUTH=' + m for m in offered)) or 'no AUTH= mechanism'}, "
                f"not {wanted}: cannot log in with the access token"
            )
        return mechanism

    def _connected(self) -> IMAPClient:
        client = self.client
        if client is None or not client.connected_:
            raise ConnectionDown(f"mailbox {self.name}: not connected to {self.where}")
        return client

    # --------------------------------------------------------------- listing

    def _key(self, uid: int) -> str:
        return f"{self.uidvalidity}:{uid}"

    @staticmethod
    def parse_key(key: str) -> tuple[int, int]:
        match = re.fullmatch(r"(\d+):(\d+)", key or "")
        if not match:
            raise SourceError(f"not an IMAP source key or cursor: {key!r}")
        return int(match.group(1)), int(match.group(2))

    def list_new(self, cursor: Any) -> Deferred[list[SourceItem]]:
        return ensureDeferred(self._list_new(cursor))

    async def _list_new(self, cursor: Any) -> list[SourceItem]:
        await self._flush_acks()
        client = self._connected()
        self._new_mail = False  # this listing covers whatever arrived so far
        await client.noop()  # the current message count, and a liveness check
        after_uid = self._cursor_uid(cursor)
        found: dict[int, SourceItem] = {}
        deleted: list[int] = []
        first = 1
        while client.exists is not None and first <= client.exists:
            last = min(first + LIST_PAGE - 1, client.exists)
            for uid, size, flags in await client.fetch_listing(first, last):
                upper = {f.upper() for f in flags}
                if "\\DELETED" in upper:
                    deleted.append(uid)
                wanted = self._wanted(uid, upper, after_uid)
                if wanted and uid not in found:
                    key = self._key(uid)
                    found[uid] = SourceItem(
                        source_key=key, size=size if size >= 0 else None, cursor=key
                    )
            first = last + 1
        if deleted:
            await self._finish_interrupted_deletes(client, deleted)
        return [found[uid] for uid in sorted(found)]

    async def _finish_interrupted_deletes(self, client: IMAPClient, uids: list[int]) -> None:
        """Expunge messages *we* flagged \\Deleted when the connection (or the
        process) died before the UID EXPUNGE: those the store holds. Other
        clients' \\Deleted marks on messages we never stored stay untouched."""
        if self.after != "delete" or "UIDPLUS" not in client.capabilities:
            return
        known_lookup = self.context.known_source_keys
        if known_lookup is None:
            return
        keys = {self._key(uid): uid for uid in uids}
        known = await known_lookup(self.name, list(keys))
        mine = sorted(keys[key] for key in known)
        if mine:
            log.info(
                "mailbox %s: expunging %d stored message(s) left flagged \\Deleted by an "
                "interrupted run",
                self.name,
                len(mine),
                extra={"mailbox": self.name},
            )
            await client.uid_expunge(mine)

    def _cursor_uid(self, cursor: Any) -> int | None:
        """The cursor's UID when it still applies (same UIDVALIDITY), else None."""
        value = getattr(cursor, "value", cursor)
        if not value:
            return None
        try:
            validity, uid = self.parse_key(str(value))
        except SourceError:
            log.warning("mailbox %s: ignoring unreadable cursor %r", self.name, value)
            return None
        if validity != self.uidvalidity:
            log.info(
                "mailbox %s: UIDVALIDITY of %s changed (%s -> %s): listing every message",
                self.name,
                self.folder,
                validity,
                self.uidvalidity,
                extra={"mailbox": self.name},
            )
            return None
        return uid

    def _wanted(self, uid: int, flags: set[str], after_uid: int | None) -> bool:
        """Not yet acknowledged? Deleted messages never are; in ``seen`` mode, a
        message up to the cursor is done unless it is still unseen (it failed
        earlier and was passed by the cursor)."""
        if "\\DELETED" in flags:
            return False
        if self.after != "seen" or after_uid is None:
            return True
        return uid > after_uid or "\\SEEN" not in flags

    # -------------------------------------------------------------- fetching

    def fetch(self, item: SourceItem) -> Deferred[FetchedMessage]:
        return ensureDeferred(self._fetch(item))

    async def _fetch(self, item: SourceItem) -> FetchedMessage:
        validity, uid = self.parse_key(item.source_key)
        client = self._connected()
        if validity != self.uidvalidity:
            raise SourceError(
                f"mailbox {self.name}: UIDVALIDITY of {self.folder} changed; "
                f"message {item.source_key} is listed again under its new UID"
            )
        self.note_size(item.source_key, item.size)
        with self.spool(str(uid)) as writer:
            offset = 0
            while True:
                if offset == 0:
                    got = await self._batcher.fetch(client, uid, writer)
                else:
                    got = await client.fetch_body(uid, writer, offset, self.chunk)
                if got is None:
                    raise SourceError(
                        f"mailbox {self.name}: message UID {uid} is no longer in "
                        f"{self.folder} on {self.where}"
                    )
                offset += got
                if not self.partial or got < self.chunk:
                    break
        return FetchedMessage(
            mailbox=self.name, source_key=item.source_key, raw=writer.raw(), server_size=item.size
        )

    def release(self, message: FetchedMessage) -> Deferred[None]:
        self.drop_spooled(message)
        return defer.succeed(None)

    # -------------------------------------------------------- acknowledging

    def acknowledge(self, message: FetchedMessage) -> Deferred[None]:
        """Queue the message's UID for the after-processing action (sent in
        batches, always after the kernel's call, before the next listing)."""
        self.drop_spooled(message)
        validity, uid = self.parse_key(message.source_key)
        if validity != self.uidvalidity:
            log.warning(
                "mailbox %s: not acknowledging %s: UIDVALIDITY changed since it was fetched",
                self.name,
                message.source_key,
                extra={"mailbox": self.name},
            )
            return defer.succeed(None)
        self._pending_acks.append(uid)
        if len(self._pending_acks) >= ACK_BATCH:
            return ensureDeferred(self._flush_acks())
        return defer.succeed(None)

    async def _flush_acks(self) -> None:
        if not self._pending_acks:
            return
        uids, self._pending_acks = self._pending_acks, []
        client = self._connected()
        try:
            if self.after == "seen":
                await client.uid_store(uids, b"+FLAGS.SILENT (\\Seen)")
            elif self.after == "move":
                assert self.move_to is not None
                if "MOVE" in client.capabilities:
                    await self._into_folder(client.uid_move, uids, self.move_to)
                else:
                    await self._into_folder(client.uid_copy, uids, self.move_to)
                    await self._delete(client, uids)
            else:
                await self._delete(client, uids)
        except IMAPCommandError as exc:
            raise SourceError(
                f"mailbox {self.name}: {exc.command} of {len(uids)} processed message(s) "
                f"refused by {self.where}: {exc.status} {exc.text}"
            ) from exc

    async def _into_folder(self, command: Any, uids: list[int], folder: str) -> None:
        try:
            await command(uids, folder)
        except IMAPCommandError as exc:
            if exc.code != "TRYCREATE":
                raise
            assert self.client is not None
            await self.client.create_folder(folder)
            await command(uids, folder)

    async def _delete(self, client: IMAPClient, uids: list[int]) -> None:
        await client.uid_store(uids, b"+FLAGS.SILENT (\\Deleted)")
        if "UIDPLUS" in client.capabilities:
            await client.uid_expunge(uids)
        elif self.allow_plain_expunge:
            await client.expunge()
        elif self.name not in _warned_no_expunge:
            _warned_no_expunge.add(self.name)
            log.warning(
                "mailbox %s: %s has no UIDPLUS, so processed messages are left flagged "
                "\\Deleted, not expunged (a plain EXPUNGE would also remove what other "
                "clients flagged); set allow-plain-expunge: true to expunge anyway",
                self.name,
                self.where,
                extra={"mailbox": self.name},
            )

    # --------------------------------------------------------------- waiting

    def _on_new_mail(self) -> None:
        self._new_mail = True
        self._wake(True)

    def _wake(self, value: bool) -> None:
        waker, self._waker = self._waker, None
        if waker is not None and not waker.called:
            waker.callback(value)

    def _stop_waiting(self) -> None:
        self._cancelled = True
        self._wake(True)

    def wait_for_new(self, timeout: float) -> Deferred[None]:
        """Fires on new mail (IDLE, or EXISTS seen meanwhile) or after *timeout*.

        Cancelling it (the kernel stopping) ends IDLE cleanly in the background.
        """
        outer: Deferred[None] = Deferred(lambda _d: self._stop_waiting())
        self._cancelled = False
        task = ensureDeferred(self._wait(float(timeout)))
        self._wait_task = task

        def relay(result: Any) -> None:
            if not outer.called:
                if isinstance(result, Failure):
                    outer.errback(result)
                else:
                    outer.callback(None)

        task.addBoth(relay)
        return outer

    async def _wait(self, timeout: float) -> None:
        await self._flush_acks()
        clock = self.context.clock
        deadline = clock.seconds() + timeout
        while not self._cancelled and not self._new_mail:
            remaining = deadline - clock.seconds()
            if remaining <= 0:
                break
            span = min(remaining, self.idle_timeout)
            if self.supports_push:
                await self._idle(span)
            else:
                await self._pause(span)
                if not self._cancelled:
                    await self._connected().noop()  # EXISTS, if any, sets _new_mail
        self._new_mail = False

    def _arm_waker(self, span: float) -> tuple[Deferred[bool], Deadline]:
        """A waker fired on new mail, or with False once *span* seconds passed."""
        waker: Deferred[bool] = Deferred()
        self._waker = waker
        return waker, Deadline(self.context.clock, span, lambda: self._wake(False))

    def _disarm_waker(self, deadline: Deadline) -> None:
        deadline.cancel()
        self._waker = None

    async def _pause(self, span: float) -> None:
        waker, deadline = self._arm_waker(span)
        try:
            await waker
        finally:
            self._disarm_waker(deadline)

    async def _idle(self, span: float) -> None:
        """One IDLE of at most *span* seconds; returns once the server closed it."""
        client = self._connected()
        waker, deadline = self._arm_waker(span)
        cmd: IdleCommand = client.idle()
        completion = cmd.completion
        assert completion is not None

        def ended(result: Any) -> Any:
            if waker.called:
                return result  # we asked for the end: awaited below
            # the server ended IDLE first (an error, BYE, a lost connection)
            if isinstance(result, Failure):
                waker.errback(result)
                return None
            self._new_mail = True  # unasked: have a look at the folder
            waker.callback(True)
            return result

        completion.addBoth(ended)
        try:
            try:
                await waker
            finally:
                self._disarm_waker(deadline)
                client.end_idle(cmd)
            await completion
        except IMAPCommandError as exc:
            raise SourceError(
                f"mailbox {self.name}: {self.where} refused IDLE: {exc.status} {exc.text}"
            ) from exc

    # ----------------------------------------------------------- disconnect

    def disconnect(self) -> Deferred[None]:
        return ensureDeferred(self._disconnect())

    async def _disconnect(self) -> None:
        self._stop_waiting()
        task, self._wait_task = self._wait_task, None
        if task is not None and not task.called:
            await _quietly(task)
        client = self.client
        if client is None:
            return
        if client.connected_:
            try:
                await self._flush_acks()
            except Exception as exc:
                log.warning(
                    "mailbox %s: processed messages not acknowledged before disconnecting "
                    "(they are fetched again and recognised as duplicates): %s",
                    self.name,
                    exc,
                    extra={"mailbox": self.name},
                )
            await _quietly(client.logout())
        self.client = None
        self._pending_acks = []
        if client.connected_ and client.transport is not None:
            client.transport.loseConnection()
        if not client.closed.called:
            with Deadline(
                self.context.clock,
                self.settings.protocol_timeout,
                lambda: client.abort(SourceError("LOGOUT too slow")),
            ):
                await client.closed


class _ClientFactory(protocol.ClientFactory):
    """Builds the one client of a connection attempt and reports how it went."""

    noisy = False  # no "Starting factory" lines for every (re)connection

    def __init__(self, source: IMAPSource, result: Deferred[IMAPClient]) -> None:
        self.source = source
        self.result = result
        self.client: IMAPClient | None = None

    def buildProtocol(self, addr: Any) -> IMAPClient:
        source = self.source
        client = IMAPClient(
            clock=source.context.clock,
            server=source.where,
            protocol_timeout=source.settings.protocol_timeout,
            tracer=source.tracer,
        )
        client.factory = self
        self.client = client

        def greeted(_status: str) -> None:
            if not self.result.called:
                self.result.callback(client)

        def failed(failure: Failure) -> None:
            if not self.result.called:
                self.result.errback(failure)

        client.greeting.addCallbacks(greeted, failed)
        return client


async def _quietly(d: Deferred[Any]) -> None:
    try:
        await d
    except Exception as exc:
        log.debug("ignored while disconnecting: %s", exc)
