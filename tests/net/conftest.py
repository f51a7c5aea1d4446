"""Fixtures of the network tests: the real proxies, and the mail servers."""

from tests.integration.conftest import mail_servers, proxy_servers  # noqa: F401
