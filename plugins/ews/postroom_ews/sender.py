"""The ``ews`` sender driver (``smtp-client: server-type: ews``).

Each message is sent as its From mailbox (the envelope's ``MAIL FROM``), as
the Graph sender does: through an exchangelib Account for that address,
impersonated by a service account (``impersonation: true``: the
ExchangeImpersonation header) or, otherwise, opened as a delegate with Send As
or Send on Behalf rights (the logged-in ``user``'s own mailbox when From is
``user``). An address the server refuses (no such mailbox, impersonation or
Send As denied) fails that message for good, saying why.

With ``verify-message-id`` (the default) the message is saved as a draft
(CreateItem ``SaveOnly``), its ``InternetMessageId`` read (GetItem), then sent
(SendItem): the Message-ID Exchange really uses is known before the message
leaves and goes back to the kernel in the :class:`SendResult`, so replies
thread to the outbound interaction even when Exchange replaced it. (A FindItem
in Sent Items after a ``SendAndSaveCopy`` would race the copy being saved,
could not work without a copy, and could only say "not found", not which ID
was used.)

Exchange sends a MIME message created with CreateItem (``MimeContent``,
``MessageDisposition`` ``SendAndSaveCopy`` or ``SendOnly``) to the addresses
*in the message*, not to an envelope. So the recipient headers are made to
say exactly the envelope's recipients before the message goes: To and Cc
addresses that are not in ``RCPT TO`` (suppressed ones) are removed, and the
envelope's recipients no header shows (Bcc) are carried in a ``Bcc`` header,
which Exchange delivers to and does not transmit. Everything else is sent byte
for byte. DSN parameters (``NOTIFY``, ``RET``, ``ENVID``) have no EWS
equivalent: such a request is refused with a permanent :class:`SendError`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from exchangelib.errors import (
    ErrorNonExistentMailbox,
    ErrorServerBusy,
    EWSError,
    ResponseMessageError,
    TransportError,
    UnauthorizedError,
)
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from zope.interface import implementer

from postroom.api import (
    Credentials,
    DriverContext,
    Envelope,
    ISender,
    LoginRefused,
    OptionSchema,
    Scope,
    SenderAuthenticationFailed,
    SendError,
    SendResult,
    parse_addresses,
    proxy_for,
    refresh_once,
)
from postroom_ews.client import Endpoint, EWSClient, safe_reason
from postroom_ews.source import _proxy_url

log = logging.getLogger(__name__)

TYPES = ("ews",)
AUTH_EVENT_NAME = "smtp-client"
#: SMTP DSN parameters (RFC 3461) EWS cannot carry
DSN_PARAMETERS = ("NOTIFY=", "RET=", "ENVID=", "ORCPT=")
#: EWS response codes that a retry of the same message cannot fix
PERMANENT_CODES = (
    "ErrorMessageSizeExceeded",
    "ErrorInvalidRecipients",
    "ErrorMimeContentConversionFailed",
    "ErrorMimeContentInvalid",
    "ErrorSendAsDenied",
    "ErrorImpersonateUserDenied",
    "ErrorNonExistentMailbox",
    "ErrorAccessDenied",
    "ErrorInvalidSendItemSaveSettings",
)
#: refusals of the From address: the cached Account for it is dropped
ADDRESS_CODES = (
    "ErrorSendAsDenied",
    "ErrorImpersonateUserDenied",
    "ErrorNonExistentMailbox",
    "ErrorAccessDenied",
)
_RECIPIENT_HEADERS = ("to", "cc", "bcc")


@implementer(ISender)
class EWSSender:
    """Sends outbound mail over EWS as each message's From mailbox."""

    needs_auth = True

    @staticmethod
    def postroom_add_options(schema: OptionSchema) -> None:
        add = schema.add
        scope = Scope.SMTP_CLIENT
        add(
            "server",
            scope=scope,
            types=TYPES,
            required=True,
            description="The EWS URL, `https://…/EWS/Exchange.asmx`.",
        )
        add(
            "user",
            scope=scope,
            types=TYPES,
            description="The user logging in (a mailbox's SMTP address, `DOMAIN\\user` "
            "for NTLM, or a service account). Messages are sent as their From "
            "address; this mailbox's own when there is none.",
        )
        add(
            "password",
            "secret",
            scope=scope,
            types=TYPES,
            description="Password (basic or NTLM). Use `${ENV_VAR}` or `${file:path}`.",
        )
        add(
            "ca-file",
            "path",
            scope=scope,
            types=TYPES,
            description="PEM CAs to trust instead of the system's.",
        )
        add(
            "protocol-timeout",
            "duration",
            scope=scope,
            types=TYPES,
            default="00:02:00",
            minimum=1,
            maximum=3600,
            description="Time allowed for one EWS request.",
        )
        add(
            "ews-auth-type",
            "choice",
            scope=scope,
            types=TYPES,
            default="basic",
            choices=("basic", "ntlm"),
            description="How a password is sent.",
        )
        add(
            "save-to-sent-items",
            "bool",
            scope=scope,
            types=TYPES,
            default="true",
            description="Keep a copy in the From mailbox's Sent Items; false: no copy.",
        )
        add(
            "impersonation",
            "bool",
            scope=scope,
            types=TYPES,
            default="false",
            description="`user` is a service account that impersonates each From mailbox "
            "(ExchangeImpersonation); false: it sends as a delegate with Send As rights.",
        )
        add(
            "verify-message-id",
            "bool",
            scope=scope,
            types=TYPES,
            default="true",
            description="Read the Message-ID Exchange gives each message before it is "
            "sent (draft, GetItem, SendItem: two more requests) so the outbound "
            "interaction records the one used; false: one CreateItem.",
        )

    def __init__(self, options: Any, context: DriverContext) -> None:
        self.context = context
        #: who refresh_once names in its log line
        self.name = AUTH_EVENT_NAME
        url = str(options.get("server"))
        if not url.lower().startswith("https://"):
            raise options.error("server must be an https:// EWS URL", "server")
        user = str(options.get("user") or "")
        ca_file = options.get("ca-file")
        self.endpoint = Endpoint(
            url=url,
            mailbox=user,
            auth_type=str(options.get("ews-auth-type")),
            impersonation=False,
            ca_file=str(ca_file) if ca_file else None,
            proxy_url=_proxy_url(proxy_for(context.config, None, "ews")),
            timeout=float(options.get("protocol-timeout")),
        )
        self.where = f"server {url}"
        self.save_copy = bool(options.get("save-to-sent-items"))
        self.impersonation = bool(options.get("impersonation"))
        self.verify = bool(options.get("verify-message-id"))
        self.client: EWSClient | None = None
        #: a digest of the secret the client was built with (never the secret itself)
        self.secret_digest: str | None = None

    # -- ISender

    def send(self, message: bytes, envelope: Envelope, message_id: str) -> Deferred[SendResult]:
        return ensureDeferred(self._send(message, envelope, message_id))

    def close(self) -> Deferred[None]:
        client, self.client = self.client, None
        if client is None:
            return succeed(None)
        return self.context.runner.run(client.close)

    def check_connection(self) -> Deferred[str]:
        """Log in and read Sent Items: what ``postroom check --connect`` reports."""
        return ensureDeferred(self._check())

    async def _check(self) -> str:
        try:
            await self._with_login(lambda client: client.sent_items())
        except ErrorNonExistentMailbox:
            if not self.impersonation:
                raise
            # the answer came past authentication: the service account logged
            # in, it just has no mailbox of its own (it sends impersonating)
            return (
                f"connected to {self.where} as {self.endpoint.mailbox} "
                "(no mailbox of its own; each message is sent impersonating its From address)"
            )
        return f"connected to {self.where} as {self.endpoint.mailbox}"

    # -- sending

    async def _send(self, message: bytes, envelope: Envelope, message_id: str) -> SendResult:
        dsn = [
            o
            for o in (*envelope.mail_options, *envelope.rcpt_options)
            if o.upper().startswith(DSN_PARAMETERS)
        ]
        if dsn:
            raise SendError(
                f"outbound {message_id}: EWS cannot carry DSN parameters "
                f"({' '.join(sorted(set(dsn)))}); not sent",
                permanent=True,
            )
        if not envelope.rcpt_to:
            raise SendError(f"outbound {message_id}: no recipient", permanent=True)
        sender = envelope.mail_from or self.endpoint.mailbox
        if not sender:
            raise SendError(
                f"outbound {message_id}: no sender address and no user to send as",
                permanent=True,
            )
        mime = with_recipients(message, envelope.rcpt_to)

        def send(client: EWSClient) -> str | None:
            account = client.account_for(sender, self.impersonation)
            return client.send_mime(account, mime, self.save_copy, self.verify)

        try:
            used = await self._with_login(send)
        except ErrorServerBusy as exc:
            raise SendError(f"{self.where} is busy: {safe_reason(exc)}") from None
        except (TransportError, EWSError) as exc:
            if not isinstance(exc, ResponseMessageError):  # a network error, a bad answer
                raise SendError(f"{self.where}: {safe_reason(exc)}") from None
            # an EWS ResponseCode (exchangelib's ResponseMessageError is a TransportError)
            code = type(exc).__name__
            if code in ADDRESS_CODES and self.client is not None:
                self.client.forget(sender)
            own = sender.lower() == self.endpoint.mailbox.lower()
            how = "impersonating" if self.impersonation else "as" if own else "as a delegate of"
            raise SendError(
                f"outbound {message_id} refused by {self.where} sending {how} {sender}: "
                f"{safe_reason(exc)}",
                permanent=code in PERMANENT_CODES,
            ) from None
        except OSError as exc:
            raise SendError(f"{self.where}: {safe_reason(exc)}") from None
        except (SendError, SenderAuthenticationFailed, CancelledError):
            raise
        except Exception as exc:  # exchangelib's own, or a malformed answer
            raise SendError(f"{self.where}: {safe_reason(exc)}") from None
        steps = (
            "CreateItem SaveOnly, GetItem, SendItem"
            if self.verify
            else "CreateItem " + ("SendAndSaveCopy" if self.save_copy else "SendOnly")
        )
        detail = f"{self.where}: {steps} as {sender}"
        actual = message_id
        if used is not None:
            if not used:
                detail += "; Exchange reported no Message-ID"
            elif used.strip() != message_id.strip():
                actual = used.strip()
                log.info(
                    "smtp-client: %s gave outbound %s the Message-ID %s; it is recorded so "
                    "replies thread",
                    self.where,
                    message_id,
                    actual,
                )
                detail += f"; Exchange replaced the Message-ID {message_id} with {actual}"
            else:
                detail += "; Message-ID kept (read back before sending)"
        return SendResult(message_id=actual, accepted=list(envelope.rcpt_to), detail=detail)

    async def _with_login(self, call: Any) -> Any:
        """Run ``call(client)`` in the thread pool; a 401 has the auth driver
        refresh and is tried once more (the kernel's ``refresh_once``), then it
        is SenderAuthenticationFailed."""

        async def attempt(credentials: Credentials) -> Any:
            client = await self._client_for(credentials)
            try:
                return await self.context.runner.run(call, client)
            except UnauthorizedError as exc:
                self.client = None
                raise LoginRefused(client.refusal(exc)) from None

        result, _ = await refresh_once(
            self,
            attempt,
            await self.credentials(),
            refused=lambda detail: SenderAuthenticationFailed(
                f"login refused by {self.where}: {detail}"
            ),
            where=self.where,
            who="smtp-client",
        )
        self._auth_event("login-ok", f"logged in to {self.where}")
        return result

    async def _client_for(self, credentials: Credentials) -> EWSClient:
        """The client logged in with *credentials* (a new one when they changed)."""
        digest = hashlib.sha256(credentials.secret.encode()).hexdigest()
        if self.client is None or self.secret_digest != digest:
            self.client = await self.context.runner.run(
                EWSClient,
                self.endpoint,
                credentials.username,
                credentials.secret,
                credentials.bearer,
            )
            self.secret_digest = digest
        return self.client

    # -- what refresh_once asks of its owner

    async def credentials(self) -> Credentials:
        authenticator = self.context.authenticator
        if authenticator is None:
            raise SendError(
                "smtp-client: server-type ews needs enable-authentication and an auth driver"
            )
        credentials: Credentials = await authenticator.credentials("ews")
        return credentials

    def login_refused(self, detail: str) -> None:
        """The server refused the credentials: the auth driver drops its token."""
        if self.context.authenticator is not None:
            self.context.authenticator.invalidate()
        self._auth_event("login-failed", detail)

    def _auth_event(self, event: str, detail: str) -> None:
        if self.context.auth_event is not None:
            self.context.auth_event(AUTH_EVENT_NAME, event, detail)


def with_recipients(message: bytes, rcpt_to: list[str]) -> bytes:
    """*message* whose To, Cc and Bcc headers name exactly *rcpt_to*: addresses
    not in it are dropped from To and Cc, any Bcc header is replaced by one
    holding the recipients no other header shows. The rest is unchanged."""
    match = re.search(rb"\r?\n\r?\n", message)
    head, rest = (message[: match.start()], message[match.start() :]) if match else (message, b"")
    newline = b"\r\n" if b"\r\n" in head or not head else b"\n"
    wanted = {a.lower(): a for a in rcpt_to}
    shown: set[str] = set()
    fields: list[bytes] = []
    for field in re.split(rb"\r?\n(?![ \t])", head):
        name, colon, value = field.partition(b":")
        key = name.strip().lower().decode("ascii", "replace")
        if not colon or key not in _RECIPIENT_HEADERS:
            fields.append(field)
            continue
        if key == "bcc":
            continue
        text = re.sub(r"\r?\n[ \t]", " ", value.decode("utf-8", "replace"))
        kept = [(n, a) for n, a in parse_addresses(text) if a.lower() in wanted]
        shown.update(a.lower() for _n, a in kept)
        if len(kept) == len(parse_addresses(text)):
            fields.append(field)  # nothing removed: keep it byte for byte
        elif kept:
            fields.append(name + b": " + _format(kept).encode("utf-8"))
    hidden = [wanted[a] for a in wanted if a not in shown]
    if hidden:
        fields.append(b"Bcc: " + ", ".join(hidden).encode("utf-8"))
    return newline.join(fields) + rest


def _format(addresses: list[tuple[str | None, str]]) -> str:
    from email.utils import formataddr

    return ", ".join(formataddr((n, a)) if n else a for n, a in addresses)
