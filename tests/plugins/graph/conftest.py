"""Fixtures of the Graph source tests: the contract fake, and sources whose
HTTP goes to it through a blocking stand-in of the kernel's HTTP client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from postroom.config.loader import defaults
from postroom.config.options import OptionSchema, Scope
from postroom.config.site import MailboxConfig
from postroom.drivers import DriverContext
from postroom_graph.source import GraphSource
from tests.fakes.graph import GraphFake, introspecting
from tests.fakes.graph.client import BlockingHTTP
from tests.integration.conftest import mail_servers, oauth_servers  # noqa: F401
from tests.integration.oauth import OAuthServers
from tests.plugins.fake_auth import FakeAuthenticator
from tests.plugins.imap.conftest import FakeConfig

TOKEN = "token-1"
BOX = "support@contoso.test"


def graph_schema() -> OptionSchema:
    from postroom.config.core import kernel_schema

    schema = kernel_schema()
    with schema.declaring("postroom-graph"):
        GraphSource.postroom_add_options(schema)
    return schema


def mailbox_config(name: str = "support", **options: Any) -> MailboxConfig:
    values = defaults(graph_schema(), Scope.MAILBOX, driver="graph")
    values.update({"name": name, "type": "graph", "mailbox": BOX})
    for key, value in options.items():
        values[key.replace("_", "-")] = value
    lines = {k.replace("_", "-"): 1 for k in options}
    return MailboxConfig(name=name, type="graph", auth="azure-client-credentials",
                         options=values, lines=lines)


class FakeGraphSource(GraphSource):
    """A GraphSource whose HTTP client is :class:`BlockingHTTP` to the fake."""

    ca_file_for_tests: str = ""

    def make_http(self) -> Any:
        return BlockingHTTP(self.ca_file_for_tests)


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[GraphFake]:
    """The fake; at the end of the test it must have seen no protocol error
    (a test expecting one clears ``graph.problems``)."""
    with GraphFake(tmp_path / "graph-tls", tokens=[TOKEN]) as fake:
        yield fake
        assert fake.problems == [], "the Graph source sent malformed requests"


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


Make = Callable[..., FakeGraphSource]


@pytest.fixture
def make_source(graph: GraphFake, clock: task.Clock, tmp_path: Path) -> Make:
    spool = tmp_path / "spool"
    spool.mkdir()

    def make(
        auth: FakeAuthenticator | None = None,
        max_size: int = 10 << 20,
        known: Callable[[str, list[str]], Any] | None = None,
        name: str = "support",
        **options: Any,
    ) -> FakeGraphSource:
        options.setdefault("server", graph.url)
        events: list[tuple[str, str, str]] = []
        context = DriverContext(
            reactor=clock,
            clock=clock,
            runner=None,
            config=FakeConfig(max_size),
            spool_dir=str(spool),
            authenticator=auth or FakeAuthenticator(BOX, TOKEN, "BEARER"),
            auth_event=lambda *event: events.append(event),
            known_source_keys=known,
        )
        FakeGraphSource.ca_file_for_tests = graph.ca_file
        source = FakeGraphSource(mailbox_config(name, **options), context)
        source.events = events  # type: ignore[attr-defined]
        return source

    return make


@pytest.fixture
def live_graph(oauth_servers: OAuthServers, tmp_path: Path) -> Iterator[GraphFake]:  # noqa: F811
    """The fake accepting the IdP's active Graph tokens (RFC 7662 introspection)."""
    validate = introspecting(oauth_servers.idp_url, oauth_servers.idp_ca_file)
    with GraphFake(tmp_path / "graph-tls", validate=validate) as fake:
        yield fake
        assert fake.problems == [], "the Graph source sent malformed requests"
