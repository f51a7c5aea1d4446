"""The hostile inputs of issue 8, at the sizes that stalled the gateway, through the whole pipeline.

Each one is parsed, analysed by every installed plugin, classified, enriched
and committed as the gateway does it (in-process here), must give its correct
result, and must cost about what an ordinary message of the same size costs (a text
body, or as many short header fields), measured in the same test (CPU time,
best of three, the garbage collector held off). Before the fixes, these
took from 11 s to close to an hour each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from postroom.model import Interaction
from tests.hostile.pipeline import EveryPlugin
from tests.linear import best_time

#: a hostile input may cost this many times an ordinary message of its size: a
#: structured piece (a delivery-status group, an encoded word) costs more per
#: byte than a line of plain text, but nothing may cost orders of magnitude more
#: (these inputs cost 1,000 to 100,000 times more before the fixes)
FACTOR = 20

HEAD = (
    "From: Customer <customer@example.com>\r\nTo: support@example.com\r\n"
    "Message-ID: <m1@example.com>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n"
)


def report(text_part: bytes, groups: bytes, sender: str = "MAILER-DAEMON@mx.example") -> bytes:
    return (
        f"From: {sender}\r\nTo: support@example.com\r\nSubject: Undelivered Mail\r\n"
        "Message-ID: <b1@mx.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\n"
    ).encode() + text_part + (
        b"\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example\r\n\r\n" + groups + b"\r\n--B--\r\n"
    )


GROUP = b"Final-Recipient: rfc822; gone@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"


@attrs.frozen
class Case:
    raw: bytes
    check: Callable[[list[Interaction]], Any]


def _subject_is(expected: str) -> Callable[[list[Interaction]], Any]:
    def check(found: list[Interaction]) -> None:
        [one] = found
        assert "_WrappingMessageReason" not in one.attached_data
        assert " ".join(one.subject.split()) == expected

    return check


def _parsed(found: list[Interaction]) -> None:
    [one] = found
    assert "_WrappingMessageReason" not in one.attached_data, one.attached_data


def _references(count: int) -> Callable[[list[Interaction]], Any]:
    def check(found: list[Interaction]) -> None:
        _parsed(found)
        assert len(found[0].attached_data) < 10  # ids are not attached data

    return check


def _ndr(recipient: str) -> Callable[[list[Interaction]], Any]:
    def check(found: list[Interaction]) -> None:
        [one] = found
        assert one.subtype == "InboundNDR", one.attached_data
        assert one.attached_data["_DSNInfo.Recipient1.Recipient"] == recipient
        assert one.attached_data["_DSNInfo.Recipient1.Action"] == "failed"

    return check


def _two_parts(found: list[Interaction]) -> None:
    [one] = found
    assert one.text is not None and "first" in one.text and "second" in one.text


CASES = {
    "3.6 KB bounce with 3,200 newlines": Case(
        report(b"Delivery failed." + b"\n" * 3200, GROUP), _ndr("gone@example.net")),
    "Subject: a + 40,000 spaces + b": Case(
        (HEAD + "Subject: a" + " " * 40_000 + " b\r\n\r\nHello\r\n").encode(), _subject_is("a b")),
    "Subject with a 200 KB run of spaces": Case(
        (HEAD + "Subject: a" + " " * 200_000 + " b\r\n\r\nHello\r\n").encode(), _subject_is("a b")),
    "References with 60,000 ids": Case(
        (HEAD + "Subject: refs\r\nReferences: "
         + " ".join(f"<{i}@x>" for i in range(60_000)) + "\r\n\r\nHi\r\n").encode(),
        _references(60_000)),
    'To: of 30,000 "a pairs, three such fields': Case(
        ("From: c@example.com\r\nSubject: q\r\n" + "".join(
            f"{name}: " + '"a' * 30_000 + "\r\n" for name in ("To", "Cc", "Reply-To"))
         + "\r\nHi\r\n").encode(), _parsed),
    "120,000 headers with 8-bit bytes": Case(
        (HEAD + "Subject: 8bit\r\n").encode() + b"X: \xe9\r\n" * 120_000 + b"\r\nHi\r\n",
        _parsed),
    "50,000 invalid encoded-words": Case(
        (HEAD + "Subject: " + " ".join(["=?utf-8?q?=ZZ?="] * 50_000) + "\r\n\r\nHi\r\n").encode(),
        _parsed),
    "Content-Type with 5,000 repeated parameters": Case(
        (HEAD + "Subject: ct\r\nContent-Type: text/plain" + "; charset=utf-8" * 5_000
         + "\r\n\r\nHello\r\n").encode(), _parsed),
    "100,000 delivery-status groups": Case(
        report(b"Failed.", b"\r\n".join([GROUP] * 100_000)), _ndr("gone@example.net")),
    "a boundary with an 8-bit byte": Case(
        (HEAD + "Subject: b\r\n").encode()
        + b'Content-Type: multipart/mixed; boundary="b\xe9"\r\n\r\n--b\xe9\r\n'
        b"Content-Type: text/plain\r\n\r\nfirst\r\n--b\xe9\r\nContent-Type: text/plain\r\n\r\n"
        b"second\r\n--b\xe9--\r\n", _two_parts),
    "a delivery-status field name Rem\\xf6te-MTA": Case(
        report(b"Delivery failed.", b"Rem\xf6te-MTA: dns; x.example\r\n\r\n" + GROUP),
        _ndr("gone@example.net")),
}


def best(pipeline: EveryPlugin, raw: bytes) -> float:
    return best_time(pipeline.ingest, raw)


def ordinary(size: int) -> bytes:
    """A plain message of *size* bytes: a text body of short lines."""
    head = (HEAD + "Subject: an ordinary question\r\n\r\n").encode()
    line = b"Hello, I have a question about my order number 4711 and its delivery.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def ordinary_headers(size: int) -> bytes:
    """A message of *size* bytes (at most the header cap) made of short ASCII header fields:
    the benign shape of the header-heavy inputs."""
    head = (HEAD + "Subject: an ordinary question\r\n").encode()
    field = b"X-Trace: relay 4711 ok\r\n"
    count = max(1, (min(size, 1 << 20) - len(head) - 100) // len(field))
    return head + field * count + b"\r\nHello\r\n"


@pytest.mark.parametrize("name", list(CASES))
def test_issue_input_gives_its_result_at_an_ordinary_cost(
    every_plugin: EveryPlugin, name: str
) -> None:
    case = CASES[name]
    case.check(every_plugin.ingest(case.raw))
    hostile = best(every_plugin, case.raw)
    baseline = max(best(every_plugin, ordinary(len(case.raw))),
                   best(every_plugin, ordinary_headers(len(case.raw))))
    tiny = best(every_plugin, ordinary(2000))
    print(f"{name}: {len(case.raw):,} bytes in {hostile * 1000:.1f} ms; an ordinary message "
          f"of that size {baseline * 1000:.1f} ms, a tiny one {tiny * 1000:.1f} ms")
    assert hostile < FACTOR * max(baseline, tiny), (hostile, baseline, tiny)
