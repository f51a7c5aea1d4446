"""The streaming RETR writer: byte-stuffing undone and CRLF kept, whatever the chunking."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from postroom_pop3.spool import SpoolWriter
from tests.plugins.pop3.fakes import stuff

MESSAGE = (
    b"From: a@example.test\r\n"
    b"Subject: dots\r\n"
    b"\r\n"
    b".\r\n"
    b"..\r\n"
    b"...leading dots\r\n"
    b".\r\n"
    b"a line with a . in it\r\n"
    b"\r\n"
    b".end\r\n"
    b"last line\r\n"
)


def feed_all(path: Path, chunks: list[bytes]) -> tuple[SpoolWriter, bytes]:
    writer = SpoolWriter(path)
    rest: bytes | None = None
    for chunk in chunks:
        if rest is not None:
            assert chunk == b"", "data after the terminator"
            continue
        rest = writer.feed(chunk)
    assert rest is not None, "the terminator was not seen"
    return writer, rest


def test_unstuffs_a_whole_body(tmp_path: Path) -> None:
    writer, rest = feed_all(tmp_path / "m", [stuff(MESSAGE)])
    assert rest == b""
    assert (tmp_path / "m").read_bytes() == MESSAGE
    raw = writer.raw()
    assert raw.size == len(MESSAGE)
    assert raw.sha256 == hashlib.sha256(MESSAGE).hexdigest()


def test_every_split_point_gives_the_same_bytes(tmp_path: Path) -> None:
    body = stuff(MESSAGE)
    for cut in range(len(body) + 1):
        path = tmp_path / f"m{cut}"
        _writer, rest = feed_all(path, [body[:cut], body[cut:]])
        assert rest == b"", cut
        assert path.read_bytes() == MESSAGE, cut


def test_every_two_cuts_around_the_special_places(tmp_path: Path) -> None:
    body = stuff(MESSAGE)
    special = [i for i in range(len(body)) if body[i : i + 1] in (b".", b"\r", b"\n")]
    for a in special:
        for b in (a + 1, a + 2, a + 3):
            path = tmp_path / "m"
            _writer, _rest = feed_all(path, [body[:a], body[a:b], body[b:]])
            assert path.read_bytes() == MESSAGE, (a, b)


def test_one_byte_at_a_time(tmp_path: Path) -> None:
    body = stuff(MESSAGE)
    _writer, rest = feed_all(tmp_path / "m", [body[i : i + 1] for i in range(len(body))])
    assert rest == b""
    assert (tmp_path / "m").read_bytes() == MESSAGE


@pytest.mark.parametrize("seed", range(20))
def test_random_messages_random_chunks(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    pieces = [b".", b"..", b"\r\n", b"x", b"\r", b"\n", b"abc ", b".\r\n", b"\r\n.\r\n"]
    lines = []
    for _ in range(rng.randint(1, 200)):
        line = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        lines.append(line.replace(b"\r\n", b" ").replace(b"\r", b"").replace(b"\n", b""))
    message = b"\r\n".join(lines) + b"\r\n"
    body = stuff(message)
    chunks, i = [], 0
    while i < len(body):
        n = rng.randint(1, 17)
        chunks.append(body[i : i + n])
        i += n
    path = tmp_path / "m"
    writer, rest = feed_all(path, chunks)
    assert rest == b""
    assert path.read_bytes() == message
    assert writer.raw().sha256 == hashlib.sha256(message).hexdigest()


def test_returns_what_follows_the_terminator(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path / "m")
    assert writer.feed(b"hello\r\n.\r\n+OK next\r\n") == b"+OK next\r\n"
    assert writer.done
    assert (tmp_path / "m").read_bytes() == b"hello\r\n"


def test_empty_message(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path / "m")
    assert writer.feed(b".\r\n") == b""
    assert writer.raw().size == 0


def test_a_leading_dot_not_followed_by_a_dot_is_still_the_servers(tmp_path: Path) -> None:
    """RFC 1939: a line starting with the termination octet loses its first octet."""
    writer = SpoolWriter(tmp_path / "m")
    assert writer.feed(b".x\r\n.\r\n") == b""
    assert (tmp_path / "m").read_bytes() == b"x\r\n"


def test_bare_lf_and_cr_inside_lines_are_kept(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path / "m")
    assert writer.feed(b"a\nb\rc\r\n\n.\r\n.\r\n") == b""
    # "\n." is not a line start in POP3 (lines end with CRLF): kept as is
    assert (tmp_path / "m").read_bytes() == b"a\nb\rc\r\n\n.\r\n"


def test_a_long_line_in_small_chunks_is_never_buffered_whole(tmp_path: Path) -> None:
    line = b"x" * 5_000_000
    writer = SpoolWriter(tmp_path / "m")
    for i in range(0, len(line), 65536):
        assert writer.feed(line[i : i + 65536]) is None
        assert len(writer._carry) <= 2
    assert writer.feed(b"\r\n.\r\n") == b""
    assert writer.raw().size == len(line) + 2


def test_discard_removes_the_file(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path / "m")
    writer.feed(b"partial")
    writer.discard()
    assert not (tmp_path / "m").exists()
    writer.discard()  # twice is fine


def test_raw_before_the_end_is_a_bug(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path / "m")
    writer.feed(b"partial\r\n")
    with pytest.raises(RuntimeError):
        writer.raw()
    writer.discard()
