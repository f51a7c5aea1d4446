"""The ``smtp`` sender driver (``smtp-client: server-type: smtp``).

The outbox worker calls :meth:`SMTPSender.send` on the reactor thread; every
blocking step (connect, TLS, AUTH, the mail transaction, NOOP, QUIT) runs in
the kernel's thread pool through ``context.runner``, one pooled connection per
send at a time. Failures come back as :class:`postroom.errors.SendError`
whose ``permanent`` flag follows one rule: permanent when the server refused
*this message* with a 5xx (sender, every recipient, the content) or when the
server lacks what the configuration demands (STARTTLS, AUTH); temporary for
everything that may heal by itself or by fixing the configuration (timeouts,
broken connections, 4xx replies, refused credentials, certificate problems),
so queued mail goes out once the cause is gone.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from zope.interface import implementer

from postroom.api import (
    Credentials,
    DriverContext,
    Envelope,
    ISender,
    LoginRefused,
    OptionSchema,
    ProxySettings,
    Scope,
    SendResult,
    add_connection_options,
    proxy_for,
    refresh_once,
)
from postroom_smtp.connection import (
    ConnectionSettings,
    SMTPConnection,
    SMTPSendError,
    TracingSMTP,
)
from postroom_smtp.envelope import EnvelopeError
from postroom_smtp.pool import ConnectionPool, PoolStats

log = logging.getLogger(__name__)

#: the ``mailbox`` argument of ``postroom_auth_event`` for the sender's logins (a
#: mailbox's own account, ``smtp-user``, is ``smtp-client[<mailbox>]``: its section's name)
AUTH_EVENT_NAME = "smtp-client"
TYPES = ("smtp",)


#: the usual port for each smtp-connection-security (submission; implicit TLS)
PORTS = {"starttls": 587, "ssl": 465, "none": 587}


@implementer(ISender)
class SMTPSender:
    """Sends outbound mail over SMTP with pooled smtplib connections."""

    #: with ``enable-authentication``, the kernel builds the ``auth`` driver for it
    needs_auth = True

    @staticmethod
    def postroom_add_options(schema: OptionSchema) -> None:
        add_connection_options(
            schema,
            scope=Scope.SMTP_CLIENT,
            types=TYPES,
            security_option="smtp-connection-security",
            user_option="user",
            security_default="starttls",
            ports=PORTS,
        )
        add = schema.add
        add(
            "cnx-pool-size",
            "int",
            scope=Scope.SMTP_CLIENT,
            types=TYPES,
            default=1,
            minimum=1,
            maximum=100,
            description="Most connections open to the server at once; sends beyond it wait "
            "for a free connection. The outbox sends one message at a time, so 1 is enough "
            "unless several senders share the gateway.",
        )
        add(
            "cnx-check-idle-time",
            "duration",
            scope=Scope.SMTP_CLIENT,
            types=TYPES,
            default="00:00:30",
            minimum=0,
            maximum=3600,
            description="A connection idle for longer than this is checked with NOOP before it "
            "is reused; one that does not answer is replaced without failing the send.",
        )
        add(
            "cnx-max-idle-time",
            "duration",
            scope=Scope.SMTP_CLIENT,
            types=TYPES,
            default="00:05:00",
            minimum=0,
            maximum=3600,
            description="A connection idle this long is closed (QUIT), before the server "
            "drops it (Postfix's smtpd_timeout is 300 s). 00:00:00: one connection per message.",
        )
        add(
            "mail.smtp.auth.mechanisms",
            scope=Scope.SMTP_CLIENT,
            types=TYPES,
            description="With an OAuth auth driver: the SASL mechanism to log in with "
            "(`XOAUTH2` or `OAUTHBEARER`; several, space-separated, in order of preference). "
            "When empty, OAUTHBEARER if the server offers it, else XOAUTH2.",
        )
        add(
            "helo-name",
            scope=Scope.SMTP_CLIENT,
            types=TYPES,
            description="Name given in EHLO; the host's fully qualified name (or its address "
            "in brackets) when empty.",
        )

    def __init__(self, options: Any, context: DriverContext) -> None:
        self.context = context
        #: who refresh_once and the auth events name
        self.name = str(getattr(options, "name", None) or AUTH_EVENT_NAME)
        self.settings = ConnectionSettings.from_options(
            options,
            security_option="smtp-connection-security",
            ports=PORTS,
            helo_name=options.get("helo-name") or None,
            auth_mechanisms=options.get("mail.smtp.auth.mechanisms") or None,
            proxy=self.proxy_settings(options),
        )
        security = self.settings.security
        self.pool: ConnectionPool[SMTPConnection] = ConnectionPool(
            size=int(options.get("cnx-pool-size")),
            check_idle=float(options.get("cnx-check-idle-time")),
            max_idle=float(options.get("cnx-max-idle-time")),
            clock=context.clock,
            open=self._open_connection,
            check=self._check_connection,
            dispose=self._dispose_connection,
        )
        #: builds the smtplib client of each connection (tests give a scripted one)
        self.client_factory: Callable[..., TracingSMTP] = TracingSMTP
        self._numbers = itertools.count(1)
        self._dsn_warned = False
        self._login_ok: bool | None = None
        self.messages_sent = 0
        if context.authenticator is not None and security == "none":
            log.warning(
                "smtp-client: enable-authentication is true and smtp-connection-security is "
                "none: the password goes to %s in clear text",
                self.settings.where,
            )

    def proxy_settings(self, options: Any) -> ProxySettings | None:
        """The proxy the sender connects through (None: directly): the
        ``mail.smtp.socks.*`` / ``mail.smtp.proxy.*`` properties of
        ``smtp-client``, else the site's ``proxy`` section."""
        return proxy_for(self.context.config, options, "smtp")

    @property
    def stats(self) -> PoolStats:
        """The pool's counters (connections opened, reused, checked...)."""
        return self.pool.stats

    # -- ISender

    def send(self, message: bytes, envelope: Envelope, message_id: str) -> Deferred[SendResult]:
        return ensureDeferred(self._send(message, envelope, message_id))

    def close(self) -> Deferred[None]:
        """QUIT every pooled connection (waits for those in use to come back)."""
        return self.pool.close()

    # -- sending

    async def _send(self, message: bytes, envelope: Envelope, message_id: str) -> SendResult:
        for attempt in (1, 2):
            conn = await self.pool.acquire()
            try:
                delivery = await self.context.runner.run(
                    conn.send,
                    message,
                    envelope.mail_from,
                    list(envelope.rcpt_to),
                    list(envelope.mail_options),
                    list(envelope.rcpt_options),
                )
            except EnvelopeError:
                self.pool.release(conn)
                raise
            except SMTPSendError as exc:
                self.pool.release(conn, broken=exc.broken or conn.broken)
                if exc.stale and attempt == 1:
                    log.info("%s; sending %s again on another connection", exc, message_id)
                    continue
                raise
            except BaseException:
                self.pool.release(conn, broken=True)
                raise
            self.pool.release(conn, broken=conn.broken)
            break
        self.messages_sent += 1
        if delivery.dropped and not self._dsn_warned:
            self._dsn_warned = True
            log.warning(
                "the SMTP server %s does not announce DSN: sending without %s "
                "(no delivery notifications will come; said once)",
                self.settings.where,
                " ".join(delivery.dropped),
            )
        if delivery.refused:
            log.warning(
                "outbound %s: the SMTP server refused %d of %d recipients: %s",
                message_id,
                len(delivery.refused),
                len(delivery.refused) + len(delivery.accepted),
                "; ".join(f"{r} ({why})" for r, why in delivery.refused.items()),
            )
        return SendResult(
            message_id=message_id,
            accepted=delivery.accepted,
            refused=delivery.refused,
            detail=f"{self.settings.where}: {delivery.reply}",
        )

    def check_connection(self) -> Deferred[str]:
        """Connect, negotiate TLS and log in as a send would, then quit:
        what ``postroom check --connect`` reports (the server's EHLO keywords)."""
        return ensureDeferred(self._check())

    async def _check(self) -> str:
        conn = await self._open()
        try:
            client = conn.client
            keywords = sorted(k.upper() for k in client.esmtp_features) if client.does_esmtp else []
            who = f" as {conn.user}" if conn.user else ""
            return f"connected to {self.settings.where}{who}; capabilities: " + " ".join(keywords)
        finally:
            await self._dispose_connection(conn)

    # -- what the pool calls

    def _open_connection(self) -> Deferred[SMTPConnection]:
        return ensureDeferred(self._open())

    async def _open(self) -> SMTPConnection:
        if self.context.authenticator is None:
            return await self._open_with(None)
        refusals: list[SMTPSendError] = []

        async def attempt(credentials: Credentials) -> SMTPConnection:
            try:
                return await self._open_with(credentials)
            except SMTPSendError as exc:
                if not exc.auth_failed:
                    raise
                refusals.append(exc)
                raise LoginRefused(str(exc)) from None

        # The auth driver drops a refused token; a new one (an expired token,
        # refreshed) is tried once at once, not after the back-off; a second
        # refusal is the server's own error (its code says what the outbox does).
        conn, credentials = await refresh_once(
            self,
            attempt,
            await self.credentials(),
            refused=lambda _detail: refusals[-1],
            where=self.settings.where,
            who=self.name,
        )
        if self._login_ok is not True:
            self._login_ok = True
            self._auth_event(
                "login-ok", f"logged in to {self.settings.where} as {credentials.username}"
            )
        return conn

    async def _open_with(self, credentials: Credentials | None) -> SMTPConnection:
        number = next(self._numbers)
        conn: SMTPConnection = await self.context.runner.run(
            SMTPConnection.open,
            self.settings,
            credentials,
            number,
            client_factory=self.client_factory,
        )
        log.debug("opened SMTP connection #%d to %s", number, self.settings.where)
        return conn

    # -- what refresh_once asks of its owner

    async def credentials(self) -> Credentials:
        authenticator = self.context.authenticator
        assert authenticator is not None
        credentials: Credentials = await authenticator.credentials("smtp")
        return credentials

    def login_refused(self, detail: str) -> None:
        """The server refused the login: the auth driver refreshes, the hook hears it."""
        if self.context.authenticator is not None:
            self.context.authenticator.invalidate()
        self._login_ok = False
        self._auth_event("login-failed", detail)

    def _check_connection(self, conn: SMTPConnection) -> Deferred[bool]:
        return self.context.runner.run(conn.noop)

    def _dispose_connection(self, conn: SMTPConnection) -> Deferred[None]:
        return self.context.runner.run(conn.close)

    def _auth_event(self, event: str, detail: str) -> None:
        if self.context.auth_event is not None:
            self.context.auth_event(self.name, event, detail)
