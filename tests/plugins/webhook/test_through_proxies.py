"""Webhooks through the site's ``proxy`` section (the project's real test
proxies: tinyproxy for HTTP CONNECT, microsocks and Dante for SOCKS5), and
straight past it with ``use-proxy: false``. Each proxy connects onwards from
an address of its own, which the receiver sees: the path is proven."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import proxy_servers  # noqa: F401 (the fixture)
from tests.net.proxies import source
from tests.net.test_gateway_through_proxies import proxy_section
from tests.plugins.webhook.conftest import MakeKernel, message
from tests.plugins.webhook.receiver import Listening, Net
from tests.plugins.webhook.test_delivery import ingested


@pytest.mark.parametrize("proxy", ["http_auth", "socks_auth", "dante"])
def test_a_webhook_goes_through_the_sites_proxy(
    proxy: str,
    proxy_servers: dict[str, Any],  # noqa: F811
    net: Net,
    receiver: Listening,
    make_kernel: MakeKernel,
) -> None:
    site = {"proxy": proxy_section(proxy_servers, proxy)}
    kernel = make_kernel(receiver.url, sections=site)
    interaction = ingested(net, kernel, message())
    assert interaction.handoff_state == "done"
    [got] = receiver.receiver.received
    assert got.verified and got.peer == source(proxy_servers, proxy)


def test_use_proxy_false_goes_straight_to_the_receiver(
    proxy_servers: dict[str, Any],  # noqa: F811
    net: Net,
    receiver: Listening,
    make_kernel: MakeKernel,
) -> None:
    site = {"proxy": proxy_section(proxy_servers, "http_auth")}
    kernel = make_kernel(receiver.url, sections=site, use_proxy=False)
    ingested(net, kernel, message())
    [got] = receiver.receiver.received
    assert got.verified and got.peer == "127.0.0.1"
