"""A one-shot client through ``proxied_endpoint`` on the real reactor (run as a subprocess).

``python -m tests.net.proxy_client '<json>'`` with ``proxy`` (ProxySettings
fields), ``host``, ``port``, optional ``tls`` (``{"hostname", "ca_file"}``:
implicit TLS end to end with ``wrapClientTLS``) and ``timeout``. It sends
``ping``, waits for the greeting and the echo, and prints one JSON object:
``{"ok": true, "lines": [...]}`` or ``{"ok": false, "error": type, "message",
"reason"}``. A subprocess keeps the global reactor out of the test process.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, endpoints
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from postroom.api import ProxyError, ProxySettings, proxied_endpoint, twisted_client_tls
from tests.net.oneshot import run_attempt


class Ping(Protocol):
    def __init__(self, done: defer.Deferred[list[str]]) -> None:
        self.done = done
        self.buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(b"ping\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        lines = self.buffer.split(b"\n")
        if len(lines) > 2 and not self.done.called:
            self.done.callback([line.decode() for line in lines[:2]])
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.done.called and reason is not None:
            self.done.errback(reason)


async def attempt(reactor: Any, spec: dict[str, Any]) -> dict[str, Any]:
    settings = ProxySettings(**spec["proxy"])
    endpoint: Any = proxied_endpoint(
        reactor, settings, spec["host"], spec["port"], timeout=spec.get("timeout", 10)
    )
    if spec.get("tls"):
        creator = twisted_client_tls(spec["tls"]["hostname"], spec["tls"]["ca_file"])
        endpoint = endpoints.wrapClientTLS(creator, endpoint)
    done: defer.Deferred[list[str]] = defer.Deferred()
    try:
        await endpoint.connect(Factory.forProtocol(lambda: Ping(done)))
        lines = await done.addTimeout(10, reactor)
    except ProxyError as exc:
        return {"ok": False, "error": "ProxyError", "message": str(exc), "reason": exc.reason}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__, "message": str(exc), "reason": None}
    return {"ok": True, "lines": lines}


if __name__ == "__main__":
    run_attempt(attempt)
