"""The outbox: outbound interactions queued, claimed by a sender, sent or failed.

An entry's interaction status follows its state (:data:`OUTBOX_STATUS`), in
the same transaction; once sent, its recipients' delivery status
(:mod:`postroom.store.sql.delivery`). Every attempt is counted in ``attempts``
(the one that succeeds too) except one the sender's refused login stopped, and
written to the entry's history (``outbox_attempts``, the newest
:data:`MAX_HISTORY` kept).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from postroom import keys
from postroom.errors import OutboxConflict
from postroom.model import (
    Interaction,
    InteractionType,
    OutboundAttachment,
    OutboundRequest,
    OutboxAttempt,
    OutboxEntry,
    OutboxState,
)
from postroom.store.sql.delivery import DeliveryRecords
from postroom.store.sql.tx import Row, Tx
from postroom.store.sql.values import request_from_json, request_to_json, to_json

#: The interaction status that follows each outbox state.
OUTBOX_STATUS = {
    OutboxState.QUEUED: "Queued",
    OutboxState.SENDING: "Sending",
    OutboxState.SENT: "Sent",
    OutboxState.FAILED: "Failed",
    OutboxState.CANCELLED: "Cancelled",
}

#: history lines kept per outbox entry (the newest)
MAX_HISTORY = 50
#: the longest error or reply a history line keeps
MAX_HISTORY_TEXT = 2000
#: refused recipients a history line keeps
MAX_HISTORY_REFUSED = 100

#: attached-data key that shows an outbound interaction's final send error.
SEND_ERROR_KEY = keys.SEND_ERROR

#: last_error of an outbox entry whose sender process stopped mid-send
INTERRUPTED = (
    "interrupted: the process stopped while sending; queued again (the server may have "
    "accepted it already: the same Message-ID lets the recipient side deduplicate)"
)


#: ties of created_at (one clock tick, or a test's frozen clock) go in the order the
#: requests were queued: their interactions' insertion sequence
_QUEUED_ORDER = "(SELECT seq FROM interactions WHERE interactions.id = outbox.id)"
OUTBOX_COLUMNS = (
    "id, message_id, state, attempts, next_attempt_at, last_error, request, "
    "created_at, round_start, updated_at"
)
OUTBOX_SELECT = f"SELECT {OUTBOX_COLUMNS} FROM outbox"


class OutboxRecords(DeliveryRecords):
    """``outbox``: one row per outbound interaction."""

    def queue_outbound(self, interaction: Interaction, request: OutboundRequest) -> OutboxEntry:
        if not interaction.message_id:
            raise ValueError("an outbound interaction needs its Message-ID before it is queued")
        item = attrs.evolve(
            interaction,
            type=InteractionType.OUTBOUND.value,
            status=OUTBOX_STATUS[OutboxState.QUEUED],
        )
        for n, file in enumerate(request.attachments):
            if file.data is None:
                raise ValueError(f"file {n} ({file.filename!r}) of the request has no bytes")
        request_json = request_to_json(request)

        def work(tx: Tx) -> OutboxEntry:
            now = self.now()
            self._insert_interaction(tx, item, None, now)
            tx.execute(
                "INSERT INTO outbox (id, message_id, state, attempts, next_attempt_at, "
                "last_error, request, created_at, updated_at) "
                "VALUES (?, ?, ?, 0, NULL, NULL, ?, ?, ?)",
                (item.id, item.message_id, OutboxState.QUEUED.value, request_json,
                 self._dt_param(now), self._dt_param(now)),
            )  # fmt: skip
            for seq, file in enumerate(request.attachments):
                assert file.data is not None
                what = f"file {seq} ({file.filename!r}) of outbound {item.id}"
                raw_id = self._store_bytes(tx, file.data, file.sha256, now, what)
                tx.execute(
                    "INSERT INTO outbox_files (outbox_id, seq, filename, content_type, raw_id) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (item.id, seq, file.filename, file.content_type, raw_id),
                )
            return OutboxEntry(
                id=item.id,
                message_id=str(item.message_id),
                state=OutboxState.QUEUED.value,
                attempts=0,
                next_attempt_at=None,
                last_error=None,
                request=request_from_json(request_json),
                created_at=now,
                updated_at=now,
            )

        return self._write(work)

    def claim_outbound(self, now: datetime | float, limit: int = 10) -> list[OutboxEntry]:
        due = self._dt_param(now)

        def work(tx: Tx) -> list[OutboxEntry]:
            ids = tx.all(
                "SELECT id FROM outbox WHERE state = ? "
                "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) "
                f"ORDER BY created_at, {_QUEUED_ORDER} LIMIT ?" + self.dialect.claim_rows,
                (OutboxState.QUEUED.value, due, limit),
            )
            stamp = self._dt_param(self.now())
            claimed = []
            for (eid,) in ids:
                # The state test keeps a row another worker claimed meanwhile out.
                if tx.execute(
                    "UPDATE outbox SET state = ?, updated_at = ? WHERE id = ? AND state = ?",
                    (OutboxState.SENDING.value, stamp, eid, OutboxState.QUEUED.value),
                ):
                    tx.execute(
                        "UPDATE interactions SET status = ? WHERE id = ?",
                        (OUTBOX_STATUS[OutboxState.SENDING], eid),
                    )
                    row = tx.one(f"{OUTBOX_SELECT} WHERE id = ?", (eid,))
                    assert row is not None
                    claimed.append(self._outbox_entry(row))
            return claimed

        return self._write(work)

    def outbox_counts(self) -> dict[str, int]:
        """Outbox entries by state (every state present, zero included)."""
        rows = self._read(lambda tx: tx.all("SELECT state, COUNT(*) FROM outbox GROUP BY state"))
        counts = {state.value: 0 for state in OutboxState}
        counts.update({str(state): int(n) for state, n in rows})
        return counts

    def requeue_interrupted(self, claimed_before: datetime | float) -> list[str]:
        """Entries left ``sending`` by a process that stopped (claimed before
        *claimed_before*) go back to ``queued``: sent at least once, never
        lost. Returns their ids."""
        cutoff = self._dt_param(claimed_before)

        def work(tx: Tx) -> list[str]:
            ids = [
                eid
                for (eid,) in tx.all(
                    "SELECT id FROM outbox WHERE state = ? AND updated_at <= ?",
                    (OutboxState.SENDING.value, cutoff),
                )
            ]
            stamp = self._dt_param(self.now())
            for eid in ids:
                tx.execute(
                    "UPDATE outbox SET state = ?, updated_at = ?, next_attempt_at = NULL, "
                    "last_error = ? WHERE id = ? AND state = ?",
                    (OutboxState.QUEUED.value, stamp, INTERRUPTED, eid, OutboxState.SENDING.value),
                )
                tx.execute(
                    "UPDATE interactions SET status = ? WHERE id = ?",
                    (OUTBOX_STATUS[OutboxState.QUEUED], eid),
                )
                self._add_history(
                    tx, eid, OutboxAttempt(at=self.now(), result="interrupted", error=INTERRUPTED)
                )
            return ids

        return self._write(work)

    def mark_outbound(
        self,
        entry_id: str,
        state: str,
        error: str | None = None,
        next_attempt_at: datetime | float | None = None,
        attached: Mapping[str, Any] | None = None,
        count_attempt: bool = True,
        message_id: str | None = None,
        reply: str | None = None,
        accepted: Sequence[str] | None = None,
        refused: Mapping[str, str] | None = None,
    ) -> None:
        """Move an outbox entry to *state* after an attempt; its interaction's status
        follows, *attached* is merged into the interaction's attached data, and
        the attempt goes into the entry's history. Every attempt counts (sent,
        queued again, failed), except back to ``queued`` without
        *count_attempt*: the entry was never tried (the sender's login was
        refused), its attempts stay as they were. Sent with a *message_id*: the
        server gave the message that Message-ID instead of the one assigned
        (Exchange may); the interaction records it, so that replies find it,
        and the outbox row keeps the one assigned. Sent with *accepted* and
        *refused* recipients (and the server's *reply*): the delivery status
        of each starts there (``sent``, or ``failed`` with the server's reply).
        OutboxConflict for a cancelled entry."""
        new_state = OutboxState(state)
        retry_at = None if next_attempt_at is None else self._dt_param(next_attempt_at)
        counts = count_attempt and new_state in (
            OutboxState.FAILED,
            OutboxState.QUEUED,
            OutboxState.SENT,
        )
        result = _result_of(new_state, counts, error)

        def work(tx: Tx) -> None:
            now = self.now()
            changed = tx.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + ?, "
                "last_error = COALESCE(?, last_error), next_attempt_at = ?, updated_at = ? "
                "WHERE id = ? AND state <> ?",
                (new_state.value, int(counts), error,
                 retry_at if new_state is OutboxState.QUEUED else None,
                 self._dt_param(now), entry_id, OutboxState.CANCELLED.value),
            )  # fmt: skip
            if changed == 0:
                if tx.scalar("SELECT state FROM outbox WHERE id = ?", (entry_id,)) is not None:
                    raise OutboxConflict(entry_id, OutboxState.CANCELLED.value, "update")
                raise KeyError(entry_id)
            # The outbox row is locked by the UPDATE above: no one else is here.
            text = tx.scalar("SELECT attached_data FROM interactions WHERE id = ?", (entry_id,))
            data = json.loads(text) if text is not None else {}
            if new_state is OutboxState.FAILED:
                data[SEND_ERROR_KEY] = error or "sending failed"
            elif new_state is OutboxState.SENT:
                data.pop(SEND_ERROR_KEY, None)
            data.update(attached or {})
            tx.execute(
                "UPDATE interactions SET status = ?, attached_data = ? WHERE id = ?",
                (OUTBOX_STATUS[new_state], to_json(data), entry_id),
            )
            if message_id and new_state is OutboxState.SENT:
                tx.execute(
                    "UPDATE interactions SET message_id = ? WHERE id = ?", (message_id, entry_id)
                )
            if result is not None:
                self._add_history(
                    tx, entry_id, OutboxAttempt(
                        at=now, result=result, error=error, reply=reply,
                        refused=dict(refused or {}), counted=counts,
                    ),
                )  # fmt: skip
            if new_state is OutboxState.SENT:
                self._seed_delivery(tx, entry_id, accepted or [], refused or {}, now)
                self._derive_status(tx, entry_id)

        self._write(work)

    def _add_history(self, tx: Tx, entry_id: str, line: OutboxAttempt) -> None:
        """One line of the entry's history; only the newest MAX_HISTORY stay."""
        last = tx.scalar("SELECT MAX(seq) FROM outbox_attempts WHERE outbox_id = ?", (entry_id,))
        seq = int(last or 0) + 1
        refused = dict(list(line.refused.items())[:MAX_HISTORY_REFUSED])
        tx.execute(
            "INSERT INTO outbox_attempts (outbox_id, seq, at, result, error, reply, refused, "
            "counted) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (entry_id, seq, self._dt_param(line.at), line.result,
             _cut(line.error), _cut(line.reply), to_json(refused), int(line.counted)),
        )  # fmt: skip
        tx.execute(
            "DELETE FROM outbox_attempts WHERE outbox_id = ? AND seq <= ?",
            (entry_id, seq - MAX_HISTORY),
        )

    def outbox_history(self, entry_id: str) -> list[OutboxAttempt]:
        """The entry's history, oldest first (the newest MAX_HISTORY lines)."""
        rows = self._read(
            lambda tx: tx.all(
                "SELECT at, result, error, reply, refused, counted FROM outbox_attempts "
                "WHERE outbox_id = ? ORDER BY seq",
                (entry_id,),
            )
        )
        return [
            OutboxAttempt(
                at=self._dt_value(at),
                result=result,
                error=error,
                reply=reply,
                refused=json.loads(refused),
                counted=bool(counted),
            )
            for at, result, error, reply, refused, counted in rows
        ]

    def get_outbox(self, entry_id: str) -> OutboxEntry | None:
        row = self._read(lambda tx: tx.one(f"{OUTBOX_SELECT} WHERE id = ?", (entry_id,)))
        return None if row is None else self._outbox_entry(row)

    def list_outbox(self, state: str | None = None) -> list[OutboxEntry]:
        where, params = ("", ()) if state is None else (" WHERE state = ?", (str(state),))
        rows = self._read(
            lambda tx: tx.all(
                f"{OUTBOX_SELECT}{where} ORDER BY created_at, {_QUEUED_ORDER}", params
            )
        )
        return [self._outbox_entry(row) for row in rows]

    def read_outbound_files(self, entry_id: str) -> list[OutboundAttachment]:
        """The files of an outbox entry, in order, with their bytes (checked against
        the size and SHA-256 kept with them: :class:`RawIntegrityError` when not)."""
        rows = self._read(
            lambda tx: tx.all(
                "SELECT seq, filename, content_type, raw_id FROM outbox_files "
                "WHERE outbox_id = ? ORDER BY seq",
                (entry_id,),
            )
        )
        files = []
        for seq, filename, content_type, raw_id in rows:
            buffer = io.BytesIO()
            self._copy_raw(raw_id, buffer, f"file {seq} of outbound {entry_id}")
            data = buffer.getvalue()
            files.append(
                OutboundAttachment(
                    filename=filename,
                    content_type=content_type,
                    data=data,
                    size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                )
            )
        return files

    def _outbox_entry(self, row: Row) -> OutboxEntry:
        (eid, message_id, state, attempts, next_at, last_error, request, created,
         round_start, updated) = row  # fmt: skip
        return OutboxEntry(
            id=eid,
            message_id=message_id,
            state=state,
            attempts=int(attempts),
            next_attempt_at=None if next_at is None else self._dt_value(next_at),
            last_error=last_error,
            request=request_from_json(request),
            created_at=self._dt_value(created),
            round_start=int(round_start),
            updated_at=self._dt_value(updated),
        )


def _result_of(state: OutboxState, counted: bool, error: str | None) -> str | None:
    """The history line of an attempt that ends in *state* (None: it was never tried)."""
    if state is OutboxState.SENT:
        return "sent"
    if state is OutboxState.FAILED:
        return "failed"
    if state is OutboxState.QUEUED:
        if counted:
            return "retry"
        return "login-refused" if error is not None else None
    return None


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:MAX_HISTORY_TEXT]
