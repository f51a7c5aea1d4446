"""The last state each mailbox's service reported, for a CLI in another process.

``postroom mailboxes`` runs beside the gateway, not inside it: what the
gateway knows of its mailboxes (connected, refused, waiting for an
administrator) must be in the store to be seen there, and after a restart.
The services write a row when the state changes, not on every poll.
"""

from __future__ import annotations

from datetime import datetime

from postroom.model import MailboxStateRecord
from postroom.store.sql.core import SQLCore
from postroom.store.sql.tx import Row, Tx

#: the most of a reason kept: a server's words are quoted in it, and a hostile
#: or broken server may say a great deal
REASON_LIMIT = 2000

_SELECT = "SELECT mailbox, state, reason, failures, next_attempt, updated_at FROM mailbox_states"


class MailboxStateRecords(SQLCore):
    """``mailbox_states``: one row per mailbox name (``smtp-client`` for the sender)."""

    def save_mailbox_state(
        self,
        mailbox: str,
        state: str,
        reason: str | None = None,
        failures: int = 0,
        next_attempt: datetime | None = None,
    ) -> None:
        if reason is not None and len(reason) > REASON_LIMIT:
            reason = reason[: REASON_LIMIT - 1] + "…"

        def work(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO mailbox_states (mailbox, state, reason, failures, next_attempt, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (mailbox) DO UPDATE SET state = excluded.state, "
                "reason = excluded.reason, failures = excluded.failures, "
                "next_attempt = excluded.next_attempt, updated_at = excluded.updated_at",
                (
                    mailbox,
                    state,
                    reason,
                    int(failures),
                    None if next_attempt is None else self._dt_param(next_attempt),
                    self._dt_param(self.now()),
                ),
            )

        self._write(work)

    def list_mailbox_states(self) -> list[MailboxStateRecord]:
        rows = self._read(lambda tx: tx.all(f"{_SELECT} ORDER BY mailbox"))
        return [self._state(row) for row in rows]

    def _state(self, row: Row) -> MailboxStateRecord:
        mailbox, state, reason, failures, next_attempt, updated = row
        return MailboxStateRecord(
            mailbox=mailbox,
            state=state,
            reason=reason,
            failures=int(failures or 0),
            next_attempt=None if next_attempt is None else self._dt_value(next_attempt),
            updated_at=self._dt_value(updated),
        )
