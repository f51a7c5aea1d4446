"""Drive the ``smtp`` sender under a real reactor, in a process of its own.

Why a subprocess: the sender's Deferreds fire from the kernel's thread pool,
which needs a running reactor, and a Twisted reactor cannot be restarted
inside one pytest process. The integration tests write a job file and run::

    python tests/plugins/smtp/drive_sender.py JOB.json

The job: ``{"config": {...site configuration...}, "sends": [{"message": base64,
"mail_from": ..., "rcpt_to": [...], "mail_options": [...], "rcpt_options":
[...], "message_id": ...}], "concurrent": false}``. The kernel is built from
the configuration exactly as ``postroom run`` builds it (option validation,
the configured auth driver, a ThreadPoolRunner), then each send goes to
``SMTPSender.send`` (all at once when ``concurrent``) and the sender is closed.
Stdout: one JSON object, ``{"results": [...], "stats": {...},
"messages_sent": n}``; each result is ``{"ok": true, "accepted", "refused",
"detail"}`` or ``{"ok": false, "error", "permanent", "type"}``. The protocol
trace (``enable-debug``) goes to stderr.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer, task

from postroom.kernel import Kernel
from postroom.model import Envelope
from postroom.runner import ThreadPoolRunner


async def drive(reactor: Any, job: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="postroom-smtp-drive-") as tmp:
        config = Path(tmp) / "postroom.yaml"
        config.write_text(json.dumps(job["config"]), encoding="utf-8")  # JSON is YAML
        kernel = Kernel(config, reactor=reactor, runner=ThreadPoolRunner.create(reactor, size=8))
        sender = kernel.build_sender()

        async def one(spec: dict[str, Any]) -> dict[str, Any]:
            envelope = Envelope(
                mail_from=spec["mail_from"],
                rcpt_to=list(spec["rcpt_to"]),
                mail_options=list(spec.get("mail_options", [])),
                rcpt_options=list(spec.get("rcpt_options", [])),
            )
            message = base64.b64decode(spec["message"])
            try:
                result = await sender.send(message, envelope, spec.get("message_id", ""))
            except Exception as exc:
                return {
                    "ok": False,
                    "error": str(exc),
                    "permanent": bool(getattr(exc, "permanent", False)),
                    "type": type(exc).__name__,
                }
            return {
                "ok": True,
                "accepted": result.accepted,
                "refused": result.refused,
                "detail": result.detail,
            }

        try:
            if job.get("concurrent"):
                results = await defer.gatherResults(
                    [defer.ensureDeferred(one(s)) for s in job["sends"]]
                )
            else:
                results = [await one(s) for s in job["sends"]]
        finally:
            await sender.close()
        return {
            "results": results,
            "stats": attrs.asdict(sender.stats),
            "messages_sent": sender.messages_sent,
        }


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    logging.getLogger("postroom.trace").setLevel(logging.DEBUG)
    job = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))

    async def run(reactor: Any) -> None:
        print(json.dumps(await drive(reactor, job)), flush=True)

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
