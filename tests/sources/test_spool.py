"""The shared hashing spool file: bytes, size and SHA-256 as written; cleaned up on failure."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from postroom.api import SpoolFile


def test_create_streams_hashes_and_counts(tmp_path: Path) -> None:
    spool = tmp_path / "spool"  # made on first use
    file = SpoolFile.create(spool, prefix="imap-sup port/1-")
    for chunk in (b"Subject: x\r\n", b"\r\n", b"body" * 1000):
        file.write(chunk)
    raw = file.raw()
    data = b"Subject: x\r\n\r\n" + b"body" * 1000
    assert Path(raw.path).parent == spool
    assert Path(raw.path).name.startswith("imap-sup_port_1-")  # no path separators from names
    assert Path(raw.path).read_bytes() == data
    assert (raw.size, raw.sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_two_files_never_share_a_name(tmp_path: Path) -> None:
    first = SpoolFile.create(tmp_path, prefix="same-")
    second = SpoolFile.create(tmp_path, prefix="same-")
    assert first.path != second.path
    first.discard()
    second.discard()
    assert list(tmp_path.iterdir()) == []


def test_over_limit_counts_bytes_but_keeps_them(tmp_path: Path) -> None:
    """maximum-msg-size does not stop a download: the raw is kept, the message wrapped."""
    file = SpoolFile.create(tmp_path, max_size=10)
    file.write(b"0123456789")
    assert not file.over_limit  # exactly the limit is allowed
    file.write(b"x")
    assert file.over_limit
    assert file.raw().size == 11


def test_no_limit_is_never_over(tmp_path: Path) -> None:
    file = SpoolFile.create(tmp_path, max_size=0)
    file.write(b"x" * 100_000)
    assert not file.over_limit
    file.discard()


def test_a_failing_block_deletes_the_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), SpoolFile.create(tmp_path) as file:
        file.write(b"half a message")
        raise RuntimeError("connection lost")
    assert list(tmp_path.iterdir()) == []


def test_a_finished_block_keeps_the_file_closed(tmp_path: Path) -> None:
    with SpoolFile.create(tmp_path) as file:
        file.write(b"whole")
    with pytest.raises(ValueError, match="closed"):
        file.write(b"late")
    assert Path(file.raw().path).read_bytes() == b"whole"


def test_discard_twice_is_harmless(tmp_path: Path) -> None:
    file = SpoolFile(tmp_path / "m.eml")
    file.discard()
    file.discard()
    assert not (tmp_path / "m.eml").exists()
