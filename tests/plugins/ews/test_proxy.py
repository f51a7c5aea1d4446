"""The ews source through the real test proxies (microsocks, tinyproxy): each
proxy connects onwards from its own loopback address, which the fake sees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fakes.ews.server import EWSFake
from tests.integration.conftest import proxy_servers  # noqa: F401
from tests.net.proxies import source
from tests.plugins.ews.conftest import Harness, message

pytestmark = pytest.mark.servers


def section(state: dict[str, Any], name: str) -> dict[str, Any]:
    proxy = state["proxies"][name]
    found = {
        "useProxy": True,
        "type": proxy["kind"],
        "host": proxy["host"],
        "port": proxy["port"],
        "resolve-at-proxy": True,
    }
    if proxy["user"]:
        found |= {"user": proxy["user"], "password": proxy["password"]}
    return found


@pytest.mark.parametrize("name", ["socks", "socks_auth", "http_auth"])
def test_imports_through_the_sites_proxy(
    name: str,
    proxy_servers: dict[str, Any],  # noqa: F811
    fake: EWSFake,
    tmp_path: Path,
) -> None:
    fake.store.add(message(1))
    h = Harness(fake, tmp_path / "spool", proxy=section(proxy_servers, name))
    h.settle(h.source.connect())
    [item] = h.settle(h.source.list_new(None))
    fetched = h.settle(h.source.fetch(item))
    assert Path(fetched.raw.path).read_bytes() == message(1)
    assert fake.clients == {source(proxy_servers, name)}
