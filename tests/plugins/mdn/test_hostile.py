"""Hostile input: reading a receipt takes linear time in its parts and fields.

The growth tests (``tests/linear.py``) time :func:`postroom_mdn.analysis.analyse`
on messages built directly, and check what it found at a small size.
"""

from __future__ import annotations

import pytest

from postroom.api import ParsedMessage, Part
from postroom.testing import assert_linear
from postroom_mdn.analysis import Receipt, analyse

DISPOSITION = "Final-Recipient: rfc822; frank@customer.example\nDisposition: {}\n"
DISPLAYED = DISPOSITION.format("manual-action/MDN-sent-manually; displayed")


def receipt(parts: list[Part]) -> ParsedMessage:
    root = Part("", "multipart/report", params=(("report-type", "disposition-notification"),))
    return ParsedMessage(from_addr="frank@customer.example", parts=[root, *parts])


def many_parts(n: int) -> ParsedMessage:
    """A report of *n* text parts with fields, the one with ``Disposition`` last
    (sent as ``text/plain``: every part is read for it)."""
    fields = "Reporting-UA: mail.example\nX-Note: read\n"
    text = [Part(str(i + 1), "text/plain", depth=1, text=fields) for i in range(n)]
    return receipt([*text, Part(str(n + 1), "text/plain", depth=1, text=DISPLAYED)])


#: the root of a returned message without a Message-ID (one object: only the
#: ``message/rfc822`` parts need to be distinct)
_RETURNED_ROOT = Part("2", "text/plain", depth=2, headers=(("X-H", "v"),) * 50, text="x")


def many_returned(n: int) -> ParsedMessage:
    """A report returning *n* messages, none with a Message-ID but the last."""
    parts = [Part("1", "message/disposition-notification", depth=1, text=DISPLAYED)]
    for i in range(n - 1):
        parts += [Part(str(i + 2), "message/rfc822", depth=1), _RETURNED_ROOT]
    parts += [Part(str(n + 1), "message/rfc822", depth=1),
              Part(str(n + 1), "text/plain", depth=2,
                   headers=(("Message-ID", "<out-1@centre.example>"),))]  # fmt: skip
    return receipt(parts)


def long_disposition(n: int) -> ParsedMessage:
    """Blanks and comments around every token of the Disposition field."""
    blanks = " " * n
    value = f"manual{blanks}-{blanks}action (x{blanks}) /MDN-sent{blanks}; displayed{blanks}"
    return receipt([Part("1", "message/disposition-notification", depth=1,
                         text=DISPOSITION.format(value))])  # fmt: skip


def many_ids(n: int) -> ParsedMessage:
    """An ``Original-Message-ID`` holding *n* ids: it names one message, the first."""
    ids = "".join(f"<out-{i}@centre.example>" for i in range(n))
    text = f"Original-Message-ID: {ids}\n" + DISPLAYED
    return receipt([Part("1", "message/disposition-notification", depth=1, text=text)])


FAMILIES = {
    "many parts in the report": (many_parts, 1 << 15),
    "many returned messages": (many_returned, 1 << 14),
    "blanks all over the disposition": (long_disposition, 1 << 18),
    "an Original-Message-ID of many ids": (many_ids, 1 << 19),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_reading_a_receipt_takes_linear_time(name: str) -> None:
    make, start = FAMILIES[name]
    assert_linear(make, analyse, start=start)


def test_what_is_read_from_them() -> None:
    for make in (many_parts, many_returned, long_disposition):
        found = analyse(make(50))
        assert isinstance(found, Receipt)
        data = found.verdict.attached_data
        assert data["_MDNInfo.DispositionType"] == "displayed"
        assert data["_MDNInfo.Recipient"] == "frank@customer.example"
    assert analyse(many_returned(50)).original_message_id == "<out-1@centre.example>"  # type: ignore[union-attr]
    assert analyse(many_ids(50)).original_message_id == "<out-0@centre.example>"  # type: ignore[union-attr]
    assert analyse(long_disposition(50)).verdict.attached_data[  # type: ignore[union-attr]
        "_MDNInfo.ActionMode"] == "manual-action"
