"""The outbound pipeline: one claimed outbox entry in, a sent message (or an error) out.

render -> veto -> envelope -> build -> send, then record. Each step is a
method; :meth:`OutboundPipeline.compose` runs the steps before sending, for a
send attempt and for a preview alike (``postroom render``, ``POST /render``), so
a preview shows exactly what an attempt would send.
:class:`postroom.services.outbound.OutboundService` claims the entries,
calls :meth:`OutboundPipeline.send` and decides what a failure costs (back-off
or the end), and records the outcome here. A failure is an exception: a
:class:`~postroom.errors.SendError` that is ``permanent`` (an invalid rendered
request, a plugin header that cannot be written, a message that cannot be built,
a plugin's veto) can never succeed; any other may on a later attempt.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import attrs

from postroom import keys
from postroom.addresses import AddressError, parse_mailbox
from postroom.errors import SendError
from postroom.model import (
    AttachedValue,
    Envelope,
    Interaction,
    OutboundAttachment,
    OutboundRequest,
    OutboxEntry,
    OutboxState,
    SuppressionEntry,
)
from postroom.outbound_files import FileError, add_to_message, check_limits, file_limits
from postroom.replies import reply_references
from postroom.sendrequest import (
    BUILTIN_FORBIDDEN_HEADERS,
    RequestError,
    header_name,
    header_text_problem,
    is_kernel_header,
    mailboxes_of,
    needs_smtputf8,
    request_header_refusal,
    validate_request,
)
from postroom.store.errors import RawIntegrityError

if TYPE_CHECKING:
    from postroom.context import Context
    from postroom.plugins.facade import Hooks, Veto

log = logging.getLogger(__name__)


class HeaderInjection(SendError, ValueError):
    """A header a plugin added cannot be written (a control character, a bad name,
    a header the kernel writes): building the message would fail every time."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


#: attached key marking the outbound interaction of an automatic request
AUTOMATIC_KEY = keys.AUTOMATIC
#: attached key listing the recipients the server refused (``addr: reply; ...``)
REFUSED_KEY = keys.REFUSED_RECIPIENTS

#: an SMTP reply saying the address does not exist or no longer takes mail:
#: a 5xx reply with an enhanced code 5.1.0-5.1.6 or 5.1.10 (bad destination address,
#: not the sender's 5.1.7/5.1.8) or 5.2.1 (mailbox disabled)
_UNKNOWN_ADDRESS = re.compile(r"^5\d\d[ -]5\.(?:1\.(?:[0-6]|10)|2\.1)\b")


def is_unknown_address(reply: str) -> bool:
    """Whether a refusal is a hard bounce of the address itself (suppressed),
    not a policy or a temporary refusal (which says nothing about the address)."""
    return bool(_UNKNOWN_ADDRESS.match(reply.strip()))


class Vetoed(SendError):
    """A plugin said the request must not be sent (``postroom_veto``): never retried."""

    def __init__(self, veto: Veto) -> None:
        self.veto = veto
        super().__init__(str(veto), permanent=True)


def _check_plugin_header(name: str, value: str) -> None:
    """A header from ``postroom_envelope``: a field name, no control character, not
    one the kernel writes from the request (plugins may add Disposition-Notification-To,
    X-Loop, Auto-Submitted...)."""
    try:
        trimmed = header_name(name)
    except RequestError as exc:
        raise HeaderInjection(f"a plugin's header: {exc.message}") from None
    if trimmed != name:
        raise HeaderInjection(f"a plugin's header name {name!r} has blanks around it")
    if is_kernel_header(name):
        raise HeaderInjection(f"header {name!r} is set by postroom, not by a plugin")
    problem = header_text_problem(value)
    if problem is not None:
        raise HeaderInjection(f"the value a plugin gave header {name!r} {problem}")


def build_message(
    request: OutboundRequest,
    message_id: str,
    parent_message_id: str | None,
    extra_headers: dict[str, str],
    now: datetime,
    forbidden: frozenset[str] = BUILTIN_FORBIDDEN_HEADERS,
    references: list[str] | None = None,
    files: Sequence[OutboundAttachment] = (),
    charset: str = "utf-8",
) -> bytes:
    """The RFC 5322 message for a validated request (CRLF line ends).

    A reply's *references* is the whole chain (:func:`postroom.replies.reply_references`);
    without it a reply refers to *parent_message_id* alone. *files* (with their
    bytes) follow the body as attachments; text and HTML are written in
    *charset* (``outbound-msg-charset``), or in UTF-8 when it cannot write them.

    The plugins' *extra_headers* are checked (:class:`HeaderInjection`, permanent)
    and those on the site's *forbidden* list dropped. A request naming a UTF-8
    local part is written with UTF-8 headers (RFC 6532): only a server announcing
    SMTPUTF8 takes it.
    """
    for name, value in extra_headers.items():
        if name.lower() not in forbidden:  # those are dropped below, whatever they hold
            _check_plugin_header(name, value)
    for name in request.headers:  # the request was validated: a safeguard for other callers
        refusal = request_header_refusal(name, forbidden)
        if refusal is not None:
            raise HeaderInjection(refusal)
    msg = EmailMessage()
    msg["From"] = request.from_addr or ""
    msg["To"] = ", ".join(request.to)
    if request.cc:
        msg["Cc"] = ", ".join(request.cc)
    msg["Subject"] = request.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id
    if parent_message_id:
        msg["In-Reply-To"] = parent_message_id
        msg["References"] = " ".join(references or [parent_message_id])
    if request.automatic:
        msg["Auto-Submitted"] = "auto-replied"
    for name, value in [*request.headers.items(), *extra_headers.items()]:
        if name.lower() in forbidden:
            log.info("dropped forbidden header %s from outbound %s", name, message_id)
            continue
        del msg[name]
        msg[name] = value
    if request.text is not None or request.html is None:
        _set_text(msg, request.text or "", "plain", charset, message_id)
    if request.html is not None:
        if request.text is None:
            _set_text(msg, request.html, "html", charset, message_id)
        else:
            _set_text(msg, request.html, "html", charset, message_id, alternative=True)
    add_to_message(msg, files)
    return msg.as_bytes(policy=policy.SMTPUTF8 if needs_smtputf8(request) else policy.SMTP)


def _set_text(
    msg: EmailMessage,
    text: str,
    subtype: str,
    charset: str,
    message_id: str,
    alternative: bool = False,
) -> None:
    """Set (or add as an alternative) a text part in *charset*, else in UTF-8."""
    put = msg.add_alternative if alternative else msg.set_content
    if charset.lower() not in ("utf-8", "utf8"):
        try:
            text.encode(charset)
        except (UnicodeEncodeError, LookupError):
            log.warning(
                "outbound %s: its %s part has characters %s cannot write; sent in UTF-8",
                message_id, subtype, charset,
            )  # fmt: skip
        else:
            put(text, subtype=subtype, charset=charset)
            return
    put(text, subtype=subtype)


def _envelope_problem(envelope: Envelope) -> str | None:
    """What makes the envelope unsendable after the plugins had their say, or None.

    Every recipient and the sender (unless empty: the null reverse-path) must be
    one plain addr-spec: smtplib would otherwise send what it can make of the
    text (``RCPT TO:<not>``) and the server add its own domain.
    """
    if not envelope.rcpt_to:
        return "the envelope has no recipient"
    senders = [envelope.mail_from] if envelope.mail_from else []
    for address in [*senders, *envelope.rcpt_to]:
        try:
            found = parse_mailbox(address)
        except AddressError as exc:
            return f"the envelope address {address!r}: {exc}"
        if found.addr_spec != address:
            return f"the envelope address {address!r} is not a plain local@domain"
    return None


@attrs.frozen
class Composed:
    """What the steps before sending made of one request: the rendered request and
    either a plugin's veto, or the envelope and the message's bytes."""

    request: OutboundRequest
    veto: Veto | None = None
    envelope: Envelope | None = None
    data: bytes | None = None


@attrs.frozen
class Preview:
    """What a send request would become, nothing queued or sent (``postroom render``,
    ``POST /render``): the outbound interaction it would make (never stored), what
    the steps before sending made of it, or the error that stops it for good."""

    interaction: Interaction
    composed: Composed | None
    error: str | None = None

    @property
    def sendable(self) -> bool:
        return self.error is None and self.composed is not None and self.composed.veto is None

    def as_json(self) -> dict[str, Any]:
        """The JSON of ``POST /render`` and ``postroom render --json``."""
        composed = self.composed
        request = composed.request if composed is not None else None
        envelope = composed.envelope if composed is not None else None
        data = composed.data if composed is not None else None
        headers = files = None
        if data is not None:
            parsed: Any = message_from_bytes(data, policy=policy.default)
            headers = [[name, str(value)] for name, value in parsed.items()]
            files = [
                {
                    "filename": part.get_filename(),
                    "content_type": part.get_content_type(),
                    "size": len(part.get_payload(decode=True) or b""),
                }
                for part in parsed.iter_attachments()
            ]
        return {
            "sendable": self.sendable,
            "veto": str(composed.veto) if composed is not None and composed.veto else None,
            "error": self.error,
            "id": self.interaction.id,
            "subtype": self.interaction.subtype,
            "parent_id": self.interaction.parent_id,
            "message_id": self.interaction.message_id,
            "subject": request.subject if request is not None else self.interaction.subject,
            "text": request.text if request is not None else None,
            "html": request.html if request is not None else None,
            "headers": headers,
            "attachments": files,
            "envelope": None
            if envelope is None
            else {
                "mail_from": envelope.mail_from,
                "rcpt_to": list(envelope.rcpt_to),
                "mail_options": list(envelope.mail_options),
                "rcpt_options": list(envelope.rcpt_options),
            },
            "message": None if data is None else data.decode("utf-8", "replace"),
        }


class OutboundPipeline:
    """The steps of sending one outbox entry, for one kernel's hooks and sender."""

    def __init__(
        self,
        hooks: Hooks,
        ctx: Context,
        sender: Any,
        forbidden: frozenset[str] = BUILTIN_FORBIDDEN_HEADERS,
        now: Callable[[], datetime] | None = None,
        mailbox_senders: dict[str, Any] | None = None,
    ) -> None:
        """*sender* is the sender driver (None: no ``smtp-client``, every send fails
        for good); *forbidden* the site's forbidden headers; *now* the clock the
        Date header is written from; *mailbox_senders* the senders of the mailboxes
        that log in as their own user, by mailbox name."""
        self.hooks = hooks
        self.ctx = ctx
        self.sender = sender
        self.mailbox_senders = dict(mailbox_senders or {})
        self.forbidden = forbidden
        self.now = now or (lambda: datetime.fromtimestamp(ctx.clock.seconds(), UTC))

    async def send(self, entry: OutboxEntry) -> Any:
        """render -> veto -> envelope -> build -> send; the sender's result.

        Raises whatever stopped it (see the module's docstring).
        """
        if self.sender is None:
            raise SendError("no smtp-client is configured", permanent=True)
        # the parent is fixed at queueing (the outbound interaction's parent_id)
        parent_id = entry.request.in_reply_to
        composed = await self.compose(entry.request, entry.message_id, parent_id, entry.id)
        if composed.veto is not None:
            raise Vetoed(composed.veto)
        assert composed.data is not None and composed.envelope is not None
        sender = self.sender_for(composed.request)
        return await sender.send(composed.data, composed.envelope, entry.message_id)

    def sender_for(self, request: OutboundRequest) -> Any:
        """The sender of *request*: its mailbox's own (``smtp-user``), else the
        ``smtp-client`` account's."""
        own = self.mailbox_senders.get(request.mailbox) if request.mailbox is not None else None
        return own if own is not None else self.sender

    async def compose(
        self, request: OutboundRequest, message_id: str, parent_id: str | None, label: str
    ) -> Composed:
        """render -> veto -> envelope -> build: what a send attempt hands the sender,
        or the veto that stops it. The one code path of a send attempt and a preview.

        *request* is rendered in place; *label* names the request in log lines (the
        outbox entry's id). Raises what makes the request unsendable (see the
        module's docstring): a veto is returned, not raised.
        """
        request = await self.render(request)
        veto = await self.hooks.veto(request, self.ctx)
        if veto is not None:
            return Composed(request, veto=veto)
        envelope = await self.envelope(request, message_id, label)
        data = await self.build(request, message_id, parent_id, envelope, label)
        return Composed(request, envelope=envelope, data=data)

    async def render(self, request: OutboundRequest) -> OutboundRequest:
        """``postroom_render``, then the request is checked again: what rendering
        made (or a request queued by an older version) that is not valid now never
        will be."""
        await self.hooks.render(request, self.ctx)
        return validate_request(request, self.forbidden)

    async def envelope(self, request: OutboundRequest, message_id: str, label: str) -> Envelope:
        """The SMTP envelope: the request's addresses, then ``postroom_envelope``;
        automatic mail loses its suppressed recipients."""
        recipients = mailboxes_of([*request.to, *request.cc, *request.bcc])
        envelope = Envelope(
            mail_from=parse_mailbox(request.from_addr).addr_spec if request.from_addr else "",
            rcpt_to=[m.addr_spec for m in recipients],
            message_id=message_id,
        )
        bcc = self.ctx.option("email-processing", "bcc-address")
        if bcc and str(bcc).lower() not in {r.lower() for r in envelope.rcpt_to}:
            envelope.rcpt_to.append(str(bcc))  # the site's copy: envelope only
        await self.hooks.envelope(request, envelope, self.ctx)
        problem = _envelope_problem(envelope)
        if problem is not None:
            raise SendError(problem, permanent=True)
        if request.automatic:
            await self._drop_suppressed(label, envelope)
        return envelope

    async def _drop_suppressed(self, label: str, envelope: Envelope) -> None:
        """Automatic mail never goes to a hard-bounced address (specification, section 6).

        Suppressed recipients leave the envelope (an auto-acknowledgement still
        reaches the customer when a CC bounced); with none left the request
        fails for good, saying which addresses and how to clear them.
        """
        kept: list[tuple[str, SuppressionEntry | None]] = []
        dropped: list[tuple[str, SuppressionEntry | None]] = []
        for rcpt in envelope.rcpt_to:
            found = await self.ctx.store.is_suppressed(rcpt)
            (dropped if found is not None else kept).append((rcpt, found))
        for rcpt, found in dropped:
            log.warning(
                "outbound %s: not sent to %s: on the suppression list (%s)",
                label,
                rcpt,
                found.reason if found is not None else "",
            )
        if dropped and not kept:
            names = ", ".join(rcpt for rcpt, _ in dropped)
            raise SendError(
                f"refused: automatic mail to suppressed address(es) {names} (hard bounce); "
                "see 'postroom suppression list', clear with 'postroom suppression clear ADDRESS'",
                permanent=True,
            )
        envelope.rcpt_to = [rcpt for rcpt, _ in kept]

    async def build(
        self,
        request: OutboundRequest,
        message_id: str,
        parent_id: str | None,
        envelope: Envelope,
        outbox_id: str,
    ) -> bytes:
        """The message's bytes (its queued files read from outbox entry *outbox_id*);
        one that cannot be built fails for good."""
        parent_mid = None
        references: list[str] = []
        if parent_id:
            parent = await self.ctx.store.get_interaction(parent_id)
            if parent is not None:
                # read now: a parent we sent may have gone out with another Message-ID
                parent_mid, references = parent.message_id, reply_references(parent)
        files = await self.files(outbox_id, request)
        charset = str(self.ctx.option("email-processing", "outbound-msg-charset") or "utf-8")
        try:
            return build_message(
                request,
                message_id,
                parent_mid,
                envelope.extra_headers,
                self.now(),
                self.forbidden,
                references,
                files,
                charset,
            )
        except SendError:
            raise
        except Exception as exc:  # the same request fails the same way every time
            raise SendError(
                f"the message cannot be built: {type(exc).__name__}: {exc}", permanent=True
            ) from exc

    async def files(self, outbox_id: str, request: OutboundRequest) -> list[OutboundAttachment]:
        """The message's files in order: those queued with it, read from the outbox,
        and those a renderer added (a standard response's own), within the site's limits."""
        if not request.attachments:
            return []
        queued = [f for f in request.attachments if f.data is None]
        try:
            stored = await self.ctx.store.read_outbound_files(outbox_id) if queued else []
        except RawIntegrityError as exc:  # the stored bytes are not what was queued
            raise SendError(f"a file of the message is damaged in the store: {exc}",
                            permanent=True) from exc  # fmt: skip
        if len(stored) != len(queued):
            raise SendError(
                f"the request has {len(queued)} queued files, the outbox holds "
                f"{len(stored)}: the store lost some",
                permanent=True,
            )
        reading = iter(stored)
        files = [f if f.data is not None else next(reading) for f in request.attachments]
        try:
            check_limits(files, file_limits(self.ctx))
        except FileError as exc:  # a renderer's files made it too large
            raise SendError(f"the message's files: {exc}", permanent=True) from None
        return files

    async def record_sent(self, entry: OutboxEntry, result: Any) -> None:
        """Sent: the entry and its interaction say so, with the recipients the
        server refused and the Message-ID it used; those it does not know are
        suppressed; ``postroom_sent``."""
        store = self.ctx.store
        refused = dict(getattr(result, "refused", None) or {})
        attached: dict[str, AttachedValue] = {}
        if refused:
            # some recipients were refused at RCPT TO, the others took it
            attached[REFUSED_KEY] = "; ".join(f"{rcpt}: {why}" for rcpt, why in refused.items())
            log.warning("outbound %s: refused for %s", entry.id, attached[REFUSED_KEY])
        # the Message-ID the message went out with: a server may replace the one
        # assigned (Exchange may), and replies quote what was sent
        used = getattr(result, "message_id", None)
        if used and used != entry.message_id and not _usable_message_id(used):
            # a server's answer: a broken or hostile one must not put a
            # megabyte or a header injection into the interaction
            log.warning(
                "outbound %s: the sender reported a Message-ID that is not one "
                "(%d characters); the interaction keeps %s",
                entry.id,
                len(str(used)),
                entry.message_id,
            )
            used = None
        replaced = {"message_id": used} if used and used != entry.message_id else {}
        if replaced:
            log.warning(
                "outbound %s went out with Message-ID %s, not %s as assigned; "
                "the interaction records the one sent",
                entry.id,
                used,
                entry.message_id,
            )
        accepted = [str(a) for a in getattr(result, "accepted", None) or []]
        bcc = self.ctx.option("email-processing", "bcc-address")
        if bcc:  # the site's own copy is no recipient of the interaction
            own = {m.addr_spec.lower() for m in mailboxes_of(
                [*entry.request.to, *entry.request.cc, *entry.request.bcc])}  # fmt: skip
            accepted = [a for a in accepted if a.lower() != str(bcc).lower() or a.lower() in own]
        await store.mark_outbound(
            entry.id,
            OutboxState.SENT.value,
            attached=attached,
            reply=str(getattr(result, "detail", "") or "") or None,
            accepted=accepted,
            refused=refused,
            **replaced,
        )
        for rcpt, why in refused.items():
            if is_unknown_address(why):
                await store.suppress(rcpt, f"refused at RCPT TO: {why}"[:200], entry.id)
        await self.hooks.sent(await store.get_interaction(entry.id), self.ctx)

    async def record_failed(self, entry: OutboxEntry, error: str) -> None:
        """Failed for good: the error on the interaction (``_SendError``); ``postroom_sent``."""
        store = self.ctx.store
        await store.mark_outbound(entry.id, OutboxState.FAILED.value, error)
        await self.hooks.sent(await store.get_interaction(entry.id), self.ctx)


def failure_text(exc: BaseException) -> str:
    """What a failed attempt leaves as the entry's error: a veto's reason as it is."""
    if isinstance(exc, Vetoed):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def is_permanent(exc: BaseException) -> bool:
    """Whether a failed attempt can never succeed (a PluginFailure: its cause decides)."""
    cause = getattr(exc, "cause", exc)
    return isinstance(cause, RequestError) or bool(getattr(cause, "permanent", False))


#: a msg-id as RFC 5322 section 3.6.4 writes it, printable ASCII without
#: blanks or angle brackets inside, within one header line (998 characters)
_MESSAGE_ID = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>")


def _usable_message_id(value: object) -> bool:
    """Whether a Message-ID a sender reports can stand for the message sent."""
    return isinstance(value, str) and len(value) <= 998 and bool(_MESSAGE_ID.fullmatch(value))
