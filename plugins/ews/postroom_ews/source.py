"""The ``ews`` source: one folder of an Exchange mailbox, read over EWS.

How it meets the kernel's contract (``ISource``):

- **connect**: builds the exchangelib account (:mod:`postroom_ews.client`)
  with the auth driver's credentials and opens the folder (one authenticated
  GetFolder, which also serves ``postroom check --connect``). A 401 has the
  auth driver refresh its token and is tried once more (``log_in``).
- **list_new**: SyncFolderItems pages from the cursor (the sync state); the
  first listing of a connection lists the folder whole (it holds only what is
  not processed yet) to find what a killed run stored but did not move. The
  items of a page carry the state the page started from as their cursor, its
  last item the state it ended at: after a crash the page is listed again and
  what the store already holds is skipped (``known_source_keys``), so nothing
  is lost and nothing is stored twice. An invalid sync state
  (``ErrorInvalidSyncStateData``) starts over from no state, the same way.
- **fetch**: GetItem with MimeContent, written to a spool file byte for byte;
  an item gone since the listing is skipped and logged.
- **acknowledge**: MoveItem to ``move-to-folder`` or DeleteItem (HardDelete),
  batched, after the commit, before the next listing or disconnect.
- **wait_for_new**: with ``ews-push: streaming`` (the default), a streaming
  subscription on the folder (:mod:`postroom_ews.push`), read on a thread of
  the mailbox's own, wakes the wait as soon as new mail arrives; the listing
  is SyncFolderItems from the sync state still. Without streaming (refused by
  the server, lost twice in a row, or ``ews-push: off``): a poll every
  ``poll-interval`` on the kernel's clock.
- **throttling**: ``ErrorServerBusy`` waits its back-off hint on the kernel's
  clock (never a sleep in a pool thread) and tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from exchangelib.errors import (
    ErrorFolderNotFound,
    ErrorInvalidSyncStateData,
    ErrorServerBusy,
    EWSError,
    ResponseMessageError,
    TransportError,
    UnauthorizedError,
)
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred

from postroom.api import (
    ConnectionDown,
    Credentials,
    DriverContext,
    FetchedMessage,
    LoginRefused,
    OptionSchema,
    PostroomError,
    Scope,
    ServerSourceBase,
    SourceError,
    SourceItem,
    proxy_for,
    refresh_once,
    sleep,
)
from postroom_ews import push
from postroom_ews.client import BATCH, Endpoint, EWSClient, Page

log = logging.getLogger(__name__)

TYPES = ("ews",)
#: ErrorServerBusy answers in a row before the call fails (the mailbox then backs off)
BUSY_RETRIES = 5
#: the wait when the server gives no back-off hint, in seconds
DEFAULT_BACK_OFF = 10.0
#: the longest back-off hint obeyed within a call (longer: fail, the kernel backs off)
MAX_BACK_OFF = 300.0
#: EWS ResponseCodes ([MS-OXWSCDATA] ResponseCodeType) that say the server
#: cannot serve now, not that the request is wrong: the mailbox backs off
TRANSIENT_CODES = frozenset(
    {
        "ErrorConnectionFailed",
        "ErrorInternalServerTransientError",
        "ErrorMailboxMoveInProgress",
        "ErrorMailboxStoreUnavailable",
        "ErrorNoRespondingCASInDestinationSite",
        "ErrorProxyRequestProcessingFailed",
        "ErrorTimeoutExpired",
        "ErrorTooManyObjectsOpened",
    }
)

R = TypeVar("R")


class EWSSource(ServerSourceBase):
    #: True while a streaming subscription is live (set per instance)
    supports_push = False
    protocol = "ews"
    types = TYPES

    @classmethod
    def postroom_add_options(cls, schema: OptionSchema) -> None:
        add = schema.add
        add(
            "server",
            scope=Scope.MAILBOX,
            types=TYPES,
            required=True,
            description="The EWS URL, e.g. `https://mail.example.com/EWS/Exchange.asmx` "
            "(no autodiscover).",
        )
        add(
            "mailbox",
            scope=Scope.MAILBOX,
            types=TYPES,
            description="The user name to log in with (with `auth: basic`), and the SMTP "
            "address of the mailbox read unless `smtp-address` is set.",
        )
        add(
            "password",
            "secret",
            scope=Scope.MAILBOX,
            types=TYPES,
            description="Password (basic or NTLM). Use `${ENV_VAR}` or `${file:path}`.",
        )
        add(
            "ca-file",
            "path",
            scope=Scope.MAILBOX,
            types=TYPES,
            description="PEM file of the certificate authorities to trust instead of the "
            "system's. Certificates are always verified.",
        )
        add(
            "protocol-timeout",
            "duration",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="00:02:00",
            minimum=1,
            maximum=3600,
            description="Time allowed for one EWS request.",
        )
        add(
            "enable-debug",
            "bool",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="false",
            description="Log each EWS request (never credentials).",
        )
        add(
            "folder-path",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="inbox",
            description="The folder read: `inbox`, or a path under the top of the mailbox "
            "(`Support/Inbound`).",
        )
        add(
            "after-processing",
            "choice",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="delete",
            choices=("delete", "move"),
            description="What is done to a message once stored: `delete` it (HardDelete) or "
            "`move` it to `move-to-folder`.",
        )
        add(
            "move-to-folder",
            scope=Scope.MAILBOX,
            types=TYPES,
            description="Folder processed messages are moved to with `after-processing: move` "
            "(a path under the top of the mailbox; it must exist).",
        )
        add(
            "smtp-address",
            scope=Scope.MAILBOX,
            types=TYPES,
            description="The primary SMTP address of the mailbox read, when it is not "
            "`mailbox` (the user logging in): a shared mailbox the user has delegate access "
            "to, or the mailbox a service account impersonates.",
        )
        add(
            "impersonation",
            "bool",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="false",
            description="Log in as a service account (`mailbox`) and act as `smtp-address` "
            "(ExchangeImpersonation); the account needs the ApplicationImpersonation role.",
        )
        add(
            "ews-auth-type",
            "choice",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="basic",
            choices=("basic", "ntlm"),
            description="How a password is sent: `basic` or `ntlm` (on-premises). An OAuth "
            "auth driver always sends a bearer token.",
        )
        add(
            "ews-push",
            "choice",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="streaming",
            choices=("streaming", "off"),
            description="`streaming`: subscribe the folder to streaming notifications (on a "
            "thread of the mailbox's own) so new mail is listed as soon as it arrives; a "
            "server that does not offer them, or a subscription lost twice in a row, falls "
            "back to polling every `poll-interval`. `off`: poll only.",
        )

    def __init__(self, mailbox: Any, context: DriverContext) -> None:
        # Not ServerSourceBase.__init__: `server` is a URL, not host and port.
        super(ServerSourceBase, self).__init__(mailbox, context)
        self.url = str(mailbox.get("server"))
        if not self.url.lower().startswith("https://"):
            raise mailbox.error("server must be an https:// EWS URL", "server")
        self.where = f"server {self.url}"
        address_option = "smtp-address" if mailbox.get("smtp-address") else "mailbox"
        self.address = str(mailbox.get(address_option) or "")
        if "@" not in self.address:
            raise mailbox.error(
                f"{address_option} must be the mailbox's SMTP address", address_option
            )
        self.folder_path = str(mailbox.get("folder-path"))
        self.after = str(mailbox.get("after-processing"))
        self.move_to: str | None = mailbox.get("move-to-folder")
        if self.after == "move" and not self.move_to:
            raise mailbox.error(
                "after-processing is 'move' but no move-to-folder is set", "move-to-folder"
            )
        ca_file = mailbox.get("ca-file")
        proxy = proxy_for(context.config, None, "ews")
        self.ews = Endpoint(
            url=self.url,
            mailbox=self.address,
            auth_type=str(mailbox.get("ews-auth-type")),
            impersonation=bool(mailbox.get("impersonation")),
            ca_file=str(ca_file) if ca_file else None,
            proxy_url=_proxy_url(proxy),
            timeout=float(mailbox.get("protocol-timeout")),
        )
        self.debug = bool(mailbox.get("enable-debug"))
        self.client: EWSClient | None = None
        #: the credentials the client logged in with
        self._credentials: Credentials | None = None
        self._pending: list[str] = []
        self._resume: tuple[str | None, str] | None = None
        self._first_listing = True
        self.push_mode = str(mailbox.get("ews-push"))
        self._push: push.Push | None = None
        #: why push is off for this source (None: try it at the next wait)
        self._push_off: str | None = None if self.push_mode == "streaming" else "ews-push: off"
        self._push_refused = False
        #: the stream's credentials were refused: start it again with fresh ones (once)
        self._push_fresh = False
        self._push_auth_retries = 0
        self._new_mail = False
        self._waker: Deferred[None] | None = None

    # ------------------------------------------------------------ calls

    async def _call(self, what: str, fn: Callable[..., R], *args: Any) -> R:
        """Run a blocking exchangelib call in the thread pool; back off on
        ErrorServerBusy on the kernel's clock; map errors to postroom's."""
        for attempt in range(BUSY_RETRIES + 1):
            if self.debug:
                log.info("mailbox %s: EWS %s", self.name, what, extra={"mailbox": self.name})
            try:
                result: R = await self.context.runner.run(fn, *args)
                return result
            except ErrorServerBusy as exc:
                wait = float(exc.back_off or DEFAULT_BACK_OFF)
                if attempt == BUSY_RETRIES or wait > MAX_BACK_OFF:
                    raise SourceError(
                        f"mailbox {self.name}: {self.where} is busy ({what}): {exc}"
                    ) from None
                log.info(
                    "mailbox %s: %s answered ErrorServerBusy to %s; waiting %g s",
                    self.name,
                    self.where,
                    what,
                    wait,
                    extra={"mailbox": self.name},
                )
                await sleep(self.context.clock, wait)
            except (UnauthorizedError, ErrorInvalidSyncStateData, PostroomError):
                raise
            except ErrorFolderNotFound as exc:
                raise SourceError(f"mailbox {self.name}: {what} on {self.where}: {exc}") from None
            except ResponseMessageError as exc:
                # exchangelib makes every EWS ResponseCode a TransportError: only
                # the server-side ones that pass are a connection failure (back
                # off, reconnect); the rest concern this call (access denied,
                # a corrupt item) and fail it, so its message counts a failure
                text = f"{what} on {self.where}: {EWSClient.reason(exc)}"
                if type(exc).__name__ in TRANSIENT_CODES:
                    raise ConnectionDown(f"mailbox {self.name}: {text}") from None
                raise SourceError(f"mailbox {self.name}: {text}") from None
            except TransportError as exc:
                raise ConnectionDown(
                    f"mailbox {self.name}: {self.where}: {EWSClient.reason(exc)}"
                ) from None
            except EWSError as exc:
                raise SourceError(
                    f"mailbox {self.name}: {what} on {self.where}: {EWSClient.reason(exc)}"
                ) from None
            except OSError as exc:
                raise ConnectionDown(
                    f"mailbox {self.name}: {self.where}: {EWSClient.reason(exc)}"
                ) from None
            except CancelledError:
                raise
            except Exception as exc:  # a malformed answer: its text may quote mail
                raise SourceError(
                    f"mailbox {self.name}: {what} on {self.where}: {EWSClient.reason(exc)}"
                ) from None
        raise AssertionError("unreachable")

    async def _session(self, what: str, method: str, *args: Any) -> Any:
        """``client.<method>(*args)`` on the connected client; a 401 meanwhile
        (an access token that expired while connected) has the auth driver
        refresh the credentials (the kernel's ``refresh_once``): with fresh
        ones the client logs in again and the call is tried once more."""
        self._connected()
        current = self._credentials
        assert current is not None  # set by every login that made a client

        async def attempt(credentials: Credentials) -> Any:
            if credentials is not current:  # fresh ones: a new client logs in with them
                await self._close_client()
                self.login_ok(await self._try_login(credentials))
            try:
                return await self._call(what, getattr(self._connected(), method), *args)
            except UnauthorizedError as exc:
                raise LoginRefused(str(exc) or "HTTP 401") from None

        result, _ = await refresh_once(
            self, attempt, current, refused=self.authentication_failed, where=self.where
        )
        return result

    async def _close_client(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await self.context.runner.run(client.close)

    def _connected(self) -> EWSClient:
        if self.client is None:
            raise ConnectionDown(f"mailbox {self.name}: not connected to {self.where}")
        return self.client

    # ------------------------------------------------------------ connection

    def connect(self) -> Deferred[None]:
        return ensureDeferred(self._connect())

    async def _connect(self) -> None:
        credentials = await self.credentials()
        await self.log_in(self._try_login, credentials)

    async def _try_login(self, credentials: Credentials) -> str:
        def build() -> tuple[EWSClient, int]:
            client = EWSClient(
                self.ews, credentials.username, credentials.secret, credentials.bearer
            )
            try:
                _folder, count = client.open_folder(self.folder_path)
            except UnauthorizedError as exc:
                client.close()
                raise UnauthorizedError(client.refusal(exc)) from None
            except BaseException:
                client.close()
                raise
            return client, count

        try:
            client, count = await self._call(f"opening folder {self.folder_path!r}", build)
        except UnauthorizedError as exc:
            raise LoginRefused(str(exc) or "HTTP 401") from None
        self.client = client
        self._credentials = credentials
        self._first_listing = True
        if self.after == "move":
            assert self.move_to is not None
            client.target = await self._call(
                f"opening move-to-folder {self.move_to!r}", client.find_folder, self.move_to
            )
        log.info(
            "mailbox %s: connected to %s, folder %s: %d message(s)",
            self.name,
            self.where,
            self.folder_path,
            count,
            extra={"mailbox": self.name},
        )
        kind = "bearer token" if credentials.bearer else self.ews.auth_type
        return f"{kind} on {self.where}"

    # --------------------------------------------------------------- listing

    def list_new(self, cursor: Any) -> Deferred[list[SourceItem]]:
        return ensureDeferred(self._list_new(cursor))

    async def _list_new(self, cursor: Any) -> list[SourceItem]:
        await self._flush()
        self._connected()
        stored = getattr(cursor, "value", cursor) or None
        state = stored
        if self._first_listing:
            # The folder holds only what is not yet processed (after-processing
            # deletes or moves every stored message), so listing it whole is as
            # long as the backlog, and it finds messages stored but not yet
            # moved or deleted when the gateway was killed, which a sync from
            # the cursor would never report again.
            self._first_listing = False
            state = None
        elif self._resume is not None and self._resume[0] == stored:
            state = self._resume[1]  # everything listed last time is committed
        try:
            pages = await self._pages(state)
        except ErrorInvalidSyncStateData:
            log.warning(
                "mailbox %s: %s no longer knows the sync state; listing the folder again "
                "(what the store holds is skipped)",
                self.name,
                self.where,
                extra={"mailbox": self.name},
            )
            pages = await self._pages(None)
        items: list[SourceItem] = []
        for page in pages:
            for index, change in enumerate(page.items):
                last = index == len(page.items) - 1
                items.append(
                    SourceItem(
                        source_key=change.item_id,
                        size=change.size,
                        cursor=page.end if last else page.start,
                    )
                )
        items = await self._unknown(items)
        await self._flush()  # what was stored but not yet moved or deleted (a crash)
        final = pages[-1].end if pages else state
        expected = items[-1].cursor if items else stored
        self._resume = (expected, final) if final else None
        return items

    def quarantine_released(self, keys: set[str]) -> None:
        """Released messages left on the server are behind the sync state: the
        next listing lists the folder whole (what the store holds is skipped)."""
        self._first_listing = True

    async def _pages(self, state: str | None) -> list[Page]:
        pages: list[Page] = []
        with self.listing_progress() as progress:
            while True:
                page, last = await self._session("SyncFolderItems", "sync_page", state)
                pages.append(page)
                progress.add(len(page.items))
                state = page.end
                if last:
                    return pages

    async def _unknown(self, items: list[SourceItem]) -> list[SourceItem]:
        """Leave out the items the store already holds (a page listed again),
        and queue them for the after-processing action they may have missed."""
        lookup = self.context.known_source_keys
        if lookup is None or not items:
            return items
        known = await lookup(self.name, [i.source_key for i in items])
        if not known:
            return items
        fresh = [i for i in items if i.source_key not in known]
        # stored before a crash or a failed acknowledgement: acknowledge them now
        self._pending.extend(i.source_key for i in items if i.source_key in known)
        log.info(
            "mailbox %s: %d listed message(s) already stored, skipped",
            self.name,
            len(items) - len(fresh),
            extra={"mailbox": self.name},
        )
        if fresh and fresh[-1] is not items[-1]:
            # the last item's cursor carries the page's end state: keep it
            last = fresh[-1]
            fresh[-1] = SourceItem(last.source_key, last.size, items[-1].cursor)
        return fresh

    # -------------------------------------------------------------- fetching

    def fetch(self, item: SourceItem) -> Deferred[FetchedMessage]:
        return ensureDeferred(self._fetch(item))

    async def _fetch(self, item: SourceItem) -> FetchedMessage:
        self._connected()
        self.note_size(item.source_key, item.size)
        mime = await self._session("GetItem", "mime", item.source_key)
        if mime is None:
            log.warning(
                "mailbox %s: message %s was deleted from %s after it was listed; skipped",
                self.name,
                item.source_key,
                self.folder_path,
                extra={"mailbox": self.name},
            )
            raise SourceError(
                f"mailbox {self.name}: message {item.source_key} is no longer in "
                f"{self.folder_path} on {self.where}"
            )
        with self.spool("item") as writer:
            writer.write(mime)
        return FetchedMessage(
            mailbox=self.name, source_key=item.source_key, raw=writer.raw(), server_size=item.size
        )

    def release(self, message: FetchedMessage) -> Deferred[None]:
        self.drop_spooled(message)
        return defer.succeed(None)

    # -------------------------------------------------------- acknowledging

    def acknowledge(self, message: FetchedMessage) -> Deferred[None]:
        self.drop_spooled(message)
        self._pending.append(message.source_key)
        if len(self._pending) >= BATCH:
            return ensureDeferred(self._flush())
        return defer.succeed(None)

    async def _flush(self) -> None:
        if not self._pending:
            return
        ids, self._pending = self._pending, []
        self._connected()
        if self.after == "move":
            failures = await self._session("MoveItem", "move_to_target", ids)
        else:
            failures = await self._session("DeleteItem", "delete", ids)
        if failures:
            raise SourceError(
                f"mailbox {self.name}: {len(failures)} of {len(ids)} processed message(s) "
                f"not {'moved' if self.after == 'move' else 'deleted'} on {self.where}: "
                f"{failures[0]}"
            )

    # --------------------------------------------------------------- waiting

    def wait_for_new(self, timeout: float) -> Deferred[None]:
        """Fires when a streaming notification reports new mail, or after
        *timeout* seconds on the kernel's clock (polling: SyncFolderItems is cheap)."""
        return ensureDeferred(self._wait(float(timeout)))

    async def _wait(self, timeout: float) -> None:
        await self._flush()
        if self._push is None and self._push_off is None:
            if self._push_fresh:
                self._push_fresh = False
                try:
                    self._credentials = await self.credentials()
                except Exception as exc:
                    self._push_off = f"no credentials: {exc}"
            if self._push_off is None:
                self._start_push()
        if self._new_mail:
            self._new_mail = False
            return
        waker: Deferred[None] = Deferred()
        self._waker = waker
        call = self.context.clock.callLater(timeout, self._wake)
        try:
            await waker
        finally:
            if call.active():
                call.cancel()
            self._waker = None
            self._new_mail = False

    def _wake(self) -> None:
        waker = self._waker
        if waker is not None and not waker.called:
            waker.callback(None)

    def _start_push(self) -> None:
        """Subscribe on a thread of the mailbox's own (never the kernel's pool)."""
        credentials = self._credentials
        if credentials is None:
            return

        def make_client() -> EWSClient:
            client = EWSClient(
                self.ews, credentials.username, credentials.secret, credentials.bearer
            )
            try:
                client.open_folder(self.folder_path)
            except BaseException:
                client.close()
                raise
            return client

        stream: push.Push | None = None

        def report(kind: str, detail: str) -> None:
            if stream is not None and self._push is stream:
                self._pushed(stream, kind, detail)

        stream = push.Push(self.name, make_client, self.context.reactor, report)
        self._push = stream
        stream.start()

    def _pushed(self, stream: push.Push, kind: str, detail: str) -> None:
        """A report of the stream's thread, on the reactor."""
        extra = {"mailbox": self.name}
        if kind == push.AUTH and self._push_auth_retries == 0:
            # a token that expired under an open stream: the next wait starts
            # one with the auth driver's current credentials
            self._push_auth_retries += 1
            self.supports_push = False
            self._push = None
            self._push_fresh = True
            log.info(
                "mailbox %s: the stream's credentials were refused (%s); subscribing again "
                "with fresh ones",
                self.name, detail, extra=extra,
            )  # fmt: skip
        elif kind in (push.LIVE, push.RESUBSCRIBED):
            self.supports_push = True
            self._push_auth_retries = 0
            if kind == push.LIVE:
                log.info(
                    "mailbox %s: streaming notifications on for %s",
                    self.name, self.folder_path, extra=extra,
                )  # fmt: skip
            else:
                log.info(
                    "mailbox %s: streaming subscription renewed after %s",
                    self.name, detail, extra=extra,
                )  # fmt: skip
        elif kind in (push.REFUSED, push.LOST, push.AUTH):
            self.supports_push = False
            self._push = None
            self._push_off = detail or kind
            if kind == push.REFUSED:
                self._push_refused = True  # not offered: not asked again by this source
                log.warning(
                    "mailbox %s: %s does not offer streaming notifications (%s); polling "
                    "every poll-interval",
                    self.name, self.where, detail, extra=extra,
                )  # fmt: skip
            else:
                log.warning(
                    "mailbox %s: streaming notifications lost (%s); polling every "
                    "poll-interval until the next connection",
                    self.name, detail, extra=extra,
                )  # fmt: skip
        # wake on everything: a listing now costs one SyncFolderItems and
        # covers what may have arrived while the subscription was being made
        self._new_mail = True
        self._wake()

    async def _stop_push(self) -> None:
        """Stop the stream (not waiting for its thread) and unsubscribe, best effort."""
        stream, self._push = self._push, None
        self.supports_push = False
        if stream is None:
            return
        identifier = stream.stop()
        client = self.client
        if identifier is None or client is None:
            return
        try:
            # straight to the pool, no back-off on ErrorServerBusy: never delay a stop
            await self.context.runner.run(push.unsubscribe, client, identifier)
        except Exception as exc:
            log.info(
                "mailbox %s: Unsubscribe failed (the subscription expires on its own): %s",
                self.name, exc, extra={"mailbox": self.name},
            )  # fmt: skip

    # ----------------------------------------------------------- disconnect

    def disconnect(self) -> Deferred[None]:
        return ensureDeferred(self._disconnect())

    async def _disconnect(self) -> None:
        await self._stop_push()
        if self.push_mode == "streaming" and not self._push_refused:
            self._push_off = None  # the next connection tries streaming again
        client = self.client
        if client is None:
            return
        try:
            await self._flush()
        except Exception as exc:
            log.warning(
                "mailbox %s: processed messages not acknowledged before disconnecting "
                "(they are listed again and recognised as stored): %s",
                self.name,
                exc,
                extra={"mailbox": self.name},
            )
        self._pending = []
        self.client = None
        await self.context.runner.run(client.close)


def _proxy_url(proxy: Any) -> str | None:
    """The requests proxy URL of the site's proxy: ``socks5h://`` (names resolved
    at the proxy) or ``socks5://``, ``http://`` for HTTP CONNECT."""
    if proxy is None:
        return None
    from urllib.parse import quote

    auth = ""
    if proxy.user:
        auth = f"{quote(proxy.user, safe='')}:{quote(proxy.password or '', safe='')}@"
    if proxy.kind == "socks5":
        scheme = "socks5h" if proxy.resolve_at_proxy else "socks5"
    else:
        scheme = "http"
    return f"{scheme}://{auth}{proxy.host}:{proxy.port}"
