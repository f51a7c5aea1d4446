"""The outbox worker: queued send requests become sent (or failed) messages.

A request is validated (:mod:`postroom.sendrequest`: nothing is stored for a
refused one) and stored (``queued``, its Message-ID fixed then, so a
later NDR or reply finds its parent even if sending is retried), then
claimed (``sending``), rendered, validated again, given its envelope, built and
handed to the sender driver. A temporary failure goes back to ``queued`` with
back-off; a permanent one (whatever can never succeed: an invalid rendered
request, a plugin header that cannot be written, a message that cannot be built),
or the last attempt, ends ``failed`` with the error on the outbound interaction.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred

from postroom import keys
from postroom.addresses import AddressError, parse_mailbox
from postroom.backoff import Backoff, sleep
from postroom.errors import SendError
from postroom.model import (
    AttachedValue,
    Envelope,
    Interaction,
    InteractionType,
    OutboundRequest,
    OutboxEntry,
    OutboxState,
    Subtype,
    SuppressionEntry,
)
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

if TYPE_CHECKING:
    from postroom.kernel import Kernel

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


def load_forbidden_headers(path: str | os.PathLike[str] | None) -> frozenset[str]:
    """The site's list (one name per line, ``#`` comments) or the built-in one."""
    if path is None:
        return BUILTIN_FORBIDDEN_HEADERS
    names = set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            name = line.split("#", 1)[0].strip()
            if name:
                names.add(name.lower())
    return frozenset(names)


def site_forbidden_headers(kernel: Kernel) -> frozenset[str]:
    """The forbidden headers of *kernel*'s site (``smtp-client: forbidden-headers-file``)."""
    smtp = kernel.config.smtp
    return load_forbidden_headers(smtp.get("forbidden-headers-file") if smtp is not None else None)


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
) -> bytes:
    """The RFC 5322 message for a validated request (CRLF line ends).

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
        msg["References"] = parent_message_id
    if request.automatic:
        msg["Auto-Submitted"] = "auto-replied"
    for name, value in [*request.headers.items(), *extra_headers.items()]:
        if name.lower() in forbidden:
            log.info("dropped forbidden header %s from outbound %s", name, message_id)
            continue
        del msg[name]
        msg[name] = value
    if request.text is not None or request.html is None:
        msg.set_content(request.text or "")
    if request.html is not None:
        if request.text is None:
            msg.set_content(request.html, subtype="html")
        else:
            msg.add_alternative(request.html, subtype="html")
    return msg.as_bytes(policy=policy.SMTPUTF8 if needs_smtputf8(request) else policy.SMTP)


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


class OutboundService(service.Service):
    name = "outbound"

    def __init__(
        self,
        kernel: Kernel,
        sender: Any,
        *,
        once: bool = False,
        poll_interval: float = 1.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.kernel = kernel
        self.sender = sender
        self.once = once
        self.poll_interval = poll_interval
        self.backoff = backoff or Backoff(initial=30.0, maximum=3600.0)
        self.finished: Deferred[bool] = Deferred()
        self.forbidden = site_forbidden_headers(kernel)
        self._loop: Deferred[None] | None = None
        self._pause: Deferred[Any] | None = None
        self._ok = True
        self._counted = False
        self._woken = False
        self._expected = 0  # requests being queued through Gateway.send

    def startService(self) -> None:
        super().startService()
        self._loop = ensureDeferred(self._recover_then_run())
        self._loop.addErrback(lambda f: log.error("outbox loop crashed: %s", f.getTraceback()))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._pause is not None and not self._pause.called:
            self._pause.cancel()
        loop = self._loop if self._loop is not None else defer.succeed(None)

        async def stop() -> None:
            await loop
            if self.sender is not None:
                await self.sender.close()

        return ensureDeferred(stop())

    def wake(self) -> None:
        """A request was queued: don't wait for the next poll."""
        self._woken = True
        if self._pause is not None and not self._pause.called:
            self._pause.cancel()

    def expect(self) -> None:
        """A request is being queued: a ``once`` run must not end before it is."""
        self._expected += 1

    def arrived(self) -> None:
        """The request :meth:`expect` announced is queued (or failed to be): wake up."""
        self._expected -= 1
        self.wake()

    async def _recover_then_run(self) -> None:
        # An entry left "sending" by a process that died may or may not have
        # reached the server: send it again (at least once; same Message-ID).
        requeued = await self.kernel.store.requeue_interrupted(self._now())
        for entry_id in requeued:
            log.warning("outbound %s was interrupted while sending; queued again", entry_id)
        await self._run()

    async def _run(self) -> None:
        while self.running:
            self._woken = False
            try:
                worked = await self.run_pass()
            except Exception:
                log.exception("outbox pass failed")
                self._ok = False
                worked = 0
            # A once run ends when a pass found nothing, unless a request was
            # queued meanwhile or is being queued (it may have missed the pass).
            if self.once and worked == 0 and not self._woken and not self._expected:
                break
            if worked or self._woken:
                continue
            self._pause = sleep(self.kernel.clock, self.poll_interval)
            try:
                await self._pause
            except defer.CancelledError:
                continue
        if not self.finished.called:
            self.finished.callback(self._ok)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.kernel.clock.seconds(), UTC)

    async def run_pass(self) -> int:
        entries: list[OutboxEntry] = await self.kernel.store.claim_outbound(self._now(), 10)
        for entry in entries:
            await self.send_entry(entry)
        if entries or not self._counted:
            await self._count()
        return len(entries)

    async def _count(self) -> None:
        counts = await self.kernel.store.outbox_counts()
        for state, n in counts.items():
            self.kernel.metrics.outbox_depth.labels(state).set(n)
        self._counted = True

    async def send_entry(self, entry: OutboxEntry) -> None:
        store = self.kernel.store
        ctx = self.kernel.ctx
        interaction: Interaction = await store.get_interaction(entry.id)
        request = entry.request
        try:
            if self.sender is None:
                raise SendError("no smtp-client is configured", permanent=True)
            await self.kernel.hooks.render(request, ctx)
            # what rendering made (or a request queued by an older version) is
            # checked again: a request that is not valid now never will be
            request = validate_request(request, self.forbidden)
            recipients = mailboxes_of([*request.to, *request.cc, *request.bcc])
            envelope = Envelope(
                mail_from=parse_mailbox(request.from_addr).addr_spec if request.from_addr else "",
                rcpt_to=[m.addr_spec for m in recipients],
                message_id=entry.message_id,
            )
            await self.kernel.hooks.envelope(request, envelope, ctx)
            problem = _envelope_problem(envelope)
            if problem is not None:
                raise SendError(problem, permanent=True)
            if request.automatic:
                await self._drop_suppressed(entry, envelope)
            parent_mid = None
            if interaction.parent_id:
                parent = await store.get_interaction(interaction.parent_id)
                parent_mid = parent.message_id if parent is not None else None
            try:
                data = build_message(
                    request,
                    entry.message_id,
                    parent_mid,
                    envelope.extra_headers,
                    self._now(),
                    self.forbidden,
                )
            except SendError:
                raise
            except Exception as exc:  # the same request fails the same way every time
                raise SendError(
                    f"the message cannot be built: {type(exc).__name__}: {exc}", permanent=True
                ) from exc
            result = await self.sender.send(data, envelope, entry.message_id)
        except Exception as exc:
            cause = getattr(exc, "cause", exc)  # a PluginFailure wraps the plugin's error
            permanent = isinstance(cause, RequestError) or getattr(cause, "permanent", False)
            attempts = entry.attempts + 1
            max_attempts = int(self.kernel.config.get("gateway", "max-attempts"))
            error = f"{type(exc).__name__}: {exc}"
            self.kernel.metrics.send_failures.labels(
                str(bool(permanent or attempts >= max_attempts)).lower()
            ).inc()
            if permanent or attempts >= max_attempts:
                self._ok = False
                await store.mark_outbound(entry.id, OutboxState.FAILED.value, error)
                log.error("outbound %s failed for good: %s", entry.id, error)
                interaction = await store.get_interaction(entry.id)
                await self.kernel.hooks.sent(interaction, ctx)
            else:
                retry_at = self._now() + timedelta(seconds=self.backoff.delay(attempts))
                await store.mark_outbound(entry.id, OutboxState.QUEUED.value, error, retry_at)
                log.warning(
                    "outbound %s failed (attempt %d), retry at %s: %s",
                    entry.id,
                    attempts,
                    retry_at.isoformat(),
                    error,
                )
            return
        refused = dict(getattr(result, "refused", None) or {})
        attached: dict[str, AttachedValue] = {}
        if refused:
            # some recipients were refused at RCPT TO, the others took it
            attached[REFUSED_KEY] = "; ".join(f"{rcpt}: {why}" for rcpt, why in refused.items())
            log.warning("outbound %s: refused for %s", entry.id, attached[REFUSED_KEY])
        await store.mark_outbound(entry.id, OutboxState.SENT.value, attached=attached)
        for rcpt, why in refused.items():
            if is_unknown_address(why):
                await store.suppress(rcpt, f"refused at RCPT TO: {why}"[:200], entry.id)
        interaction = await store.get_interaction(entry.id)
        await self.kernel.hooks.sent(interaction, ctx)

    async def _drop_suppressed(self, entry: OutboxEntry, envelope: Envelope) -> None:
        """Automatic mail never goes to a hard-bounced address (specification, section 6).

        Suppressed recipients leave the envelope (an auto-acknowledgement still
        reaches the customer when a CC bounced); with none left the request
        fails for good, saying which addresses and how to clear them.
        """
        kept: list[tuple[str, SuppressionEntry | None]] = []
        dropped: list[tuple[str, SuppressionEntry | None]] = []
        for rcpt in envelope.rcpt_to:
            found = await self.kernel.store.is_suppressed(rcpt)
            (dropped if found is not None else kept).append((rcpt, found))
        for rcpt, found in dropped:
            log.warning(
                "outbound %s: not sent to %s: on the suppression list (%s)",
                entry.id,
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


async def queue_send(
    kernel: Kernel, request: OutboundRequest, forbidden: frozenset[str] | None = None
) -> Interaction:
    """Validate a send request and store it in the outbox; the Message-ID is fixed here.

    Raises :class:`~postroom.sendrequest.RequestError` (nothing stored) for a
    request that can never be sent: see :mod:`postroom.sendrequest`; also when
    ``in_reply_to`` names no stored interaction. *forbidden* is the site's list
    of forbidden headers (read from its configuration when not given).
    """
    config = kernel.config
    domain = str(config.get("email-processing", "default-domain"))
    request = validate_request(
        request, site_forbidden_headers(kernel) if forbidden is None else forbidden
    )
    if request.from_addr is None:
        default_from = config.get("email-processing", "default-from-address")
        text = str(default_from) if default_from else f"postroom@{domain}"
        try:
            request.from_addr = str(parse_mailbox(text))
        except AddressError as exc:
            raise RequestError(
                "from",
                f"none given, and the site's default From {text!r} (email-processing: "
                f"default-from-address, else postroom@<default-domain>) is not valid: {exc}",
            ) from None
    parent = request.in_reply_to
    if parent is not None and await kernel.store.get_interaction(parent) is None:
        raise RequestError("in_reply_to", f"no interaction {parent!r} is stored")
    interaction = Interaction(
        tenant_id=int(config.tenant_id),
        type=InteractionType.OUTBOUND.value,
        subtype=(Subtype.OUTBOUND_REPLY if request.in_reply_to else Subtype.OUTBOUND_NEW).value,
        status="Queued",
        parent_id=request.in_reply_to,
        message_id=make_msgid(domain=domain),
        subject=request.subject,
        from_addr=parse_mailbox(request.from_addr).addr_spec,
        to=[m.addr_spec for m in mailboxes_of(request.to)],
        cc=[m.addr_spec for m in mailboxes_of(request.cc)],
        text=request.text,
        html=request.html,
        attached_data=dict(request.attached_data),
    )
    if request.automatic:
        # so observers (postroom_sent) and routing can tell automatic mail apart
        interaction.attached_data[AUTOMATIC_KEY] = True
    await kernel.store.queue_outbound(interaction, request)
    return interaction
