"""Hand-off per target in a running gateway (issue 13): each target (a plugin
implementing ``postroom_submit``) has its own state; a retry calls only the
targets still owed; a permanent refusal stops the retries until someone asks
for one (CLI or HTTP); recovery after a restart calls only the owed targets.

The gateway runs on a fake clock and an inline runner over the quickstart
site's SQLite store, so "another process" (the CLI) really is one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jsonschema
import pytest
from twisted.internet import task

from postroom.api import HandoffError, hookimpl
from postroom.model import HandoffState, Interaction, RawRef, overall_handoff_state
from postroom.services.gateway import Gateway
from tests.conftest import run
from tests.kernel.test_cli import SCHEMA, postroom
from tests.kernel.test_gateway import make_kernel

MAIL = b"From: a@example.org\r\nTo: support@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
#: longer than any back-off the tests' gateways wait (handoff-retry-max: 5 minutes)
AGES = 3600


class Target:
    """A hand-off target failing its first *failures* calls with *error*."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionError("connection refused")
        self.calls: list[str] = []

    @hookimpl
    def postroom_submit(self, interaction: Interaction) -> None:
        self.calls.append(interaction.id)
        if len(self.calls) <= self.failures:
            raise self.error


def start(quickstart: Path, **targets: Target) -> Gateway:
    kernel = make_kernel(quickstart, list(targets.items()))
    gateway = Gateway(kernel, mailboxes=False)
    gateway.startService()
    return gateway


def commit(gateway: Gateway, tmp_path: Path, n: int = 0) -> Interaction:
    """An interaction committed as a mailbox commits it, then handed to the service."""
    path = tmp_path / f"m{n}.eml"
    path.write_bytes(MAIL + str(n).encode())
    store = gateway.kernel.store
    [item] = run(store.commit_fetched("support", str(n), RawRef.from_path(path),
                                      [Interaction(mailbox="support")])).new  # fmt: skip
    gateway.handoff.submit([item])
    return item


def targets(gateway: Gateway, interaction_id: str) -> dict[str, tuple[str, int]]:
    rows = run(gateway.kernel.store.handoff_targets(interaction_id))
    return {row.target: (row.state, row.attempts) for row in rows}


def overall(gateway: Gateway, interaction_id: str) -> str:
    return str(run(gateway.kernel.store.handoff_status(interaction_id))[0])


def clock(gateway: Gateway) -> task.Clock:
    return gateway.kernel.clock  # type: ignore[return-value]


def test_a_failing_target_never_makes_one_that_took_it_run_again(
    quickstart: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    amqp, webhook = Target(), Target(failures=2, error=HandoffError("HTTP 503"))
    gateway = start(quickstart, amqp=amqp, webhook=webhook)
    item = commit(gateway, tmp_path)
    assert targets(gateway, item.id) == {"amqp": ("done", 1), "webhook": ("failed", 1)}
    assert overall(gateway, item.id) == "failed"
    for _ in range(4):
        clock(gateway).advance(AGES)
    assert webhook.calls == [item.id] * 3
    assert amqp.calls == [item.id]  # published once, whatever the webhook did
    run(gateway.handoff.wait_idle())
    assert targets(gateway, item.id) == {"amqp": ("done", 1), "webhook": ("done", 3)}
    assert overall(gateway, item.id) == "done"
    # each failure logged once per attempt, with the interaction, the target, the reason
    failures = [r.getMessage() for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert failures == [
        f"hand-off of {item.id} to webhook failed (attempt {n}): HTTP 503" for n in (1, 2)
    ]
    metrics = gateway.kernel.metrics.render().decode()
    assert 'postroom_handoff_target_failures_total{outcome="failed",target="webhook"} 2.0' in (
        metrics
    )
    run(gateway.stopService())


def test_a_permanent_refusal_stops_the_retries_and_a_retry_resumes_them(
    quickstart: Path, tmp_path: Path
) -> None:
    amqp = Target()
    webhook = Target(failures=1, error=HandoffError("HTTP 410 Gone", permanent=True))
    gateway = start(quickstart, amqp=amqp, webhook=webhook)
    item = commit(gateway, tmp_path)
    for _ in range(3):
        clock(gateway).advance(AGES)
    assert webhook.calls == [item.id]  # never retried by itself
    assert targets(gateway, item.id) == {"amqp": ("done", 1), "webhook": ("refused", 1)}
    assert overall(gateway, item.id) == "refused"
    [refused] = [t for t in run(gateway.kernel.store.handoff_targets(item.id))
                 if t.target == "webhook"]  # fmt: skip
    assert refused.last_error == "HTTP 410 Gone"
    assert gateway.handoff.failed == {item.id}  # a run reports it

    # someone fixed the receiver and asks for a retry (in this process: HTTP does this)
    assert run(gateway.kernel.store.retry_handoff(item.id)) == ["webhook"]
    assert run(gateway.handoff.retry_now(item.id)) is True
    run(gateway.handoff.wait_idle())
    assert webhook.calls == [item.id] * 2 and amqp.calls == [item.id]
    assert targets(gateway, item.id) == {"amqp": ("done", 1), "webhook": ("done", 2)}
    assert overall(gateway, item.id) == "done"
    assert gateway.handoff.failed == set()
    run(gateway.stopService())


def test_a_retry_asked_for_by_the_cli_is_picked_up_by_the_running_gateway(
    quickstart: Path, tmp_path: Path
) -> None:
    webhook = Target(failures=1, error=HandoffError("HTTP 410 Gone", permanent=True))
    gateway = start(quickstart, webhook=webhook)
    item = commit(gateway, tmp_path)
    assert overall(gateway, item.id) == "refused"

    shown = postroom("interactions", "show", item.id, "-c", str(quickstart))
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout[: shown.stdout.index("\n}") + 2])
    jsonschema.validate(data, SCHEMA)  # the documented shape, handoff included
    assert data["handoff_state"] == "refused"
    [target] = data["handoff"]["targets"]
    assert (target["target"], target["state"], target["attempts"], target["last_error"]) == (
        "webhook", "refused", 1, "HTTP 410 Gone")  # fmt: skip

    # an id prefix names it, as everywhere an id is taken
    done = postroom("interactions", "retry-handoff", item.id[:8], "-c", str(quickstart), "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["id"] == item.id
    assert answer["retried"] == ["webhook"] and answer["handoff"]["state"] == "pending"
    again = postroom("interactions", "retry-handoff", item.id, "-c", str(quickstart),
                     "--target", "crm")  # fmt: skip
    assert again.returncode == 2 and "'crm' is not a target" in again.stderr
    missing = postroom("interactions", "retry-handoff", "nope", "-c", str(quickstart))
    assert missing.returncode == 1 and "no interaction 'nope'" in missing.stderr

    assert webhook.calls == [item.id]
    interval = float(gateway.kernel.config.get("gateway", "handoff-sweep-interval"))
    clock(gateway).advance(interval)  # the sweep finds it pending
    run(gateway.handoff.wait_idle())
    assert webhook.calls == [item.id] * 2
    assert targets(gateway, item.id) == {"webhook": ("done", 2)}
    run(gateway.stopService())


def test_recovery_after_a_restart_calls_only_the_targets_still_owed(
    quickstart: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)  # the first gateway stops with a retry waiting
    amqp, webhook = Target(), Target(failures=1)
    first = start(quickstart, amqp=amqp, webhook=webhook)
    item = commit(first, tmp_path)
    assert targets(first, item.id) == {"amqp": ("done", 1), "webhook": ("failed", 1)}
    run(first.stopService())  # before the retry

    amqp2, webhook2 = Target(), Target()
    second = start(quickstart, amqp=amqp2, webhook=webhook2)
    run(second.handoff.wait_idle())
    assert webhook2.calls == [item.id] and amqp2.calls == []
    assert targets(second, item.id) == {"amqp": ("done", 1), "webhook": ("done", 2)}
    assert overall(second, item.id) == "done"
    run(second.stopService())


def test_an_interaction_without_a_target_is_handed_off_at_once(
    quickstart: Path, tmp_path: Path
) -> None:
    gateway = start(quickstart)
    item = commit(gateway, tmp_path)
    run(gateway.handoff.wait_idle())
    assert overall(gateway, item.id) == "done" and targets(gateway, item.id) == {}
    run(gateway.stopService())


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], "done"),
        (["done", "done"], "done"),
        (["done", "refused"], "refused"),
        (["refused", "pending"], "pending"),
        (["pending", "failed", "refused"], "failed"),
        (["done", "failed"], "failed"),
    ],
)
def test_the_overall_state_follows_the_targets(states: list[str], expected: str) -> None:
    assert overall_handoff_state(states) == expected
    assert HandoffState(expected)  # one of the documented states
