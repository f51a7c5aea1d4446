"""A webhook receiver for postroom, with nothing but the Python standard library.

It verifies each request the Standard Webhooks way (docs/integration.md),
then keeps the interaction as ``OUT/<id>.json``: the id is the idempotency
key, so a delivery the gateway repeats (a retry, a restart) is answered 200
and not kept twice. A request that does not verify is answered 401, which
the gateway records as a permanent failure of that interaction's hand-off.

    POSTROOM_WEBHOOK_SECRET=whsec_... python3 receiver.py \\
        --cert server.pem --key server-key.pem --out received/

It prints ``listening on https://HOST:PORT`` once ready, then one line per
interaction taken. ``tests/plugins/webhook/test_example_receiver.py`` runs
it against the webhook plugin, so this example keeps working.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.server
import json
import os
import ssl
import sys
import time
from pathlib import Path

#: a timestamp further than this from our clock is refused (replayed or stale)
TOLERANCE = 5 * 60
#: the largest body taken (a hand-off is a few KiB: the raw mail is fetched by reference)
MAX_BODY = 10 * 1024 * 1024


def secret_key(secret: str) -> bytes:
    """The HMAC key: the base64 after ``whsec_``."""
    if not secret.startswith("whsec_"):
        raise ValueError("the secret starts with whsec_")
    return base64.b64decode(secret[len("whsec_") :], validate=True)


def verify(key: bytes, headers: dict[str, str], body: bytes, now: float) -> str:
    """The webhook's id when the request is authentic, else ValueError."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (msg_id and timestamp.isdigit() and signatures):
        raise ValueError("missing or malformed webhook-* headers")
    if abs(now - int(timestamp)) > TOLERANCE:
        raise ValueError("timestamp too far from our clock")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return msg_id
    raise ValueError("no valid signature")


class Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or -1)
        if not 0 <= length <= MAX_BODY:
            return self.answer(413, "a body of at most 10 MiB, with its Content-Length")
        body = self.rfile.read(length)  # the raw bytes: verify before parsing
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            msg_id = verify(self.server.key, headers, body, time.time())
        except ValueError as exc:
            return self.answer(401, str(exc))
        interaction = json.loads(body)
        target = self.server.out / f"{msg_id}.json"
        if not target.exists():  # seen before: already kept, say yes again
            partial = target.with_suffix(".part")
            partial.write_bytes(body)
            os.replace(partial, target)
            print(f"took {msg_id} from {interaction['from']}: {interaction['subject']}",
                  flush=True)  # fmt: skip
        self.answer(200, "ok")

    def answer(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per interaction is printed instead."""


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int], key: bytes, out: Path) -> None:
        super().__init__(address, Handler)
        self.key = key
        self.out = out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--cert", required=True, help="the server certificate (PEM)")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    parser.add_argument("--out", type=Path, default=Path("received"))
    args = parser.parse_args()
    key = secret_key(os.environ["POSTROOM_WEBHOOK_SECRET"])
    args.out.mkdir(parents=True, exist_ok=True)
    server = Receiver((args.bind, args.port), key, args.out)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    host, port = server.server_address[:2]
    print(f"listening on https://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
