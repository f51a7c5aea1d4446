"""The real proxies of the proxy tests, and loopback servers to tunnel to.

:func:`start_proxy_servers` runs ``contrib/scripts/proxy-test-servers start
--json`` (it installs microsocks, Dante and tinyproxy when missing and starts
them on 127.0.0.1, or reuses the running ones of the port base) and returns
the state it prints; when that fails the tests fail, they never skip.

:class:`EchoServer` is the target: it greets each client with the address the
connection came from (each proxy connects from its own, so the greeting proves
the path) and, with TLS, the server name the client sent (SNI), then echoes
lines. Its certificate comes from a throw-away CA made with ``cryptography``.
"""

from __future__ import annotations

import os
import socket
import socketserver
import ssl
import threading
from pathlib import Path
from typing import Any

from tests.integration.servers import run_start_script
from tests.pki import TestCA
from tests.pki import make_tls_files as make_server_tls

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "contrib" / "scripts" / "proxy-test-servers"
MAIL_HOST = "mail.example.test"


class ProxyServersUnavailable(RuntimeError):
    """The proxies could not be started (the message says why)."""


def start_proxy_servers() -> dict[str, Any]:
    """Start (or reuse) the proxies through the script; their state."""
    return run_start_script(SCRIPT, ProxyServersUnavailable)


def make_tls_files(directory: Path) -> TestCA:
    """A throw-away CA and a server certificate for MAIL_HOST, localhost and 127.0.0.1."""
    return make_server_tls(directory, hosts=(MAIL_HOST, "localhost", "127.0.0.1"))


class _Handler(socketserver.StreamRequestHandler):
    server: EchoServer

    def handle(self) -> None:
        peer = self.client_address[0]
        sni = getattr(self.connection, "postroom_sni", None)
        greeting = f"hello {peer}" + (f" sni {sni}" if self.server.tls else "")
        self.wfile.write(greeting.encode() + b"\n")
        for line in self.rfile:
            self.wfile.write(b"echo " + line)


class EchoServer(socketserver.ThreadingTCPServer):
    """Greets with the peer's address (and SNI), then echoes lines; TLS
    when *tls* is ``(cert, key)``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.tls = tls is not None
        self.context: ssl.SSLContext | None = None
        if tls is not None:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(os.fspath(tls[0]), os.fspath(tls[1]))
            self.context.sni_callback = self._remember_sni
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def _remember_sni(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: Any) -> None:
        sock.postroom_sni = name  # type: ignore[union-attr]

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.context is not None:
            sock.settimeout(10)
            try:
                sock = self.context.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                sock.close()
                raise
        return sock, address

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def free_port() -> int:
    """A loopback port nothing listens on (for "refused" cases)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def settings(state: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    """The ProxySettings fields of proxy *name* of the running set (its
    credentials included), with *changes*."""
    proxy = state["proxies"][name]
    fields = {"kind": proxy["kind"], "host": proxy["host"], "port": proxy["port"]}
    if proxy["user"]:
        fields |= {"user": proxy["user"], "password": proxy["password"]}
    return fields | changes


def source(state: dict[str, Any], name: str) -> str:
    """The address proxy *name* connects onwards from (what servers log)."""
    return str(state["proxies"][name]["source"])
