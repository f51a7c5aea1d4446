"""One login of the IMAP or POP3 source on the real reactor (run as a subprocess).

``python -m tests.net.source_client '<json>'`` with ``protocol`` (``imap`` or
``pop3``), ``host``, ``port``, ``security``, ``ca_file``, ``user``,
``password`` (or the access token), optional ``proxy`` (ProxySettings
fields), ``mechanism`` (default PLAIN; ``BEARER`` for a token), ``refreshed``
(the secrets the auth driver hands out after each ``invalidate()``) and
``options`` (more mailbox options). The source connects (through the proxy
when given: its ``proxy_settings()`` returns it), logs in, opens the mailbox
and disconnects; one JSON object is printed: ``{"ok": true, "events": [...]}``
or ``{"ok": false, "error": type, "message": ..., "events": [...]}``. A
subprocess keeps the global reactor out of the test process;
:func:`run_source_client` runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from postroom.api import DriverContext, ProxySettings, ServerSourceBase
from postroom_imap.source import IMAPSource
from postroom_pop3.source import POP3Source
from tests.net.oneshot import run_attempt
from tests.plugins.fake_auth import FakeAuthenticator
from tests.plugins.imap.conftest import FakeConfig, mailbox_config
from tests.plugins.pop3.fakes import FakeMailbox


def build(reactor: Any, spec: dict[str, Any], spool: str) -> tuple[ServerSourceBase, list[Any]]:
    proxy = ProxySettings(**spec["proxy"]) if spec.get("proxy") else None
    options = {
        "server": spec["host"],
        "port": spec["port"],
        "pop_connection_security": spec["security"],
        "ca_file": spec["ca_file"],
        "connect_timeout": 20.0,
        "protocol_timeout": 20.0,
        **spec.get("options", {}),
    }
    base: type[ServerSourceBase] = IMAPSource if spec["protocol"] == "imap" else POP3Source

    class Proxied(base):  # type: ignore[valid-type,misc]
        def proxy_settings(self) -> ProxySettings | None:
            return proxy

    mailbox: Any
    if spec["protocol"] == "imap":
        mailbox = mailbox_config("proxied", **options)
    else:
        mailbox = FakeMailbox("proxied", **options)
    events: list[Any] = []
    context = DriverContext(
        reactor=reactor,
        clock=reactor,
        runner=None,
        config=FakeConfig(),
        spool_dir=spool,
        authenticator=FakeAuthenticator(
            spec["user"],
            spec["password"],
            spec.get("mechanism", "PLAIN"),
            tuple(spec.get("refreshed", ())),
        ),
        auth_event=lambda *event: events.append(list(event)),
    )
    return Proxied(mailbox, context), events


async def attempt(reactor: Any, spec: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as spool:
        source, events = build(reactor, spec, spool)
        try:
            await source.connect()
        except Exception as exc:
            return {"ok": False, "error": type(exc).__name__, "message": str(exc), "events": events}
        await source.disconnect()
    return {"ok": True, "events": events}


def run_source_client(**spec: Any) -> dict[str, Any]:
    """Run this module with *spec* in a subprocess; the JSON it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.net.source_client", json.dumps(spec)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


if __name__ == "__main__":
    run_attempt(attempt)
