"""The Graph requests of one mailbox: token, throttling, errors, in one place.

* **Token.** Every request carries ``Authorization: Bearer`` with the auth
  driver's access token. A 401 means the token was refused (expired,
  revoked): the source reports it (``login_refused``: the auth driver drops
  it), asks for a fresh one and repeats the request once; a second 401, or
  the same token again, is :class:`AuthenticationFailed` (the kernel's
  ``refresh_once``, as for every source's login).
* **Throttling** ("Microsoft Graph throttling guidance",
  https://learn.microsoft.com/graph/throttling): a 429 or 503 carries
  ``Retry-After`` (seconds); this mailbox waits that long on the injected
  clock, and so do its other requests meanwhile (``throttled_until``), then
  repeats the request. Other mailboxes are not held up: each has its own
  session. After :data:`MAX_THROTTLED` throttled answers in a row the request
  fails with :class:`ConnectionDown` (the kernel's back-off takes over).
* **Where requests go.** Only to the configured ``server``: an
  ``@odata.nextLink`` or delta link naming another origin is refused, so a
  broken or hostile answer cannot send the token elsewhere.
* **Errors.** A Graph error body (``{"error": {"code", "message"}}``) is read
  into :class:`GraphError` with its status and code; 5xx and lost
  connections are :class:`ConnectionDown`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from postroom.api import (
    AuthenticationFailed,
    ConnectionDown,
    Credentials,
    LoginRefused,
    PostroomError,
    SourceError,
    refresh_once,
    sleep,
)


class Owner(Protocol):
    """Who a session makes requests for: the source of a mailbox, or the sender."""

    name: str
    #: for messages: ``mailbox support``, ``smtp-client``
    who: str
    context: Any
    debug: bool

    async def credentials(self) -> Credentials: ...

    def login_refused(self, detail: str) -> None: ...

log = logging.getLogger(__name__)

#: Graph's v1.0 endpoint under ``server``
VERSION_PATH = "/v1.0"
#: ask for immutable ids ("Get immutable identifiers for Outlook resources")
IMMUTABLE_ID = 'IdType="ImmutableId"'
#: the most a JSON answer may hold (a delta page of ids is a few KB per 100 items)
MAX_JSON = 16 * 1024 * 1024
#: throttled answers in a row before a request fails (the kernel backs off then)
MAX_THROTTLED = 5
#: seconds waited when a throttled answer has no usable Retry-After
DEFAULT_RETRY_AFTER = 10.0
#: the longest Retry-After honoured by waiting; beyond it the request fails
MAX_RETRY_AFTER = 600.0
THROTTLED = (429, 503)


class GraphError(SourceError):
    """Graph answered an error: ``status``, ``code`` (Graph's error code), ``detail``."""

    def __init__(self, message: str, status: int, code: str, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail


def header(response: Any, name: str) -> str | None:
    """One response header, whatever mapping the HTTP client gives (names
    compared without case)."""
    headers = getattr(response, "headers", None) or {}
    raw = getattr(headers, "getRawHeaders", None)
    if raw is not None:  # twisted.web.http_headers.Headers
        values = raw(name)
        return values[0].decode("latin-1") if values and isinstance(values[0], bytes) else (
            values[0] if values else None
        )
    wanted = name.lower()
    for key, value in headers.items():
        key_text = key.decode("latin-1") if isinstance(key, bytes) else str(key)
        if key_text.lower() == wanted:
            if isinstance(value, list | tuple):
                value = value[0] if value else None
            if isinstance(value, bytes):
                return value.decode("latin-1")
            return None if value is None else str(value)
    return None


def error_of(body: bytes) -> tuple[str, str]:
    """Graph's error ``code`` and ``message`` from an error body (never raises)."""
    try:
        error = json.loads(body)["error"]
        return str(error.get("code", "")), " ".join(str(error.get("message", "")).split())[:300]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", body[:200].decode("utf-8", "replace")


def retry_after(response: Any) -> float:
    """Seconds to wait from ``Retry-After`` (Graph sends seconds)."""
    value = header(response, "Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else DEFAULT_RETRY_AFTER
    except ValueError:
        return DEFAULT_RETRY_AFTER


class GraphSession:
    """Authenticated, throttling-aware requests to one Graph service for one mailbox."""

    #: what a token refused twice raises (the sender's is SenderAuthenticationFailed)
    auth_failed: type[Exception] = AuthenticationFailed
    #: what a lost connection or a 5xx raises (the sender's is a temporary SendError)
    unavailable: type[Exception] = ConnectionDown

    def __init__(self, source: Owner, http: Any, server: str) -> None:
        self.source = source
        self.http = http
        self.server = server.rstrip("/")
        origin = urlsplit(self.server)
        if origin.scheme != "https" or not origin.hostname:
            raise SourceError(
                f"mailbox {source.name}: server must be an https:// URL, not {server!r}"
            )
        self.origin = (origin.scheme, origin.netloc.lower())
        self.credentials: Credentials | None = None
        self.throttled_until = 0.0
        self.requests = 0

    def url(self, path_or_url: str) -> str:
        """An absolute URL on the server: a path is put under ``/v1.0``; an
        absolute URL (a link Graph gave) must be on the same origin."""
        if not path_or_url.startswith("https://") and not path_or_url.startswith("http://"):
            return self.server + VERSION_PATH + path_or_url
        parts = urlsplit(path_or_url)
        if (parts.scheme, parts.netloc.lower()) != self.origin:
            raise SourceError(
                f"{self.source.who}: Graph gave a link to {parts.scheme}://"
                f"{parts.netloc}, not to {self.server}; refusing to send the token there"
            )
        return path_or_url

    async def token(self) -> Credentials:
        if self.credentials is None:
            self.credentials = self._bearer(await self.source.credentials())
        return self.credentials

    def _bearer(self, credentials: Credentials) -> Credentials:
        if not credentials.bearer:
            raise SourceError(
                f"{self.source.who}: Graph needs an OAuth access token; the auth "
                f"driver gave a {credentials.mechanism} password (use an OAuth auth "
                "driver such as azure-client-credentials)"
            )
        return credentials

    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        json_body: Any = None,
        sink: Callable[[], Any] | None = None,
        max_body: int = MAX_JSON,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[Any, Any]:
        """One request, repeated after throttling and once with a fresh token;
        ``(response, sink used)``. *sink* makes a fresh writer for each attempt
        (the body of a successful answer streams into it). A status not in
        *ok* (nor handled here) raises :class:`GraphError`."""
        url = self.url(path_or_url)
        sent = {"Accept": "application/json", **(headers or {})}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"

        async def attempt(credentials: Credentials) -> tuple[Any, Any]:
            self.credentials = self._bearer(credentials)
            try:
                return await self._throttled(method, url, sent, body, sink, max_body, ok,
                                             credentials)
            except LoginRefused:
                self.credentials = None  # refused: the next request asks again
                raise

        result, _ = await refresh_once(
            self.source, attempt, await self.token(),
            refused=lambda detail: self.auth_failed(self._refused(detail)),
            where=self.server, who=self.source.who,
        )
        return result

    async def _throttled(self, method: str, url: str, sent: dict[str, str],
                         body: bytes | None, sink: Callable[[], Any] | None, max_body: int,
                         ok: tuple[int, ...], credentials: Credentials) -> tuple[Any, Any]:
        """The request with *credentials*, repeated after throttling; a 401
        raises :class:`LoginRefused` (``request`` refreshes the token)."""
        throttled = 0
        clock = self.source.context.clock
        while True:
            wait = self.throttled_until - clock.seconds()
            if wait > 0:
                await sleep(clock, wait)
            writer = sink() if sink is not None else None
            try:
                response = await self._send(method, url, sent, body, max_body, writer,
                                            credentials)
            except BaseException:
                if writer is not None:
                    writer.discard()
                raise
            status = int(response.status)
            if status in ok:
                return response, writer
            if writer is not None:
                writer.discard()
            code, detail = error_of(getattr(response, "body", b"") or b"")
            if status == 401:
                raise LoginRefused(detail)
            if status in THROTTLED:
                throttled += 1
                delay = retry_after(response)
                if throttled > MAX_THROTTLED or delay > MAX_RETRY_AFTER:
                    raise self.unavailable(
                        f"{self.source.who}: {self.server} throttles requests "
                        f"({status} {code or 'throttled'}, Retry-After {delay:g} s)"
                    )
                log.info(
                    "mailbox %s: %s answered %d (%s); waiting %g s as Retry-After says",
                    self.source.name, self.server, status, code or "throttled", delay,
                    extra={"mailbox": self.source.name},
                )
                self.throttled_until = max(self.throttled_until, clock.seconds() + delay)
                continue
            message = (
                f"{self.source.who}: {method} {urlsplit(url).path} answered "
                f"{status} {code}: {detail}"
            )
            if status >= 500:
                raise self.unavailable(message)
            raise GraphError(message, status, code, detail)

    def _refused(self, detail: str) -> str:
        return f"login refused for {self.source.who} on {self.server}: {detail}"

    async def _send(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
                    max_body: int, writer: Any, credentials: Credentials) -> Any:
        self.requests += 1
        sent = {**headers, "Authorization": f"Bearer {credentials.secret}"}
        try:
            response = await self.http.request(
                method, url, headers=sent, body=body, max_body=max_body, sink=writer
            )
        except PostroomError:
            raise
        except Exception as exc:
            raise self.unavailable(
                f"{self.source.who}: {method} {urlsplit(url).path} on "
                f"{self.server} failed: {exc}"
            ) from exc
        if self.source.debug:
            log.info(
                "mailbox %s: graph %s %s -> %s", self.source.name, method,
                urlsplit(url).path, response.status, extra={"mailbox": self.source.name},
            )
        return response
