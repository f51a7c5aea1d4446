"""Hostile input: the plugin's analysis takes linear time, and still reads what it must.

Each input family is a message anyone can send; the growth tests
(``tests/linear.py``) time :func:`postroom_dsn.analysis.analyse`, where all
the plugin's scanning happens, on messages built directly (so the size is not
capped by the parser's bound on a part's text, and the parser's own time is
not counted). Each also checks what the analysis found at a small size.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable

import pytest

from postroom.model import ParsedMessage, Part, Subtype
from postroom_dsn.analysis import MAX_LOOKUPS, Analysis, analyse
from postroom_dsn.plugin import DEFAULT_NDR_SENDERS
from tests.linear import assert_linear

NDR = Subtype.INBOUND_NDR.value
SENDERS = list(DEFAULT_NDR_SENDERS)
DAEMON = "MAILER-DAEMON@mx.example.org"
AGENT = "agent@centre.example"
GROUP = "Final-Recipient: rfc822; gone@example.com\nAction: failed\nStatus: 5.1.1\n"


def message(
    parts: list[Part],
    *,
    sender: str = DAEMON,
    subject: str = "Undelivered Mail",
    headers: tuple[tuple[str, str], ...] = (),
) -> ParsedMessage:
    from_addr = sender.split("<")[-1].rstrip(">")
    text = next((p.text for p in parts if p.content_type == "text/plain"), None)
    return ParsedMessage(
        headers=[("From", sender), ("To", AGENT), ("Subject", subject), *headers],
        subject=subject,
        from_addr=from_addr,
        to=[AGENT],
        message_id="<report-1@mx.example.org>",
        text=text,
        parts=parts,
    )


def report(notice: str, status: str = GROUP, **kwargs: object) -> ParsedMessage:
    """A ``multipart/report`` with a notice and a delivery-status part."""
    return message(
        [
            Part("", "multipart/report", params=(("report-type", "delivery-status"),)),
            Part("1", "text/plain", depth=1, text=notice),
            Part("2", "message/delivery-status", depth=1, text=status),
        ],
        **kwargs,  # type: ignore[arg-type]
    )


def notice(text: str, content_type: str = "text/plain", **kwargs: object) -> ParsedMessage:
    """A bounce in a vendor format: a single part, no delivery-status."""
    return message([Part("", content_type, text=text)], **kwargs)  # type: ignore[arg-type]


def returned_with_ids(count: int) -> ParsedMessage:
    """A bounce returning one message whose Message-ID field holds *count* ids."""
    ids = "".join(f"<m{n}@x>" for n in range(count))
    return message([
        Part("", "multipart/mixed"),
        Part("1", "text/plain", depth=1, text="Undeliverable."),
        Part("2", "message/rfc822", depth=1),
        Part("2", "text/plain", depth=2, headers=(("Message-ID", ids),)),
    ])  # fmt: skip


def returned(count: int) -> ParsedMessage:
    """A bounce returning *count* messages (``message/rfc822`` parts)."""
    parts = [Part("", "multipart/mixed"), Part("1", "text/plain", depth=1, text="Undeliverable.")]
    for n in range(count):
        parts += [
            Part(f"{n + 2}", "message/rfc822", depth=1),
            Part(f"{n + 2}", "text/plain", depth=2, headers=(("Message-ID", f"<m{n}@x>"),)),
        ]
    return message(parts)


def analysed(data: ParsedMessage) -> Analysis:
    return analyse(data, SENDERS)


def data(found: Analysis) -> dict[str, object]:
    assert found.verdict is not None
    return found.verdict.attached_data


# ------------------------------------------------------------- the slow bounce


def slow_bounce(n: int) -> ParsedMessage:
    """The bounce of issue 8: ``Delivery failed.`` and a run of blank lines
    (a 3.6 KB one with 3,200 of them took 47 s in ``^\\s*>?\\s*message-id:``)."""
    return report("Delivery failed." + "\n" * n)


def test_blank_lines_in_the_notice_take_linear_time() -> None:
    found = analysed(slow_bounce(3200))
    assert found.verdict is not None and found.verdict.subtype == NDR
    assert data(found)["_DSNInfo.Recipient1.Recipient"] == "gone@example.com"
    assert_linear(slow_bounce, analysed, start=1 << 16)


# ------------------------------------------------------------------- families


def family(
    make: Callable[[int], ParsedMessage], start: int, max_size: int = 1 << 24
) -> tuple[object, ...]:
    """*max_size*: the largest size worth trying (a family whose analysis reads
    only the start of its input stays far below the 100 ms a growth test
    needs: there, fast at that size is the check)."""
    return (make, start, max_size)


FAMILIES = {
    # delivery-status bodies
    "many recipient groups": family(lambda n: report("Failed.", GROUP + "\n" * 1 + (
        "".join(f"Final-Recipient: rfc822; r{i}@example.com\nAction: failed\n\n" for i in range(n))
    )), 1 << 12),
    "one field folded over many lines": family(
        lambda n: report("Failed.", GROUP + "Diagnostic-Code: smtp; 550" + "\n x" * n), 1 << 17),
    "many fields in one group": family(
        lambda n: report("Failed.", GROUP + "".join(f"X-F{i}: v\n" for i in range(n))), 1 << 14),
    "blanks after a reply code": family(
        lambda n: report("Failed.", GROUP + "Diagnostic-Code: smtp; 550" + " " * n + "x"), 1 << 19),
    # vendor notices
    "blank lines after the copy starts": family(lambda n: notice(
        "Your message could not be delivered.\n--- Below this line is a copy of the message.\n"
        + "\n" * n), 1 << 19),
    "a line of dashes": family(lambda n: notice("Undelivered.\n" + "-" * n), 1 << 17),
    "apostrophes in a word": family(lambda n: notice("Undelivered: " + "a'" * n), 1 << 17),
    "addresses listed in reverse order": family(lambda n: notice(
        "".join(f"a{i}@example.com: 550 5.1.1 unknown\n" for i in range(n)),
        headers=(("X-Failed-Recipients", ", ".join(f"a{i}@example.com" for i in reversed(
            range(n)))),)), 1 << 11),
    "our own address over and over": family(lambda n: notice(
        "Undelivered: " + f"{AGENT} " * n), 1 << 13),
    "unclosed style elements and tags": family(lambda n: notice(
        "Undelivered" + "<style>" * n + "<br<" * n, "text/html"), 1 << 15),
    "a list's rejection naming a long word": family(lambda n: notice(
        "you " + "a@" * n, sender="fml@list.example", headers=(("X-MLServer", "fml"),)), 1 << 18),
    "many returned messages": family(returned, 1 << 13),
    "a Message-ID field of many ids": family(returned_with_ids, 1 << 12, 1 << 17),
    "many quoted Message-ID lines": family(lambda n: notice(
        "Undeliverable.\n" + "".join(f"> Message-ID: <m{i}@x>\n" for i in range(n))), 1 << 14),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_the_analysis_takes_linear_time(name: str) -> None:
    make, start, max_size = FAMILIES[name]
    assert_linear(make, analysed, start=start, max_size=max_size)  # type: ignore[arg-type]


# ------------------------------------------------------- results at small sizes


def test_many_groups_are_all_read() -> None:
    make, *_ = FAMILIES["many recipient groups"]
    found = data(analysed(make(400)))  # type: ignore[operator]
    assert found["_DSNInfo.RecipientCount"] == 401
    assert found["_DSNInfo.Recipient401.Recipient"] == "r399@example.com"
    assert "_DSNInfo.RecipientsOmitted" not in found


def test_a_report_writes_and_suppresses_at_most_500_recipients() -> None:
    from postroom_dsn.data import MAX_RECIPIENTS, recipients_from_data

    make, *_ = FAMILIES["many recipient groups"]
    found = data(analysed(make(2000)))  # type: ignore[operator]
    assert found["_DSNInfo.RecipientCount"] == MAX_RECIPIENTS == 500
    assert found["_DSNRawInfo.RecipientCount"] == MAX_RECIPIENTS
    assert found["_DSNInfo.RecipientsOmitted"] == 1501
    assert "_DSNInfo.Recipient501.Recipient" not in found
    assert "_DSNRawInfo.Recipient501.Final-Recipient" not in found
    assert len(recipients_from_data(found)) == MAX_RECIPIENTS


def test_a_field_folded_over_many_lines_is_unfolded() -> None:
    found = data(analysed(report("Failed.", GROUP + "Diagnostic-Code: smtp; 550" + "\n x" * 300)))
    assert found["_DSNRawInfo.Recipient1.Diagnostic-Code"] == "smtp; 550" + " x" * 300


def test_addresses_listed_in_any_order_keep_their_own_codes() -> None:
    text = "b@example.com: 550 5.1.1 unknown\na@example.com: 452 4.2.2 full\n"
    found = data(analysed(notice(text, headers=(
        ("X-Failed-Recipients", "a@example.com, b@example.com"),))))  # fmt: skip
    assert (found["_DSNInfo.Recipient1.Recipient"], found["_DSNInfo.Recipient1.Status"]) == (
        "a@example.com", "4.2.2")  # fmt: skip
    assert (found["_DSNInfo.Recipient2.Recipient"], found["_DSNInfo.Recipient2.Status"]) == (
        "b@example.com", "5.1.1")  # fmt: skip


def test_html_notices_with_broken_tags_are_still_read() -> None:
    markup = (
        "<style>p {}</style><p>Delivery to gone@example.com failed: 550 5.1.1<br>"
        "<script>x = 'kept@example.com'</script><style>never closed"
    )
    found = data(analysed(notice(markup, "text/html")))
    assert found["_DSNInfo.RecipientCount"] == 1
    assert found["_DSNInfo.Recipient1.Recipient"] == "gone@example.com"


def test_many_ids_make_at_most_ten_store_look_ups() -> None:
    # a Message-ID field names one message: its first id
    assert analysed(returned_with_ids(500)).parent_candidates == ("<m0@x>",)
    # many returned messages, or many quoted lines: the first ten, each once
    expected = tuple(f"<m{n}@x>" for n in range(MAX_LOOKUPS))
    assert MAX_LOOKUPS == 10
    assert analysed(returned(200)).parent_candidates == expected
    make, *_ = FAMILIES["many quoted Message-ID lines"]
    assert analysed(make(500)).parent_candidates == expected  # type: ignore[operator]
    customer = returned(200)
    customer.headers[0], customer.from_addr = ("From", "bob@example.com"), "bob@example.com"
    assert analysed(customer).returned_ids == expected


def test_a_field_name_with_an_8_bit_byte_is_read_like_the_rest() -> None:
    for name in ("Rem\xf6te-MTA", "Rem\ufffdte-MTA"):
        status = f"Reporting-MTA: dns; mx.example.org\n\n{GROUP}{name}: dns; mx.example.com\n"
        found = data(analysed(report("Delivery failed.", status)))
        assert found["_DSNInfo.RecipientCount"] == 1
        assert found["_DSNInfo.Recipient1.Status"] == "5.1.1"
        assert found[f"_DSNRawInfo.Recipient1.{name}"] == "dns; mx.example.com"


def test_json_nested_too_deep_is_not_a_notification() -> None:
    text = '{"notificationType": "Bounce", "bounce": ' + "[" * 100_000
    found = analysed(notice(text, sender="no-reply@sns.amazonaws.com", subject="AWS Notification"))
    assert found.verdict is None


def test_a_notification_with_values_of_the_wrong_type_is_read_without_them() -> None:
    text = (
        '{"notificationType": "Bounce", "bounce": {"bounceType": "Permanent", '
        '"bouncedRecipients": [{"emailAddress": 5, "status": ["5.1.1"]}, '
        '{"emailAddress": "gone@example.com", "status": "5.1.1"}, "junk"]}}'
    )
    found = data(analysed(notice(text, sender="no-reply@sns.amazonaws.com", subject="Bounce")))
    assert found["_DSNInfo.RecipientCount"] == 3
    assert "_DSNInfo.Recipient1.Recipient" not in found
    assert found["_DSNInfo.Recipient2.Recipient"] == "gone@example.com"


def test_the_analysis_pickles() -> None:
    for made in (slow_bounce(10), returned(3), notice("Undelivered: a@example.com 550")):
        found = analysed(made)
        assert pickle.loads(pickle.dumps(found)) == found
