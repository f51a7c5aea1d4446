"""Fixtures of the SMTP sender tests: the real mail servers for the integration tests."""

from tests.integration.conftest import mail_servers  # noqa: F401
