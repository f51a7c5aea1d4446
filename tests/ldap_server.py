"""A real OpenLDAP ``slapd`` for the LDAP plugin's tests, on 127.0.0.1.

Usage (as root; Debian 12; ``contrib/scripts/ldap-test-server`` runs this with
the checkout's virtualenv):

    contrib/scripts/ldap-test-server start [--json]   # install if needed, start, print env
    contrib/scripts/ldap-test-server status           # exit 0 when slapd answers
    contrib/scripts/ldap-test-server env [--json]     # shell `export` lines (or the state)
    contrib/scripts/ldap-test-server stop
    eval "$(contrib/scripts/ldap-test-server start)"  # URLs etc. in your shell

`start` is idempotent: when the slapd of this base already runs with the same
configuration, it only prints the environment. Otherwise it stops whatever is
left of it, wipes the state directory, makes a fresh CA and server certificate
(:mod:`tests.pki`; the CA's key is not kept), writes a private ``slapd.conf``
(``mdb`` database in the state directory), loads the test entries with
``slapadd`` and starts slapd in the foreground (detached, output in its log),
waiting (with a deadline) until both listeners answer. Stdout is only the
`env` output (or JSON with --json); progress and errors go to stderr. Missing
Debian packages (slapd, ldap-utils) are installed with
contrib/scripts/install-test-packages first.

Ports: POSTROOM_TEST_LDAP_PORT_BASE (default 24700) plus an offset:

    +0  ldap    LDAP, StartTLS offered (not required)
    +1  ldaps   LDAP over TLS

Directory: base ``dc=example,dc=test``; the gateway's reader
``cn=postroom-reader,ou=services,dc=example,dc=test`` / ``secret-reader``
reads ``ou=people`` (anonymous binds read nothing); the people are
:data:`PEOPLE` (inetOrgPerson: uid, cn, givenName, sn, mail,
telephoneNumber, employeeNumber).

State: /tmp/postroom-ldap-<base>/ (slapd.conf, tls/, data/, slapd.log,
state.json: what the tests read). The running slapd is found in /proc by its
command line, never by a pid file. Tests stop and start it again on the same
state with :func:`stop_slapd` / :func:`run_slapd` (the "directory is down"
tests).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `tests.pki` must import
    sys.path.insert(0, str(ROOT))

from tests.pki import make_tls_files  # noqa: E402

INSTALL = ROOT / "contrib" / "scripts" / "install-test-packages"
ENV_BASE = "POSTROOM_TEST_LDAP_PORT_BASE"
ENV_STATE = "POSTROOM_TEST_LDAP_STATE"
DEFAULT_BASE = 24700
HOST = "127.0.0.1"
STATE_VERSION = 1
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = "/etc/ldap/schema"
MODULE_DIR = "/usr/lib/ldap"

BASE_DN = "dc=example,dc=test"
ADMIN_DN = f"cn=admin,{BASE_DN}"
ADMIN_PASSWORD = "secret-admin"
READER_DN = f"cn=postroom-reader,ou=services,{BASE_DN}"
READER_PASSWORD = "secret-reader"
PEOPLE_DN = f"ou=people,{BASE_DN}"

#: the test entries: uid -> attributes (each value a string or a list of strings)
PEOPLE: dict[str, dict[str, str | list[str]]] = {
    "jmueller": {
        "cn": "Jürgen Müller", "givenName": "Jürgen", "sn": "Müller",
        "mail": "juergen.mueller@customer.example", "telephoneNumber": "+49 30 1234567",
        "employeeNumber": "C-1001",
    },
    "asmith": {
        "cn": "Alice Smith", "givenName": "Alice", "sn": "Smith",
        "mail": ["Alice.Smith@Shop.Example", "alice@shop.example"],
        "telephoneNumber": "+44 20 7946 0000", "employeeNumber": "C-1002",
    },
    "bjones": {  # no employeeNumber: the id attribute may be missing
        "cn": "Bob Jones", "givenName": "Bob", "sn": "Jones",
        "mail": "bob.jones@shop.example",
    },
}  # fmt: skip

SLAPD_CONF = """\
# written by tests/ldap_server.py: a private slapd for the tests
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
modulepath {modules}
moduleload back_mdb
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
TLSCACertificateFile {tls}/ca.pem
TLSCertificateFile {tls}/server.pem
TLSCertificateKeyFile {tls}/server-key.pem
disallow bind_anon
require none
sizelimit 50

database mdb
maxsize 16777216
suffix "{base}"
rootdn "{admin}"
rootpw {admin_password}
directory {dir}/data
index mail eq
index uid eq
access to attrs=userPassword
  by anonymous auth
  by * none
access to dn.subtree="{people}"
  by dn.exact="{reader}" read
  by * none
access to *
  by dn.exact="{reader}" search
  by * none
"""


class Failure(Exception):
    """Something could not be done; the message says what and where to look."""


def log(message: str) -> None:
    print(f"ldap-test-server: {message}", file=sys.stderr, flush=True)


def port_base() -> int:
    raw = os.environ.get(ENV_BASE, str(DEFAULT_BASE))
    try:
        base = int(raw)
    except ValueError:
        raise Failure(f"{ENV_BASE}={raw!r} is not a number") from None
    if not 1024 <= base <= 65534:
        raise Failure(f"{ENV_BASE}={base} is out of range")
    return base


class Layout:
    """Every path and port of one slapd."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.dir = Path(tempfile.gettempdir()) / f"postroom-ldap-{base}"
        self.state_file = self.dir / "state.json"
        self.conf = self.dir / "slapd.conf"
        self.tls = self.dir / "tls"
        self.data = self.dir / "data"
        self.log_file = self.dir / "slapd.log"
        self.lock_file = self.dir.parent / f"{self.dir.name}.lock"
        self.ldap_port = base
        self.ldaps_port = base + 1

    @property
    def urls(self) -> str:
        return f"ldap://{HOST}:{self.ldap_port}/ ldaps://{HOST}:{self.ldaps_port}/"

    def command_line(self) -> list[str]:
        return [SLAPD, "-d", "256", "-h", self.urls, "-f", str(self.conf)]


def pid_alive(pid: int | None) -> bool:
    """Running, and not a zombie (a zombie answers kill -0)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def current_pid(layout: Layout) -> int | None:
    """The slapd of this layout, found in /proc by its command line."""
    wanted = layout.command_line()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = [a.decode() for a in (entry / "cmdline").read_bytes().split(b"\0")]
        except (OSError, UnicodeDecodeError):
            continue
        if argv[: len(wanted)] == wanted and pid_alive(int(entry.name)):
            return int(entry.name)
    return None


def answers(layout: Layout) -> str | None:
    """None when both listeners answer (the LDAPS one with a verified handshake)."""
    try:
        with socket.create_connection((HOST, layout.ldap_port), timeout=3):
            pass
        context = ssl.create_default_context(cafile=str(layout.tls / "ca.pem"))
        with (
            socket.create_connection((HOST, layout.ldaps_port), timeout=3) as raw,
            context.wrap_socket(raw, server_hostname=HOST),
        ):
            pass
    except (OSError, ssl.SSLError) as exc:
        return str(exc) or type(exc).__name__
    return None


def wait_until(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        problem = check()
        if problem is None:
            return
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout:.0f}s waiting for {what}: {problem}")
        time.sleep(pause)  # pacing the poll (the deadline above bounds it)
        pause = min(pause * 2, 0.2)


def tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({exc})"


def fingerprint(layout: Layout) -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(f"{layout.base}\0{layout.dir}".encode())
    return digest.hexdigest()[:16]


def ensure_packages() -> None:
    if not (os.access(SLAPD, os.X_OK) and os.access(SLAPADD, os.X_OK)):
        log("installing the Debian packages (contrib/scripts/install-test-packages)")
        done = subprocess.run([str(INSTALL)], stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise Failure(f"{INSTALL} exited {done.returncode}")


def _ldif_value(name: str, value: str) -> str:
    if value.isascii() and not value.startswith((" ", ":", "<")):
        return f"{name}: {value}"
    import base64

    return f"{name}:: {base64.b64encode(value.encode()).decode()}"


def entries_ldif() -> str:
    """The base, the service account and :data:`PEOPLE` as LDIF."""
    blocks = [
        f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\n"
        "dc: example\no: postroom tests",
        f"dn: ou=services,{BASE_DN}\nobjectClass: organizationalUnit\nou: services",
        f"dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: postroom-reader\nuserPassword: {READER_PASSWORD}",
        f"dn: {PEOPLE_DN}\nobjectClass: organizationalUnit\nou: people",
    ]
    for uid, attributes in PEOPLE.items():
        lines = [f"dn: uid={uid},{PEOPLE_DN}", "objectClass: inetOrgPerson", f"uid: {uid}"]
        for name, value in attributes.items():
            for one in [value] if isinstance(value, str) else value:
                lines.append(_ldif_value(name, one))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def describe(layout: Layout) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "base": layout.base,
        "dir": str(layout.dir),
        "url": f"ldap://{HOST}:{layout.ldap_port}",
        "ldaps_url": f"ldaps://{HOST}:{layout.ldaps_port}",
        "bind_dn": READER_DN,
        "bind_password": READER_PASSWORD,
        "search_base": PEOPLE_DN,
        "ca_file": str(layout.tls / "ca.pem"),
        "log": str(layout.log_file),
        "command": layout.command_line(),
    }


def load_state(layout: Layout) -> dict[str, Any] | None:
    try:
        state = json.loads(layout.state_file.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def stop(layout: Layout) -> None:
    pid = current_pid(layout)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)

    def gone() -> str | None:
        return f"slapd {pid} still running" if pid_alive(pid) else None

    try:
        wait_until("slapd to stop", gone, STOP_TIMEOUT)
    except Failure:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_until("slapd to die after SIGKILL", gone, 5.0)


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def launch(layout: Layout) -> None:
    """Start slapd on the layout's existing configuration and data; wait until it answers."""
    busy = [str(p) for p in (layout.ldap_port, layout.ldaps_port) if not port_free(p)]
    if busy:
        raise Failure(
            f"ports in use by another program: {HOST}:{', '.join(busy)}. Stop it, or choose "
            f"other ports with {ENV_BASE} (now {layout.base})."
        )
    with open(layout.log_file, "ab") as out:  # slapd never inherits our stdout
        process = subprocess.Popen(
            layout.command_line(),
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip

    def ready() -> str | None:
        if process.poll() is not None:
            raise Failure(f"slapd exited {process.returncode} at start")
        return answers(layout)

    try:
        wait_until("slapd to answer", ready, START_TIMEOUT)
    except Failure as exc:
        stop(layout)
        raise Failure(f"{exc}\n--- {layout.log_file} ---\n{tail(layout.log_file, 20)}") from None


def start(layout: Layout) -> dict[str, Any]:
    ensure_packages()
    state = load_state(layout)
    want = fingerprint(layout)
    if state and state.get("fingerprint") == want and current_pid(layout) and not answers(layout):
        return state
    stop(layout)
    if layout.dir.exists():
        shutil.rmtree(layout.dir)
    layout.data.mkdir(mode=0o700, parents=True)
    make_tls_files(layout.tls, hosts=(HOST, "localhost"), ca_common_name="postroom LDAP test CA")
    layout.conf.write_text(
        SLAPD_CONF.format(
            schema=SCHEMA_DIR, modules=MODULE_DIR, dir=layout.dir, tls=layout.tls,
            base=BASE_DN, admin=ADMIN_DN, admin_password=ADMIN_PASSWORD, people=PEOPLE_DN,
            reader=READER_DN,
        )
    )  # fmt: skip
    ldif = layout.dir / "entries.ldif"
    ldif.write_text(entries_ldif(), encoding="utf-8")
    added = subprocess.run(
        [SLAPADD, "-q", "-f", str(layout.conf), "-l", str(ldif)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if added.returncode != 0:
        raise Failure(f"slapadd exited {added.returncode}: {added.stderr.strip()[-2000:]}")
    log(f"state in {layout.dir}")
    launch(layout)
    state = describe(layout)
    state["fingerprint"] = want
    state["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    layout.state_file.write_text(json.dumps(state, indent=2) + "\n")
    return state


def env_lines(state: dict[str, Any]) -> str:
    return "\n".join([
        f"export {ENV_BASE}={state['base']}",
        f"export {ENV_STATE}={state['dir']}/state.json",
        f"export POSTROOM_TEST_LDAP_URL={state['url']}",
        f"export POSTROOM_TEST_LDAPS_URL={state['ldaps_url']}",
        f"export POSTROOM_TEST_LDAP_BIND_DN='{state['bind_dn']}'",
        f"export POSTROOM_TEST_LDAP_BIND_PASSWORD={state['bind_password']}",
        f"export POSTROOM_TEST_LDAP_BASE='{state['search_base']}'",
        f"export POSTROOM_TEST_LDAP_CA={state['ca_file']}",
    ])  # fmt: skip


@contextlib.contextmanager
def locked(layout: Layout, timeout: float = 300.0) -> Any:
    """Serialise start/stop of one base (several test runs may start it at once)."""
    layout.lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(layout.lock_file, "a") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Failure(f"{layout.lock_file} stayed locked for {timeout:.0f}s") from None
                time.sleep(0.1)  # pacing the poll (the deadline above bounds it)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# -- for the tests: the same slapd stopped and started again


def layout_of(state: dict[str, Any]) -> Layout:
    return Layout(int(state["base"]))


def stop_slapd(state: dict[str, Any]) -> None:
    """Stop the slapd of *state* (its data and certificates stay)."""
    layout = layout_of(state)
    with locked(layout):
        stop(layout)


def run_slapd(state: dict[str, Any]) -> None:
    """Start the slapd of *state* again on its data and certificates (no-op when it runs)."""
    layout = layout_of(state)
    with locked(layout):
        if current_pid(layout) is None:
            launch(layout)


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    as_json = "--json" in argv[2:]
    try:
        layout = Layout(port_base())
        if command in ("start", "stop") and os.geteuid() != 0:
            raise Failure("must run as root: it may install slapd and ldap-utils")
        if command == "start":
            with locked(layout):
                state = start(layout)
            print(json.dumps(state, indent=2) if as_json else env_lines(state))
        elif command == "stop":
            with locked(layout):
                stop(layout)
            log("stopped")
        elif command == "status":
            pid = current_pid(layout)
            problem = answers(layout) if pid else "stopped"
            print(f"slapd {layout.urls} pid {pid} {problem or 'answers'}; state {layout.dir}")
            return 0 if problem is None else 3
        elif command == "env":
            state = load_state(layout) or describe(layout)
            print(json.dumps(state, indent=2) if as_json else env_lines(state))
            if current_pid(layout) is None or answers(layout):
                log("warning: not running; run `start`")
                return 3
        else:
            print("\n\n".join((__doc__ or "").split("\n\n")[1:3]), file=sys.stderr)
            return 2
    except Failure as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
