"""Token requests: one form POSTed to one token endpoint, a small JSON answer.

Every OAuth auth driver makes exactly this request; :class:`TokenHTTP` makes
it with :class:`~postroom.net.http.HTTPClient` (HTTPS only, the certificate
verified against the system's CAs or ``token-ca-file``, through the
``proxy`` section's proxy, a deadline on the injected clock, the answer
capped), and turns "no answer" into a temporary
:class:`~postroom.tokens.TokenError`. Any HTTP answer, error or not, is
returned to the driver, which classifies it.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.internet import defer

from postroom.net.http import HTTPClient, HTTPUnavailable, https_host
from postroom.net.proxy import ProxySettings
from postroom.tokens import TokenError, TokenFailure

#: the most a token endpoint's answer may hold (Azure's are ~5 KB)
MAX_ANSWER = 256 * 1024
#: seconds for one token request, connection and answer together
DEFAULT_TIMEOUT = 30.0
USER_AGENT = "postroom"
#: the headers of every token request (a driver may add its own)
FORM_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "Accept": "application/json",
    "User-Agent": USER_AGENT,
}


@attrs.frozen
class TokenAnswer:
    """What a token endpoint said: HTTP status and body (JSON, usually)."""

    status: int
    body: bytes = attrs.field(repr=False)


class TokenHTTP:
    """POSTs forms to token endpoints (one per gateway, shared by every OAuth driver)."""

    def __init__(
        self,
        reactor: Any,
        clock: Any = None,
        *,
        proxy: ProxySettings | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.client = HTTPClient(reactor, clock, proxy=proxy, timeout=timeout)
        self.proxy = proxy

    def __repr__(self) -> str:
        via = f"via {self.proxy.kind} proxy {self.proxy.where}" if self.proxy else "direct"
        return f"TokenHTTP({via})"

    @property
    def requests(self) -> int:
        """Token requests sent (metrics, tests)."""
        return self.client.requests

    def post_form(
        self,
        url: str,
        body: str,
        *,
        ca_file: str | os.PathLike[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> defer.Deferred[TokenAnswer]:
        """POST ``application/x-www-form-urlencoded`` *body* to *url* (https only).

        Fires with the :class:`TokenAnswer` whatever the status; fails with a
        temporary :class:`TokenError` when no answer came (naming the host, or
        the proxy, never the body)."""
        return defer.ensureDeferred(self._post(url, body, ca_file, headers or {}))

    async def _post(
        self, url: str, body: str, ca_file: Any, headers: dict[str, str]
    ) -> TokenAnswer:
        https_target(url)
        try:
            answer = await self.client.request(
                "POST",
                url,
                headers={**FORM_HEADERS, **headers},
                body=body.encode(),
                max_body=MAX_ANSWER,
                ca_file=ca_file,
            )
        except HTTPUnavailable as exc:
            raise TokenError(TokenFailure.TEMPORARY, f"token endpoint {exc}") from None
        return TokenAnswer(answer.status, answer.body)


def https_target(url: str) -> str:
    """``host[:port]`` of a token endpoint URL, for messages; a
    :class:`~postroom.tokens.TokenError` unless it is ``https://`` (a clear-text
    endpoint would carry passwords and client secrets in clear)."""
    try:
        return https_host(url)
    except ValueError:
        raise TokenError(
            TokenFailure.GRANT, f"the token endpoint must be an https:// URL, not {url!r}"
        ) from None


__all__ = ["FORM_HEADERS", "MAX_ANSWER", "TokenAnswer", "TokenHTTP", "https_target"]
