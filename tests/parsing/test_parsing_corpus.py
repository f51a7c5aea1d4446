"""postroom.parsing against the shared real-world corpus (../shared/corpus).

Agreement with stalwart's recorded readings is printed per field (run with
``-s`` to see it). Where stalwart's reading of a malformed input is one
reasonable interpretation and ours is another, the case is listed below with
the reason instead of lowering a floor.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from postroom.model import ParsedMessage, RawRef
from postroom.parsing import ParseLimits, attachment_file_names, parse_message
from postroom.parsing.headers import (
    decode_words,
    parse_addresses,
    parse_content_type,
    parse_date,
    parse_message_ids,
)

CORPUS = (Path(__file__).parents[2] / ".." / "shared" / "corpus").resolve()
MANIFESTS = ("stalwart.json", "sisimai.json", "mimekit.json")
LIMITS = ParseLimits()

#: stalwart.json entries where our reading differs defensibly, per field.
STALWART_EXCEPTIONS: dict[str, dict[str, str]] = {
    "attachment_names": {
        "malformed/017.eml": "we keep the filename parameter of a Content-Disposition "
        "whose type is empty (';'); stalwart drops the header",
        "thirdparty/015.eml": "the attached message's multipart has no boundary lines, so the "
        "outer boundary ends it (as in the email package): two more attached messages follow; "
        "stalwart lets the inner part run to the end",
    },
}

#: stalwart_header_vectors.json entries we read differently, per set and index.
VECTOR_EXCEPTIONS: dict[str, dict[int, str]] = {
    "content_type": {
        34: "RFC 2047 6.2: blanks between adjacent encoded-words are dropped, also in quotes",
        61: "invalid RFC 2231 names ('1*2*', '3**'...): stalwart's own reading; we only "
        "require no crash and bounded work",
    },
    "address": {
        13: "RFC 5322 4.4: the obsolete source route and blanks inside the addr-spec are "
        "dropped ('mary@example.net', 'jdoe@test.example')",
        14: "comments and blanks inside the addr-spec are dropped ('jdoe@machine.example')",
        37: "List-* URL, not a mailbox: postroom reads mailbox lists only",
        41: "List-* URL, not a mailbox",
        42: "List-Post 'NO', not a mailbox",
        43: "List-* URL, not a mailbox",
        44: "List-* URL, not a mailbox",
        46: "List-* URL, not a mailbox",
    },
    "unstructured": {
        22: "no space is added between an (empty) encoded-word and the word glued after it",
    },
    "date": {
        10: "numeric month ('20 11 79') is not RFC 5322; we give None",
        12: "'4 8 15 16 23 42' is not a date; we give None",
    },
    "id": {
        6: "blanks inside an id are removed to normalise it for threading",
    },
}

#: Floors: agreement reached, in percent, after the listed exceptions.
STALWART_FLOORS = {
    "subject": 100.0,
    "from": 100.0,
    "to": 100.0,
    "cc": 100.0,
    "reply_to": 100.0,
    "message_id": 100.0,
    "attachment_names": 100.0,
    # informational: structure of malformed MIME, where the email package's
    # boundary rules (exact match, empty trailing parts) differ from stalwart's
    "part_content_types": 70.0,
    "attachment_count": 78.0,
}
VECTOR_FLOOR = 100.0


@pytest.fixture(scope="module")
def corpus() -> Path:
    if not (CORPUS / "stalwart.json").is_file():
        pytest.fail(f"shared corpus not found at {CORPUS} (expected ../shared/corpus)")
    return CORPUS


def load(corpus: Path, name: str) -> list[dict[str, Any]]:
    return json.loads((corpus / name).read_text(encoding="utf-8"))


def parse_file(corpus: Path, relative: str) -> ParsedMessage:
    return parse_message(RawRef.from_path(corpus / relative), LIMITS)


def short(entry: dict[str, Any]) -> str:
    return entry["file"].split("/eml/", 1)[-1]


def top_level_types(parsed: ParsedMessage) -> list[str | None]:
    """Part types as stalwart lists them: attached messages not descended,
    None for a part without a Content-Type header."""
    out: list[str | None] = []
    skip_below: int | None = None
    for part in parsed.parts:
        if skip_below is not None and part.depth > skip_below:
            continue
        skip_below = None
        out.append(part.content_type if part.header("content-type") is not None else None)
        if part.content_type in ("message/rfc822", "message/global"):
            skip_below = part.depth
    return out


def addresses(expected: list[dict[str, Any]]) -> list[str]:
    return [a["address"] for a in expected if a.get("address")]


def report(title: str, figures: dict[str, tuple[int, int]]) -> dict[str, float]:
    percents: dict[str, float] = {}
    print(f"\n{title}")
    for field, (agree, total) in figures.items():
        percents[field] = 100.0 * agree / total if total else 100.0
        print(f"  {field:20s} {agree:4d}/{total:<4d} {percents[field]:6.1f}%")
    return percents


def test_stalwart_agreement(corpus: Path) -> None:
    entries = load(corpus, "stalwart.json")
    assert len(entries) == 53
    figures: dict[str, tuple[int, int]] = {}
    disagreements: list[str] = []

    def count(field: str, name: str, expected: object, got: object) -> None:
        if name in STALWART_EXCEPTIONS.get(field, {}):
            return
        agree, total = figures.get(field, (0, 0))
        same = expected == got
        figures[field] = (agree + same, total + 1)
        if not same:
            disagreements.append(f"{name} {field}: expected {expected!r}, got {got!r}")

    for entry in entries:
        name = short(entry)
        expected = entry["expected"]
        parsed = parse_file(corpus, entry["file"])
        assert not parsed.is_wrapped, (name, parsed.wrapping_reason)
        if "subject" in expected:
            count("subject", name, expected["subject"], parsed.subject)
        if "from" in expected:
            count(
                "from",
                name,
                addresses(expected["from"])[:1],
                [parsed.from_addr] if parsed.from_addr else [],
            )
        for field in ("to", "cc", "reply_to"):
            if field in expected:
                count(field, name, addresses(expected[field]), getattr(parsed, field))
        if "message_id" in expected:
            count("message_id", name, f"<{expected['message_id']}>", parsed.message_id)
        count(
            "attachment_names",
            name,
            sorted(a["filename"] for a in expected["attachments"] if a["filename"]),
            sorted(attachment_file_names(parsed)),
        )
        count("part_content_types", name, expected["part_content_types"], top_level_types(parsed))
        count("attachment_count", name, len(expected["attachments"]), len(parsed.attachments))
    percents = report("stalwart.json agreement (after listed exceptions)", figures)
    for line in disagreements:
        print("  differs:", line)
    for field, floor in STALWART_FLOORS.items():
        assert field not in percents or percents[field] >= floor, (field, percents[field])
    for field, names in STALWART_EXCEPTIONS.items():
        for name in names:
            assert any(short(e) == name for e in entries), f"stale exception {field} {name}"


def _field_value(text: str) -> str:
    """The header value a vector's input holds: up to the end of the field."""
    match = re.match(r"(.*?)(?:\r?\n(?![ \t])|$)", text, re.S)
    assert match is not None
    return match.group(1)


def _check_content_type(value: str, expected: Any) -> bool:
    parsed = parse_content_type(value)
    if expected is None:
        return parsed.maintype is None
    params = {k: v for k, v in expected["params"].items() if not k.endswith("-language")}
    return (parsed.maintype, parsed.subtype, dict(parsed.params)) == (
        expected["type"],
        expected["subtype"],
        params,
    )


def _check_address(value: str, expected: Any) -> bool:
    if "List" in expected:
        flat = expected["List"]
    else:
        flat = [a for group in expected["Group"] for a in group["addresses"]]
    return [a.addr for a in parse_addresses(value)] == addresses(flat)


def _check_unstructured(value: str, expected: Any) -> bool:
    return bool(decode_words(value) == expected)


def _check_id(value: str, expected: Any) -> bool:
    wanted = [f"<{i}>" for i in expected or []]
    return parse_message_ids(value) == wanted or parse_message_ids(value, single=True) == wanted


def _check_date(value: str, expected: Any) -> bool:
    parsed = parse_date(value)
    if expected is None or parsed is None:
        return expected is None and parsed is None
    offset = parsed.utcoffset()
    assert offset is not None
    sign = -1 if expected["tz_before_gmt"] else 1
    wanted = sign * (expected["tz_hour"] * 60 + expected["tz_minute"])
    return (
        parsed.year,
        parsed.month,
        parsed.day,
        parsed.hour,
        parsed.minute,
        parsed.second,
        offset.total_seconds() / 60,
    ) == (
        expected["year"],
        expected["month"],
        expected["day"],
        expected["hour"],
        expected["minute"],
        expected["second"],
        wanted,
    )


CHECKS: dict[str, Callable[[str, Any], bool]] = {
    "content_type": _check_content_type,
    "address": _check_address,
    "unstructured": _check_unstructured,
    "id": _check_id,
    "date": _check_date,
}


def test_header_vectors(corpus: Path) -> None:
    vectors = load(corpus, "stalwart_header_vectors.json")
    assert len(vectors) == 244
    figures: dict[str, tuple[int, int]] = {}
    failures: list[str] = []
    for vector in vectors:
        kind, index = vector["set"], vector["index"]
        check = CHECKS[kind]
        value = _field_value(vector["input"])
        same = check(value, vector["expected"])  # must not raise, exception or not
        if index in VECTOR_EXCEPTIONS.get(kind, {}):
            continue
        agree, total = figures.get(kind, (0, 0))
        figures[kind] = (agree + same, total + 1)
        if not same:
            failures.append(f"{kind} {index}: {value!r}")
    percents = report("stalwart_header_vectors.json agreement (after listed exceptions)", figures)
    assert not failures, failures
    assert all(p >= VECTOR_FLOOR for p in percents.values())


def test_every_corpus_message_parses_and_pickles(corpus: Path) -> None:
    problems: list[str] = []
    total = 0
    for manifest in MANIFESTS:
        for entry in load(corpus, manifest):
            total += 1
            try:
                parsed = parse_file(corpus, entry["file"])
            except Exception as exc:  # the test's whole point: report, don't stop
                problems.append(f"{entry['file']}: raised {exc!r}")
                continue
            if not isinstance(parsed, ParsedMessage):
                problems.append(f"{entry['file']}: returned {type(parsed)}")
                continue
            if parsed.is_wrapped:
                problems.append(f"{entry['file']}: wrapped: {parsed.wrapping_reason}")
            if pickle.loads(pickle.dumps(parsed)) != parsed:
                problems.append(f"{entry['file']}: pickle round trip differs")
            if parsed.raw_sha256 != entry["sha256"]:
                problems.append(f"{entry['file']}: sha256 differs")
    print(f"\n{total} corpus messages parsed")
    assert total == 53 + 589 + 6
    assert not problems, problems


REPORT_TYPES = {
    "has_delivery_status": ("message/delivery-status", "message/global-delivery-status"),
    "has_disposition_notification": (
        "message/disposition-notification",
        "message/global-disposition-notification",
    ),
    "has_feedback_report": ("message/feedback-report",),
}


def test_report_parts_are_found_with_text(corpus: Path) -> None:
    """The derived hints (not ground truth) agree on which messages carry
    report parts, and those parts reach classifiers as text."""
    figures: dict[str, tuple[int, int]] = {}
    for manifest in MANIFESTS:
        for entry in load(corpus, manifest):
            derived = entry.get("derived") or {}
            parsed = parse_file(corpus, entry["file"])
            for key, types in REPORT_TYPES.items():
                if key not in derived:
                    continue
                found = [p for p in parsed.parts if p.content_type in types]
                agree, total = figures.get(key, (0, 0))
                figures[key] = (agree + (bool(found) == bool(derived[key])), total + 1)
                for part in found:
                    assert part.text is not None, (entry["file"], part.path)
    percents = report("report parts found vs derived hints", figures)
    assert all(p >= 99.0 for p in percents.values()), percents
