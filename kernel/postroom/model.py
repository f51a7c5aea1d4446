"""The data that flows through the gateway.

Everything here is a small ``attrs`` class made of plain values, so it pickles:
parsing runs in a worker thread (or process) and hands a :class:`ParsedMessage`
back, and the store persists :class:`Interaction` field by field.
"""

from __future__ import annotations

import enum
import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any, TypeVar

import attrs

from postroom.safe_names import safe_filename, unique_safe_names

#: Attached data values are strings, numbers or booleans (the commercial
#: product's key-value pairs); lists are joined by the plugin that writes them.
AttachedValue = str | int | float | bool

T = TypeVar("T")


class InteractionType(enum.StrEnum):
    INBOUND = "Inbound"
    OUTBOUND = "Outbound"


class Subtype(enum.StrEnum):
    """Subtypes from the specification (section 2); plugins may add others."""

    INBOUND_NEW = "InboundNew"
    INBOUND_NDR = "InboundNDR"
    INBOUND_REPORT = "InboundReport"
    INBOUND_DISPOSITION = "InboundDisposition"
    OUTBOUND_NEW = "OutboundNew"
    OUTBOUND_REPLY = "OutboundReply"


class HandoffState(enum.StrEnum):
    """Where an interaction stands in the hand-off to routing (the submit stage),
    for one target (a plugin implementing ``postroom_submit``) or overall
    (:func:`overall_handoff_state`)."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"  # failed so far; still retried
    REFUSED = "refused"  # refused for good (HandoffError(permanent=True)); not retried


def overall_handoff_state(targets: Iterable[str]) -> str:
    """An interaction's hand-off state from its targets' states.

    ``failed`` when a target failed (it is being retried); else ``pending`` when
    a target has not been tried yet; else ``refused`` when a target refused it
    for good; else ``done`` (every target took it, or there is none).
    """
    states = set(targets)
    for state in (HandoffState.FAILED, HandoffState.PENDING, HandoffState.REFUSED):
        if state.value in states:
            return state.value
    return HandoffState.DONE.value


@attrs.frozen
class HandoffTarget:
    """One target's hand-off of one interaction: its state and attempts."""

    target: str
    state: str
    attempts: int = 0
    last_error: str | None = None
    updated_at: datetime | None = None


@attrs.frozen
class HandoffOutcome:
    """One hand-off attempt at an interaction, to record: each target tried
    (its state, and its error when not done) and the overall state after it."""

    interaction_id: str
    overall: str
    #: target -> (state, error or None)
    targets: dict[str, tuple[str, str | None]] = attrs.field(factory=dict)


class EventType(enum.StrEnum):
    """The kinds of event on the stream (``GET /events``)."""

    CREATED = "interaction.created"
    HANDED_OFF = "interaction.handed_off"
    HANDOFF_FAILED = "interaction.handoff_failed"
    HANDOFF_REFUSED = "interaction.handoff_refused"
    SENT = "interaction.sent"
    SEND_FAILED = "interaction.send_failed"


@attrs.frozen
class Event:
    """One entry of the event stream (``GET /events``): what happened to an
    interaction, never its content. *seq* grows with every event recorded."""

    seq: int
    type: str
    time: datetime
    interaction_id: str | None = None
    target: str | None = None
    reason: str | None = None


class OutboxState(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    #: an operator took it out of the outbox (``postroom outbox cancel``): never sent
    CANCELLED = "cancelled"


class DeliveryStatus(enum.StrEnum):
    """Where one recipient of a sent message stands, from the reports that came back.

    ``sent``: the server took it, no report yet (or refused at RCPT TO:
    ``failed``); the others as a DSN (``Action``) or an MDN (disposition) says.
    """

    SENT = "sent"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    FAILED = "failed"
    DISPLAYED = "displayed"


def new_id() -> str:
    """Interaction ids are random UUIDs, as strings."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- raw


@attrs.frozen
class RawRef:
    """A message's raw bytes, on disk, never held as a second in-memory copy.

    Sources give the store a file (a maildir file, or a spool file they
    streamed the download into); the store copies it in chunks.
    """

    path: str
    size: int
    sha256: str

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> RawRef:
        digest = hashlib.sha256()
        size = 0
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
        return cls(path=os.fspath(path), size=size, sha256=digest.hexdigest())

    def open(self) -> IO[bytes]:
        return open(self.path, "rb")

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        with self.open() as fh:
            yield from iter(lambda: fh.read(size), b"")

    def read(self) -> bytes:
        with self.open() as fh:
            return fh.read()


@attrs.frozen
class FetchedMessage:
    """One message as a source delivered it, before parsing.

    ``source_key`` names the message's place on the server (maildir file name,
    ``UIDVALIDITY:UID``, UIDL...) and is the first deduplication key.
    ``server_size`` is the size the server announced before download, if any.
    """

    mailbox: str
    source_key: str
    raw: RawRef
    server_size: int | None = None
    received_at: datetime = attrs.field(factory=utcnow)


# ------------------------------------------------------------------- parsing


def _safe_name(attachment: Attachment) -> str:
    return safe_filename(
        attachment.filename, attachment.content_type, is_message=attachment.is_message
    )


@attrs.frozen
class Attachment:
    """A part of a message offered as a file.

    ``filename`` is the name as the sender wrote it (decoded, for display);
    ``safe_filename`` is made from it (see :mod:`postroom.safe_names`)
    and is what anything touching a file system must use: never a path, never
    a reserved or hidden name, no bidi or control characters, bounded length,
    unique within the message.
    """

    filename: str | None
    content_type: str
    size: int
    is_message: bool = False
    disposition: str | None = None
    content_id: str | None = None
    part_path: str = ""
    safe_filename: str = attrs.field(default=attrs.Factory(_safe_name, takes_self=True))


@attrs.frozen
class Part:
    """One node of the MIME tree, in pre-order.

    ``path`` is the IMAP-style part number (``""`` for the root, ``"1"``,
    ``"1.2"``...). ``text`` holds the decoded content of textual and report
    parts (``text/*``, ``message/delivery-status``,
    ``message/disposition-notification``, ``message/rfc822-headers``...) up to a
    bound, so classifiers can read reports without parsing the raw again.
    """

    path: str
    content_type: str
    params: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    disposition: str | None = None
    filename: str | None = None
    size: int = 0
    depth: int = 0
    text: str | None = None

    def param(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key.lower() == name:
                return value
        return None

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@attrs.define
class ParsedMessage:
    """What the parse stage makes of a message: picklable, no ``email`` objects.

    When ``wrapping_reason`` is set the original could not be parsed (or was
    too large) and this describes the *wrapping message* of the specification,
    section 3, instead: headers are the original's where they could be read.
    """

    headers: list[tuple[str, str]] = attrs.field(factory=list)
    subject: str = ""
    from_addr: str | None = None
    from_name: str | None = None
    to: list[str] = attrs.field(factory=list)
    cc: list[str] = attrs.field(factory=list)
    reply_to: list[str] = attrs.field(factory=list)
    message_id: str | None = None
    in_reply_to: list[str] = attrs.field(factory=list)
    references: list[str] = attrs.field(factory=list)
    date: datetime | None = None
    #: display names by address (From, To, Cc, Reply-To), bounded
    names: dict[str, str] = attrs.field(factory=dict)
    text: str | None = None
    html: str | None = None
    parts: list[Part] = attrs.field(factory=list)
    attachments: list[Attachment] = attrs.field(factory=list)
    defects: list[str] = attrs.field(factory=list)
    wrapping_reason: str | None = None
    raw_size: int = 0
    raw_sha256: str = ""
    #: what the plugins' ``postroom_analyze`` found, by key (``"dsn.analysis"``);
    #: filled in the worker process that parsed the message
    analysis: dict[str, Any] = attrs.field(factory=dict)
    #: ``plugin: postroom_analyze: Type: message`` for each analysis that failed
    analysis_errors: list[str] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        # whichever parser made it, two attachments never share a safe name
        self.attachments = unique_safe_names(self.attachments)

    @property
    def is_wrapped(self) -> bool:
        return self.wrapping_reason is not None

    def analysed(self, key: str, kind: type[T] | tuple[type[T], ...]) -> T:
        """What ``postroom_analyze`` left under *key*, which must be a *kind* (or one of them).

        Raises :class:`postroom.errors.NotAnalysed` when it is missing (the
        analysis did not run, or failed: see ``_PluginErrors``) or of another
        type: a gateway hook never falls back to reading the content itself.
        """
        found = self.analysis.get(key)
        if key not in self.analysis or not isinstance(found, kind):
            from postroom.errors import NotAnalysed

            raise NotAnalysed(
                f"the message has no analysis under {key!r}: postroom_analyze did not run "
                "for it or failed (see _PluginErrors); the gateway does not read a "
                "message's content itself"
            )
        return found

    def header(self, name: str) -> str | None:
        """The first value of header *name* (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]

    @property
    def content_type(self) -> str:
        return self.parts[0].content_type if self.parts else "text/plain"


# ------------------------------------------------------------ classification


@attrs.frozen
class Verdict:
    """A classifier's decision (see ``postroom_classify``).

    The highest ``priority`` wins; on a tie, the verdict of the plugin that
    comes first in the plugin order wins. ``attached_data`` of the winning
    verdict is merged into the interaction; losers' data is dropped.
    """

    subtype: str
    priority: int = 0
    reason: str = ""
    attached_data: dict[str, AttachedValue] = attrs.field(factory=dict)
    plugin: str = ""


# --------------------------------------------------------------- interactions

#: at most this many Message-IDs of a References chain are kept (hostile input)
MAX_REFERENCES = 100
#: a longer Message-ID in a chain is dropped: no real one comes near it
MAX_MESSAGE_ID_CHARS = 500
#: at most this many Reply-To addresses are kept
MAX_REPLY_TO = 100
#: a longer address is dropped (RFC 5321: 64 for the local part, 255 for the domain)
MAX_ADDRESS_CHARS = 320


def bounded_references(ids: list[str]) -> list[str]:
    """A References chain kept bounded: overlong ids dropped, and of a long chain
    the first id and the most recent ones (RFC 5322, section 3.6.4, lets a
    client trim the chain so)."""
    kept = [mid for mid in ids if len(mid) <= MAX_MESSAGE_ID_CHARS]
    if len(kept) <= MAX_REFERENCES:
        return kept
    return [kept[0], *kept[len(kept) - (MAX_REFERENCES - 1) :]]


@attrs.define
class Interaction:
    """A stored, classified work item: what routing hands to an agent."""

    id: str = attrs.field(factory=new_id)
    tenant_id: int = 0
    type: str = InteractionType.INBOUND.value
    subtype: str = Subtype.INBOUND_NEW.value
    status: str = "New"
    parent_id: str | None = None
    mailbox: str | None = None
    message_id: str | None = None
    subject: str = ""
    from_addr: str | None = None
    to: list[str] = attrs.field(factory=list)
    cc: list[str] = attrs.field(factory=list)
    #: where answers go (the Reply-To header), when the sender named it
    reply_to: list[str] = attrs.field(factory=list)
    #: the References chain, oldest first, bounded (see :func:`bounded_references`)
    references: list[str] = attrs.field(factory=list)
    #: the Date header, with the sender's offset; None when absent or unreadable
    date: datetime | None = None
    #: display names by address (From, To, Cc, Reply-To) as the mail gave them;
    #: an address without a name is not in it (nor are any of interactions
    #: stored before names were kept)
    names: dict[str, str] = attrs.field(factory=dict)
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = attrs.field(factory=list)
    attached_data: dict[str, AttachedValue] = attrs.field(factory=dict)
    #: for fan-out copies: what makes this copy distinct (e.g. the recipient);
    #: the dedupe key of a copy is (source key, copy_key).
    copy_key: str | None = None
    raw_sha256: str | None = None
    created_at: datetime = attrs.field(factory=utcnow)
    #: filled by the store when it answers
    duplicate_of: str | None = None
    handoff_state: str = HandoffState.PENDING.value
    #: an outbound interaction's recipients and their delivery status, filled by
    #: the store's ``get_interaction`` (empty until it is sent)
    delivery: list[RecipientDelivery] = attrs.field(factory=list)


@attrs.frozen
class Cursor:
    """A source's resume point, stored in the same transaction as the messages.

    ``value`` is opaque to the kernel (e.g. ``"1700000000:4711"`` for IMAP).
    """

    mailbox: str
    value: str


@attrs.frozen
class CommitResult:
    """The store's answer to one unit of work."""

    new: list[Interaction]
    duplicates: list[Interaction]
    raw_id: str


@attrs.frozen
class QuarantineEntry:
    id: str
    mailbox: str
    source_key: str
    reason: str
    attempts: int
    raw_sha256: str | None
    created_at: datetime
    updated_at: datetime
    released: bool = False


@attrs.frozen
class SuppressionEntry:
    """An address that hard-bounced: automatic outbound mail to it is refused."""

    address: str  # lower case
    reason: str
    interaction_id: str | None  # the NDR that suppressed it, when known
    created_at: datetime
    updated_at: datetime
    hits: int = 1  # how many hard bounces named it


class GrantState(enum.StrEnum):
    """Whether an OAuth grant (a mailbox's or an app registration's) still works."""

    OK = "ok"
    #: the grant was revoked or needs consent: an administrator must act
    NEEDS_REAUTHORISATION = "needs-reauthorisation"


@attrs.frozen
class MailboxStateRecord:
    """The last state a mailbox's service (or the sender's, ``smtp-client``)
    reported: ``connected``, ``connection-failed``, ``auth-failed`` or
    ``needs-reauthorisation``, with the reason and the next attempt."""

    mailbox: str
    state: str
    reason: str | None = None
    failures: int = 0
    next_attempt: datetime | None = None
    updated_at: datetime | None = None


@attrs.frozen
class GrantRecord:
    """What the store keeps of one OAuth grant across restarts.

    ``refresh_token`` is the latest (rotated) refresh token, **encrypted** with
    the site's key (never stored in clear); ``configured_sha256`` the hash of the
    refresh token the site file held when it was saved, so a new one an
    administrator puts there wins over the stored one.
    """

    grant_key: str
    state: str
    refresh_token: bytes | None = attrs.field(default=None, repr=False)
    configured_sha256: str | None = None
    reason: str | None = None
    updated_at: datetime | None = None


@attrs.define
class OutboundAttachment:
    """A file sent with an outbound message.

    Given with the request (``data``), or taken from a stored interaction's
    attachments (``interaction`` and ``index``: the position in that
    interaction's ``attachments``), whose bytes the kernel reads from the raw
    message when it queues the request. The outbox keeps the bytes apart from
    the request (``size`` and ``sha256`` say which), so ``data`` is None in a
    request read back from the store.
    """

    filename: str = ""
    content_type: str = "application/octet-stream"
    data: bytes | None = attrs.field(default=None, repr=False)
    interaction: str | None = None
    index: int | None = None
    size: int = 0
    sha256: str = ""

    @property
    def by_reference(self) -> bool:
        return self.interaction is not None


@attrs.define
class OutboundRequest:
    """A request to send an e-mail, as the stack or an agent makes it."""

    #: may be empty when ``in_reply_to`` is given: filled from the parent at queueing
    to: list[str] = attrs.field(factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    from_addr: str | None = None
    #: the mailbox (``pop-client`` name) it goes out from: its identity and account;
    #: a reply without one gets its parent's at queueing (:mod:`postroom.identity`)
    mailbox: str | None = None
    cc: list[str] = attrs.field(factory=list)
    bcc: list[str] = attrs.field(factory=list)
    headers: dict[str, str] = attrs.field(factory=dict)
    in_reply_to: str | None = None  # interaction id of the inbound being answered
    #: interaction id of the mail forwarded: its text quoted, its attachments carried
    forward_of: str | None = None
    attachments: list[OutboundAttachment] = attrs.field(factory=list)
    #: quote the answered interaction below the text (the site's ``quote-*`` options)
    quote: bool = False
    attached_data: dict[str, AttachedValue] = attrs.field(factory=dict)
    automatic: bool = False  # sent by automation (never to suppressed addresses)
    options: dict[str, Any] = attrs.field(factory=dict)  # e.g. dsn/mdn requests
    #: the fields the kernel filled from the parent (``in_reply_to``) because the
    #: request left them out: a renderer may replace them (a standard response's
    #: subject wins over ``Re: <parent's subject>``, not over the request's own)
    filled: list[str] = attrs.field(factory=list)


@attrs.define
class OutboxEntry:
    id: str  # the outbound interaction's id
    message_id: str  # fixed at queueing
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    request: OutboundRequest
    created_at: datetime = attrs.field(factory=utcnow)
    #: the attempts made before the last ``outbox retry`` of a failed entry: a
    #: round of ``gateway.max-attempts`` counts from there
    round_start: int = 0
    #: when its state last changed (None: not read from a store)
    updated_at: datetime | None = None


@attrs.frozen
class OutboxAttempt:
    """One line of an outbox entry's history: an attempt at sending it, or an
    operator's action (``retry``, ``cancel``).

    ``result``: ``sent``, ``retry`` (a temporary failure: queued again with
    back-off), ``failed`` (for good), ``login-refused`` (the sender's login was
    refused: not counted as an attempt), ``interrupted`` (the process stopped
    mid-send), ``retry-requested``, ``cancelled``.
    """

    at: datetime
    result: str
    error: str | None = None
    #: the server's last reply (``mx: 250 2.0.0 Ok: queued as ...``)
    reply: str | None = None
    #: recipients the server refused at RCPT TO, with its reply
    refused: dict[str, str] = attrs.field(factory=dict)
    #: whether it counted as an attempt (``OutboxEntry.attempts``)
    counted: bool = False


@attrs.frozen
class DeliveryReport:
    """What one report says about one recipient of an outbound message: what the
    DSN and MDN plugins give :meth:`~postroom.api.StoreAccess.record_delivery`."""

    recipient: str
    status: str  # a DeliveryStatus value other than ``sent``
    #: what the report said, as it said it (a DSN ``Action``, an MDN disposition)
    action: str | None = None
    #: a DSN's ``Status`` and ``Diagnostic-Code``, an MDN's disposition: for people
    diagnostic: str | None = None
    #: the address the message was sent to, when the report names it apart from
    #: the final one (a DSN's ``Original-Recipient``): matched first
    original_recipient: str | None = None


@attrs.frozen
class RecipientDelivery:
    """One recipient of a sent outbound message and its delivery status."""

    recipient: str
    status: str  # a DeliveryStatus value
    #: when the status was last reported (the report's storing time; for
    #: ``sent``, when the server took it)
    time: datetime
    #: the report interaction that said so (None: the send itself)
    report_id: str | None = None
    action: str | None = None
    diagnostic: str | None = None


@attrs.define
class Envelope:
    """SMTP envelope of an outbound message; ``postroom_envelope`` adds to it."""

    mail_from: str
    rcpt_to: list[str]
    mail_options: list[str] = attrs.field(factory=list)
    rcpt_options: list[str] = attrs.field(factory=list)
    extra_headers: dict[str, str] = attrs.field(factory=dict)
    #: the outbound message's Message-ID (fixed at queueing): e.g. a DSN ENVID
    message_id: str | None = None
