"""Fixtures of the IMAP driver tests: fake-clock sources, and the real servers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

from postroom.config.loader import defaults
from postroom.config.options import OptionSchema, Scope
from postroom.config.site import MailboxConfig
from postroom.config.types import Secret
from postroom.drivers import DriverContext
from postroom_imap.source import IMAPSource
from tests.integration.conftest import mail_servers  # noqa: F401
from tests.plugins.fake_auth import FakeAuthenticator as SharedFakeAuthenticator
from tests.plugins.fake_auth import proxy_section
from tests.plugins.imap.fakeserver import FakeEndpoint


class FakeAuthenticator(SharedFakeAuthenticator):
    def __init__(
        self,
        user: str = "agent",
        secret: str = 'pa ss"w\\ord',
        mechanism: str = "PLAIN",
        refreshed: tuple[str, ...] = (),
    ) -> None:
        super().__init__(user, secret, mechanism, refreshed)


class EndpointRecordingSource(IMAPSource):
    """An IMAPSource whose connections go to :class:`FakeEndpoint`\\s (kept
    in ``endpoints``) instead of the network."""

    endpoints: list[FakeEndpoint]

    def endpoint(self) -> FakeEndpoint:
        if self.settings.security == "ssl":
            self.tls()  # an unreadable ca-file fails here, as it does for the real one
        endpoint = FakeEndpoint(self.settings)
        self.endpoints.append(endpoint)
        return endpoint


class FakeConfig:
    def __init__(
        self, max_size: int = 10 * 1024 * 1024, proxy: dict[str, Any] | None = None
    ) -> None:
        self.max_size = max_size
        self.proxy = proxy

    def get(self, section: str, name: str) -> Any:
        if section == "proxy":
            return proxy_section(name, self.proxy)
        assert (section, name) == ("email-processing", "maximum-msg-size")
        return self.max_size


def imap_schema() -> OptionSchema:
    from postroom.config.core import kernel_schema

    schema = kernel_schema()
    with schema.declaring("postroom-imap"):
        IMAPSource.postroom_add_options(schema)
    return schema


def mailbox_config(
    name: str = "support", written: tuple[str, ...] = (), **options: Any
) -> MailboxConfig:
    """A MailboxConfig of type imap: the declared defaults, then *options*
    (``folder_path=...`` for ``folder-path``); *written* names options
    treated as written in the file."""
    values = defaults(imap_schema(), Scope.MAILBOX, driver="imap")
    values.update(
        {"name": name, "type": "imap", "server": "imap.test", "mailbox": "agent",
         "password": Secret("pw"), "connect-timeout": 30.0, "protocol-timeout": 60.0}
    )  # fmt: skip
    for key, value in options.items():
        values[key.replace("_", "-")] = value
    lines = {k: 1 for k in (*written, *[k.replace("_", "-") for k in options])}
    return MailboxConfig(name=name, type="imap", auth="basic", options=values, lines=lines)


@pytest.fixture
def reactor() -> MemoryReactorClock:
    return MemoryReactorClock()


@pytest.fixture
def make_source(reactor: MemoryReactorClock, tmp_path: Path) -> Callable[..., IMAPSource]:
    spool = tmp_path / "spool"
    spool.mkdir()

    def make(
        auth: FakeAuthenticator | None = None,
        max_size: int = 10 << 20,
        proxy: dict[str, Any] | None = None,
        **options: Any,
    ) -> IMAPSource:
        options.setdefault("pop_connection_security", "starttls")
        events: list[tuple[str, str, str]] = []
        context = DriverContext(
            reactor=reactor,
            clock=reactor,
            runner=None,
            config=FakeConfig(max_size, proxy),
            spool_dir=str(spool),
            authenticator=auth or FakeAuthenticator(),
            auth_event=lambda *event: events.append(event),
        )
        source = EndpointRecordingSource(mailbox_config(**options), context)
        source.endpoints = []
        source.events = events  # type: ignore[attr-defined]
        return source

    return make
