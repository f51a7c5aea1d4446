"""DefaultParser: the IParser the kernel uses, run through the kernel's runner,
its result crossing from a worker process with large texts in files."""

from __future__ import annotations

import functools
import gc
import pickle
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from zope.interface.verify import verifyClass, verifyObject

from postroom.interfaces import IParser
from postroom.model import FetchedMessage, ParsedMessage, Part, RawRef
from postroom.parsing import DefaultParser, ParseLimits, parse_message, spool
from postroom.parsing.default import parse_outbound
from postroom.parsing.spool import Outbound


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
    assert calls == [(parse_outbound, message.raw, limits, 42)]
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


# ------------------------------------------------- crossing to the gateway


def _message_with_texts(size: int) -> ParsedMessage:
    return ParsedMessage(
        subject="texts",
        text="t\u20ac" * size,
        html="<p>" + "h" * size,
        parts=[
            Part(path="", content_type="multipart/mixed"),
            Part(path="1", content_type="text/plain", text="p" * size),
            Part(path="2", content_type="text/plain", text="short"),
        ],
    )


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(spool, "SPOOL_FROM", 100)
    return tmp_path


def test_large_texts_cross_in_files_not_in_the_pickle(spool_dir: Path) -> None:
    message = _message_with_texts(1000)
    pickled = pickle.dumps(Outbound(message))
    assert len(pickled) < 1000  # the texts are not in it
    assert len(list(spool_dir.glob("postroom-text-*"))) == 3
    arrived = pickle.loads(pickled)
    assert arrived.receive() == message
    assert list(spool_dir.glob("postroom-text-*")) == []  # read back, then removed


def test_small_texts_stay_in_the_pickle(spool_dir: Path) -> None:
    message = _message_with_texts(10)
    assert pickle.loads(pickle.dumps(Outbound(message))).receive() == message
    assert list(spool_dir.glob("*")) == []
    assert Outbound(message).receive() is message  # not pickled: as it is


def test_a_lost_text_file_fails_that_message_not_the_pool(spool_dir: Path) -> None:
    pickled = pickle.dumps(Outbound(_message_with_texts(1000)))
    for path in spool_dir.glob("postroom-text-*"):
        path.unlink()
    arrived = pickle.loads(pickled)  # unpickling never raises: that would break the pool
    with pytest.raises(FileNotFoundError):
        arrived.receive()


def test_the_default_parser_result_survives_the_process_boundary(
    tmp_path: Path, spool_dir: Path
) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(b"From: a@example.com\nSubject: crossing\n\n" + b"body line\n" * 100)
    message = FetchedMessage(mailbox="box", source_key="1:3", raw=RawRef.from_path(path))

    def through_a_pickle(fn: Any, *args: Any) -> defer.Deferred[Any]:
        return defer.maybeDeferred(lambda: pickle.loads(pickle.dumps(fn(*args))))

    results: list[ParsedMessage] = []
    DefaultParser(through_a_pickle).parse(message, ParseLimits()).addCallback(results.append)
    assert results == [parse_message(message.raw, ParseLimits())]
    assert results[0].text is not None and len(results[0].text) == 1000


def _traced_peak(run: Any) -> tuple[Any, int]:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        return run(), tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_a_large_text_crosses_without_more_copies(spool_dir: Path) -> None:
    """A 20 MB text: pickling it whole costs the worker a second copy, and
    the gateway the pickle plus the text; through a file, the worker a
    piece, the gateway about the text."""
    size = 20 << 20
    outbound = Outbound(ParsedMessage(text="x" * size))
    pickled, worker = _traced_peak(functools.partial(pickle.dumps, outbound))
    del outbound
    arrived, gateway = _traced_peak(lambda: pickle.loads(pickled).receive())
    gateway += len(pickled)  # what the gateway received, held while unpickling
    assert arrived.text is not None and len(arrived.text) == size
    assert worker < 0.2 * size, f"worker: {worker / size:.2f} times the text"
    assert gateway < 1.2 * size, f"gateway: {gateway / size:.2f} times the text"
