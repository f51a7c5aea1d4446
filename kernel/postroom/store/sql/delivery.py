"""Outbound delivery status: each recipient of a sent message, and what reports said.

A send seeds one row per recipient (``sent``, or ``failed`` for one the server
refused at RCPT TO); a DSN or MDN threaded to the message updates its
recipients (:meth:`DeliveryRecords.record_delivery`, what the ``dsn`` and ``mdn``
plugins call after the report is committed). The outbound interaction's status
is derived from the rows in the same transaction (:func:`overall_status`).

A report replaces a recipient's status only when it says more
(:data:`RANK`: a delay never undoes a delivery; a read receipt beats a
delivery) or, saying as much, is newer; the same report applied twice changes
nothing, so a report processed again after a restart is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from postroom.model import (
    DeliveryReport,
    DeliveryStatus,
    Interaction,
    InteractionType,
    OutboxState,
    RecipientDelivery,
)
from postroom.store.sql.interactions import INTERACTION_SELECT, InteractionRecords
from postroom.store.sql.tx import Tx

#: how far a status goes: a report replaces a recipient's status when its rank is
#: higher, or equal and the report newer (delivered and failed are both final:
#: the later report wins)
RANK = {
    DeliveryStatus.SENT.value: 0,
    DeliveryStatus.DELAYED.value: 1,
    DeliveryStatus.DELIVERED.value: 2,
    DeliveryStatus.FAILED.value: 2,
    DeliveryStatus.DISPLAYED.value: 3,
}

#: the outbound interaction's status once sent, from its recipients' (docs/outbound.md)
SENT = "Sent"
DELAYED = "Delayed"
DELIVERED = "Delivered"
DISPLAYED = "Displayed"
PARTLY_FAILED = "PartlyFailed"
DELIVERY_FAILED = "DeliveryFailed"

#: recipients kept per outbound interaction (a send request has at most 500; the
#: rest are addresses reports named that were not sent to, e.g. an alias's)
MAX_RECIPIENTS = 1000
#: bounds on what a report may write (a report is mail from anyone)
MAX_ADDRESS = 320
MAX_ACTION = 64
MAX_DIAGNOSTIC = 1000


def overall_status(statuses: Iterable[str]) -> str:
    """The status of a sent outbound interaction from its recipients' statuses.

    Any failed: ``DeliveryFailed`` when all did, else ``PartlyFailed``; then
    ``Delayed`` when one is delayed; ``Displayed`` when every one was displayed,
    ``Delivered`` when every one was delivered or displayed; else ``Sent`` (no
    report for some recipient yet).
    """
    found = list(statuses)
    if not found:
        return SENT
    failed = found.count(DeliveryStatus.FAILED.value)
    if failed:
        return DELIVERY_FAILED if failed == len(found) else PARTLY_FAILED
    if DeliveryStatus.DELAYED.value in found:
        return DELAYED
    if all(s == DeliveryStatus.DISPLAYED.value for s in found):
        return DISPLAYED
    if all(s in (DeliveryStatus.DELIVERED.value, DeliveryStatus.DISPLAYED.value) for s in found):
        return DELIVERED
    return SENT


def _cut(value: str | None, limit: int) -> str | None:
    return None if value is None else value[:limit]


class DeliveryRecords(InteractionRecords):
    """``outbound_delivery``: one row per recipient of a sent outbound interaction."""

    def _seed_delivery(
        self,
        tx: Tx,
        outbound_id: str,
        accepted: Sequence[str],
        refused: Mapping[str, str],
        now: datetime,
    ) -> None:
        """The recipients of a send: ``sent`` (accepted) or ``failed`` (refused,
        with the server's reply). A recipient a report already named keeps
        what the report said."""
        rows: list[tuple[str, str, str | None]] = [
            (a, DeliveryStatus.SENT.value, None) for a in accepted
        ]
        rows += [(a, DeliveryStatus.FAILED.value, why) for a, why in refused.items()]
        stamp = self._dt_param(now)
        for address, status, diagnostic in rows[:MAX_RECIPIENTS]:
            address = address[:MAX_ADDRESS]
            if tx.one(
                "SELECT 1 FROM outbound_delivery WHERE outbound_id = ? AND recipient = ?",
                (outbound_id, address.lower()),
            ):
                continue
            tx.execute(
                "INSERT INTO outbound_delivery (outbound_id, recipient, address, status, "
                "reported_at, report_id, action, diagnostic) VALUES (?, ?, ?, ?, ?, NULL, ?, ?)",
                (outbound_id, address.lower(), address, status, stamp,
                 "refused" if diagnostic else None, _cut(diagnostic, MAX_DIAGNOSTIC)),
            )  # fmt: skip

    def _delivery_rows(self, tx: Tx, outbound_id: str) -> list[RecipientDelivery]:
        rows = tx.all(
            "SELECT address, status, reported_at, report_id, action, diagnostic "
            "FROM outbound_delivery WHERE outbound_id = ? ORDER BY recipient",
            (outbound_id,),
        )
        return [
            RecipientDelivery(
                recipient=address,
                status=status,
                time=self._dt_value(at),
                report_id=report_id,
                action=action,
                diagnostic=diagnostic,
            )
            for address, status, at, report_id, action, diagnostic in rows
        ]

    def _derive_status(self, tx: Tx, outbound_id: str) -> None:
        """The interaction's status from its recipients', when its outbox entry is
        sent (an entry queued again after an interrupted send keeps ``Queued``)."""
        state = tx.scalar("SELECT state FROM outbox WHERE id = ?", (outbound_id,))
        if state is not None and state != OutboxState.SENT.value:
            return
        statuses = [
            s
            for (s,) in tx.all(
                "SELECT status FROM outbound_delivery WHERE outbound_id = ?", (outbound_id,)
            )
        ]
        tx.execute(
            "UPDATE interactions SET status = ? WHERE id = ?",
            (overall_status(statuses), outbound_id),
        )

    def get_interaction(self, interaction_id: str) -> Interaction | None:
        """The interaction; an outbound one with its recipients' delivery status."""

        def work(tx: Tx) -> Interaction | None:
            rows = tx.all(f"{INTERACTION_SELECT} WHERE i.id = ?", (interaction_id,))
            if not rows:
                return None
            found = self._interaction(tx, rows[0])
            if found.type == InteractionType.OUTBOUND.value:
                found.delivery = self._delivery_rows(tx, found.id)
            return found

        return self._read(work)

    def delivery_of(self, outbound_id: str) -> list[RecipientDelivery]:
        """The recipients of an outbound interaction and their delivery status
        (empty until it is sent, and for any other interaction)."""
        return self._read(lambda tx: self._delivery_rows(tx, outbound_id))

    def record_delivery(
        self, outbound_id: str, report_id: str, reports: Sequence[DeliveryReport]
    ) -> bool:
        """What report *report_id* says about recipients of outbound interaction
        *outbound_id*; its status follows. Returns whether anything changed:
        nothing for an id that is no outbound interaction, or a report applied
        already. ValueError for a status that is no report's."""
        for report in reports:
            if report.status not in RANK or report.status == DeliveryStatus.SENT.value:
                raise ValueError(f"delivery status {report.status!r} is not a report's")

        def work(tx: Tx) -> bool:
            kind = tx.scalar("SELECT type FROM interactions WHERE id = ?", (outbound_id,))
            if kind != InteractionType.OUTBOUND.value:
                return False
            reported = tx.scalar("SELECT created_at FROM interactions WHERE id = ?", (report_id,))
            at = self._dt_value(reported) if reported is not None else self.now()
            changed = False
            for report in reports:
                changed |= self._apply_report(tx, outbound_id, report_id, at, report)
            if changed:
                self._derive_status(tx, outbound_id)
            return changed

        return self._write(work)

    def _apply_report(
        self, tx: Tx, outbound_id: str, report_id: str, at: datetime, report: DeliveryReport
    ) -> bool:
        address = report.recipient.strip()[:MAX_ADDRESS]
        if not address:
            return False
        keys = [address.lower()]
        if report.original_recipient:
            keys.insert(0, report.original_recipient.strip()[:MAX_ADDRESS].lower())
        current = None
        for key in keys:
            current = tx.one(
                "SELECT recipient, status, reported_at, report_id FROM outbound_delivery "
                "WHERE outbound_id = ? AND recipient = ?",
                (outbound_id, key),
            )
            if current is not None:
                break
        action = _cut(report.action, MAX_ACTION)
        diagnostic = _cut(report.diagnostic, MAX_DIAGNOSTIC)
        if current is None:
            count = tx.scalar(
                "SELECT COUNT(*) FROM outbound_delivery WHERE outbound_id = ?", (outbound_id,)
            )
            if int(count) >= MAX_RECIPIENTS:
                return False
            tx.execute(
                "INSERT INTO outbound_delivery (outbound_id, recipient, address, status, "
                "reported_at, report_id, action, diagnostic) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (outbound_id, address.lower(), address, report.status, self._dt_param(at),
                 report_id, action, diagnostic),
            )  # fmt: skip
            return True
        key, status, old_at, old_report = current
        mine = (RANK[report.status], at, report_id)
        theirs = (RANK.get(status, 0), self._dt_value(old_at), old_report or "")
        if mine <= theirs:
            return False
        tx.execute(
            "UPDATE outbound_delivery SET status = ?, reported_at = ?, report_id = ?, "
            "action = ?, diagnostic = ? WHERE outbound_id = ? AND recipient = ?",
            (report.status, self._dt_param(at), report_id, action, diagnostic, outbound_id, key),
        )
        return True
