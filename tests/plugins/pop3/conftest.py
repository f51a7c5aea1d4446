"""The real mail servers (Dovecot) for the POP3 integration tests."""

from tests.integration.conftest import mail_servers  # noqa: F401
