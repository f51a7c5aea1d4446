"""A one-shot request with ``postroom.api.HTTPClient`` on the real reactor (run as a subprocess).

``python -m tests.net.http_client '<json>'`` with ``url``, optional
``method``, ``headers``, ``body`` (text), ``proxy`` (ProxySettings fields),
``ca_file``, ``timeout``, ``max_body``, ``truncate``, ``sink`` (a file path: the body is
streamed there), ``persistent`` and ``repeat`` (the request made that many
times: ``bodies`` lists every answer's body). Prints one JSON object:
``{"ok": true, "status", "headers", "body", "size", "bodies"}`` or
``{"ok": false, "error": type, "message"}``. A
subprocess keeps the global reactor out of the test process.
"""

from __future__ import annotations

from typing import Any

from postroom.api import HTTPClient, ProxySettings
from tests.net.oneshot import run_attempt


async def attempt(reactor: Any, spec: dict[str, Any]) -> dict[str, Any]:
    proxy = ProxySettings(**spec["proxy"]) if spec.get("proxy") else None
    client = HTTPClient(
        reactor,
        proxy=proxy,
        ca_file=spec.get("ca_file"),
        timeout=spec.get("timeout", 10),
        persistent=spec.get("persistent", False),
    )
    sink = open(spec["sink"], "wb") if spec.get("sink") else None  # noqa: SIM115
    body = spec.get("body")
    bodies = []
    try:
        for _ in range(spec.get("repeat", 1)):
            answer = await client.request(
                spec.get("method", "GET"),
                spec["url"],
                headers=spec.get("headers"),
                body=body.encode() if body is not None else None,
                sink=sink,
                max_body=spec.get("max_body", 1024 * 1024),
                truncate=spec.get("truncate", False),
            )
            bodies.append(answer.body.decode("latin-1"))
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__, "message": str(exc)}
    finally:
        if sink is not None:
            sink.close()
        await client.close()
    return {
        "ok": True,
        "status": answer.status,
        "headers": dict(answer.headers),
        "body": answer.body.decode("latin-1"),
        "size": answer.size,
        "truncated": answer.truncated,
        "bodies": bodies,
    }


if __name__ == "__main__":
    run_attempt(attempt)
