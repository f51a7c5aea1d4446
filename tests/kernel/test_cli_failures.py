"""Every ``postroom`` command fails with one ``error:`` line and a documented exit
status, never a traceback: bad arguments, a missing configuration, a corrupt or
full database, a full disk, Ctrl-C during start-up.

The commands are found by walking the argument parser, so a new command is
tried too (and the test says what to add when a command needs a new kind of bad
input).
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import pytest

from postroom.cli import failures
from postroom.cli.failures import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    classify,
    report,
)
from postroom.cli.main import build_parser
from postroom.errors import ConfigError, ConfigErrors, SendError
from postroom.model import RawRef
from postroom.store.errors import DatabaseError, RawIntegrityError
from postroom.store.sqlite import SQLiteStore
from tests.kernel.test_cli import POSTROOM, postroom

#: every status a command may end with (postroom.cli.failures, docs/operations.md)
DOCUMENTED = {0, 1, 2, 3, 70, 141} | {128 + s for s in (signal.SIGINT, signal.SIGTERM)}

#: commands that never open the site's store: a corrupt database is not their business
STORE_FREE = {"check", "plugins", "config-reference"}


# ------------------------------------------------------------- the mapping


@pytest.mark.parametrize(
    ("exc", "status", "line"),
    [
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted"),
        (ConfigError("bad", file="s.yaml", line=3, option="x"), 2, "s.yaml:3: option 'x': bad"),
        (failures.UsageError("--to: not an address"), EXIT_BAD_INPUT, "--to: not an address"),
        (DatabaseError("SQLite database /x.db: file is not a database"), EXIT_ENVIRONMENT,
         "SQLite database /x.db: file is not a database"),
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/var/out.md"), EXIT_ENVIRONMENT,
         "/var/out.md: No space left on device"),
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), EXIT_ENVIRONMENT,
         "No space left on device"),
        (PermissionError(errno.EACCES, "Permission denied", "/etc/shadow"), EXIT_ENVIRONMENT,
         "/etc/shadow: Permission denied"),
        (SendError("refused"), EXIT_FAILED, "refused"),
        (failures.NotFound("no interaction x"), EXIT_FAILED, "no interaction x"),
        (ValueError("not enough values to unpack\nmore"), EXIT_INTERNAL,
         "internal error: ValueError: not enough values to unpack "
         "(run with -vv for the traceback)"),
    ],
)  # fmt: skip
def test_each_kind_of_failure_has_its_status_and_one_line(
    exc: BaseException, status: int, line: str
) -> None:
    assert classify(exc) == (status, [line])
    out = io.StringIO()
    assert report(exc, stream=out) == status
    assert out.getvalue() == f"error: {line}\n"


def test_several_configuration_errors_are_one_line_each() -> None:
    errors = [ConfigError("a", file="f", line=1), ConfigError("b", file="f", line=2)]
    assert classify(ConfigErrors(errors)) == (2, ["f:1: a", "f:2: b"])


def test_the_traceback_of_an_internal_error_only_with_debug() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        error = exc
    quiet, loud = io.StringIO(), io.StringIO()
    report(error, stream=quiet)
    report(error, stream=loud, debug=True)
    assert "Traceback" not in quiet.getvalue()
    assert "Traceback" in loud.getvalue() and 'raise RuntimeError("boom")' in loud.getvalue()


def test_a_closed_pipe_is_quiet() -> None:
    out = io.StringIO()
    assert report(BrokenPipeError(errno.EPIPE, "Broken pipe"), stream=out) == EXIT_BROKEN_PIPE
    assert out.getvalue() == ""


def test_every_status_is_documented() -> None:
    text = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    statuses = {v for k, v in vars(failures).items() if k.startswith("EXIT_")}
    statuses.discard(failures.EXIT_SIGNAL)  # documented as 128 + N
    assert statuses == {0, 1, 2, 3, 70, 130, 141}
    for status in statuses:
        assert f"| {status} |" in text, status
        assert status in DOCUMENTED


# ------------------------------------------------ every command, bad input


@attrs.frozen
class Case:
    argv: tuple[str, ...]
    status: int
    why: str
    argparse: bool = False  # refused by argparse: usage, then its error line


def leaf_commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every runnable command: ``("interactions", "show")`` and its parser."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sub in subs[0].choices.items():
        yield from leaf_commands(sub, (*prefix, name))


def _option(action: argparse.Action) -> str:
    return next(s for s in action.option_strings if s.startswith("--"))


def _sample(action: argparse.Action, site: Site, command: tuple[str, ...] = ()) -> str:
    """A valid value, so that only the bad part of a command line is bad."""
    if action.dest == "files":
        return str(site.eml)
    if command[:1] == ("interactions",) and action.dest in ("id", "index"):
        # a stored interaction with a file: its download can reach the disk
        return site.interaction if action.dest == "id" else "0"
    return "x@example.com" if action.dest in ("to", "address") else "x"


def cases_for(command: tuple[str, ...], parser: argparse.ArgumentParser, site: Site) -> list[Case]:
    """Bad inputs for one command, derived from its arguments."""
    actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    config = next((a for a in actions if "--config" in a.option_strings), None)
    # send's --to is needed unless --in-reply-to is given: the request is refused first
    needed = [a for a in actions if a.required or (command == ("send",) and a.dest == "to")]
    # one of each required group of alternatives (erase: --address or --check)
    needed += [g._group_actions[0] for g in parser._mutually_exclusive_groups if g.required]
    required = [a for a in needed if a.option_strings and a is not config]
    positionals = [a for a in actions if not a.option_strings]

    def argv(
        config_file: Path | None, extra: tuple[str, ...] = (), bad: tuple[str, str] | None = None
    ) -> tuple[str, ...]:
        """The command line: *bad* = (dest, value) replaces one positional's sample."""
        line = [*command, *(["-c", str(config_file)] if config_file is not None else [])]
        for action in required:
            line += [_option(action), _sample(action, site, command)]
        line += extra
        for action in positionals:
            replaced = bad is not None and bad[0] == action.dest
            value = bad[1] if bad is not None and replaced else _sample(action, site, command)
            line.append(value)
        return tuple(line)

    cases: list[Case] = []
    if config is not None:
        cases.append(Case(argv(site.root / "missing.yaml"), EXIT_BAD_INPUT, "no configuration"))
        if command[0] not in STORE_FREE:
            cases.append(Case(argv(site.corrupt), EXIT_ENVIRONMENT, "a corrupt database"))
    good = site.good if config is not None else None
    for action in actions:
        if action.type is None:
            continue
        assert callable(action.type)
        for value in ("99999999999999999999", "-1", "x y"):
            try:
                action.type(value)
                continue
            except (argparse.ArgumentTypeError, ValueError, TypeError):
                pass
            why = f"{action.dest}={value!r}"
            if action.option_strings:
                line = argv(good, (f"{_option(action)}={value}",))
            else:
                line = argv(good, bad=(action.dest, value))
            cases.append(Case(line, EXIT_BAD_INPUT, why, argparse=True))
    if any("--output" in a.option_strings for a in actions):
        cases.append(Case(argv(good, ("--output", "/dev/full")), EXIT_ENVIRONMENT, "disk full"))
    if any(a.dest == "files" for a in positionals):
        missing = str(site.root / "missing.eml")
        cases.append(Case(argv(good, bad=("files", missing)), EXIT_FAILED, "no such file"))
    return cases


@attrs.frozen
class Site:
    root: Path
    good: Path
    corrupt: Path
    eml: Path
    #: a stored interaction with a file (in the good site's store)
    interaction: str


@pytest.fixture
def site(quickstart: Path) -> Site:
    root = quickstart.parent
    corrupt_dir = root / "corrupt"
    corrupt_dir.mkdir()
    (corrupt_dir / "postroom.db").write_bytes(b"this is not an SQLite database\n" * 4096)
    corrupt = corrupt_dir / "postroom.yaml"
    corrupt.write_text(quickstart.read_text())  # its store: corrupt/postroom.db
    (corrupt_dir / "maildir").symlink_to(root / "maildir")
    eml = next((root / "maildir" / "new").iterdir())
    # the mail is read, not taken: its copy stays in the maildir for the other cases
    shutil.copytree(root / "maildir", root / "maildir-copy")
    assert postroom("run", "-c", str(quickstart), "--once").returncode == 0
    shutil.rmtree(root / "maildir")
    (root / "maildir-copy").rename(root / "maildir")
    listed = postroom("interactions", "list", "-c", str(quickstart), "--json").stdout
    with_file = next(r for r in map(json.loads, listed.splitlines()) if r["attachments"])
    return Site(root=root, good=quickstart, corrupt=corrupt, eml=eml, interaction=with_file["id"])


def test_every_command_fails_cleanly_on_bad_input(site: Site) -> None:
    commands = list(leaf_commands(build_parser()))
    assert len(commands) >= 13
    cases = {command: cases_for(command, parser, site) for command, parser in commands}
    missing = [" ".join(c) for c, found in cases.items() if not found]
    assert not missing, f"no bad input known for: {missing}; teach cases_for() one"
    flat = [case for found in cases.values() for case in found]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda case: postroom(*case.argv), flat))
    problems = []
    for case, result in zip(flat, results, strict=True):
        output = result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        last = lines[-1] if lines else ""
        fine = (
            "Traceback" not in output
            and result.returncode == case.status
            and result.returncode in DOCUMENTED
            and (
                last.startswith("postroom ") and ": error: argument " in last
                if case.argparse
                else last.startswith("error: ")
            )
        )
        if not fine:
            problems.append(
                f"postroom {' '.join(case.argv)} ({case.why}): status {result.returncode}, "
                f"expected {case.status}; stderr:\n{textwrap.indent(result.stderr[-1500:], '  ')}"
            )
    assert not problems, "\n".join(problems)
    assert len(flat) >= 25


# ---------------------------------------------------- Ctrl-C during start-up


@pytest.mark.parametrize("command", [["check"], ["interactions", "list"], ["run"]], ids=" ".join)
def test_ctrl_c_while_reading_the_configuration(tmp_path: Path, command: list[str]) -> None:
    """A FIFO as configuration holds the command in its start-up until we act."""
    fifo = tmp_path / "site.yaml"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [POSTROOM, *command, "-c", str(fifo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as at a terminal, even when this run was started in the
        # background (a shell starts those with SIGINT ignored, and Python
        # then installs no handler: the command would rightly ignore it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        writer = None
        while writer is None:  # opening for writing succeeds once the command reads it
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                assert exc.errno == errno.ENXIO
                with pytest.raises(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.02)  # paces the poll; an early exit fails here
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        os.close(writer)
    finally:
        proc.kill()
        proc.wait()
    assert (proc.returncode, err, out) == (EXIT_INTERRUPTED, "error: interrupted\n", "")


# ------------------------------------------------- a full or corrupt store


FULL_DISK = '''\
"""postroom with a store whose file cannot grow: SQLite says what it says on a full disk."""
import sys

from postroom.cli.main import main
from postroom.store.sqlite import SQLiteStore


def open_full(self, real=SQLiteStore.open):
    real(self)
    pages = self.dialect.conn.execute("PRAGMA page_count").fetchone()[0]
    self.dialect.conn.execute(f"PRAGMA max_page_count = {pages}")


if __name__ == "__main__":
    SQLiteStore.open = open_full
    sys.exit(main(sys.argv[1:]))
'''


def test_a_full_disk_fails_the_message_in_one_line(quickstart: Path, tmp_path: Path) -> None:
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    big = quickstart.parent / "big.eml"
    big.write_bytes(b"Subject: big\r\n\r\n" + b"x" * 76 + b"\r\n" * 50_000)
    run = [sys.executable, str(script)]
    done = subprocess.run([*run, "ingest", "-c", str(quickstart), str(big)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == EXIT_FAILED
    assert done.stderr == (
        f"error: {big}: SQLite database {quickstart.parent / 'postroom.db'}: "
        "database or disk is full\n"
    )
    (quickstart.parent / "maildir" / "new" / "big.eml").write_bytes(big.read_bytes())
    done = subprocess.run([*run, "run", "-c", str(quickstart), "--once"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == EXIT_FAILED
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if "big.eml" in line]
    assert "message big.eml failed (attempt 1 of 5, tried again next pass): " in line
    assert "SQLite database" in line
    assert "database or disk is full" in done.stderr


def _corrupt_chunks(database: Path) -> None:
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE raw_chunks SET data = CAST('garbage' AS BLOB)")


def test_corrupt_raw_bytes_are_reported_never_printed(quickstart: Path) -> None:
    config = str(quickstart)
    assert postroom("run", "-c", config, "--once").returncode == 0
    listed = postroom("interactions", "list", "-c", config, "--json")
    first = listed.stdout.splitlines()[0].split('"id": "')[1].split('"')[0]
    _corrupt_chunks(quickstart.parent / "postroom.db")
    shown = subprocess.run([POSTROOM, "interactions", "show", "-c", config, first, "--raw"],
                           capture_output=True, timeout=120)  # fmt: skip
    assert shown.returncode == EXIT_ENVIRONMENT
    assert shown.stdout == b""
    err = shown.stderr.decode()
    assert err.startswith(f"error: the stored raw bytes of interaction {first} are corrupt: ")
    assert err.count("\n") == 1


def test_a_corrupt_quarantined_message_is_not_replayed(quickstart: Path, tmp_path: Path) -> None:
    database = quickstart.parent / "postroom.db"
    eml = tmp_path / "m.eml"
    eml.write_bytes(b"Subject: hi\r\n\r\nbody\r\n")
    store = SQLiteStore({"path": str(database)})
    store.open()
    entry = store.quarantine("support", "k1", "failed 5 times", RawRef.from_path(eml))
    store.close()
    _corrupt_chunks(database)
    replay = postroom("quarantine", "replay", "-c", str(quickstart), entry.id)
    assert replay.returncode == EXIT_ENVIRONMENT
    assert replay.stderr.startswith(
        f"error: the stored raw bytes of quarantine entry {entry.id} are corrupt: read 7 bytes"
    )
    assert replay.stderr.count("\n") == 1 and replay.stdout == ""
    listed = postroom("quarantine", "list", "-c", str(quickstart))
    assert entry.id in listed.stdout and "held" in listed.stdout  # not released


def test_raw_integrity_error_is_a_store_failure() -> None:
    error = RawIntegrityError("interaction x", expected_size=1, expected_sha256="a" * 64,
                              size=2, sha256="b" * 64)  # fmt: skip
    assert classify(error)[0] == EXIT_ENVIRONMENT


REACT = """\
import sys
from postroom.cli.main import _react

async def main(reactor):
    {body}

sys.exit(_react(main))
"""


@pytest.mark.parametrize(
    ("body", "status", "err"),
    [
        ("raise SystemExit(5)", 5, ""),
        ("raise KeyError('x')", EXIT_INTERNAL, "error: internal error: KeyError: 'x' "
         "(run with -vv for the traceback)\n"),
        ("raise KeyboardInterrupt", EXIT_INTERRUPTED, "error: interrupted\n"),
    ],
)  # fmt: skip
def test_what_a_command_raises_under_the_reactor(body: str, status: int, err: str) -> None:
    done = subprocess.run([sys.executable, "-c", REACT.format(body=body)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (done.returncode, done.stderr, done.stdout) == (status, err, "")
