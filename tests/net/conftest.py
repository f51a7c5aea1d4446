"""Fixtures of the network tests: the real proxies, and the mail servers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import mail_servers  # noqa: F401
from tests.net.proxies import ProxyServersUnavailable, start_proxy_servers


@pytest.fixture(scope="session")
def proxy_servers() -> dict[str, Any]:
    """The running proxies of POSTROOM_TEST_PROXY_PORT_BASE (started on first use)."""
    try:
        return start_proxy_servers()
    except ProxyServersUnavailable as exc:
        pytest.fail(str(exc))
