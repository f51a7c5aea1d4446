"""The ``postroom`` command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import ROOT

POSTROOM = str(Path(sys.executable).with_name("postroom"))
SCHEMA = json.loads((ROOT / "kernel" / "postroom" / "schemas" / "interaction.json").read_text())


def postroom(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [POSTROOM, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=600,
        input=stdin if stdin is not None else "",
    )  # fmt: skip


def json_lines(stdout: str) -> list[dict]:
    rows = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    for row in rows:
        jsonschema.validate(row, SCHEMA)
    return rows


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["check"],
        ["plugins"],
        ["ingest"],
        ["interactions"],
        ["interactions", "list"],
        ["interactions", "show"],
        ["quarantine"],
        ["quarantine", "list"],
        ["quarantine", "replay"],
        ["suppression"],
        ["suppression", "list"],
        ["suppression", "add"],
        ["suppression", "clear"],
        ["send"],
        ["config-reference"],
        ["erase"],
        ["purge"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = postroom(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: postroom" in result.stdout


def test_run_once_then_list_as_json(quickstart: Path) -> None:
    result = postroom("run", "-c", str(quickstart), "--once")
    assert result.returncode == 0, result.stderr
    listed = postroom("interactions", "list", "-c", str(quickstart), "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json_lines(listed.stdout)
    assert len(rows) == 4
    assert {r["handoff_state"] for r in rows} == {"done"}
    table = postroom("interactions", "list", "-c", str(quickstart))
    assert "Prüfbericht März.pdf" in table.stdout
    one = postroom("interactions", "show", "-c", str(quickstart), rows[0]["id"])
    assert one.returncode == 0 and rows[0]["id"] in one.stdout


def test_check_reports_file_line_option_and_suggestion(quickstart: Path) -> None:
    text = quickstart.read_text().replace("default-domain:", "defualt-domain:")
    quickstart.write_text(text)
    result = postroom("check", "-c", str(quickstart))
    assert result.returncode == 2
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "defualt-domain" in t)
    assert f"{quickstart}:{line}" in result.stderr
    assert "defualt-domain" in result.stderr and "did you mean 'default-domain'" in result.stderr


@pytest.mark.parametrize("token", ["short", "sixteen chars ok", " " * 20])
def test_check_refuses_a_weak_api_token_with_its_line(quickstart: Path, token: str) -> None:
    quickstart.write_text(quickstart.read_text() + f"http:\n  port: 7999\n  token: '{token}'\n")
    result = postroom("check", "-c", str(quickstart))
    assert result.returncode == 2
    line = len(quickstart.read_text().splitlines())
    assert f"{quickstart}:{line}: option 'http.token'" in result.stderr
    assert token.strip() == "" or token not in result.stderr  # a secret is never printed


def test_check_accepts_the_quickstart(quickstart: Path) -> None:
    result = postroom("check", "-c", str(quickstart))
    assert result.returncode == 0, result.stderr
    assert "mailbox support: type maildir" in result.stdout


def test_unknown_driver_is_a_configuration_error(quickstart: Path) -> None:
    text = quickstart.read_text().replace("type: maildir", "type: maildri")
    quickstart.write_text(text)
    result = postroom("check", "-c", str(quickstart))
    assert result.returncode == 2
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "type: maildri" in t)
    from postroom.drivers import driver_names
    from postroom.interfaces import SOURCES_GROUP

    installed = ", ".join(driver_names(SOURCES_GROUP))  # maildir, and each plugin's
    assert "maildir" in installed
    assert result.stderr == (
        f"error: {quickstart}:{line}: option 'pop-client[support].type': no source driver "
        f"'maildri' (installed: {installed}); did you mean 'maildir'?\n"
    )


def test_secret_never_printed(quickstart: Path) -> None:
    text = quickstart.read_text() + "secret-google:\n  password: ${GOOGLE_SECRET}\n  pasword: x\n"
    quickstart.write_text(text)
    result = postroom("check", "-c", str(quickstart), env={"GOOGLE_SECRET": "hunter2-topsecret"})
    assert result.returncode == 2
    assert "hunter2-topsecret" not in result.stderr + result.stdout


# ----------------------------------------------------------------- ingest


def corpus_files(corpus: Path) -> list[Path]:
    files: list[Path] = []
    for manifest in sorted(corpus.glob("*.json")):
        entries = json.loads(manifest.read_text())
        if isinstance(entries, list):
            files += [corpus / e["file"] for e in entries if "file" in e]
    assert len(files) > 600
    return files


def test_ingest_over_the_whole_corpus(corpus: Path, tmp_path: Path) -> None:
    """Every corpus message gives at least one schema-valid line; raw bytes kept exactly."""
    files = corpus_files(corpus)
    site = tmp_path / "site.yaml"
    site.write_text("store: {driver: sqlite, path: corpus.db}\npop-client: []\n")
    result = postroom("ingest", "-c", str(site), "--json", *map(str, files))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json_lines(result.stdout)
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    assert set(by_source) == {str(f) for f in files}
    # byte-identical inputs: the later ones say duplicate_of
    first_by_hash: dict[str, str] = {}
    for f in files:
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        row = by_source[str(f)][0]
        if digest in first_by_hash:
            assert row["duplicate_of"] == first_by_hash[digest], f
        else:
            assert row["duplicate_of"] is None, f
            first_by_hash[digest] = row["id"]
    # raw bytes stored are identical to the input
    from postroom.store.sqlite import SQLiteStore

    store = SQLiteStore({"path": tmp_path / "corpus.db"})
    store.open()
    try:
        for f in files:
            row = by_source[str(f)][0]
            out = tmp_path / "raw.eml"
            with open(out, "wb") as fh:
                store.read_raw(row["duplicate_of"] or row["id"], fh)
            assert out.read_bytes() == f.read_bytes(), f
    finally:
        store.close()


def test_ingest_without_config_uses_a_throwaway_store(quickstart: Path) -> None:
    mail = sorted((quickstart.parent / "maildir" / "new").iterdir())
    for _ in range(2):  # a throwaway store: nothing is a duplicate the second time
        result = postroom("ingest", "--json", *map(str, mail))
        assert result.returncode == 0, result.stderr
        rows = json_lines(result.stdout)
        assert len(rows) == 4 and all(r["duplicate_of"] is None for r in rows)
    reply = next(r for r in rows if r["subject"].startswith("Re:"))
    original = next(r for r in rows if r["message_id"] == "<4711-report@customer.example>")
    assert reply["parent_id"] == original["id"]
    assert original["from"] == "juergen.mueller@customer.example"


def test_ingest_with_a_site_store_recognises_duplicates(quickstart: Path) -> None:
    mail = str(next((quickstart.parent / "maildir" / "new").iterdir()))
    first = json_lines(postroom("ingest", "-c", str(quickstart), "--json", mail).stdout)
    second = json_lines(postroom("ingest", "-c", str(quickstart), "--json", mail).stdout)
    assert second[0]["duplicate_of"] == first[0]["id"]


def test_ingest_unreadable_file_fails_with_status_1(tmp_path: Path) -> None:
    result = postroom("ingest", str(tmp_path / "missing.eml"))
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path / 'missing.eml'}: No such file or directory\n"


# ------------------------------------------------------------ broken plugins


def fake_distribution(where: Path, name: str, entry_points: str, modules: dict[str, str]) -> None:
    """An installed distribution on a path entry: what pip would leave."""
    info = where / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for module, source in modules.items():
        (where / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def broken_plugin(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site-packages"
    fake_distribution(
        site,
        "postroom-broken",
        """
        [postroom.plugins]
        broken = broken_plugin
        """,
        {"broken_plugin": "raise ImportError('needs libfoo 2.0')\n"},
    )
    return {"PYTHONPATH": str(site)}


def test_broken_plugin_is_a_warning_without_plugins_key(quickstart: Path, broken_plugin) -> None:
    result = postroom("run", "-c", str(quickstart), "--once", env=broken_plugin)
    assert result.returncode == 0, result.stderr
    assert "broken" in result.stderr and "postroom-broken" in result.stderr
    assert "needs libfoo 2.0" in result.stderr
    listing = postroom("plugins", env=broken_plugin)
    assert "LOAD ERROR" in listing.stdout and "needs libfoo 2.0" in listing.stdout


def test_broken_plugin_listed_is_fatal(quickstart: Path, broken_plugin) -> None:
    quickstart.write_text(quickstart.read_text() + "plugins: [broken]\n")
    result = postroom("run", "-c", str(quickstart), "--once", env=broken_plugin)
    assert result.returncode == 2
    assert "'broken'" in result.stderr and "postroom-broken" in result.stderr
    assert "ImportError: needs libfoo 2.0" in result.stderr


def test_plugin_not_installed_is_fatal(quickstart: Path) -> None:
    quickstart.write_text(quickstart.read_text() + "plugins: [no-such-plugin]\n")
    result = postroom("check", "-c", str(quickstart))
    assert result.returncode == 2
    assert "no-such-plugin" in result.stderr and "not installed" in result.stderr


def test_driver_not_implementing_its_interface_is_refused(quickstart: Path, tmp_path) -> None:
    site = tmp_path / "sp"
    fake_distribution(
        site,
        "postroom-halfsource",
        """
        [postroom.sources]
        half = half_source:HalfSource
        """,
        {"half_source": "class HalfSource:\n    def connect(self): pass\n"},
    )
    quickstart.write_text(quickstart.read_text().replace("type: maildir", "type: half"))
    result = postroom("check", "-c", str(quickstart), env={"PYTHONPATH": str(site)})
    assert result.returncode == 2
    assert "postroom.sources" in result.stderr and "postroom-halfsource" in result.stderr
    assert "ISource" in result.stderr


def test_plugins_lists_builtins_and_drivers() -> None:
    result = postroom("plugins")
    assert result.returncode == 0, result.stderr
    for expected in ("core-parser", "maildir", "file", "sqlite", "postroom.sources"):
        assert expected in result.stdout
    assert "this kernel provides postroom.api 1." in result.stderr


def test_plugins_shows_the_api_each_was_written_for() -> None:
    from postroom.api import VERSION

    result = postroom("plugins", "--json")
    assert result.returncode == 0, result.stderr
    apis = {
        (row["kind"], row["name"]): row["api"]
        for row in map(json.loads, result.stdout.splitlines())
    }
    assert apis[("builtin", "core-parser")] == VERSION
    assert apis[("hook", "dsn")] == "1.2"  # declared in postroom_dsn/__init__.py
    assert apis[("postroom.sources", "imap")] == "1.0"
    assert apis[("postroom.sources", "maildir")] == VERSION  # the kernel's own driver


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str,
    url: str,
    token: str | None = None,
    body: object = None,
) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_run_serves_the_http_api_and_stops_cleanly_on_sigterm(quickstart: Path) -> None:
    import signal
    import time

    port = free_port()
    token = "t0ken-for-the-tests"
    quickstart.write_text(
        quickstart.read_text() + f"http:\n  port: {port}\n  token: ${{API_TOKEN}}\n"
    )
    proc = subprocess.Popen(
        [POSTROOM, "run", "-c", str(quickstart)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "API_TOKEN": token},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                code, raw = http("GET", f"{base}/health", token)
                body = json.loads(raw)
                if body["mailboxes"]["support"]["ingested"] == 4:
                    break
            except OSError:
                # not listening yet: wait a little for the process (it must not exit)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.1)
        assert body is not None, "the health endpoint never answered"
        assert code == 200 and body["status"] == "ok"
        assert body["mailboxes"]["support"]["ingested"] == 4

        # no token: the bare answer for load balancers; a wrong one: refused
        assert http("GET", f"{base}/health") == (200, b'{"status": "up"}')
        assert http("GET", f"{base}/metrics")[0] == 401
        assert http("GET", f"{base}/health", "wrong")[0] == 401

        code, raw = http("GET", f"{base}/metrics", token)
        assert code == 200
        assert b'postroom_messages_ingested_total{mailbox="support"} 4.0' in raw
        assert b'postroom_mailbox_connected{mailbox="support"} 1.0' in raw

        code, raw = http(
            "POST",
            f"{base}/send",
            token,
            {
                "to": ["juergen.mueller@customer.example"],
                "subject": "Ihr Prüfbericht",
                "text": "Danke!",
                "headers": {"X-Ticket": "4711"},
            },
        )
        assert code == 202, raw
        queued = json.loads(raw)
        jsonschema.validate(queued, SCHEMA)
        assert queued["type"] == "Outbound" and queued["message_id"].startswith("<")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            code, raw = http("GET", f"{base}/interactions/{queued['id']}", token)
            shown = json.loads(raw)
            if shown["outbox"]["state"] == "sent":
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
        assert shown["status"] == "Sent" and shown["outbox"]["state"] == "sent"
        # the gauge is counted after the outbox pass that sent it: wait for that pass
        sent_gauge = b'postroom_outbox_depth{state="sent"} 1.0'
        while time.monotonic() < deadline:
            metrics = http("GET", f"{base}/metrics", token)[1]
            if sent_gauge in metrics:
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
        assert sent_gauge in metrics
        eml = (quickstart.parent / "outbox").glob("*.eml")
        assert any(b"X-Ticket: 4711" in p.read_bytes() for p in eml)

        code, raw = http("POST", f"{base}/send", token, {"subject": "no recipient"})
        assert code == 400 and json.loads(raw) == {
            "error": "to: is required unless in_reply_to names the mail answered",
            "field": "to",
        }
        code, raw = http(
            "POST", f"{base}/send", token, {"to": ["a@b.c"], "headers": {"X": "a\r\nBcc: x"}}
        )
        assert code == 400 and json.loads(raw)["field"] == "headers"
        assert b"control character" in raw
        assert http("GET", f"{base}/interactions/nope", token)[0] == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and token not in err


def test_api_reachable_from_other_hosts_needs_a_token(quickstart: Path) -> None:
    quickstart.write_text(quickstart.read_text() + "http: {bind: 0.0.0.0, port: 1}\n")
    result = postroom("run", "-c", str(quickstart))
    assert result.returncode == 2
    assert "http.token" in result.stderr


def test_send_queues_for_the_gateway_and_now_sends_when_none_runs(quickstart: Path) -> None:
    """Plain ``send`` only queues (the gateway owning the store sends it); ``--now``
    takes the store's lock and sends what is queued, the earlier request included."""
    queued = postroom(
        "send", "-c", str(quickstart), "--to", "a@example.com", "--subject", "Hallo",
        "--text", "Grüße", "--header", "X-Test: 1",
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    first_id, first_mid, status = queued.stdout.split()
    assert status == "Queued"
    assert "the gateway running on this store ('postroom run') sends it" in queued.stderr
    assert not (quickstart.parent / "outbox").exists()  # nothing sent from here

    result = postroom("send", "-c", str(quickstart), "--to", "b@example.com", "--now")
    assert result.returncode == 0, result.stderr
    _interaction_id, message_id, status = result.stdout.split()
    assert status == "Sent"
    sent = [p.read_bytes() for p in (quickstart.parent / "outbox").glob("*.eml")]
    assert len(sent) == 2
    assert any(first_mid.encode() in eml and b"X-Test: 1" in eml for eml in sent)
    assert any(message_id.encode() in eml for eml in sent)
    shown = json.loads(postroom("interactions", "show", "-c", str(quickstart), first_id).stdout
                       .split("\n\n")[0])
    assert shown["status"] == "Sent"
    bad = postroom(
        "send", "-c", str(quickstart), "--to", "a@example.com", "--header", "Message-ID: <mine@x>"
    )
    assert bad.returncode == 2 and "--header: the header 'Message-ID' is written by" in bad.stderr


def test_send_with_plugin_options_and_as_automatic_mail(quickstart: Path) -> None:
    result = postroom(
        "send", "-c", str(quickstart), "--to", "a@example.com", "--text", "Thanks, we got it",
        "--from", "support@centre.example",
        "--option", 'dsn={"notify": ["FAILURE", "DELAY"], "ret": "HDRS"}',
        "--option", "mdn=true", "--automatic", "--now",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    eml = next((quickstart.parent / "outbox").glob("*.eml")).read_bytes()
    assert b"Auto-Submitted: auto-replied" in eml  # the kernel, for automatic mail
    assert b"Disposition-Notification-To: support@centre.example" in eml  # the mdn plugin
    envelope = json.loads(next((quickstart.parent / "outbox").glob("*.envelope.json")).read_text())
    assert "NOTIFY=FAILURE,DELAY" in json.dumps(envelope)  # the dsn plugin
    bad = postroom("send", "-c", str(quickstart), "--to", "a@x.example", "--option", "dsn")
    assert bad.returncode == 2 and "--option: 'dsn': expected NAME=JSON" in bad.stderr


def test_the_issue_shape_of_a_site_with_real_mailboxes_checks(tmp_path: Path) -> None:
    """The configuration shape sites write for IMAP/POP3 and SMTP, as written."""
    site = tmp_path / "site.yaml"
    site.write_text(
        textwrap.dedent("""\
        pop-client:
          - name: support
            type: imap                    # or pop3
            server: mail.example.com
            port: 993
            pop-connection-security: ssl  # none | starttls | ssl
            mailbox: agent1
            password: ${AGENT1_PASSWORD}
            folder-path: INBOX
          - name: sales
            type: pop3
            server: mail.example.com
            pop-connection-security: starttls
            mailbox: agent2
            password: ${AGENT1_PASSWORD}
            mail.pop3.disabletop: true
        smtp-client:
          server-type: smtp
          server: mail.example.com
          port: 587
          smtp-connection-security: starttls
          enable-authentication: true
          user: agent1
          password: ${AGENT1_PASSWORD}
        """)
    )
    result = postroom("check", "-c", str(site), env={"AGENT1_PASSWORD": "pw-never-shown"})
    assert result.returncode == 0, result.stderr
    assert "mailbox support: type imap" in result.stdout
    assert "mailbox sales: type pop3" in result.stdout
    assert "smtp-client: smtp" in result.stdout
    assert "pw-never-shown" not in result.stdout + result.stderr


def test_show_raw_writes_the_exact_bytes(quickstart: Path) -> None:
    assert postroom("run", "-c", str(quickstart), "--once").returncode == 0
    rows = json_lines(postroom("interactions", "list", "-c", str(quickstart), "--json").stdout)
    garbage = next(
        r
        for r in rows
        if "_WrappingMessageReason" in r["attached_data"] and r["subject"] == "Unknown subject"
    )
    shown = subprocess.run(
        [POSTROOM, "interactions", "show", "-c", str(quickstart), "--raw", garbage["id"]],
        capture_output=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    original = quickstart.parent / "maildir" / "cur"
    assert shown.stdout in {p.read_bytes() for p in original.iterdir() if p.is_file()}
    assert b"\x00" in shown.stdout


def test_suppression_list_add_clear(quickstart: Path) -> None:
    config = str(quickstart)
    assert postroom("suppression", "list", "-c", config).stdout.strip() == (
        "the suppression list is empty"
    )
    added = postroom("suppression", "add", "-c", config, "Gone@Example.com", "--reason", "moved")
    assert added.returncode == 0, added.stderr
    listed = postroom("suppression", "list", "-c", config, "--json")
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["address"], row["reason"], row["hits"]) == ("gone@example.com", "moved", 1)
    cleared = postroom("suppression", "clear", "-c", config, "GONE@example.com", "nobody@x.example")
    assert cleared.returncode == 1
    assert "cleared GONE@example.com" in cleared.stdout
    assert "nobody@x.example is not on the suppression list" in cleared.stderr
    assert "empty" in postroom("suppression", "list", "-c", config).stdout


def test_the_thread_pool_has_the_configured_size(quickstart: Path) -> None:
    """``gateway.thread-pool-size`` sizes the pool a kernel makes for itself (the
    command line's kernels, and an embedding application's that passes no runner);
    no thread runs before the reactor does."""
    from twisted.internet.testing import MemoryReactorClock

    from postroom.kernel import Kernel
    from postroom.runner import ThreadPoolRunner

    quickstart.write_text(quickstart.read_text() + "gateway: {thread-pool-size: 3}\n")
    reactor = MemoryReactorClock()
    kernel = Kernel(quickstart, reactor=reactor)
    assert isinstance(kernel.runner, ThreadPoolRunner)
    pool = kernel.runner.pool
    assert (pool.min, pool.max, pool.started) == (0, 3, False)
    assert [hook[0] for hook in reactor.whenRunningHooks] == [pool.start]
    assert pool.stop in [t[0] for t in reactor.triggers["during"]["shutdown"]]


def test_ingest_json_offers_safe_attachment_names(tmp_path: Path) -> None:
    """The JSON the CLI and the HTTP API print (one function: output.interaction_json)."""
    eml = tmp_path / "hostile.eml"
    eml.write_bytes(
        b"From: a@example.org\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b\r\nContent-Type: text/plain\r\n"
        b'Content-Disposition: attachment; filename="../../etc/passwd"\r\n\r\nroot\r\n'
        b"--b\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''invoice%E2%80%AEfdp.exe\r\n\r\n"
        b"%PDF\r\n--b--\r\n"
    )
    result = postroom("ingest", "--json", str(eml))
    assert result.returncode == 0, result.stderr
    [row] = json_lines(result.stdout)  # schema-valid
    assert [(a["filename"], a["safe_filename"]) for a in row["attachments"]] == [
        ("../../etc/passwd", "_.._etc_passwd"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
    ]
