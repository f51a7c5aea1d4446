"""The retention job in the gateway: on the kernel's clock, in the kernel's store."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from twisted.internet import task

from postroom.model import Interaction, RawRef
from postroom.services.gateway import Gateway
from postroom.services.retention import RetentionService
from postroom.store.errors import RawPurgedError
from tests.conftest import run
from tests.kernel.test_gateway import make_kernel

DAY = 86400.0
START = 1_700_000_000.0


def commit(kernel: object, tmp_path: Path, key: str) -> str:
    path = tmp_path / f"{key}.eml"
    path.write_bytes(f"Subject: {key}\r\n\r\nbody {key}\r\n".encode())
    store = kernel.store_driver  # type: ignore[attr-defined]
    result = store.commit_fetched("support", key, RawRef.from_path(path), [Interaction()])
    return str(result.new[0].id)


def test_the_job_purges_old_raw_messages_each_interval_and_keeps_pending_ones(
    quickstart: Path, tmp_path: Path
) -> None:
    quickstart.write_text(
        quickstart.read_text() + "retention: {raw-max-age: '24:00:00', interval: '01:00:00'}\n"
    )
    clock = task.Clock()
    clock.advance(START)
    kernel = make_kernel(quickstart, clock=clock)
    run(kernel.open())
    try:
        done = commit(kernel, tmp_path, "1")
        pending = commit(kernel, tmp_path, "2")
        kernel.store_driver.mark_handoffs_done([done], [done])
        job = RetentionService(kernel)
        job.startService()
        clock.advance(3600)  # first run: nothing is a day old yet
        assert job.last == {}
        clock.advance(DAY)  # one run (a LoopingCall does not catch up missed ones)
        assert job.last == {"raw_messages": 1, "raw_chunks": 1, "interactions.raw_purged": 1}
        with pytest.raises(RawPurgedError):
            kernel.store_driver.read_raw(done, io.BytesIO())
        kernel.store_driver.read_raw(pending, io.BytesIO())  # its hand-off is not done
        metric = kernel.metrics.registry.get_sample_value(
            "postroom_retention_purged_total", {"table": "raw_messages"}
        )
        assert metric == 1.0
        clock.advance(3600)
        assert job.last == {}
        job.stopService()
        job.last = None
        clock.advance(DAY)
        assert job.last is None  # stopped: no more runs
    finally:
        run(kernel.close())


def test_the_gateway_runs_the_job_only_when_something_is_to_be_purged(quickstart: Path) -> None:
    assert Gateway(make_kernel(quickstart)).retention is None
    quickstart.write_text(quickstart.read_text() + "retention: {interactions-max-age: 3600}\n")
    gateway = Gateway(make_kernel(quickstart))
    assert isinstance(gateway.retention, RetentionService)
    assert Gateway(make_kernel(quickstart), once=True).retention is None
