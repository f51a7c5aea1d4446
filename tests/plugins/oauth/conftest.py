"""Fixtures of the OAuth login tests: the mail servers with the identity
provider and the "oauth" Dovecot instance, and the proxies."""

from tests.integration.conftest import mail_servers, oauth_servers, proxy_servers  # noqa: F401
