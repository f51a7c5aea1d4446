"""The ``pop3`` source: a POP3 mailbox (``type: pop3`` in ``pop-client``).

How a pass goes, and why:

* **One session per pass.** A POP3 session sees the maildrop as it was at
  login, and deletions (``DELE``) only take effect at a clean ``QUIT``. So a
  session is opened for a pass (``connect`` or the first ``list_new``) and
  closed with ``QUIT`` when the pass is over (``wait_for_new`` or
  ``disconnect``): new mail becomes visible, and the pass's deletions are
  committed. A crash or a dropped connection before ``QUIT`` deletes nothing:
  those messages are fetched again next time and the store recognises them as
  duplicates (same UIDL), so they are acknowledged again, never stored twice.
* **UIDL** names messages (``source_key``) across sessions; message numbers
  are only valid within one session, so they are looked up again after a
  reconnect. A server without UIDL gets keys made from ``TOP n 0`` (a digest
  of the header block), unless ``mail.pop3.disabletop`` forbids TOP, which
  is then a clear error rather than guesswork.
* **One command at a time.** The kernel fetches up to ``gateway.concurrency``
  messages at once; POP3 cannot, so a lock serialises them in order.
* **RETR streams** into a spool file (:mod:`postroom_pop3.spool`); the message
  is never whole in memory, and no line is too long.
* **Acknowledge** is ``DELE`` (``after-processing: delete``), or, with
  ``leave``, remembering the UIDL for the process lifetime so it is not
  fetched again (the store's dedupe keys make a refetch after a restart
  harmless, only slower).
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from typing import Any

from twisted.internet import defer, error, task
from twisted.internet.protocol import Factory
from twisted.mail.pop3 import (
    InsecureAuthenticationDisallowed,
    LineTooLong,
    ServerErrorResponse,
    TLSNotSupportedError,
)
from twisted.python.failure import Failure

from postroom.api import (
    OAUTH_MECHANISMS,
    Credentials,
    Deadline,
    DriverContext,
    FetchedMessage,
    LoginRefused,
    OptionSchema,
    ProxyError,
    Scope,
    ServerSourceBase,
    SourceError,
    SourceItem,
    choose_mechanism,
    describe_connection_error,
    is_hostname_mismatch,
    read_error_challenge,
    tls_reasons,
)
from postroom_pop3.protocol import BearerExchange, PostroomPOP3Client
from postroom_pop3.spool import SpoolWriter

log = logging.getLogger(__name__)

TYPE = "pop3"
#: the usual port for each pop-connection-security
PORTS = {"ssl": 995, "starttls": 110, "none": 110}
#: the commercial product's switch for Office 365's two-line XOAUTH2
TWO_LINE_OPTION = "mail.pop3.auth.xoauth2.two.line.authentication.format"
#: response codes (RFC 2449/3206) that say "not now", not "wrong password"
_TEMPORARY_CODES = (b"[IN-USE]", b"[LOGIN-DELAY]", b"[SYS/TEMP]")

#: UIDLs acknowledged in ``leave`` mode, per kernel (its SiteConfig) and
#: mailbox: the kernel builds a new source after a connection failure, and
#: this set must outlive the source for "process lifetime" to mean that.
_SEEN: dict[int, dict[str, set[str]]] = {}


def _seen_set(config: Any, mailbox: str) -> set[str]:
    key = id(config)
    if key not in _SEEN:
        try:
            weakref.finalize(config, _SEEN.pop, key, None)
        except TypeError:  # not weak-referenceable (a test double): per source then
            return set()
        _SEEN[key] = {}
    return _SEEN[key].setdefault(mailbox, set())


def describe(exc: BaseException) -> str:
    """An operator's description of a connection-level failure (no secrets in it)."""
    reasons = tls_reasons(exc)
    if reasons is not None:
        return "TLS handshake failed: " + "; ".join(reasons)
    if is_hostname_mismatch(exc):
        return f"TLS certificate does not match the server's host name ({exc})"
    if isinstance(exc, LineTooLong):
        return f"server sent a line too long to read ({exc})"
    if isinstance(exc, ServerErrorResponse):
        return "server said: " + _text(exc)
    described = describe_connection_error(exc)
    if described is not None:
        return described
    name = type(exc).__name__
    return f"{name}: {exc}" if str(exc) else name


def _text(exc: ServerErrorResponse) -> str:
    raw = exc.args[0] if exc.args else b""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _capability(key: bytes, value: Any) -> str:
    """One CAPA line as text: ``SASL XOAUTH2 OAUTHBEARER``, ``UIDL``."""
    words = [key, *value] if isinstance(value, list) else [key]
    return b" ".join(w for w in words if isinstance(w, bytes)).decode("ascii", "replace")


class _OneShot(Factory):
    """Hands out the one client of a connection attempt, quietly.

    (``connectProtocol``'s factory logs "Starting/Stopping factory" at INFO on
    every connection: twice per poll for a POP3 mailbox.)
    """

    noisy = False

    def __init__(self, client: PostroomPOP3Client) -> None:
        self.client = client

    def buildProtocol(self, addr: Any) -> PostroomPOP3Client:
        return self.client


class POP3Source(ServerSourceBase):
    protocol = TYPE
    types = (TYPE,)
    ports = PORTS

    @classmethod
    def postroom_add_options(cls, schema: OptionSchema) -> None:
        cls.add_server_options(schema)
        schema.add(
            "after-processing",
            "choice",
            scope=Scope.MAILBOX,
            types=(TYPE,),
            default="delete",
            choices=("delete", "leave"),
            description="What happens to a message on the server once it is stored: "
            "`delete` (DELE, committed at the end of each pass) or `leave` (kept; "
            "not fetched again while the gateway runs, and recognised as a duplicate "
            "after a restart).",
        )
        schema.add(
            "mail.pop3.disabletop",
            "bool",
            scope=Scope.MAILBOX,
            types=(TYPE,),
            default="false",
            description="Never send TOP (for servers whose TOP is broken): RETR only. "
            "postroom uses TOP only to tell messages apart on a server without UIDL; "
            "with this set, such a server is an error.",
        )
        schema.add(
            "mail.pop3.auth.mechanisms",
            scope=Scope.MAILBOX,
            types=(TYPE,),
            description="With an OAuth auth driver: the SASL mechanism to log in with "
            "(`XOAUTH2` or `OAUTHBEARER`; several, space-separated, in order of preference). "
            "When empty, OAUTHBEARER if the server offers it (CAPA SASL), else XOAUTH2.",
        )
        schema.add(
            TWO_LINE_OPTION,
            "bool",
            scope=Scope.MAILBOX,
            types=(TYPE,),
            default="false",
            description="Send XOAUTH2 in two lines (`AUTH XOAUTH2`, then the token after the "
            "server's `+`), as Office 365 documents, instead of on the AUTH line.",
        )

    def __init__(self, mailbox: Any, context: DriverContext) -> None:
        super().__init__(mailbox, context)
        self.after = str(mailbox.get("after-processing"))
        self.disable_top = bool(mailbox.get("mail.pop3.disabletop"))
        self.forced_mechanism: str | None = mailbox.get("mail.pop3.auth.mechanisms") or None
        self.two_line = bool(mailbox.get(TWO_LINE_OPTION))
        self._client: PostroomPOP3Client | None = None
        self._lock = defer.DeferredLock()
        #: source key -> 0-based message number, valid for the current session only
        self._index: dict[str, int] = {}
        #: source keys DELE'd in the current session (committed at QUIT)
        self._deleted: set[str] = set()
        self._seen = _seen_set(context.config, self.name) if self.after == "leave" else set()
        self._wait: defer.Deferred[None] | None = None
        #: disconnect() was called: open no new session (see _session)
        self._closing = False

    # ------------------------------------------------------------ session

    def _endpoint(self) -> Any:
        """Where to connect (a seam for tests): TCP or the proxy's tunnel,
        wrapped in TLS for ``ssl`` (:meth:`ServerSourceBase.endpoint`)."""
        return self.endpoint()

    def _new_client(self) -> PostroomPOP3Client:
        return PostroomPOP3Client(
            clock=self.context.clock,
            timeout=self.settings.protocol_timeout,
            tracer=self.tracer,
            # USER/PASS in clear text only when the site chose clear text
            allow_insecure_login=not self.settings.encrypted,
        )

    async def _open(self) -> PostroomPOP3Client:
        """Connect, (STLS,) log in: a ready session, or SourceError."""
        credentials = await self.credentials()
        client = self._new_client()
        try:
            await self._handshake(client)
            await self._login(client, credentials)
        except BaseException:
            self._drop(client)
            raise
        return client

    async def _handshake(self, client: PostroomPOP3Client) -> None:
        """TCP, TLS, greeting and STLS, all within ``connect-timeout``."""
        connecting: defer.Deferred[Any] = self._endpoint().connect(_OneShot(client))

        def expire() -> None:
            if not connecting.called:
                connecting.cancel()
            else:
                client._give_up(Failure(error.TimeoutError("connect-timeout")))

        deadline = Deadline(self.context.clock, self.settings.connect_timeout, expire)
        try:
            await connecting
            await client.greeted
            caps = await client.capabilities()
            if self.settings.security == "starttls":
                if b"STLS" not in caps:
                    raise TLSNotSupportedError()
                caps = await client.start_tls_verified(self.tls())
            client.capa = caps
        except TLSNotSupportedError:
            raise SourceError(
                f"{self.where} does not offer STLS, but "
                "pop-connection-security is starttls: refusing to go on in clear text "
                "(use ssl, or none if clear text is really wanted)"
            ) from None
        except ProxyError as exc:
            raise SourceError(f"cannot connect to {self.where}: {exc}") from None
        except SourceError:
            raise  # the ca-file cannot be read: said as it is
        except Exception as exc:
            if deadline.expired:
                raise SourceError(
                    f"could not connect to {self.where} within "
                    f"connect-timeout ({deadline.seconds:g}s, TLS and greeting included)"
                ) from None
            raise SourceError(f"cannot connect to {self.where}: {describe(exc)}") from exc
        finally:
            deadline.cancel()

    async def _login(self, client: PostroomPOP3Client, credentials: Credentials) -> None:
        await self.log_in(lambda creds: self._try_login(client, creds), credentials)

    async def _try_login(self, client: PostroomPOP3Client, credentials: Credentials) -> str:
        """One login; LoginRefused when the server refused the credentials,
        SourceError when it cannot check them now (``-ERR [SYS/TEMP]``)."""
        mechanism = credentials.mechanism.upper()
        exchange: BearerExchange | None = None
        if not credentials.bearer and mechanism not in ("PLAIN", "LOGIN"):
            raise SourceError(
                f"the auth driver gave {credentials.mechanism} "
                "credentials; POP3 takes a password (USER/PASS) or an OAuth access token"
            )
        try:
            if credentials.bearer:
                mechanism = self._oauth_mechanism(client)
                two_line = mechanism == "XOAUTH2" and self.two_line
                d, exchange = client.authenticate_bearer(
                    mechanism,
                    credentials.username,
                    credentials.secret,
                    self.settings.host,
                    self.settings.port,
                    two_line=two_line,
                )
                await d
            else:
                await client.login_user_pass(
                    credentials.username.encode("utf-8"), credentials.secret.encode("utf-8")
                )
        except InsecureAuthenticationDisallowed:
            raise SourceError(
                f"refusing to send the password in clear text to "
                f"{self.where} (set pop-connection-security to none to allow it)"
            ) from None
        except ServerErrorResponse as exc:
            raw = exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else b""
            text = _text(exc)
            if raw.startswith(_TEMPORARY_CODES):
                raise SourceError(f"{self.where} cannot open the mailbox now: {text}") from None
            challenge = None
            if exchange is not None and exchange.challenge is not None:
                challenge = read_error_challenge(exchange.challenge)
            raise LoginRefused(text + (f" ({challenge.describe()})" if challenge else "")) from None
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(
                f"connection to {self.where} failed while logging in: {describe(exc)}"
            ) from exc
        return f"{mechanism} on {self.where}"

    def _oauth_mechanism(self, client: PostroomPOP3Client) -> str:
        """XOAUTH2 or OAUTHBEARER, as the CAPA ``SASL`` line offers (and
        ``mail.pop3.auth.mechanisms``). A server that lists no SASL line
        is trusted with the forced mechanism."""
        sasl = client.capa.get(b"SASL") if client.capa else None
        if sasl is None and self.forced_mechanism:
            offered = list(OAUTH_MECHANISMS)
        else:
            offered = [m.decode("ascii", "replace").upper() for m in (sasl or [])]
        mechanism = choose_mechanism(offered, self.forced_mechanism)
        if mechanism is None:
            wanted = (
                f"{self.forced_mechanism} (mail.pop3.auth.mechanisms)"
                if self.forced_mechanism
                else "XOAUTH2 or OAUTHBEARER"
            )
            raise SourceError(
                f"mailbox {self.name}: {self.where} offers "
                f"{'SASL ' + ' '.join(offered) if offered else 'no SASL mechanism (CAPA)'}, "
                f"not {wanted}: cannot log in with the access token"
            )
        return mechanism

    @staticmethod
    def _drop(client: PostroomPOP3Client) -> None:
        """Close a connection now (an abandoned session: nothing to commit)."""
        if not client.lost and client.transport is not None:
            client._give_up(Failure(error.ConnectionDone("closed by postroom")))

    async def _session(self, *, indexed: bool) -> PostroomPOP3Client:
        """The live session, opening one when there is none (call with the lock held).

        A new session's message numbers are unknown: with *indexed*, they are
        read (UIDL/LIST) before returning.
        """
        client = self._client
        if client is not None and not client.lost:
            return client
        if client is not None and self._deleted:
            log.warning(
                "mailbox %s: connection lost before QUIT: %d deletion(s) not committed; "
                "those messages will be fetched again and recognised as duplicates",
                self.name,
                len(self._deleted),
            )
        self._client = None
        self._index = {}
        self._deleted = set()
        if self._closing:
            # The gateway is stopping while the kernel still works through the
            # pass: a new session could never be QUIT, so its DELEs would be lost.
            raise SourceError(f"mailbox {self.name} is being disconnected")
        client = await self._open()
        self._client = client
        if indexed:
            await self._read_index(client)
        return client

    async def _end_session(self, why: str) -> None:
        """QUIT: commit this session's deletions, and see new mail next time."""
        async with self._lock:
            client, self._client = self._client, None
            deleted, self._deleted = self._deleted, set()
            self._index = {}
            if client is None:
                return
            if client.lost:
                if deleted:
                    log.warning(
                        "mailbox %s: connection lost before QUIT: %d deletion(s) not "
                        "committed; they will be fetched again and recognised as duplicates",
                        self.name,
                        len(deleted),
                    )
                return
            try:
                await client.quit()
            except Exception as exc:
                log.warning(
                    "mailbox %s: QUIT (%s) failed: %s; %d deletion(s) not committed, "
                    "they will be fetched again and recognised as duplicates",
                    self.name,
                    why,
                    describe(exc),
                    len(deleted),
                )
            else:
                if deleted:
                    log.info(
                        "mailbox %s: %d message(s) deleted from %s",
                        self.name,
                        len(deleted),
                        self.where,
                    )
            finally:
                self._drop(client)

    # ------------------------------------------------------------ listing

    async def _read_index(self, client: PostroomPOP3Client) -> list[SourceItem]:
        """UIDL (or TOP) and LIST: every message of this session, in server order."""
        try:
            uidls: list[bytes | None] | None = await client.listUID()
        except ServerErrorResponse:
            uidls = None  # UIDL is optional in RFC 1939
        except Exception as exc:
            raise self._lost(exc, "listing messages (UIDL)") from exc
        try:
            sizes: list[int | None] = await client.listSize()
        except Exception as exc:
            raise self._lost(exc, "listing messages (LIST)") from exc
        if uidls is None:
            keys = await self._keys_from_headers(client, sizes)
        else:
            keys = [
                uid.decode("ascii", "backslashreplace") if uid is not None else None
                for uid in uidls
            ]
        index: dict[str, int] = {}
        items: list[SourceItem] = []
        for number, key in enumerate(keys):
            if key is None:
                continue  # deleted in this session
            if key in index:
                log.warning(
                    "mailbox %s: %s lists UIDL %r twice; only the first is fetched",
                    self.name,
                    self.where,
                    key,
                )
                continue
            index[key] = number
            size = sizes[number] if number < len(sizes) else None
            items.append(SourceItem(source_key=key, size=size))
        self._index = index
        return items

    async def _keys_from_headers(
        self, client: PostroomPOP3Client, sizes: list[int | None]
    ) -> list[str | None]:
        """Keys for a server without UIDL: a digest of each header block (``TOP n 0``)."""
        if self.disable_top:
            raise SourceError(
                f"{self.where} has no UIDL, and mail.pop3.disabletop "
                "forbids TOP: postroom cannot tell its messages apart safely"
            )
        keys: list[str | None] = []
        counts: dict[str, int] = {}
        for number, size in enumerate(sizes):
            if size is None:
                keys.append(None)
                continue
            try:
                lines = await client.retrieve(number, lines=0)
            except Exception as exc:
                raise self._lost(exc, f"reading headers of message {number + 1} (TOP)") from exc
            digest = hashlib.sha256(b"\r\n".join(lines) + b"\r\n%d" % size).hexdigest()[:40]
            counts[digest] = counts.get(digest, 0) + 1
            keys.append(f"top-{digest}" + (f"-{counts[digest]}" if counts[digest] > 1 else ""))
        return keys

    def _lost(self, exc: BaseException, doing: str) -> SourceError:
        """A SourceError for a failure while *doing*; forget a dead session."""
        if self._client is not None and self._client.lost:
            self._client = None
        if isinstance(exc, SourceError):
            return exc
        return SourceError(f"{self.where}: {doing}: {describe(exc)}")

    async def _known(self, keys: list[str]) -> set[str]:
        """Keys the store already holds: a kernel seam not there yet (see README)."""
        lookup = getattr(self.context, "known_source_keys", None)
        if lookup is None or not keys:
            return set()
        found = await defer.maybeDeferred(lookup, self.name, keys)
        return set(found)

    # ------------------------------------------------------------ ISource


    @property
    def capabilities(self) -> frozenset[str]:
        """What the server's CAPA listed once connected (``check --connect``)."""
        client = self._client
        capa = client.capa if client is not None else {}
        return frozenset(_capability(key, value) for key, value in capa.items())
    def connect(self) -> defer.Deferred[None]:
        self._closing = False

        async def go() -> None:
            async with self._lock:
                await self._session(indexed=False)

        return defer.ensureDeferred(go())

    def list_new(self, cursor: Any) -> defer.Deferred[list[SourceItem]]:
        """Every message on the server not yet acknowledged, in server order.

        *cursor* is not used: UIDLs are not ordered, so no bounded cursor can
        say what was done (see the README).
        """

        async def go() -> list[SourceItem]:
            async with self._lock:
                client = await self._session(indexed=False)
                items = await self._read_index(client)
            if self.after == "leave":
                present = {item.source_key for item in items}
                self._seen &= present  # forget what others deleted: the set stays bounded
                self._seen |= await self._known(
                    [i.source_key for i in items if i.source_key not in self._seen]
                )
                items = [item for item in items if item.source_key not in self._seen]
            return items

        return defer.ensureDeferred(go())

    def fetch(self, item: SourceItem) -> defer.Deferred[FetchedMessage]:
        async def go() -> FetchedMessage:
            async with self._lock:
                client = await self._session(indexed=True)
                number = self._index.get(item.source_key)
                if number is None:
                    raise SourceError(f"message {item.source_key} is no longer on {self.where}")
                self.note_size(item.source_key, item.size)
                sink = SpoolWriter(self.spool(str(number + 1)))
                try:
                    await client.retrieve_to(number, sink)
                except ServerErrorResponse as exc:
                    sink.discard()
                    raise SourceError(
                        f"{self.where} refused RETR of message {item.source_key}: {_text(exc)}"
                    ) from None
                except Exception as exc:
                    sink.discard()
                    raise self._lost(exc, f"fetching message {item.source_key}") from exc
            return FetchedMessage(
                mailbox=self.name,
                source_key=item.source_key,
                raw=sink.raw(),
                server_size=item.size,
            )

        return defer.ensureDeferred(go())

    def acknowledge(self, message: FetchedMessage) -> defer.Deferred[None]:
        """The store has it: DELE (committed at this pass's QUIT), or remember it."""

        async def go() -> None:
            self.drop_spooled(message)  # the store has its own copy now
            key = message.source_key
            if self.after == "leave":
                self._seen.add(key)
                return
            async with self._lock:
                if self._closing and (self._client is None or self._client.lost):
                    log.info(
                        "mailbox %s: message %s stored after the session ended; it will be "
                        "deleted on the next start (fetched again, recognised as a duplicate)",
                        self.name,
                        key,
                    )
                    return
                client = await self._session(indexed=True)
                number = self._index.get(key)
                if number is None or key in self._deleted:
                    return  # gone already (deleted by another client, or twice acked)
                try:
                    await client.delete(number)
                except ServerErrorResponse as exc:
                    raise SourceError(
                        f"{self.where} refused DELE of message {key}: {_text(exc)}"
                    ) from None
                except Exception as exc:
                    raise self._lost(exc, f"deleting message {key}") from exc
                self._deleted.add(key)

        return defer.ensureDeferred(go())

    def release(self, message: FetchedMessage) -> defer.Deferred[None]:
        """A failure: drop the spool file; the message stays on the server."""
        self.drop_spooled(message)
        return defer.succeed(None)

    def wait_for_new(self, timeout: float) -> defer.Deferred[None]:
        """End the pass (QUIT commits deletions), then wait *timeout* on the clock.

        POP3 cannot push, and a session never sees mail that arrived after its
        login, so the next pass logs in again.
        """

        async def go() -> None:
            await self._end_session("end of pass")
            await task.deferLater(self.context.clock, timeout, lambda: None)

        def cancelled(failure: Failure) -> None:
            failure.trap(defer.CancelledError)  # disconnect() ended the wait: not an error

        waiting = defer.ensureDeferred(go())
        waiting.addErrback(cancelled)
        self._wait = waiting
        return waiting

    def disconnect(self) -> defer.Deferred[None]:
        """QUIT (committing the pass's deletions) once the commands queued before it ran.

        Fetches queued after it fail and acknowledgements after it are left to
        the next start: no new session is opened, as nothing would QUIT it.
        """
        self._closing = True
        if self._wait is not None and not self._wait.called:
            self._wait.cancel()
        return defer.ensureDeferred(self._end_session("disconnect"))
