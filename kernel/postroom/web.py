"""The HTTP side: a health endpoint (JSON) on 127.0.0.1 by default.

``GET /health`` answers per mailbox: connected, last success, last error,
counters; status 200 when every mailbox is connected, else 503.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.web import resource, server

if TYPE_CHECKING:
    from postroom.services.gateway import Gateway


class Health(resource.Resource):
    isLeaf = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway

    def render_GET(self, request: Any) -> bytes:
        mailboxes = self.gateway.health()
        ok = all(m["connected"] for m in mailboxes.values())
        request.setResponseCode(200 if ok else 503)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"status": "ok" if ok else "degraded", "mailboxes": mailboxes}).encode()


def site_for(gateway: Gateway) -> server.Site:
    root = resource.Resource()
    root.putChild(b"health", Health(gateway))
    return server.Site(root)


def start_web(gateway: Gateway, reactor: Any) -> Any:
    """Listen on the ``http`` section's bind address and port (0 disables)."""
    config = gateway.kernel.config
    port = int(config.get("http", "port") or 0)
    if not port:
        return None
    return reactor.listenTCP(port, site_for(gateway), interface=str(config.get("http", "bind")))
