"""A PostgreSQL server for the tests, and throwaway databases on it.

:func:`find_or_start_postgres` returns an administrator DSN, trying in turn:

1. ``POSTROOM_TEST_PG`` when set (it must answer, or this fails: a DSN given
   on purpose is never silently replaced);
2. a server on 127.0.0.1:5432 that lets ``postgres`` in without a password;
3. a private throwaway cluster under ``var/pg`` on a high port
   (``POSTROOM_TEST_PG_PORT``, default 55432), initialised and started on first
   use and left running for the next run (``python tests/pg.py stop`` stops it).

When none works it raises :class:`PostgresUnavailable` with what was tried:
the tests then fail, they never skip.

Each test run makes its own database with :func:`create_database` and drops
it with :func:`drop_database`, so runs never see each other's data.

Run as a script, it prints the DSN (``python tests/pg.py``), or stops the
private cluster (``python tests/pg.py stop``).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

ENV_DSN = "POSTROOM_TEST_PG"
ENV_PORT = "POSTROOM_TEST_PG_PORT"
DEFAULT_PORT = 55432
LOCAL_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_DIR = ROOT / "var" / "pg"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be found or started for the tests."""


def _answers(dsn: str) -> str | None:
    """None when *dsn* accepts a connection, else why not."""
    try:
        with psycopg.connect(make_conninfo(dsn, connect_timeout=3)) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip() or type(exc).__name__
    return None


def find_or_start_postgres() -> str:
    """An administrator DSN (may create databases) of a running server."""
    given = os.environ.get(ENV_DSN)
    if given:
        problem = _answers(given)
        if problem:
            raise PostgresUnavailable(f"{ENV_DSN}={given!r} does not answer: {problem}")
        return given
    tried = []
    problem = _answers(LOCAL_DSN)
    if problem is None:
        return LOCAL_DSN
    tried.append(f"{LOCAL_DSN!r}: {problem}")
    try:
        return start_private_cluster()
    except PostgresUnavailable as exc:
        tried.append(f"private cluster under {CLUSTER_DIR}: {exc}")
    raise PostgresUnavailable(
        "no PostgreSQL server for the tests. Tried:\n  - "
        + "\n  - ".join(tried)
        + f"\nInstall PostgreSQL (apt-get install postgresql) or set {ENV_DSN} to an "
        "administrator DSN, e.g. 'host=127.0.0.1 user=postgres dbname=postgres'."
    )


def _bin_dir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent

    def major(path: str) -> int:
        name = Path(path).parent.parent.name
        return int(name) if name.isdigit() else 0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=major)
    if not candidates:
        raise PostgresUnavailable("pg_ctl not found (PATH, /usr/lib/postgresql/*/bin)")
    return Path(candidates[-1]).parent


def _as_owner(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as ``postgres`` then."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _run(argv: list[str], log: Path) -> None:
    # Output to a file: a daemon holding our stdout open would hang a `| tail`.
    with open(log, "ab") as out:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise PostgresUnavailable(
            f"{' '.join(argv)} exited {done.returncode}; {log} ends with:\n" + "\n".join(tail)
        )


def start_private_cluster(directory: Path = CLUSTER_DIR, port: int | None = None) -> str:
    """Initialise (once) and start (when stopped) a trust-auth cluster on 127.0.0.1."""
    port = port or int(os.environ.get(ENV_PORT, DEFAULT_PORT))
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    if _answers(dsn) is None:
        return dsn
    bindir = _bin_dir()
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
        if not _postgres_can_write(directory):
            # e.g. a clone under /root: the postgres user cannot reach it
            directory = Path(tempfile.gettempdir()) / f"postroom-test-pg-{port}"
            directory.mkdir(exist_ok=True)
            shutil.chown(directory, "postgres", "postgres")
    data = directory / "data"
    log = directory / "server.log"
    if not (data / "PG_VERSION").exists():
        _run(
            _as_owner([str(bindir / "initdb"), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                       "--locale=C", "-D", str(data)]),
            directory / "initdb.log",
        )  # fmt: skip
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {directory} -c fsync=off"
    _run(
        _as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                   "-w", "-t", "60", "start"]),
        directory / "pg_ctl.log",
    )  # fmt: skip
    problem = _answers(dsn)
    if problem:
        raise PostgresUnavailable(f"started, but {dsn!r} does not answer: {problem}")
    return dsn


def _postgres_can_write(directory: Path) -> bool:
    probe = [
        "runuser",
        "-u",
        "postgres",
        "--",
        "test",
        "-w",
        str(directory),
        "-a",
        "-x",
        str(directory),
    ]
    return subprocess.run(probe, stdin=subprocess.DEVNULL, check=False).returncode == 0


def stop_private_cluster(directory: Path = CLUSTER_DIR, port: int | None = None) -> None:
    port = port or int(os.environ.get(ENV_PORT, DEFAULT_PORT))
    for place in (directory, Path(tempfile.gettempdir()) / f"postroom-test-pg-{port}"):
        data = place / "data"
        if (data / "postmaster.pid").exists():
            _run(
                _as_owner(
                    [str(_bin_dir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
                ),
                place / "pg_ctl.log",
            )


def create_database(admin_dsn: str, prefix: str = "postroom_test_") -> tuple[str, str]:
    """A fresh database: ``(dsn, name)``."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(admin_dsn, dbname=name), name


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "dsn"
    try:
        if command == "dsn":
            print(find_or_start_postgres())
        elif command == "start-private":
            print(start_private_cluster())
        elif command == "stop":
            stop_private_cluster()
        else:
            print(f"usage: {argv[0]} [dsn|start-private|stop]", file=sys.stderr)
            return 2
    except PostgresUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
