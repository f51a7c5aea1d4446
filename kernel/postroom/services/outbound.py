"""The outbox worker: queued send requests become sent (or failed) messages.

A request is prepared (:func:`prepare_send`: validated by :mod:`postroom.sendrequest`
and the plugins' ``postroom_validate_request``, a reply filled from its parent;
nothing is stored for a refused one) and stored (:func:`queue_send`: ``queued``,
its Message-ID fixed then, so a later NDR or reply finds its parent even if
sending is retried). :func:`preview_send` prepares a request the same way and
runs the steps of a send attempt up to the sender, storing nothing. The worker
claims due entries (``sending``), has the outbound pipeline
(:mod:`postroom.pipeline.outbound`: render, veto, envelope, build, send, record)
try each, and owns the scheduling: a temporary failure goes back to ``queued``
with back-off; a permanent one (whatever can never succeed: an invalid rendered
request, a plugin's veto, a plugin header that cannot be written, a message that
cannot be built), or the last attempt, ends ``failed`` with the error on the
outbound interaction. Entries a stopped process left ``sending`` are queued again
at start.

A refused login of the sender (:class:`~postroom.errors.SenderAuthenticationFailed`:
a wrong password) is nothing wrong with the message: the whole outbox pauses by
the login policy (:mod:`postroom.loginpolicy`), the entries stay queued with
their attempts uncounted, and one login is tried per back-off step, not one
per queued entry. A mailbox that logs in as its own user (``smtp-user``:
:mod:`postroom.identity`) sends through a sender of its own with a login
policy of its own: its refused login holds only that mailbox's mail.
"""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import UTC, datetime, timedelta
from email.utils import make_msgid
from typing import TYPE_CHECKING, Any

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred

from postroom import keys
from postroom.addresses import AddressError, parse_mailbox
from postroom.backoff import Backoff, sleep
from postroom.errors import SenderAuthenticationFailed, SendError
from postroom.grants import NeedsReauthorisation
from postroom.identity import MailboxIdentity, default_from, outbound_mailbox, sign
from postroom.loginpolicy import AUTH_FAILED, CONNECTED, NEEDS_REAUTHORISATION, LoginPolicy
from postroom.metrics import SMTP_CLIENT
from postroom.model import (
    EventType,
    Interaction,
    InteractionType,
    OutboundRequest,
    OutboxEntry,
    OutboxState,
    Subtype,
)
from postroom.pipeline.files import forwarded_files, load_files
from postroom.pipeline.outbound import OutboundPipeline, Preview, failure_text, is_permanent
from postroom.plugins.facade import PluginFailure
from postroom.replies import (
    DEFAULT_FORWARD_PREFIX,
    DEFAULT_REPLY_PREFIX,
    QuoteStyle,
    forward_subject,
    quote_html,
    quote_text,
    reply_recipients,
    reply_references,
    reply_subject,
)
from postroom.sendrequest import (
    BUILTIN_FORBIDDEN_HEADERS,
    RequestError,
    mailboxes_of,
    validate_request,
)

if TYPE_CHECKING:
    from postroom.kernel import Kernel

log = logging.getLogger(__name__)


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
        login_policy: LoginPolicy | None = None,
        mailbox_senders: dict[str, Any] | None = None,
    ) -> None:
        """*mailbox_senders*: the senders of mailboxes that log in as their own user
        (:meth:`~postroom.kernel.Kernel.build_mailbox_senders`), by mailbox name."""
        self.kernel = kernel
        self.once = once
        self.poll_interval = poll_interval
        self.backoff = backoff or Backoff(initial=30.0, maximum=3600.0)
        #: the sender's refused logins: while they last, nothing is sent
        self.login_policy = login_policy or LoginPolicy.from_config(kernel.config, kernel.clock)
        self.finished: Deferred[bool] = Deferred()
        self.pipeline = OutboundPipeline(
            kernel.hooks,
            kernel.ctx,
            sender,
            site_forbidden_headers(kernel),
            self._now,
            mailbox_senders,
        )
        #: the refused logins of each mailbox's own account: only its mail waits
        self.account_policies = {
            name: LoginPolicy.from_config(kernel.config, kernel.clock)
            for name in self.pipeline.mailbox_senders
        }
        self._loop: Deferred[None] | None = None
        self._pause: Deferred[Any] | None = None
        self._ok = True
        #: the sender's login state (connected, auth-failed, needs-reauthorisation)
        self._state = CONNECTED
        self._state_kept = False
        self._counted = False
        self._woken = False
        self._expected = 0  # requests being queued through Gateway.send

    @property
    def sender(self) -> Any:
        """The sender driver (None: no ``smtp-client``)."""
        return self.pipeline.sender

    @sender.setter
    def sender(self, sender: Any) -> None:
        self.pipeline.sender = sender

    @property
    def forbidden(self) -> frozenset[str]:
        """The site's forbidden headers."""
        return self.pipeline.forbidden

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
            for sender in [self.sender, *self.pipeline.mailbox_senders.values()]:
                if sender is not None:
                    await sender.close()

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
            paused = self.login_policy.remaining()
            if paused > 0:
                # the sender's login was refused: no entry is tried before the
                # next attempt, whatever is queued meanwhile
                if self.once:
                    break
                self._pause = sleep(self.kernel.clock, paused)
                with contextlib.suppress(defer.CancelledError):
                    await self._pause
                continue
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
        for done, entry in enumerate(entries):
            if self.login_policy.refusing and self.login_policy.remaining() > 0:
                # the login was just refused: the rest of the batch waits untried
                await self._requeue_untried(entries[done:])
                break
            account = self._account_policy(entry)
            if account is not None and account.refusing and account.remaining() > 0:
                # its mailbox's own login was refused: only that mailbox's mail waits
                await self._requeue_untried([entry], account)
                continue
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
        """One attempt at a claimed entry: the pipeline's steps, then the outcome
        recorded; a failure goes back to ``queued`` with back-off, or ends the entry
        (permanent, or the last attempt)."""
        try:
            result = await self.pipeline.send(entry)
        except (SenderAuthenticationFailed, NeedsReauthorisation) as exc:
            if self._account_policy(entry) is not None:
                await self._account_refused(entry, exc)
            else:
                await self._login_refused(entry, exc)
            return
        except Exception as exc:
            attempts = entry.attempts + 1
            # a round of max-attempts: since the operator's last retry of a failed entry
            in_round = attempts - entry.round_start
            max_attempts = int(self.kernel.config.get("gateway", "max-attempts"))
            for_good = is_permanent(exc) or in_round >= max_attempts
            error = failure_text(exc)
            self.kernel.metrics.send_failures.labels(str(for_good).lower()).inc()
            if for_good:
                self._ok = False
                log.error("outbound %s failed for good: %s", entry.id, error,
                          extra=_fields(entry))  # fmt: skip
                await self.pipeline.record_failed(entry, error)
                await self.kernel.events.emit(EventType.SEND_FAILED, entry.id, reason=error)
            else:
                retry_at = self._now() + timedelta(seconds=self.backoff.delay(in_round))
                await self.kernel.store.mark_outbound(
                    entry.id, OutboxState.QUEUED.value, error, retry_at
                )
                log.warning(
                    "outbound %s failed (attempt %d), retry at %s: %s",
                    entry.id,
                    attempts,
                    retry_at.isoformat(),
                    error,
                    extra=_fields(entry),
                )
            return
        if self._account_policy(entry) is not None:
            self._account_logged_in(entry)
        else:
            self._logged_in()
        await self.pipeline.record_sent(entry, result)
        await self.kernel.events.emit(EventType.SENT, entry.id)

    def _account_policy(self, entry: OutboxEntry) -> LoginPolicy | None:
        """The login policy of the mailbox account *entry* is sent through, or None
        (the ``smtp-client`` account's, :attr:`login_policy`)."""
        mailbox = entry.request.mailbox
        return self.account_policies.get(mailbox) if mailbox is not None else None

    async def _account_refused(
        self, entry: OutboxEntry, exc: SenderAuthenticationFailed | NeedsReauthorisation
    ) -> None:
        """A mailbox's own login was refused: its mail waits by its own policy, the
        other mailboxes' goes on; *entry* goes back to queued, uncounted."""
        policy = self._account_policy(entry)
        assert policy is not None
        if isinstance(exc, NeedsReauthorisation):
            policy.hold(exc.reason)
        else:
            policy.refused(str(exc))
        assert policy.next_attempt is not None
        retry_at = datetime.fromtimestamp(policy.next_attempt, UTC)
        self._ok = False
        await self.kernel.store.mark_outbound(
            entry.id, OutboxState.QUEUED.value, failure_text(exc), retry_at, count_attempt=False
        )
        log.error(
            "smtp-client[%s]: login refused (%d in a row), this mailbox's mail waits until %s: %s",
            entry.request.mailbox,
            policy.failures,
            retry_at.isoformat(),
            exc,
            extra=_fields(entry),
        )

    def _account_logged_in(self, entry: OutboxEntry) -> None:
        """A send through a mailbox's own account went through."""
        policy = self._account_policy(entry)
        if policy is not None and policy.refusing:
            log.info(
                "smtp-client[%s]: login accepted again; sending resumed", entry.request.mailbox
            )
            policy.succeeded()

    async def _login_refused(
        self, entry: OutboxEntry, exc: SenderAuthenticationFailed | NeedsReauthorisation
    ) -> None:
        """Pause all sending by the login policy; *entry* goes back to queued, uncounted.
        A grant needing re-authorisation pauses it for the longest wait."""
        policy = self.login_policy
        error = failure_text(exc)
        if isinstance(exc, NeedsReauthorisation):
            policy.hold(exc.reason)
            self._state = NEEDS_REAUTHORISATION
        else:
            policy.refused(str(exc))
            self._state = AUTH_FAILED
        assert policy.next_attempt is not None
        retry_at = datetime.fromtimestamp(policy.next_attempt, UTC)
        self._ok = False
        metrics = self.kernel.metrics
        metrics.errors.labels(SMTP_CLIENT, "auth").inc()
        metrics.login_failures.labels(SMTP_CLIENT).set(policy.failures)
        metrics.next_attempt.labels(SMTP_CLIENT).set(policy.next_attempt)
        metrics.state.labels(SMTP_CLIENT).state(self._state)
        await self.kernel.store.mark_outbound(
            entry.id, OutboxState.QUEUED.value, error, retry_at, count_attempt=False
        )
        await self._keep_state(error, retry_at)
        if self._state == NEEDS_REAUTHORISATION:
            log.error(
                "smtp-client: needs re-authorisation (see docs/auth.md), sending paused "
                "until %s: %s",
                retry_at.isoformat(),
                error,
                extra=_fields(entry),
            )
        else:
            log.error(
                "smtp-client: login refused (%d in a row), sending paused until %s: %s",
                policy.failures,
                retry_at.isoformat(),
                exc,
                extra=_fields(entry),
            )

    async def _keep_state(self, reason: str | None, next_attempt: datetime | None) -> None:
        """The sender's state in the store, for ``postroom mailboxes``."""
        try:
            await self.kernel.store.save_mailbox_state(
                SMTP_CLIENT, self._state, reason, self.login_policy.failures, next_attempt
            )
        except Exception as exc:
            log.warning("smtp-client: cannot keep its state: %s", exc)

    async def _requeue_untried(
        self, entries: list[OutboxEntry], policy: LoginPolicy | None = None
    ) -> None:
        """Claimed entries not tried because the login of their account (*policy*,
        else the ``smtp-client``'s) is refused."""
        policy = policy or self.login_policy
        assert policy.next_attempt is not None
        retry_at = datetime.fromtimestamp(policy.next_attempt, UTC)
        for entry in entries:
            await self.kernel.store.mark_outbound(
                entry.id, OutboxState.QUEUED.value, None, retry_at, count_attempt=False
            )

    def _logged_in(self) -> None:
        """A send went through: the sender's login works (again)."""
        if not self.login_policy.refusing:
            if not self._state_kept:  # the first send of this run: say "connected" once
                self._state_kept = True
                d = ensureDeferred(self._keep_state(None, None))
                d.addErrback(lambda f: None)
            return
        log.info("smtp-client: login accepted again; sending resumed")
        self.login_policy.succeeded()
        self._state = CONNECTED
        d = ensureDeferred(self._keep_state(None, None))
        d.addErrback(lambda f: None)
        metrics = self.kernel.metrics
        metrics.login_failures.labels(SMTP_CLIENT).set(0)
        metrics.next_attempt.labels(SMTP_CLIENT).set(0)
        metrics.state.labels(SMTP_CLIENT).state(CONNECTED)

    def health(self) -> dict[str, object] | None:
        """The sender's login state for ``/health`` (None: no ``smtp-client``)."""
        if self.sender is None:
            return None
        policy = self.login_policy
        return {
            "state": (
                (NEEDS_REAUTHORISATION if self._state == NEEDS_REAUTHORISATION else AUTH_FAILED)
                if policy.refusing
                else CONNECTED
            ),
            "auth_failures": policy.failures,
            "last_error": policy.last_error,
            "next_attempt": policy.next_attempt_iso(),
        }


@attrs.frozen
class PreparedSend:
    """A send request as it will be queued, and the outbound interaction it makes
    (its Message-ID fixed), neither stored yet."""

    request: OutboundRequest
    interaction: Interaction
    parent: Interaction | None


def _fields(entry: OutboxEntry) -> dict[str, object]:
    """The structured log fields of an outbox entry's lines (postroom.logs)."""
    return {
        "interaction_id": entry.id,
        "message_id": entry.message_id,
        "mailbox": entry.request.mailbox,
    }


async def _resolved_ids(kernel: Kernel, request: OutboundRequest) -> OutboundRequest:
    """*request* with the interaction ids it names made whole: a unique prefix
    (:func:`postroom.interaction_api.resolve_id`) is taken for the id it starts;
    an unknown or ambiguous one is refused naming the field."""
    from postroom.ids import AmbiguousId, UnknownId
    from postroom.interaction_api import resolve_id

    async def full(field: str, given: str, where: str = "") -> str:
        try:
            return await resolve_id(kernel, given)
        except UnknownId:
            raise RequestError(field, f"{where}no interaction {given!r} is stored") from None
        except AmbiguousId as exc:
            raise RequestError(field, f"{where}{exc}") from None

    changes: dict[str, Any] = {}
    if request.in_reply_to is not None:
        changes["in_reply_to"] = await full("in_reply_to", request.in_reply_to)
    if request.forward_of is not None:
        changes["forward_of"] = await full("forward_of", request.forward_of)
    if any(item.by_reference for item in request.attachments):
        files = []
        for n, item in enumerate(request.attachments):
            if item.by_reference and item.interaction is not None:
                whole = await full("attachments", item.interaction, f"[{n}]: ")
                item = attrs.evolve(item, interaction=whole)
            files.append(item)
        changes["attachments"] = files
    return attrs.evolve(request, **changes) if changes else request


async def prepare_send(
    kernel: Kernel, request: OutboundRequest, forbidden: frozenset[str] | None = None
) -> PreparedSend:
    """Validate a send request and make its outbound interaction; nothing is stored.

    Raises :class:`~postroom.sendrequest.RequestError` for a request that can
    never be sent: see :mod:`postroom.sendrequest`; also when ``in_reply_to`` or
    ``forward_of`` names no stored interaction, ``mailbox`` no configured
    mailbox, a file cannot be read or passes the site's limits, and when a
    plugin refuses it (``postroom_validate_request``). The mailbox it goes out
    from (named, else the parent's or the forwarded mail's) gives its From and
    signature (:mod:`postroom.identity`); a reply's missing ``to`` and
    ``subject`` are filled from its parent (:mod:`postroom.replies`), a
    forward's subject, quote and files from the original; files named by
    reference are read (:mod:`postroom.pipeline.files`). *forbidden* is the
    site's list of forbidden headers (read from its configuration when not given).
    """
    config = kernel.config
    domain = str(config.get("email-processing", "default-domain"))
    request = validate_request(
        request, site_forbidden_headers(kernel) if forbidden is None else forbidden
    )
    request = await _resolved_ids(kernel, request)
    parent = None
    if request.in_reply_to is not None:
        parent = await kernel.store.get_interaction(request.in_reply_to)
        if parent is None:
            raise RequestError("in_reply_to", f"no interaction {request.in_reply_to!r} is stored")
    original = None
    if request.forward_of is not None:
        original = await kernel.store.get_interaction(request.forward_of)
        if original is None:
            raise RequestError("forward_of", f"no interaction {request.forward_of!r} is stored")
    # a reply, and a forward, go out from the mailbox the mail came in on
    identity = outbound_mailbox(kernel.identities, request, parent or original)
    if identity is not None:
        request = _from_mailbox(kernel, request, identity, forbidden)
    if parent is not None:
        request = _filled_reply(kernel, request, parent, forbidden)
    forwarded = 0
    if original is not None:
        request, forwarded = _filled_forward(kernel, request, original, forbidden)
    if request.attachments:
        request.attachments = await load_files(kernel, request.attachments, forwarded)
    if request.from_addr is None:
        text = default_from(config)
        try:
            request.from_addr = str(parse_mailbox(text))
        except AddressError as exc:
            raise RequestError(
                "from",
                f"none given, and the site's default From {text!r} (email-processing: "
                f"default-from-address, else postroom@<default-domain>) is not valid: {exc}",
            ) from None
    # the plugins' own rules (a standard response that exists...): refused before
    # anything is stored, as the kernel's are
    await kernel.hooks.validate_request(request, kernel.ctx)
    interaction = Interaction(
        tenant_id=int(config.tenant_id),
        type=InteractionType.OUTBOUND.value,
        subtype=(Subtype.OUTBOUND_REPLY if request.in_reply_to else Subtype.OUTBOUND_NEW).value,
        status="Queued",
        parent_id=request.in_reply_to,
        mailbox=request.mailbox,
        message_id=make_msgid(domain=domain),
        subject=request.subject,
        from_addr=parse_mailbox(request.from_addr).addr_spec,
        to=[m.addr_spec for m in mailboxes_of(request.to)],
        cc=[m.addr_spec for m in mailboxes_of(request.cc)],
        references=reply_references(parent) if parent is not None else [],
        text=request.text,
        html=request.html,
        attached_data=dict(request.attached_data),
    )
    if request.automatic:
        # so observers (postroom_sent) and routing can tell automatic mail apart
        interaction.attached_data[keys.AUTOMATIC] = True
    if request.forward_of is not None:
        interaction.attached_data[keys.FORWARD_OF] = request.forward_of
    if request.attachments:
        interaction.attached_data[keys.ATTACHMENT_FILE_NAMES] = keys.LIST_SEPARATOR.join(
            f.filename for f in request.attachments
        )
    return PreparedSend(request, interaction, parent)


async def queue_send(
    kernel: Kernel, request: OutboundRequest, forbidden: frozenset[str] | None = None
) -> Interaction:
    """Validate a send request and store it in the outbox; the Message-ID is fixed here.

    :func:`prepare_send`, then the store: a refused request
    (:class:`~postroom.sendrequest.RequestError`) stores nothing.
    """
    prepared = await prepare_send(kernel, request, forbidden)
    await kernel.store.queue_outbound(prepared.interaction, prepared.request)
    await kernel.events.emit(EventType.CREATED, prepared.interaction.id)
    return prepared.interaction


async def preview_send(
    kernel: Kernel, request: OutboundRequest, pipeline: OutboundPipeline | None = None
) -> Preview:
    """What *request* would become, nothing stored, queued or sent.

    :func:`prepare_send` (a refused request raises
    :class:`~postroom.sendrequest.RequestError`, as for :func:`queue_send`),
    then the steps of a send attempt before the sender
    (:meth:`OutboundPipeline.compose`: render, veto, envelope, build). A veto, or
    an error that would fail the attempt (an invalid rendered request, a plugin
    that raises, a message that cannot be built), is in the preview, not raised.
    *pipeline* is the outbox's (its forbidden headers and clock).
    """
    if pipeline is None:
        pipeline = OutboundPipeline(kernel.hooks, kernel.ctx, None, site_forbidden_headers(kernel))
    prepared = await prepare_send(kernel, request, pipeline.forbidden)
    interaction = prepared.interaction
    assert interaction.message_id is not None  # fixed by prepare_send
    try:
        composed = await pipeline.compose(
            prepared.request, interaction.message_id, interaction.parent_id, "preview"
        )
    except (SendError, RequestError, PluginFailure) as exc:
        return Preview(interaction, None, failure_text(exc))
    return Preview(interaction, composed)


def _from_mailbox(
    kernel: Kernel,
    request: OutboundRequest,
    identity: MailboxIdentity,
    forbidden: frozenset[str] | None,
) -> OutboundRequest:
    """*request* going out from *identity*'s mailbox: recorded on it, its From
    when the request gives none, its signature appended; validated again (the
    signature may take a body over its limit)."""
    request.mailbox = identity.mailbox
    if request.from_addr is None:
        request.from_addr = identity.from_header
    if not identity.signed:
        return request
    sign(request, identity)
    try:
        return validate_request(
            request, site_forbidden_headers(kernel) if forbidden is None else forbidden
        )
    except RequestError as exc:
        raise RequestError(
            exc.field, f"with the signature of mailbox {identity.mailbox!r}: {exc.message}"
        ) from None


def _filled_reply(
    kernel: Kernel,
    request: OutboundRequest,
    parent: Interaction,
    forbidden: frozenset[str] | None,
) -> OutboundRequest:
    """*request* with what it left out taken from *parent* (:mod:`postroom.replies`),
    and *parent* quoted when it asks; validated again: what was added comes from a
    stored mail."""
    if request.to and request.subject and not request.quote:
        return request
    filled: list[str] = []
    if not request.to:
        filled.append("to")
        request.to = reply_recipients(parent)
        if not request.to:
            raise RequestError(
                "to",
                f"none given, and interaction {parent.id!r} (in_reply_to) has no "
                "Reply-To or From to answer",
            )
    if not request.subject:
        filled.append("subject")
        prefix = kernel.config.get("email-processing", "subject-reply-prefix")
        request.subject = reply_subject(
            parent.subject, DEFAULT_REPLY_PREFIX if prefix is None else str(prefix)
        )
    if request.quote:
        _quote(request, parent, quote_style(kernel))
    return _revalidated(kernel, request, parent, "in_reply_to", filled, forbidden)


def _quote(request: OutboundRequest, parent: Interaction, style: QuoteStyle) -> None:
    """*parent* below the request's html (when it has one) and text (when it has
    one, or no html)."""
    if request.html is not None:
        request.html = quote_html(request.html, parent, style)
    if request.text is not None or request.html is None:
        request.text = quote_text(request.text, parent, style)


def _revalidated(
    kernel: Kernel,
    request: OutboundRequest,
    source: Interaction,
    field: str,
    filled: list[str],
    forbidden: frozenset[str] | None,
) -> OutboundRequest:
    """*request* checked again after *source* (named by *field*) filled it: what
    was added comes from a stored mail, so it obeys the request rules too."""
    try:
        validated = validate_request(
            request, site_forbidden_headers(kernel) if forbidden is None else forbidden
        )
    except RequestError as exc:
        raise RequestError(
            exc.field, f"as filled from interaction {source.id!r} ({field}): {exc.message}"
        ) from None
    validated.filled = filled
    return validated


def _filled_forward(
    kernel: Kernel,
    request: OutboundRequest,
    original: Interaction,
    forbidden: frozenset[str] | None,
) -> tuple[OutboundRequest, int]:
    """*request* forwarding *original*: the subject (when absent) with the site's
    ``subject-forward-prefix``, *original* below the text (and html) under the
    ``forward-separator`` with the ``quote-*`` header lines, and references to
    *original*'s files before the request's own. Returns it with how many
    files the forward added."""
    filled: list[str] = []
    if not request.subject:
        filled.append("subject")
        prefix = kernel.config.get("email-processing", "subject-forward-prefix")
        request.subject = forward_subject(
            original.subject, DEFAULT_FORWARD_PREFIX if prefix is None else str(prefix)
        )
    separator = kernel.config.get("email-processing", "forward-separator")
    _quote(request, original, attrs.evolve(quote_style(kernel), prefix="",
                                           separator=str(separator or "")))  # fmt: skip
    carried = forwarded_files(original, len(request.attachments))
    request.attachments = [*carried, *request.attachments]
    validated = _revalidated(kernel, request, original, "forward_of", filled, forbidden)
    return validated, len(carried)


def quote_style(kernel: Kernel) -> QuoteStyle:
    """The site's ``quote-*`` options (``email-processing``)."""

    def option(name: str) -> str:
        value = kernel.config.get("email-processing", name)
        return "" if value is None else str(value)

    return QuoteStyle(
        prefix=option("quote-prefix"),
        separator=option("quote-separator"),
        from_label=option("quote-from"),
        to_label=option("quote-to"),
        cc_label=option("quote-cc"),
        sent_label=option("quote-sent"),
        subject_label=option("quote-subject"),
    )
