"""OAuth 2.0 for the auth drivers: token requests, the shared runtime, the driver base.

* :mod:`postroom.oauth.http`: token requests over verified HTTPS, through the proxy;
* :mod:`postroom.oauth.runtime`: :class:`OAuthRuntime`, one per gateway (cache, vault);
* :mod:`postroom.oauth.authenticator`: :class:`OAuthAuthenticator`, the drivers' base.

Drivers import these names from :mod:`postroom.api`.
"""

from postroom.oauth.authenticator import (
    BEARER,
    IdentityProviderUnavailable,
    OAuthAuthenticator,
    read_token_answer,
)
from postroom.oauth.http import TokenAnswer, TokenHTTP
from postroom.oauth.runtime import OAuthRuntime

__all__ = [
    "BEARER",
    "IdentityProviderUnavailable",
    "OAuthAuthenticator",
    "OAuthRuntime",
    "TokenAnswer",
    "TokenHTTP",
    "read_token_answer",
]
