"""The zope interfaces that drivers implement.

Drivers are chosen by name in the site configuration and loaded with stevedore
from the entry-point groups below; the kernel checks each loaded class with
:func:`zope.interface.verify.verifyClass` against the interface of its group
before it builds one. Methods that do I/O return Deferreds, except the
store's: a store is a plain blocking object that the kernel only ever calls from
its thread pool (see :class:`postroom.store.AsyncStore`), which keeps the
drivers simple and the reactor thread free.
"""

from __future__ import annotations

from typing import Any

from zope.interface import Attribute, Interface

SOURCES_GROUP = "postroom.sources"
SENDERS_GROUP = "postroom.senders"
AUTH_GROUP = "postroom.auth"
STORES_GROUP = "postroom.stores"
PLUGINS_GROUP = "postroom.plugins"


class ISource(Interface):
    """A mailbox: where inbound mail comes from (the *fetch* stage).

    Built as ``cls(mailbox, context)`` with a
    :class:`postroom.config.MailboxConfig` and a
    :class:`postroom.drivers.DriverContext`.
    """

    supports_push = Attribute("True when wait_for_new() is pushed by the server (IMAP IDLE)")
    needs_auth = Attribute(
        "Class attribute: True (the default when absent) when the source logs in to a "
        "server: the kernel then builds the mailbox's auth driver (option ``auth``) and "
        "passes it as ``context.authenticator``; False for a source without a server "
        "(``maildir``), which gets no auth driver and needs none installed. "
        "``postroom.api.SourceBase`` sets it True."
    )

    def connect() -> Any:
        """Connect and authenticate. Deferred firing None."""

    def list_new(cursor: Any) -> Any:
        """Deferred firing the list of :class:`postroom.drivers.SourceItem`
        not yet acknowledged, oldest first. *cursor* is the stored
        :class:`postroom.model.Cursor` or None."""

    def fetch(item: Any) -> Any:
        """Deferred firing a :class:`postroom.model.FetchedMessage` whose raw
        bytes are on disk (streamed there, never held whole in memory)."""

    def acknowledge(message: Any) -> Any:
        """Called only after the store committed *message*: delete, move or
        mark it on the server. Deferred firing None."""

    def release(message: Any) -> Any:
        """Forget a fetched message without acknowledging it (a failure): drop
        spool files; the message stays on the server. Deferred firing None."""

    def wait_for_new(timeout: float) -> Any:
        """Deferred firing when new mail may be there or *timeout* seconds
        passed (push where possible, else a poll)."""

    def disconnect() -> Any:
        """Deferred firing None once the connection is closed."""

    # Optional, not verified: ``quarantine_released(keys)``, called before a
    # pass with the source keys released from quarantine since the previous
    # one (``postroom.api.SourceBase`` has a default that does nothing).


class ISender(Interface):
    """Where outbound mail goes (the *send* stage). Built as ``cls(options, context)``."""

    needs_auth = Attribute(
        "Class attribute: True (the default when absent) when the sender can log in to a "
        "server: with ``enable-authentication`` the kernel builds the auth driver named "
        "by ``auth`` for it; False for a sender without a server (``file``)."
    )

    def send(message: bytes, envelope: Any, message_id: str) -> Any:
        """Deliver *message* (bytes, CRLF or LF line ends, its Message-ID
        header is *message_id*) to the
        :class:`postroom.model.Envelope`'s recipients. Deferred firing a
        :class:`postroom.drivers.SendResult`; fails with
        :class:`postroom.errors.SendError` (``permanent`` tells whether to retry)."""

    def close() -> Any:
        """Deferred firing None once pooled connections are closed."""


class IAuthenticator(Interface):
    """Credentials for a protocol (the *auth* stage). Built as ``cls(mailbox, context)``."""

    def credentials(protocol: str) -> Any:
        """Deferred firing a :class:`postroom.drivers.Credentials` for
        *protocol* (``imap``, ``pop3``, ``smtp``, ``ews``), refreshed as needed."""

    def invalidate() -> None:
        """The server refused the last credentials: refresh before the next use."""


class IParser(Interface):
    """Turns raw bytes into a :class:`postroom.model.ParsedMessage` (the *parse* stage)."""

    def parse(message: Any, limits: Any) -> Any:
        """Deferred firing a picklable ParsedMessage for the
        :class:`postroom.model.FetchedMessage`, computed off the reactor thread.
        *limits* is a :class:`postroom.parsing.ParseLimits`. Unparsable mail is
        not an error: the result describes the wrapping message."""


class IStore(Interface):
    """The interaction store: one unit of work per fetched message.

    Blocking methods, called only from the kernel's thread pool. Built as
    ``cls(options, now=clock)`` where *options* is the ``store:`` mapping of
    the site configuration (without ``driver``) and *clock* returns the
    kernel's "now" as an aware datetime: every timestamp the store writes
    comes from it. Holds what the kernel needs; a plugin's own data lives in
    its own tables (:class:`ISQLAccess`).
    """

    def open() -> None:
        """Connect and apply pending schema migrations."""

    def close() -> None:
        """Release connections."""

    def schema_version() -> int:
        """The applied migration version."""

    def commit_fetched(
        mailbox, source_key, raw, interactions, cursor=None, message_id_check=False, fence=None
    ):
        """In one transaction: the raw message (streamed from the
        :class:`~postroom.model.RawRef`), the interactions, their dedupe keys,
        the new cursor, and forgetting the message's failed attempts.
        Returns a :class:`~postroom.model.CommitResult`.

        Dedupe keys of each interaction: ``src:<mailbox>:<source_key>``,
        ``sha:<sha256>`` and, when *message_id_check*, ``mid:<Message-ID>``;
        for a fan-out copy each is suffixed ``#<copy_key>``. An interaction
        with a key already present is a duplicate (``duplicate_of`` set to the
        owner of that key) and is not stored again. *fence* is reserved for
        lease fencing tokens (several processes, later)."""

    def get_interaction(interaction_id: str) -> Any:
        """The Interaction, or None."""

    def list_interactions(limit=100, offset=0, mailbox=None) -> Any:
        """Interactions, newest first."""

    def match_ids(prefix: str, limit: int = 10) -> Any:
        """Up to *limit* interaction ids starting with *prefix* (case-insensitive),
        in id order: one range of the id's index."""

    def find_interactions(filters=None, limit: int = 100, after=None) -> Any:
        """A :class:`~postroom.store.sql.listing.Page` of at most *limit*
        interactions (capped at 1,000) passing *filters* (a
        :class:`~postroom.store.sql.listing.ListFilter`), newest first by
        ``(created_at, seq)``, older than *after* (a page's ``next``); without
        their text and HTML."""

    def find_by_message_id(message_id: str, type=None) -> Any:
        """Interactions with this Message-ID (with angle brackets), oldest
        first; only of *type* (``Inbound``/``Outbound``) when given."""

    def update_attached_data(interaction_id: str, values: Any, remove: Any = ()) -> None:
        """Merge *values* into a stored interaction's attached data and drop the
        keys in *remove*, in one transaction. KeyError when unknown."""

    def read_raw(interaction_id: str, fileobj: Any) -> int:
        """Write the raw bytes of the interaction's message to *fileobj* in
        chunks; return the number of bytes. KeyError when unknown;
        :class:`~postroom.store.errors.RawIntegrityError` (after writing) when
        the bytes do not match the SHA-256 recorded with them: discard them."""

    def known_source_keys(mailbox: str, keys: Any) -> Any:
        """The subset of *keys* (source keys of *mailbox*) already stored: lets
        a source that leaves mail on the server skip what it already handed in."""

    def get_cursor(mailbox: str) -> Any:
        """The mailbox's Cursor, or None."""

    def pending_handoffs(limit: int = 100, after=None) -> Any:
        """Interactions whose hand-off is pending or failed, oldest first;
        *after* (an interaction id): the next page, those committed after it."""

    def mark_handoff(interaction_id: str, state: str, error=None) -> None:
        """Record a hand-off attempt's outcome (counts attempts)."""

    def mark_handoffs_done(interaction_ids: Any, after_commit: Any = ()) -> None:
        """Mark many hand-offs done in one transaction, and the side effects of
        the *after_commit* interactions."""

    def pending_after_commit(limit: int = 100, after=None) -> Any:
        """Interactions whose side effects (``postroom_committed``) are pending
        or failed, oldest first; *after* as for ``pending_handoffs``."""

    def mark_after_commit(interaction_id: str, state: str, error=None) -> None:
        """Record an attempt at an interaction's side effects (counts attempts)."""

    def after_commit_status(interaction_id: str) -> Any:
        """``(state, attempts, last_error)`` of its side effects, or None."""

    def handoff_status(interaction_id: str) -> Any:
        """``(state, attempts, last_error)`` or None."""

    def handoff_targets(interaction_id: str) -> Any:
        """Each target's hand-off of the interaction (HandoffTarget), by name."""

    def record_handoffs(outcomes: Any, after_commit: Any = ()) -> None:
        """Record hand-off attempts (HandoffOutcome: each target tried, the
        overall state) with their events, and side effects done, in one transaction."""

    def retry_handoff(interaction_id: str, target=None) -> Any:
        """Put refused and failed targets (or *target*) back to pending; the
        targets put back. KeyError: unknown; ValueError: not a target, or done."""

    def pending_handoff_ids(limit: int = 500, after=None) -> Any:
        """Ids of interactions whose overall hand-off is pending, in commit order."""

    def add_events(events: Any) -> None:
        """Record events: (type, interaction id, target, reason) tuples."""

    def events_after(seq: int, limit: int = 500, types=None) -> Any:
        """Up to *limit* Events after *seq*, oldest first (only *types*)."""

    def last_event_seq() -> int:
        """The newest event's seq (0: none)."""

    def prune_events(keep: int, days: float) -> int:
        """Keep the newest *keep* events, none older than *days* (0: any age)."""

    def queue_outbound(interaction, request) -> Any:
        """Store the outbound interaction and its outbox entry (state
        ``queued``, Message-ID as on the interaction) and the bytes of the
        request's files, in one transaction; returns the OutboxEntry."""

    def claim_outbound(now, limit: int = 10) -> Any:
        """Move due ``queued`` entries to ``sending``; return them."""

    def outbox_counts() -> Any:
        """``{state: count}`` for every outbox state."""

    def requeue_interrupted(claimed_before) -> Any:
        """Put entries still ``sending`` since before *claimed_before* back to
        ``queued`` (a process died mid-send); returns their ids."""

    def mark_outbound(
        entry_id,
        state,
        error=None,
        next_attempt_at=None,
        attached=None,
        count_attempt=True,
        message_id=None,
        reply=None,
        accepted=None,
        refused=None,
    ) -> None:
        """Record a send attempt: sent, failed, or back to queued for a retry.
        Every attempt counts, the successful one too, and goes into the entry's
        history (with the server's *reply* and the *refused* recipients).
        Also sets the outbound interaction's status and merges *attached*
        into its attached data. ``count_attempt=False``: back to queued
        without counting an attempt (the sender's login was refused). Sent
        with *message_id*: the Message-ID the server really used (it replaced
        the one assigned); the interaction records it, the outbox keeps the
        assigned one. Sent: each *accepted* recipient's delivery status starts
        ``sent``, each *refused* one's ``failed``. OutboxConflict for a
        cancelled entry."""

    def outbox_history(entry_id) -> Any:
        """The entry's history, oldest first: a list of OutboxAttempt (bounded)."""

    def list_outbox_page(state=None, limit=100, after=None) -> Any:
        """``(entries, next_cursor)``: entries in queueing order, *state* only
        when given, at most *limit* after the cursor *after* (None: from the
        start); *next_cursor* None on the last page."""

    def retry_outbound(entry_id) -> Any:
        """Make a queued or failed entry due now (a failed one with a new round
        of ``gateway.max-attempts``); the OutboxEntry. KeyError when unknown,
        OutboxConflict when sending, sent or cancelled."""

    def cancel_outbound(entry_id) -> Any:
        """Cancel a queued or failed entry (state and status ``cancelled``); the
        OutboxEntry. KeyError when unknown, OutboxConflict when sending, sent or
        cancelled."""

    def record_delivery(outbound_id, report_id, reports) -> Any:
        """What report interaction *report_id* says about recipients of
        *outbound_id* (a list of DeliveryReport); the outbound interaction's
        status follows. Idempotent; True when something changed."""

    def delivery_of(outbound_id) -> Any:
        """The recipients of an outbound interaction with their delivery status
        (a list of RecipientDelivery)."""

    def read_outbound_files(entry_id) -> Any:
        """The files queued with an outbox entry, in order, each an
        :class:`~postroom.model.OutboundAttachment` with its bytes;
        :class:`~postroom.store.errors.RawIntegrityError` when they do not match
        the size and SHA-256 kept with them."""

    def get_outbox(entry_id) -> Any:
        """The OutboxEntry or None."""

    def list_outbox(state=None) -> Any:
        """OutboxEntries, oldest first."""

    def record_failure(mailbox, source_key, reason, raw=None) -> Any:
        """Count a failed attempt for a message; returns attempts so far."""

    def quarantine(mailbox, source_key, reason, raw=None) -> Any:
        """Put the message (raw kept when given) in quarantine; returns its entry."""

    def quarantined_source_keys(mailbox) -> Any:
        """The set of *mailbox*'s source keys held in quarantine."""

    def is_quarantined(mailbox, source_key) -> bool:
        """True when the message sits in quarantine (not released)."""

    def list_quarantine(include_released=False) -> Any:
        """QuarantineEntries."""

    def read_quarantined_raw(entry_id, fileobj) -> int:
        """Write the quarantined raw bytes to *fileobj*; KeyError if none;
        RawIntegrityError as for :meth:`read_raw`."""

    def clear_failures(mailbox, source_key) -> None:
        """Forget the failure count of a message (it was committed after all)."""

    def release_quarantine(entry_id) -> None:
        """Mark an entry released (after a replay, or to let the source retry)."""

    def get_grant(grant_key: str) -> Any:
        """The :class:`~postroom.model.GrantRecord` kept for an OAuth grant, or None."""

    def save_grant(
        grant_key: str, state: str, refresh_token=None, configured_sha256=None, reason=None
    ) -> None:
        """Replace what is kept of an OAuth grant: its state, its latest refresh
        token (already encrypted: the store never sees it in clear), the hash of
        the configured one, the reason of a ``needs-reauthorisation``."""

    def list_grants() -> Any:
        """Every kept :class:`~postroom.model.GrantRecord`, by key."""

    def save_mailbox_state(mailbox, state, reason=None, failures=0, next_attempt=None) -> None:
        """Keep the state a mailbox's service (or ``smtp-client``'s) just entered."""

    def list_mailbox_states() -> Any:
        """Every kept :class:`~postroom.model.MailboxStateRecord`, by mailbox name."""

    def suppress(address, reason, interaction_id=None) -> None:
        """Put a hard-bounced address on the suppression list (again: counts a hit)."""

    def is_suppressed(address) -> Any:
        """The address's SuppressionEntry, or None (case-insensitive)."""

    def list_suppressions() -> Any:
        """Every SuppressionEntry, oldest first."""

    def unsuppress(address) -> bool:
        """Clear an address; False when it was not on the list."""


class ISQLAccess(Interface):
    """Optional store capability: plugins keep their own tables in the store's database.

    A plugin detects it with ``ISQLAccess.providedBy(store)`` (the kernel's
    ``ctx.store`` provides what its driver provides) and refuses to start with
    a :class:`~postroom.errors.ConfigError` naming the store driver when it
    needs tables and the store has none to give. The kernel's SQLite and
    memory stores and the PostgreSQL store provide it.
    """

    dialect_name = Attribute(
        "The SQL dialect (``sqlite``, ``postgresql``): the kernel asks the plugins' "
        "``postroom_store_migrations`` hook for their migrations in it."
    )

    def add_plugin_migrations(migrations: Any) -> None:
        """Keep a plugin's tables (a :class:`~postroom.store.sql.migrations.PluginMigrations`)
        up to date from the next ``open()`` on: its scripts are applied in its
        own version track. Called by the kernel before ``open()``."""

    def plugin_schema_version(owner: str) -> int:
        """The applied version of a plugin's tables (0: none)."""

    def run_in_transaction(work: Any, write: bool = True) -> Any:
        """Run ``work(tx)`` in one transaction and return its result. *tx* is a
        :class:`~postroom.store.sql.tx.Tx`: ``?`` placeholders and aware
        datetimes on every database, SQL both SQLite and PostgreSQL accept.
        A write transaction that lost a race is run again whole, so *work*
        must do nothing outside the transaction."""
