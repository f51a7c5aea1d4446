"""Fixtures of the EWS driver tests: the contract fake, and a source driven
with an inline runner on a task.Clock (its back-offs wait on that clock)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, task

from postroom.config.loader import defaults
from postroom.config.options import OptionSchema, Scope
from postroom.config.site import MailboxConfig
from postroom.config.types import Secret
from postroom.drivers import DriverContext
from postroom.runner import InlineRunner
from postroom_ews.source import EWSSource
from tests.fakes.ews.server import EWSFake
from tests.pki import TestCA, make_tls_files
from tests.plugins.fake_auth import FakeAuthenticator, proxy_section


def message(n: int, size: int = 0) -> bytes:
    body = b"x" * size if size else b"hello %d" % n
    return (
        b"Message-ID: <ews-%d@example.test>\r\nFrom: a@example.test\r\nTo: b@example.test\r\n"
        b"Subject: message %d\r\n\r\n%s\r\n" % (n, n, body)
    )


class Config:
    def __init__(self, proxy: dict[str, Any] | None = None) -> None:
        self.proxy = proxy

    def get(self, section: str, name: str) -> Any:
        if section == "proxy":
            return proxy_section(name, self.proxy)
        assert (section, name) == ("email-processing", "maximum-msg-size")
        return 10 * 1024 * 1024


def ews_schema() -> OptionSchema:
    from postroom.config.core import kernel_schema

    schema = kernel_schema()
    with schema.declaring("postroom-ews"):
        EWSSource.postroom_add_options(schema)
    return schema


def mailbox_config(fake: EWSFake, **options: Any) -> MailboxConfig:
    values = defaults(ews_schema(), Scope.MAILBOX, driver="ews")
    values.update(
        {"name": "support", "type": "ews", "server": fake.url, "mailbox": fake.user,
         "password": Secret(fake.password), "ca-file": fake.ca_file}
    )  # fmt: skip
    for key, value in options.items():
        values[key.replace("_", "-")] = value
    lines = {k: 1 for k in values}
    return MailboxConfig(name="support", type="ews", auth="basic", options=values, lines=lines)


class ThreadCalls:
    """The reactor's ``callFromThread`` for a test on a task.Clock: calls from
    other threads are queued and run on the test's thread by :meth:`run`."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()
        #: the threads callFromThread was called from
        self.threads: set[str] = set()

    def callFromThread(self, fn: Callable[..., Any], *args: Any) -> None:
        self.threads.add(threading.current_thread().name)
        self.calls.put((fn, args))

    def run(self, wait: float = 0.0) -> int:
        """Run the queued calls; with *wait*, first wait (bounded) for one. How many ran."""
        ran = 0
        try:
            fn, args = self.calls.get(timeout=wait) if wait else self.calls.get_nowait()
        except queue.Empty:
            return 0
        while True:
            fn(*args)
            ran += 1
            try:
                fn, args = self.calls.get_nowait()
            except queue.Empty:
                return ran


class Harness:
    """An EWSSource on the fake, its clock, and a stand-in for the store's keys."""

    def __init__(
        self,
        fake: EWSFake,
        spool: Path,
        proxy: dict[str, Any] | None = None,
        runner: Any = None,
        **options: Any,
    ) -> None:
        self.fake = fake
        self.clock = task.Clock()
        self.reactor = ThreadCalls()
        self.stored: set[str] = set()
        self.auth = FakeAuthenticator(fake.user, fake.password)
        spool.mkdir(exist_ok=True)
        self.context = DriverContext(
            reactor=self.reactor,
            clock=self.clock,
            runner=runner or InlineRunner(),
            config=Config(proxy),
            spool_dir=str(spool),
            authenticator=self.auth,
            known_source_keys=self.known,
        )
        self.source = EWSSource(mailbox_config(fake, **options), self.context)

    def known(self, mailbox: str, keys: list[str]) -> defer.Deferred[set[str]]:
        return defer.succeed({k for k in keys if k in self.stored})

    def settle(self, d: defer.Deferred[Any], advance: float = 0) -> Any:
        """The result of *d*, advancing the clock *advance* seconds at a time."""
        for _ in range(100):
            if d.called:
                break
            self.clock.advance(advance or 1)
        results: list[Any] = []
        d.addBoth(results.append)
        assert results, "the call did not finish"
        if isinstance(results[0], BaseException | defer.Failure):
            failure = results[0]
            raise failure.value if isinstance(failure, defer.Failure) else failure
        return results[0]


@pytest.fixture(scope="session")
def ews_tls(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """One test CA and server certificate for every EWS test (key generation is slow)."""
    return make_tls_files(tmp_path_factory.mktemp("ews-tls"))


@pytest.fixture
def fake(ews_tls: TestCA) -> Iterator[EWSFake]:
    with EWSFake(ews_tls) as server:
        yield server
    assert server.protocol_errors == [], server.protocol_errors


@pytest.fixture
def harness(fake: EWSFake, tmp_path: Path) -> Harness:
    return Harness(fake, tmp_path / "spool")
