"""What a committed read receipt says of the outbound message it answers: the
recipient's delivery status (``displayed``, or ``delivered`` for another
disposition: the receipt proves the message arrived), read back from the
receipt's attached data (the committed interaction, not the message)."""

from __future__ import annotations

from postroom.api import AttachedValue, DeliveryReport, DeliveryStatus
from postroom_mdn.report import INFO, RAW_INFO, recipient_address


def _text(data: dict[str, AttachedValue], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value.strip() else None


def delivery_report(data: dict[str, AttachedValue]) -> DeliveryReport | None:
    """The receipt's report on its recipient, or None when it names none."""
    recipient = _text(data, INFO + "Recipient")
    if recipient is None:
        return None
    kind = (_text(data, INFO + "DispositionType") or "").lower()
    displayed = kind == DeliveryStatus.DISPLAYED.value
    original = _text(data, RAW_INFO + "Original-Recipient")
    return DeliveryReport(
        recipient=recipient,
        status=DeliveryStatus.DISPLAYED.value if displayed else DeliveryStatus.DELIVERED.value,
        action=kind or None,
        diagnostic=_text(data, RAW_INFO + "Disposition"),
        original_recipient=recipient_address(original) if original else None,
    )
