"""The OAuth auth drivers against the real local identity provider (tests/idp).

The IdP runs in-process on its own reactor thread, over HTTPS from a test
CA; the drivers are built by a :class:`~postroom.testing.TestKernel` whose
token requests go through :class:`~postroom.testing.BlockingTokenHTTP` (the
real ``TokenHTTP`` needs the global reactor, which tests must not run). The
kernel's clock is a ``task.Clock`` set to the wall time, because the IdP
checks signed assertions against its own clock (real time plus what tests
advance): tests advance both, never sleep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.internet import task

from postroom.testing import BlockingTokenHTTP, TestKernel
from tests.idp.running import RunningIdP


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[RunningIdP]:
    with RunningIdP(tmp_path / "idp") as running:
        yield running


def wall_clock() -> task.Clock:
    """A test clock that starts at the wall time (and then moves only when told)."""
    clock = task.Clock()
    clock.advance(time.time())
    return clock


def mailbox(name: str, user: str, auth: str, **options: Any) -> dict[str, Any]:
    """One ``pop-client`` entry (IMAP, which logs in: the kernel builds its auth driver)."""
    entry: dict[str, Any] = {"name": name, "type": "imap", "server": "imap.example.test",
                             "mailbox": user, "auth": auth}
    entry.update({k.replace("_", "-"): v for k, v in options.items()})
    return entry


def site(
    mailboxes: Iterable[Mapping[str, Any]] = (),
    *,
    smtp: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    gateway: Mapping[str, Any] | None = None,
) -> str:
    """A site file's YAML text."""
    document: dict[str, Any] = {}
    if gateway:
        document["gateway"] = dict(gateway)
    if mailboxes:
        document["pop-client"] = [dict(m) for m in mailboxes]
    if smtp is not None:
        document["smtp-client"] = dict(smtp)
    for name, password in (secrets or {}).items():
        document[f"secret-{name}"] = {"password": password}
    return yaml.safe_dump(document, sort_keys=False)


class Kernels:
    """Builds TestKernels whose token requests reach the IdP; closes them at the end."""

    def __init__(self, idp: RunningIdP) -> None:
        self.idp = idp
        self.clock = wall_clock()
        self.made: list[TestKernel] = []

    def __call__(self, config: str, *, store: Path | None = None,
                 timeout: float = 10.0) -> TestKernel:
        http = BlockingTokenHTTP(timeout=timeout)
        kernel = TestKernel(
            config=config, clock=self.clock, token_http=http,
            store={"driver": "sqlite", "path": str(store)} if store is not None else None,
        )
        self.made.append(kernel)
        return kernel

    def advance(self, seconds: float) -> None:
        """Time passes for the gateway and the identity provider alike."""
        self.clock.advance(seconds)
        self.idp.idp.advance(seconds)

    def close(self) -> None:
        for kernel in self.made:
            kernel.close()


@pytest.fixture
def kernels(idp: RunningIdP) -> Iterator[Kernels]:
    made = Kernels(idp)
    try:
        yield made
    finally:
        made.close()


def http_of(kernel: TestKernel) -> BlockingTokenHTTP:
    http = kernel.kernel.oauth.http
    assert isinstance(http, BlockingTokenHTTP)
    return http


def assert_no_secret(secrets: Iterable[str], *texts: str) -> None:
    """None of *secrets* (nor a long piece of one) is in any of *texts*."""
    written = "\n".join(texts)
    leaked = [s[:6] + "..." for s in secrets if s and (s in written or s[:24] in written)]
    assert leaked == []


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every record, formatted and raw (arguments included)."""
    return "\n".join(
        f"{r.getMessage()} {r.args!r} {r.__dict__!r}" for r in caplog.records
    ) + caplog.text


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog
