"""HTTP API routes: the kernel's own and those plugins give (``postroom_register_routes``).

A route is a method, a path template and a handler. A template is literal
segments and ``{name}`` segments, each matching one non-empty path segment
(percent-decoded, given to the handler in ``request.url_vars``): no regular
expressions, so matching costs one pass over the path. Two routes whose
templates can match the same path with the same method clash; the kernel's
routes are refused to plugins.

The handler gets a :class:`RouteRequest` and returns a :class:`Response`, or a
JSON value (200), plainly, as a Deferred or as a coroutine; or a :class:`Stream`
for an answer that goes on (server-sent events, :mod:`postroom.events`). It refuses with
:class:`HTTPError` (its status, ``{"error": ...}``) or
:class:`~postroom.sendrequest.RequestError` (400, ``{"error": ..., "field": ...}``).
Twisted stays out of this module: :mod:`postroom.web` serves the routes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

import attrs

from postroom.sendrequest import parse_json

if TYPE_CHECKING:
    from postroom.context import Context

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: a literal path segment: unreserved URL characters
_LITERAL = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,31})\}")
#: the most segments a template has (and a path is matched against)
MAX_SEGMENTS = 16


class HTTPError(Exception):
    """An answer other than success: *code* and a message (``{"error": message}``)."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


class RouteError(ValueError):
    """A route that cannot be served: malformed, or clashing with another."""


@attrs.frozen
class Response:
    """What a handler answers: status, body, content type."""

    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        """*data* as JSON (non-ASCII kept; attrs classes as dicts, the rest as text)."""
        return cls(status, json_bytes(data))


class StreamHandle(Protocol):
    """What a stream's *start* gives back: told when its connection cannot take
    more for now (pause), can again (resume), or has ended (close)."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def close(self) -> None: ...


@attrs.frozen
class Stream:
    """An answer that goes on: status 200 and *content_type*, then whatever the
    stream writes. ``await start(sink)`` begins it (an HTTPError raised there is
    answered as usual, nothing streamed); *sink* has ``write(bytes)`` and
    ``drop()`` (end the answer now). The result's ``pause``, ``resume`` and
    ``close`` follow the connection; ``resume`` is first called when the answer
    is ready for data (its headers sent, flow control in place)."""

    content_type: str
    start: Callable[[Any], Awaitable[StreamHandle]] = attrs.field(repr=False)


def json_bytes(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, default=_default).encode()


def _default(value: Any) -> Any:
    if attrs.has(type(value)):
        return attrs.asdict(value)
    return str(value)


@attrs.frozen
class RouteRequest:
    """One request as a handler sees it.

    ``body`` is the whole body (the API's body limit already applied);
    ``url_vars`` the ``{name}`` segments of the path; ``query`` the query
    string's values by name; ``content_type`` the ``Content-Type`` header;
    ``ctx`` the site's :class:`~postroom.api.Context`;
    ``gateway`` the :class:`~postroom.api.Gateway` serving the API
    (``await request.gateway.send(outbound_request)`` queues a send, validated
    as ``POST /send`` is).
    """

    method: str
    path: str
    url_vars: Mapping[str, str]
    query: Mapping[str, list[str]]
    body: bytes
    ctx: Context
    gateway: Any
    #: the request's ``Content-Type`` header, as sent (None: none)
    content_type: bytes | None = None
    #: the request's headers by lower-case name (the last value of each, as text)
    headers: Mapping[str, str] = attrs.field(factory=dict)

    def json(self) -> Any:
        """The body as JSON, strictly (duplicate keys, ``NaN``, deep nesting refused):
        a :class:`~postroom.sendrequest.RequestError` (400) when it is not."""
        return parse_json(self.body)


Handler = Callable[[RouteRequest], Any]


@attrs.frozen
class Route:
    """``Route("GET", "/responses/{id}", handler)``: what ``postroom_register_routes`` gives."""

    method: str
    path: str
    handler: Handler = attrs.field(repr=False)

    def segments(self) -> list[str]:
        """The template's segments (``{name}`` kept as it is); RouteError when malformed."""
        if self.method not in METHODS:
            raise RouteError(f"route {self.path!r}: method {self.method!r} is not one of {METHODS}")
        if not self.path.startswith("/"):
            raise RouteError(f"route {self.path!r}: a path starts with '/'")
        parts = self.path.split("/")[1:]
        if not 1 <= len(parts) <= MAX_SEGMENTS:
            raise RouteError(f"route {self.path!r}: 1 to {MAX_SEGMENTS} segments")
        names = []
        for part in parts:
            found = _PARAMETER.fullmatch(part)
            if found is not None:
                names.append(found.group(1))
            elif not _LITERAL.fullmatch(part):
                raise RouteError(
                    f"route {self.path!r}: segment {part!r} is neither a literal "
                    "(letters, digits, '.', '_', '~', '-') nor a {name}"
                )
        if len(set(names)) != len(names):
            raise RouteError(f"route {self.path!r}: a {{name}} is used twice")
        if not callable(self.handler):
            raise RouteError(f"route {self.path!r}: the handler is not callable")
        return parts

    def match(self, parts: list[str]) -> dict[str, str] | None:
        """The ``{name}`` values when *parts* (a path's segments) is this route's path
        (whatever the method: the caller tells 404 from 405), else None."""
        template = self.path.split("/")[1:]
        if len(template) != len(parts):
            return None
        found: dict[str, str] = {}
        for pattern, part in zip(template, parts, strict=True):
            name = _PARAMETER.fullmatch(pattern)
            if name is not None:
                found[name.group(1)] = unquote(part)
            elif pattern != part:
                return None
        return found

    def clashes_with(self, other: Route) -> bool:
        """Whether some path of the same method matches both templates."""
        if self.method != other.method:
            return False
        mine, theirs = self.path.split("/")[1:], other.path.split("/")[1:]
        if len(mine) != len(theirs):
            return False
        return all(
            a == b or _PARAMETER.fullmatch(a) or _PARAMETER.fullmatch(b)
            for a, b in zip(mine, theirs, strict=True)
        )


@attrs.frozen
class RouteTable:
    """The kernel's routes first, then the plugins', each named by its owner."""

    routes: tuple[tuple[str, Route], ...]

    @classmethod
    def build(
        cls, kernel_routes: Iterable[Route], plugin_routes: Iterable[tuple[str, Route]]
    ) -> RouteTable:
        """Check every route; RouteError naming the owner for a malformed or clashing one."""
        table: list[tuple[str, Route]] = []
        for owner, route in [*(("postroom", r) for r in kernel_routes), *plugin_routes]:
            if not isinstance(route, Route):
                raise RouteError(f"{owner}: {route!r} is not a postroom.api.Route")
            try:
                route.segments()
            except RouteError as exc:
                raise RouteError(f"{owner}: {exc}") from None
            for other_owner, other in table:
                if route.clashes_with(other):
                    raise RouteError(
                        f"{owner}: route {route.method} {route.path} clashes with "
                        f"{other.method} {other.path} of {other_owner}"
                    )
            table.append((owner, route))
        return cls(tuple(table))

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for *method* and *path*, with its ``{name}`` values;
        HTTPError 404 (no route has the path) or 405 (not with this method)."""
        parts = [part for part in path.split("/") if part]  # "//health/" is /health
        other_method = False
        if 1 <= len(parts) <= MAX_SEGMENTS:
            for _owner, route in self.routes:
                values = route.match(parts)
                if values is None:
                    continue
                if route.method == method:
                    return route, values
                other_method = True
        if other_method:
            raise HTTPError(405, f"{method} is not allowed here")
        raise HTTPError(404, "no such endpoint")
