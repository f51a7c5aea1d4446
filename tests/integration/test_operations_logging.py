"""The gateway's log against the real Dovecot: JSON lines from the start-up lines
on, and a refused login (a failed fetch) logged with its reason, never the password."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.integration.servers import MailServers, wait_for
from tests.integration.sites import Site, free_port, http
from tests.integration.test_one_gateway import PATIENCE, STOP_PATIENCE

WRONG_PASSWORD = "known-wrong-password-4711"


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_refused_login_is_logged_with_its_reason_and_without_the_password(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    site = Site(tmp_path, mail_servers)
    site.mailbox("agent7-box", "agent7", poll_interval="01:00:00")
    site.mailbox("wrong-box", "agent8", password=WRONG_PASSWORD, poll_interval="01:00:00")
    port = free_port()
    site.sections["http"] = {"port": port}
    site.sections["logging"] = {"level": "info", "format": "json"}
    log_path = tmp_path / "gateway.log"

    def connected_and_refused() -> bool:
        assert proc.poll() is None, log_path.read_text()[-5000:]
        try:
            _code, health = http(port, "/health")
        except OSError:
            return False
        boxes = health["mailboxes"]
        return bool(boxes["agent7-box"]["last_success"] and boxes["wrong-box"]["auth_failures"])

    with log_path.open("wb") as log:
        proc = site.start(log)
    try:
        wait_for(connected_and_refused, PATIENCE, "one mailbox connected, the other refused")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_PATIENCE)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log_path.read_text()[-5000:]
    text = log_path.read_text()
    assert WRONG_PASSWORD not in text and mail_servers.password("agent7") not in text
    lines = json_lines(log_path)
    by_message = {line["message"]: line for line in lines}
    imap = mail_servers.ports["imap"]
    where = f"server {mail_servers.host}:{imap}, account agent7, folder INBOX"
    ok = f"mailbox agent7-box: connected (imap, {where})"
    assert ok in by_message and by_message[ok]["mailbox"] == "agent7-box"
    assert sum("agent7-box: connected" in line["message"] for line in lines) == 1
    assert f"HTTP API listening on http://127.0.0.1:{port} (no token: loopback only)" in by_message
    refused = [line for line in lines if line.get("mailbox") == "wrong-box"]
    [line] = [x for x in refused if "login refused" in x["message"]]
    assert line["level"] == "error" and line["logger"] == "postroom.services.mailbox"
    # the server's own words are the reason
    assert "AUTHENTICATIONFAILED" in line["message"] or "uthentication failed" in line["message"]
    assert not [x for x in refused if "connected (" in x["message"]]


def test_a_fetch_cut_by_the_server_is_logged_once_with_its_reason(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    """The line dropped mid-fetch (a proxy that cuts it): one warning naming the
    mailbox, the message (its UID) and why; the next run takes everything."""
    from tests.integration.test_connection_drops import CuttingProxy, small

    ms = mail_servers
    ms.clear("agent9")
    ms.deliver_many("agent9", small(ms, "agent9", "cut", 3))
    site = Site(tmp_path, ms)
    site.sections["logging"] = {"level": "info", "format": "json"}
    with CuttingProxy((ms.host, ms.ports["imap_notls"]), times=1) as proxy:
        site.mailbox("cut", "agent9", port=proxy.port, security="none")
        first = site.run_once()
        assert first.returncode == 1, first.stderr
        lines = [json.loads(line) for line in first.stderr.splitlines() if line.startswith("{")]
        failed = [x for x in lines if x.get("source_key") and x["level"] == "warning"]
        [line] = failed
        assert line["mailbox"] == "cut" and line["logger"] == "postroom.services.mailbox"
        assert line["message"].startswith(f"mailbox cut: message {line['source_key']} failed ")
        where = f"server 127.0.0.1:{proxy.port} closed the connection"
        assert "fetch failed: " in line["message"] and where in line["message"], line
        second = site.run_once()
        assert second.returncode == 0, second.stderr
    assert site.count("cut") == 3
