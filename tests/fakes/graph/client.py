"""A blocking stand-in for ``postroom.api.HTTPClient`` (the lead's kernel client):
the same ``request()`` contract over the standard library, on the caller's
thread, so a source is tested against :class:`GraphFake` without running the
reactor (as ``postroom.testing.BlockingTokenHTTP`` does for token requests)."""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer

from postroom.api import ConnectionDown

CHUNK = 64 * 1024


@dataclass
class Response:
    """``HTTPResponse``: status, headers (names lower-cased), body (empty when sunk)."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class BlockingHTTP:
    """``request(method, url, *, headers, body, max_body, sink)`` firing at once."""

    ca_file: str
    timeout: float = 10.0
    sent: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    closed: bool = False

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        max_body: int = 1024 * 1024,
        sink: Any = None,
    ) -> defer.Deferred[Response]:
        try:
            return defer.succeed(self._request(method, url, headers or {}, body, max_body, sink))
        except Exception as exc:
            return defer.fail(exc)

    def close(self) -> defer.Deferred[None]:
        """As ``HTTPClient.close``: this double keeps no connection open."""
        self.closed = True
        return defer.succeed(None)

    def _request(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
                 max_body: int, sink: Any) -> Response:
        parts = urlsplit(url)
        assert parts.scheme == "https", url
        self.sent.append((method, url, dict(headers)))
        context = ssl.create_default_context(cafile=self.ca_file)
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443,
                                           context=context, timeout=self.timeout)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request(method, target, body=body, headers=headers)
            answer = conn.getresponse()
            got = {k.lower(): v for k, v in answer.getheaders()}
            data = b""
            got_bytes = 0
            if sink is not None and 200 <= answer.status < 300:
                while chunk := answer.read(CHUNK):
                    got_bytes += len(chunk)
                    sink.write(chunk)
            else:
                data = answer.read(max_body + 1)
                got_bytes = len(data)
                if len(data) > max_body:
                    raise ConnectionDown(f"answer from {parts.netloc} over {max_body} bytes")
            expected = got.get("content-length")
            if expected is not None and int(expected) != got_bytes:
                raise ConnectionDown(f"{method} {parts.netloc}: connection lost mid-answer")
            return Response(answer.status, got, data)
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectionDown(f"{method} {parts.netloc}: {exc!r}") from exc
        finally:
            conn.close()
