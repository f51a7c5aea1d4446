"""Integration tests against real servers: Dovecot and Postfix on 127.0.0.1.

The session fixture ``mail_servers`` starts them through
``contrib/scripts/mail-test-servers`` (or reuses the ones running for
``POSTROOM_TEST_PORT_BASE``) and returns a
:class:`tests.integration.servers.MailServers`. When they cannot be started,
every test that uses it fails with the reason: nothing is skipped.

Tests that use the fixture get the ``servers`` marker (tests/conftest.py), so
``make test-unit`` (``-m "not servers"``) leaves them out: they need root.

``oauth_servers`` (same start) is a :class:`tests.integration.oauth.OAuthServers`:
the identity provider and the Dovecot instance "oauth".

Elsewhere (e.g. a plugin's tests), import the fixture into that conftest:
``from tests.integration.conftest import mail_servers  # noqa: F401`` (and
``oauth_servers`` with it).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.oauth import OAuthServers
from tests.integration.servers import MailServers, MailServersUnavailable, start_mail_servers
from tests.net.proxies import ProxyServersUnavailable, start_proxy_servers


@pytest.fixture(scope="session")
def mail_servers() -> MailServers:
    """The running mail servers (started on first use, left running afterwards)."""
    try:
        return start_mail_servers()
    except MailServersUnavailable as exc:
        problem = str(exc)
    pytest.fail(f"the mail test servers are not available: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def oauth_servers(mail_servers: MailServers) -> OAuthServers:
    """The identity provider and the "oauth" Dovecot/Postfix submission (same
    start as ``mail_servers``). Its IdP is shared by every test of the run:
    change its settings only inside ``with oauth_servers.idp.restoring():``
    (tests/integration/oauth.py)."""
    return OAuthServers(mail_servers.state)


@pytest.fixture(scope="session")
def proxy_servers() -> dict[str, Any]:
    """The running proxies of POSTROOM_TEST_PROXY_PORT_BASE (started on first use)."""
    try:
        return start_proxy_servers()
    except ProxyServersUnavailable as exc:
        problem = str(exc)
    pytest.fail(f"the proxy test servers are not available: {problem}", pytrace=False)
