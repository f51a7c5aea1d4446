"""DefaultParser: the IParser the kernel uses, run through the kernel's runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer
from zope.interface.verify import verifyClass, verifyObject

from postroom.interfaces import IParser
from postroom.model import FetchedMessage, ParsedMessage, RawRef
from postroom.parsing import DefaultParser, ParseLimits, parse_message


def test_default_parser_runs_parse_message_through_run_blocking(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(b"From: a@example.com\nSubject: via runner\n\nbody\n")
    message = FetchedMessage(
        mailbox="box", source_key="1:1", raw=RawRef.from_path(path), server_size=42
    )
    limits = ParseLimits(max_size=1000)
    calls: list[tuple[Any, ...]] = []

    def run_blocking(fn: Any, *args: Any) -> defer.Deferred[Any]:
        calls.append((fn, *args))
        return defer.maybeDeferred(fn, *args)

    parser = DefaultParser(run_blocking)
    assert verifyClass(IParser, DefaultParser)
    assert verifyObject(IParser, parser)
    results: list[ParsedMessage] = []
    parser.parse(message, limits).addCallback(results.append)
    assert calls == [(parse_message, message.raw, limits, 42)]
    [parsed] = results
    assert parsed.subject == "via runner"
    assert not parsed.is_wrapped


def test_default_parser_passes_server_size_to_the_size_check(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(b"From: a@example.com\nSubject: announced big\n\nbody\n")
    message = FetchedMessage(
        mailbox="box", source_key="1:2", raw=RawRef.from_path(path), server_size=5000
    )
    parser = DefaultParser(lambda fn, *args: defer.maybeDeferred(fn, *args))
    results: list[ParsedMessage] = []
    parser.parse(message, ParseLimits(max_size=1000)).addCallback(results.append)
    [parsed] = results
    assert parsed.wrapping_reason == ("message size 5000 bytes exceeds maximum-msg-size 1000 bytes")
    assert parsed.subject == "announced big"
