"""Drive the ``amqp`` plugin through a real kernel on the real reactor, in a process of its own.

Why a subprocess: pika's Twisted adapter needs a running reactor, and a
Twisted reactor cannot be restarted inside one pytest process. The tests run::

    python tests/plugins/amqp/drive_handoff.py JOB.json

The job: ``{"config": {...site...}, "count": n, "outage": {"at": k, "pause":
[argv], "resume": [argv], "block": [argv] or absent} or null, "deadline":
seconds}``. The kernel is built from the configuration as ``postroom run``
builds it (option validation, plugin loading, start-up hooks), with a memory
store and calls inline. *count* small messages go through the inbound
pipeline (parse, classify, commit) and each committed interaction to the
kernel's hand-off service, which calls
``postroom_submit`` and retries a failure with the site's back-off, as in the
gateway.

With an ``outage``: once *at* interactions are committed, the ``block``
command runs if given (the broker stops confirming: publishes pile up in
flight), then the ``pause`` command (it stops the broker), while ingestion
goes on a message every 10 ms, so hand-offs are published before, during and
after the stop; once every message is committed and the broker is down, the
``resume`` command starts it again. The driver then waits until the
hand-off service is idle.

Stdout: one JSON object: ``{"ids": [...], "finished": bool, "pending": [...],
"errors": {id: last error}, "failures": n, "failures_while_down": n,
"confirmed": n, "connections": n, "during_pause": n, "seconds": {...}}``
(``seconds``: when each phase ended, from the start).
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, task, utils

from postroom.ingest import ingest_mailbox
from postroom.kernel import Kernel
from postroom.model import FetchedMessage, RawRef
from postroom.pipeline.inbound import InboundPipeline
from postroom.runner import InlineRunner
from postroom.services.handoff import HandoffService
from postroom_amqp.plugin import plugin as amqp_plugin


def message(number: int, run: str) -> bytes:
    return (
        f"From: Customer {number} <c{number}@customer.example>\r\n"
        "To: support@example.test\r\n"
        f"Subject: case {number}\r\n"
        f"Message-ID: <{number}.{run}@customer.example>\r\n"
        "Date: Mon, 07 Dec 2026 09:00:00 +0000\r\n"
        "\r\n"
        f"Body of case {number}.\r\n"
    ).encode()


def handoff_failures(kernel: Kernel) -> int:
    """The kernel's count of failed hand-off attempts (``/metrics``)."""
    value = kernel.metrics.registry.get_sample_value("postroom_handoff_failures_total")
    return int(value or 0)


async def run_command(reactor: Any, argv: list[str]) -> None:
    _out, err, code = await utils.getProcessOutputAndValue(argv[0], argv[1:], env=None)
    if code != 0:
        raise RuntimeError(f"{argv} failed ({code}): {err.decode(errors='replace')}")


async def stop_broker(reactor: Any, outage: dict[str, Any], mark: Any) -> None:
    """``block`` (when given: what is published from then on waits unconfirmed),
    then ``pause``."""
    if outage.get("block"):
        mark("block_started")
        await run_command(reactor, outage["block"])
    mark("pause_started")
    await run_command(reactor, outage["pause"])
    mark("pause_done")


async def drive(reactor: Any, job: dict[str, Any]) -> dict[str, Any]:
    began = time.monotonic()
    seconds: dict[str, float] = {}

    def mark(what: str) -> None:
        seconds[what] = round(time.monotonic() - began, 2)

    with tempfile.TemporaryDirectory(prefix="postroom-amqp-drive-") as tmp:
        config = Path(tmp) / "postroom.yaml"
        config.write_text(json.dumps(job["config"]), encoding="utf-8")  # JSON is YAML
        kernel = Kernel(
            config, reactor=reactor, runner=InlineRunner(), store_override={"driver": "memory"}
        )
        await kernel.open()
        handoff = HandoffService(kernel)
        handoff.startService()
        pipeline = InboundPipeline(kernel.hooks, kernel.ctx, kernel.analysis)
        mailbox = ingest_mailbox(kernel)
        publisher = amqp_plugin.publisher(kernel.config)
        assert publisher is not None, "the site configures no amqp.url"
        outage = job.get("outage")
        pause: defer.Deferred[None] | None = None
        during_pause = 0
        ids: list[str] = []
        try:
            for number in range(job["count"]):
                if outage and number == outage["at"]:
                    pause = defer.ensureDeferred(stop_broker(reactor, outage, mark))
                path = Path(tmp) / f"{number}.eml"
                path.write_bytes(message(number, Path(tmp).name))
                fetched = FetchedMessage(
                    mailbox=mailbox.name, source_key=f"drive:{number}", raw=RawRef.from_path(path)
                )
                processed = await pipeline.process(fetched, mailbox)
                path.unlink()
                ids.extend(i.id for i in processed.result.new)
                handoff.submit(processed.result.new)
                if pause is not None and not pause.called:
                    during_pause += 1
                    await task.deferLater(reactor, 0.01, lambda: None)
                elif number % 10 == 9:
                    await task.deferLater(reactor, 0, lambda: None)  # let the network run
            mark("ingested")
            if outage:
                assert pause is not None
                await pause
                failures_down = handoff_failures(kernel)
                await run_command(reactor, outage["resume"])
                mark("resume_done")
            else:
                failures_down = 0
            deadline = task.deferLater(reactor, job.get("deadline", 120), lambda: None)
            idle = handoff.wait_idle()
            first = await defer.DeferredList([idle, deadline], fireOnOneCallback=True)
            finished = first[1] == 0
            mark("idle" if finished else "deadline")
            if not deadline.called:
                deadline.addErrback(lambda f: f.trap(defer.CancelledError))
                deadline.cancel()
            pending = await kernel.store.pending_handoffs(10_000)
            errors = {i.id: (await kernel.store.handoff_status(i.id))[2] for i in pending}
        finally:
            await handoff.stopService()
            await kernel.close()
    return {
        "ids": ids,
        "finished": finished,
        "pending": [i.id for i in pending],
        "errors": errors,
        "failures": handoff_failures(kernel),
        "failures_while_down": failures_down,
        "confirmed": publisher.confirmed,
        "connections": publisher.connections,
        "during_pause": during_pause,
        "seconds": seconds,
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    job = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))

    def react_main(reactor: Any) -> defer.Deferred[None]:
        async def run() -> None:
            print(json.dumps(await drive(reactor, job)))

        return defer.ensureDeferred(run())

    task.react(react_main)


if __name__ == "__main__":
    main()
