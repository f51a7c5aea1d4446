"""End-to-end throughput of postroom against a raw baseline measured in the same run.

    .venv/bin/python bench/ingest.py [--messages 2000] [--latency 30] [--outbound 300]
    [--repeat 3]  (or: make bench)

Against the real Dovecot and Postfix of the test servers
(``contrib/scripts/mail-test-servers``):

* **inbound**: a mailbox seeded with realistic messages (5-20 KB multipart,
  one in ten with a 200 KB-2 MB attachment). Baseline: the standard library's
  ``imaplib`` fetching them in batches of 100 over STARTTLS, parsing each with
  ``email`` (``policy.default``) and inserting one SQLite row per message
  (WAL, ``synchronous=FULL``, a commit per message, as durable as postroom's
  store). Then ``postroom run --once`` ingests the same mailbox (delete after
  commit), process start-up included. Printed: messages/s and MB/s of each,
  their ratio, postroom's peak RSS.
* **latency**: a gateway idling in IMAP IDLE (poll interval one hour) gets
  messages delivered one at a time; arrival-to-commit p50/p95.
* **outbound**: ``smtplib`` sending N messages over one reused connection vs
  postroom's outbox sending the same N through its SMTP driver; ratio.
* **over the contract fakes** (informational, ``--fakes``): the same messages
  imported by ``postroom run --once`` from the Microsoft Graph fake
  (``tests/fakes/graph``: delta pages, ``$value``, ``$batch`` moves; tokens from
  the test identity provider) and from the EWS fake (``tests/fakes/ews``:
  SyncFolderItems, GetItem with MimeContent, DeleteItem; basic auth), beside
  the IMAP figure. The fake is a thread
  in this process, not Exchange: the figure shows postroom's own cost per
  message over that protocol, not what Exchange Online would allow.

Numbers are ratios against a baseline measured in the same run, so they mean
the same on a slow or a fast machine.
"""

from __future__ import annotations

import argparse
import email
import imaplib
import json
import random
import smtplib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.servers import MailServers, start_mail_servers  # noqa: E402

POSTROOM = str(Path(sys.executable).with_name("postroom"))
INBOX_USER = "bulk1"
LATENCY_USER = "bulk2"
WORDS = [
    "order",
    "invoice",
    "delivery",
    "refund",
    "account",
    "password",
    "contract",
    "meeting",
    "schedule",
    "payment",
    "address",
    "update",
    "question",
    "urgent",
    "thanks",
    "please",
    "customer",
    "support",
]


def realistic_messages(count: int, seed: int = 4711) -> list[bytes]:
    """Deterministic customer mail: text + HTML alternatives, some attachments."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        msg = EmailMessage()
        msg["From"] = f"Customer {n} <customer{n}@shop.example>"
        msg["To"] = "bulk1@example.test"
        msg["Subject"] = " ".join(rng.choices(WORDS, k=5)).capitalize() + f" #{n}"
        msg["Message-ID"] = f"<bench-{seed}-{n}@shop.example>"
        msg["Date"] = "Mon, 02 Nov 2026 09:15:00 +0100"
        size = rng.randint(5_000, 20_000)
        words = []
        while sum(len(w) + 1 for w in words) < size // 2:
            words.append(rng.choice(WORDS))
        text = textwrap.fill(" ".join(words), 76)
        msg.set_content(text)
        msg.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html")
        if n % 10 == 0:
            blob = rng.randbytes(rng.randint(200_000, 2_000_000))
            msg.add_attachment(
                blob, maintype="application", subtype="pdf", filename=f"scan-{n}.pdf"
            )
        out.append(msg.as_bytes(policy=policy.SMTP))
    return out


def baseline_inbound(servers: MailServers, db: Path) -> tuple[int, int, float]:
    """imaplib + email + one SQLite row per message: (messages, bytes, seconds)."""
    started = time.perf_counter()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE m (uid INTEGER PRIMARY KEY, subject TEXT, raw BLOB)")
    imap = imaplib.IMAP4(servers.host, servers.ports["imap"])
    imap.starttls(ssl_context=servers.tls_context())
    imap.login(INBOX_USER, servers.users[INBOX_USER])
    imap.select("INBOX", readonly=True)
    _, data = imap.uid("SEARCH", "ALL")
    uids = data[0].split()
    count = total = 0
    for i in range(0, len(uids), 100):
        batch = b",".join(uids[i : i + 100])
        _, fetched = imap.uid("FETCH", batch, "(UID BODY.PEEK[])")
        for item in fetched:
            if not isinstance(item, tuple):
                continue
            raw = item[1]
            parsed = email.message_from_bytes(raw, policy=policy.default)
            for _part in parsed.walk():
                pass
            uid = int(item[0].split(b"UID ")[1].split()[0])
            conn.execute("INSERT INTO m VALUES (?, ?, ?)", (uid, str(parsed["subject"]), raw))
            conn.commit()
            count += 1
            total += len(raw)
    imap.logout()
    conn.close()
    return count, total, time.perf_counter() - started


def site_config(servers: MailServers, folder: Path, user: str, extra: str = "") -> Path:
    config = folder / "site.yaml"
    config.write_text(f"""\
store: {{driver: sqlite, path: {folder / "postroom.db"}}}
email-processing:
  maximum-msg-size: 60MB
pop-client:
  - name: {user}
    type: imap
    server: {servers.host}
    port: {servers.ports["imap"]}
    pop-connection-security: starttls
    ca-file: {servers.ca_file}
    mailbox: {user}
    password: {servers.users[user]}
    folder-path: INBOX
{extra}""")
    return config


#: Starts the measured command and reports the peak RSS of it and its worker
#: processes. A process forked straight from this (large) bench process would
#: carry the bench's own peak in ru_maxrss; a fresh launcher's children do not.
LAUNCHER = """
import os, resource, subprocess, sys
status = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(status)
"""


def run_measured(args: list[str]) -> tuple[int, float, int]:
    """Run a command; (exit status, seconds, largest peak RSS in KiB among the
    command and its worker processes)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", LAUNCHER, rss.name, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stderr.decode(errors="replace")[-3000:], file=sys.stderr)
        peak = int(rss.read() or 0)
    return done.returncode, elapsed, peak


def stored_count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM interactions").fetchone()[0])


def latency(servers: MailServers, folder: Path, samples: int) -> list[float]:
    """Deliver one message at a time to a gateway in IDLE; arrival to commit."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    servers.clear(LATENCY_USER)
    folder.mkdir(exist_ok=True)
    config = site_config(
        servers, folder, LATENCY_USER, f"    poll-interval: '01:00:00'\nhttp: {{port: {port}}}\n"
    )
    proc = subprocess.Popen(
        [POSTROOM, "run", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    db = folder / "postroom.db"
    pacer = threading.Event()  # never set: paces polling with a deadline
    try:
        # wait until the gateway is up and idling (health answers, mailbox connected)
        import urllib.request

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    health = json.loads(r.read())["mailboxes"][LATENCY_USER]
                    if health["last_success"]:  # first (empty) pass done: now in IDLE
                        break
            except OSError:
                pass
            pacer.wait(0.05)
        results = []
        for n in range(samples):
            message = realistic_messages(1, seed=9000 + n)[0]
            started = time.perf_counter()
            servers.deliver(LATENCY_USER, message)
            want = n + 1
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if db.exists() and stored_count(db) >= want:
                    break
                pacer.wait(0.002)
            results.append(time.perf_counter() - started)
        return results
    finally:
        proc.terminate()
        proc.wait(timeout=60)


OUTBOUND_SCRIPT = """
import sys, time
from twisted.internet import defer, task
from postroom.kernel import Kernel
from postroom.model import OutboundRequest
from postroom.runner import ThreadPoolRunner
from postroom.services.gateway import Gateway
from postroom.services.outbound import queue_send

async def main(reactor, config, count, to, sender):
    kernel = Kernel(config, reactor=reactor, runner=ThreadPoolRunner.create(reactor))
    await kernel.open()
    for n in range(count):
        await queue_send(kernel, OutboundRequest(to=[to], from_addr=sender,
                         subject=f"bench {n}", text="Hello.\\n" * 200))
    await kernel.close()
    kernel = Kernel(config, reactor=reactor, runner=ThreadPoolRunner.create(reactor))
    gateway = Gateway(kernel, once=True, mailboxes=False)
    started = time.perf_counter()
    gateway.startService()
    ok = await gateway.outbound.finished
    elapsed = time.perf_counter() - started
    await gateway.stopService()
    print(elapsed, ok)

task.react(lambda r: defer.ensureDeferred(main(r, sys.argv[1], int(sys.argv[2]), sys.argv[3],
                                                  sys.argv[4])))
"""


def outbound(servers: MailServers, folder: Path, count: int) -> tuple[float, float]:
    """(smtplib seconds, postroom seconds) for *count* messages to agent2."""
    body = ("Hello.\n" * 200).encode()
    sender, to = servers.address("agent1"), servers.address("agent2")
    started = time.perf_counter()
    with smtplib.SMTP(servers.host, servers.ports["submission"], timeout=60) as smtp:
        smtp.starttls(context=servers.tls_context())
        smtp.login("agent1", servers.users["agent1"])
        for n in range(count):
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = sender, to, f"baseline {n}"
            msg.set_content(body.decode())
            smtp.send_message(msg)
    baseline = time.perf_counter() - started
    config = folder / "out.yaml"
    config.write_text(f"""\
store: {{driver: sqlite, path: {folder / "out.db"}}}
smtp-client:
  server-type: smtp
  server: {servers.host}
  port: {servers.ports["submission"]}
  smtp-connection-security: starttls
  ca-file: {servers.ca_file}
  enable-authentication: true
  user: agent1
  password: {servers.users["agent1"]}
""")
    done = subprocess.run(
        [sys.executable, "-c", OUTBOUND_SCRIPT, str(config), str(count), to, sender],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    elapsed, ok = done.stdout.split()
    if ok != "True":
        raise RuntimeError("postroom did not send every message")
    return baseline, float(elapsed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--latency", type=int, default=30, help="latency samples")
    parser.add_argument("--outbound", type=int, default=300, help="outbound messages")
    parser.add_argument(
        "--repeat", type=int, default=3, help="inbound rounds; the median ratio is the figure"
    )
    parser.add_argument(
        "--fakes", type=int, default=1, help="1: also import over the Graph and EWS fakes"
    )
    args = parser.parse_args()
    servers = start_mail_servers()
    messages = realistic_messages(args.messages)
    total_mb = sum(map(len, messages)) / 1e6
    ratios: list[float] = []
    ok = True
    for round_no in range(1, args.repeat + 1):
        print(
            f"round {round_no}: seeding {INBOX_USER} with {len(messages)} messages "
            f"({total_mb:.1f} MB)..."
        )
        with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp:
            ratio, round_ok = inbound_round(servers, Path(tmp), messages)
        ratios.append(ratio)
        ok = ok and round_ok
    print(
        f"inbound  median ratio of {len(ratios)} rounds: {statistics.median(ratios):.2f}  "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
    )
    if args.fakes:
        with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp:
            ok = graph_round(servers, Path(tmp), messages) and ok
        with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp:
            ok = ews_round(Path(tmp), messages) and ok
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp:
        folder = Path(tmp)
        lat = latency(servers, folder / "lat", args.latency) if args.latency else []
        if lat:
            q = statistics.quantiles(lat, n=20)
            print(
                f"latency  IDLE arrival->commit over {len(lat)}: p50 "
                f"{statistics.median(lat) * 1000:.0f} ms, p95 {q[18] * 1000:.0f} ms"
            )
        if args.outbound:
            base_o, post_o = outbound(servers, folder, args.outbound)
            print(
                f"outbound baseline smtplib (one connection): {args.outbound / base_o:7.1f} "
                f"msg/s; postroom outbox: {args.outbound / post_o:7.1f} msg/s; ratio "
                f"{base_o / post_o:.2f}"
            )
    return 0 if ok else 1


def inbound_round(servers: MailServers, folder: Path, messages: list[bytes]) -> tuple[float, bool]:
    """One inbound measurement: the baseline, then postroom, on the same mailbox."""
    servers.clear(INBOX_USER)
    servers.deliver_many(INBOX_USER, messages)
    n, size, base_s = baseline_inbound(servers, folder / "baseline.db")
    status, post_s, rss_kib = run_measured(
        [POSTROOM, "run", "-c", str(site_config(servers, folder, INBOX_USER)), "--once"]
    )
    stored = stored_count(folder / "postroom.db")
    left = servers.message_count(INBOX_USER)
    base_rate, post_rate = n / base_s, stored / post_s
    print(
        f"inbound  baseline (imaplib+email+sqlite): {base_rate:8.1f} msg/s "
        f"{size / 1e6 / base_s:7.2f} MB/s  ({n} in {base_s:.1f} s)"
    )
    print(
        f"inbound  postroom run --once:             {post_rate:8.1f} msg/s "
        f"{size / 1e6 / post_s:7.2f} MB/s  ({stored} in {post_s:.1f} s, exit {status}, "
        f"{left} left on the server)"
    )
    print(
        f"inbound  ratio postroom/baseline: {post_rate / base_rate:.2f}   "
        f"peak RSS {rss_kib / 1024:.0f} MiB (largest of the gateway and its parse workers)"
    )
    return post_rate / base_rate, status == 0 and stored == n and left == 0


def graph_round(servers: MailServers, folder: Path, messages: list[bytes]) -> bool:
    """The messages imported over the Graph contract fake (informational)."""
    from tests.fakes.graph import GraphFake, introspecting
    from tests.integration.oauth import OAuthServers

    oauth = OAuthServers(servers.state)
    world = oauth.world
    user = "alice@contoso.test"
    validate = introspecting(oauth.idp_url, oauth.idp_ca_file)
    with GraphFake(folder / "graph-tls", validate=validate) as graph:
        for message in messages:
            graph.add_message(user, "Inbox", message)
        graph.folder(user, "Inbox/Done")
        config = folder / "site.yaml"
        config.write_text(f"""\
store: {{driver: sqlite, path: {folder / "postroom.db"}}}
email-processing: {{maximum-msg-size: 60MB}}
secret-daemon: {{password: {world["daemon_secret"]}}}
pop-client:
  - name: graph
    type: graph
    server: {graph.url}
    ca-file: {graph.ca_file}
    mailbox: {user}
    folder-path: Inbox
    after-processing: move
    move-to-folder: Inbox/Done
    auth: azure-client-credentials
    directory-id: {world["tenant"]}
    client-id: {world["daemon_app"]}
    tenant-authority: {oauth.idp_url}/
    token-ca-file: {oauth.idp_ca_file}
    secret: daemon
    scope: https://graph.microsoft.com/.default
""")
        status, seconds, rss_kib = run_measured([POSTROOM, "run", "-c", str(config), "--once"])
        stored = stored_count(folder / "postroom.db")
        size = sum(map(len, messages))
        print(
            f"graph    postroom run --once over the fake: {stored / seconds:8.1f} msg/s "
            f"{size / 1e6 / seconds:7.2f} MB/s  ({stored} in {seconds:.1f} s, exit {status}; "
            f"peak RSS {rss_kib / 1024:.0f} MiB; informational: a loopback fake, not Exchange)"
        )
        problems = list(graph.problems)
    if problems:
        print(f"graph    the fake refused {len(problems)} request(s): {problems[:3]}")
    return status == 0 and stored == len(messages) and not problems


def ews_round(folder: Path, messages: list[bytes]) -> bool:
    """The messages imported over the EWS contract fake (informational)."""
    from tests.fakes.ews.server import EWSFake

    with EWSFake(folder / "ews-tls") as ews:
        for message in messages:
            ews.store.add(message)
        config = folder / "site.yaml"
        config.write_text(f"""\
store: {{driver: sqlite, path: {folder / "postroom.db"}}}
email-processing: {{maximum-msg-size: 60MB}}
pop-client:
  - name: ews
    type: ews
    server: {ews.url}
    ca-file: {ews.ca_file}
    mailbox: {ews.user}
    password: {ews.password}
""")
        status, seconds, rss_kib = run_measured([POSTROOM, "run", "-c", str(config), "--once"])
        stored = stored_count(folder / "postroom.db")
        size = sum(map(len, messages))
        print(
            f"ews      postroom run --once over the fake: {stored / seconds:8.1f} msg/s "
            f"{size / 1e6 / seconds:7.2f} MB/s  ({stored} in {seconds:.1f} s, exit {status}; "
            f"peak RSS {rss_kib / 1024:.0f} MiB; informational: a loopback fake, not Exchange)"
        )
        problems = list(ews.protocol_errors)
    if problems:
        print(f"ews      the fake refused {len(problems)} request(s): {problems[:3]}")
    return status == 0 and stored == len(messages) and not problems


if __name__ == "__main__":
    sys.exit(main())
