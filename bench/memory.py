"""Peak memory of ingesting one large message, counted over the whole process tree.

    .venv/bin/python bench/memory.py [--size-mb 50] [--kinds text,attachment,header]
    (or: make bench-memory)

For each kind of large message (a ``text/plain`` body, a base64 attachment, one
header line as long as the message), a fresh site like ``examples/quickstart``
(a maildir source holding that one message, the SQLite store, every installed
plugin, ``maximum-msg-size`` above the message) is ingested by ``postroom run
--once`` started as a subprocess, and the same is done with a tiny message
(the *idle* tree: interpreter, plugins, worker pool, store).

**What is measured.** While the gateway runs, every process of its tree (the
gateway, the forkserver it starts, the workers forked from that, whatever the
pool) is found through ``/proc/<pid>/task/<tid>/children`` every few
milliseconds, and its ``VmHWM`` (the kernel's high-water mark of its resident
set) read from ``/proc/<pid>/status``. The figure is the **sum over the
processes of each one's peak**, minus the same sum for the tiny message:
conservative (the peaks of two processes count together even if they came at
different times) and not dependent on the sampling rate, because the kernel
keeps the mark; sampling only decides whether the last rise of a process in
its final milliseconds is seen. The sampled maximum of the *concurrent* sum of
``VmRSS`` is printed beside it: closer to what the machine really needed, but
a short spike between two samples can be missed.

Printed per kind: message size, tree peak above idle and its ratio to the
size (target: at most 3.0), the concurrent figure, each process's peak, and a
check that the stored interaction kept its full text.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attrs

MiB = 1 << 20
POSTROOM = str(Path(sys.executable).with_name("postroom"))
TARGET = 3.0

_HEAD = (
    "From: Alice Example <alice@example.org>\r\n"
    "To: support@example.com\r\n"
    "Subject: {subject}\r\n"
    "Message-ID: <{kind}-{size}@example.org>\r\n"
    "Date: Mon, 03 Nov 2025 10:00:00 +0000\r\n"
    "MIME-Version: 1.0\r\n"
)
_LINE = b"Dear support, the order did not arrive; please send it again, thanks.\r\n"


def _head(kind: str, size: int, subject: str = "a large message") -> bytes:
    return _HEAD.format(subject=subject, kind=kind, size=size).encode("ascii")


def text_message(size: int) -> bytes:
    """A ``text/plain`` body of about *size* bytes of 72-character lines."""
    head = _head("text", size) + (
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return head + _LINE * max(1, (size - len(head)) // len(_LINE))


def attachment_message(size: int) -> bytes:
    """A short text and one base64 attachment, about *size* bytes in all."""
    head = _head("attachment", size) + (
        b'Content-Type: multipart/mixed; boundary="=_part"\r\n\r\n'
        b"--=_part\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"The report is attached.\r\n"
        b"--=_part\r\n"
        b'Content-Type: application/octet-stream; name="report.bin"\r\n'
        b'Content-Disposition: attachment; filename="report.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    tail = b"\r\n--=_part--\r\n"
    lines = max(1, (size - len(head) - len(tail)) // 78)  # 76 characters and CRLF
    data = random.Random(size).randbytes(lines * 57)
    body = base64.encodebytes(data).replace(b"\n", b"\r\n").rstrip(b"\r\n")
    return head + body + tail


def header_message(size: int) -> bytes:
    """One header field line of about *size* bytes, then a short body."""
    head = _head("header", size)
    body = b"Content-Type: text/plain\r\n\r\nSee the header.\r\n"
    filler = max(1, size - len(head) - len(body) - len(b"X-Long: \r\n"))
    return head + b"X-Long: " + b"x" * filler + b"\r\n" + body


KINDS: dict[str, Callable[[int], bytes]] = {
    "text": text_message,
    "attachment": attachment_message,
    "header": header_message,
}

_SITE = """\
tenant-id: 101
store: {{driver: sqlite, path: postroom.db}}
email-processing:
  default-domain: example.com
  maximum-msg-size: {max_size}
pop-client:
  - name: support
    type: maildir
    folder-path: maildir
smtp-client:
  server-type: file
  folder-path: outbox
"""


def make_site(folder: Path, message: bytes) -> Path:
    """A quickstart-like site holding *message* in its maildir; its configuration file."""
    for sub in ("new", "cur", "tmp"):
        (folder / "maildir" / sub).mkdir(parents=True)
    (folder / "maildir" / "new" / "1762071300.M1P1.bench").write_bytes(message)
    config = folder / "postroom.yaml"
    config.write_text(_SITE.format(max_size=max(len(message) * 2, 10 * MiB)), encoding="utf-8")
    return config


# ------------------------------------------------------------------ the tree


def _status(pid: int) -> dict[str, int]:
    """``VmHWM`` and ``VmRSS`` of *pid* in bytes (empty once it has exited)."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    found[key] = int(value.split()[0]) * 1024
    except OSError:
        return {}
    return found


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _role(command: str, parent_role: str | None) -> str:
    """What a process of the tree is, from its place and its command line."""
    if parent_role is None:
        return "gateway"
    if "resource_tracker" in command:
        return "resource tracker"
    if parent_role == "gateway" and "forkserver" in command:
        return "forkserver"
    if parent_role == "forkserver":
        return "worker"
    return f"child of {parent_role}"


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                found.extend(int(p) for p in fh.read().split())
        except OSError:
            continue
    return found


@attrs.define
class TreeMemory:
    """Peaks of one process tree, as :func:`watch` saw them."""

    peaks: dict[int, int] = attrs.field(factory=dict)  # pid -> VmHWM
    names: dict[int, str] = attrs.field(factory=dict)
    commands: dict[int, str] = attrs.field(factory=dict)
    concurrent: int = 0  # largest sum of VmRSS seen in one sample
    samples: int = 0

    @property
    def total(self) -> int:
        return sum(self.peaks.values())

    def sample(self, root: int) -> None:
        pending: list[tuple[int, str | None]] = [(root, None)]
        seen: set[int] = set()
        current = 0
        while pending:
            pid, parent_role = pending.pop()
            if pid in seen:
                continue
            seen.add(pid)
            status = _status(pid)
            if "VmHWM" not in status:  # exited, or a zombie without memory
                continue
            command = _command(pid)
            if self.commands.get(pid) != command:
                # New, or it called exec: the memory of the fork it was is gone
                # (and was the parent's, shared copy-on-write).
                self.commands[pid] = command
                self.names[pid] = _role(command, parent_role)
                self.peaks[pid] = 0
            self.peaks[pid] = max(self.peaks[pid], status["VmHWM"])
            current += status.get("VmRSS", 0)
            pending.extend((child, self.names[pid]) for child in _children(pid))
        self.concurrent = max(self.concurrent, current)
        self.samples += 1


def watch(argv: list[str], interval: float, cwd: Path) -> tuple[TreeMemory, int, str]:
    """Run *argv*, sampling its process tree every *interval* seconds until it exits."""
    tree = TreeMemory()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            tree.sample(proc.pid)
            time.sleep(interval)
        log.seek(0)
        output = log.read().decode("utf-8", "replace")
    return tree, proc.returncode, output


def stored_text_length(config: Path) -> tuple[int, int]:
    """Characters of the stored interaction's text (read back through the
    store), and how many interactions there are."""
    from postroom.store.sqlite import SQLiteStore

    store = SQLiteStore({"path": str(config.parent / "postroom.db")})
    store.open()
    try:
        found = store.list_interactions()
    finally:
        store.close()
    text = found[0].text if found else None
    return (len(text) if text is not None else -1), len(found)


@attrs.frozen
class Run:
    kind: str
    size: int
    tree: TreeMemory
    text_length: int


def ingest(kind: str, message: bytes, interval: float) -> Run:
    """One ``postroom run --once`` over a new site holding *message*."""
    folder = Path(tempfile.mkdtemp(prefix=f"postroom-mem-{kind}-"))
    try:
        config = make_site(folder, message)
        tree, code, output = watch([POSTROOM, "run", "-c", str(config), "--once"], interval, folder)
        if code != 0:
            raise SystemExit(f"postroom run failed ({code}) for {kind}:\n{output[-3000:]}")
        length, count = stored_text_length(config)
        if count != 1:
            raise SystemExit(f"{kind}: expected one interaction, found {count}\n{output[-3000:]}")
        return Run(kind, len(message), tree, length)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def expected_text_length(kind: str, message: bytes) -> int | None:
    """The characters the stored text must have (None: not checked)."""
    if kind == "text":
        body = message.split(b"\r\n\r\n", 1)[1]
        return len(body.replace(b"\r\n", b"\n"))
    if kind == "attachment":
        return len("The report is attached.")  # its line break belongs to the boundary
    if kind == "header":  # wrapped: the header block is over max_header_bytes
        from postroom.parsing import ParseLimits, wrapping_text

        limit = ParseLimits().max_header_bytes
        return len(wrapping_text(f"header block larger than {limit} bytes"))
    return None


def _mb(value: int) -> str:
    return f"{value / MiB:7.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=50.0)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--interval", type=float, default=0.002, help="seconds between samples")
    parser.add_argument("--detail", action="store_true", help="each process's peak")
    args = parser.parse_args()
    size = int(args.size_mb * MiB)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown kinds {unknown}; choose from {sorted(KINDS)}")

    idle = ingest("idle", text_message(2048), args.interval)
    print(
        f"idle tree (a 2 KB message): {len(idle.tree.peaks)} processes, "
        f"sum of peaks {_mb(idle.tree.total).strip()} MiB, "
        f"concurrent {_mb(idle.tree.concurrent).strip()} MiB"
    )
    if args.detail:
        for pid, peak in sorted(idle.tree.peaks.items()):
            print(f"    {idle.tree.names.get(pid, '?'):>16} {_mb(peak)} MiB")
    print()
    print(
        f"{'kind':<11} {'size MiB':>8} {'peak-idle':>9} {'ratio':>6}   "
        f"{'concurrent-idle':>15} {'ratio':>6}   text kept"
    )
    worst = 0.0
    for kind in kinds:
        message = KINDS[kind](size)
        run = ingest(kind, message, args.interval)
        above = run.tree.total - idle.tree.total
        concurrent = run.tree.concurrent - idle.tree.concurrent
        ratio = above / run.size
        worst = max(worst, ratio)
        expected = expected_text_length(kind, message)
        kept = (
            "yes"
            if expected is None or run.text_length == expected
            else (f"NO ({run.text_length} of {expected} characters)")
        )
        print(
            f"{kind:<11} {_mb(run.size)}  {_mb(above)}  {ratio:5.2f}   "
            f"{_mb(concurrent):>15}  {concurrent / run.size:5.2f}   {kept}"
        )
        if args.detail:
            for pid, peak in sorted(run.tree.peaks.items()):
                print(f"    {run.tree.names.get(pid, '?'):>16} {_mb(peak)} MiB")
        del message
    print()
    print(f"worst ratio {worst:.2f} (target at most {TARGET})")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
