"""``HTTPClient`` on the real reactor against a loopback HTTPS server, directly and through proxies.

The client runs in a subprocess (tests/net/http_client.py). The server answers
with the address each request came from, so a request through a proxy proves
its path (each proxy connects onwards from its own loopback address).
"""

from __future__ import annotations

import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.net.proxies import ROOT, make_tls_files, settings, source
from tests.pki import TestCA

#: a large body streamed to a file: 5 MiB of a repeating pattern
BIG = 5 * 1024 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    server: HTTPSServer

    def log_message(self, *args: Any) -> None:
        """Quiet."""

    def _answer(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urlsplit(self.path)
        if path.path == "/peer":
            self._answer(200, self.client_address[0].encode(), X_Test="yes")
        elif path.path == "/port":
            self._answer(200, str(self.client_address[1]).encode())
        elif path.path == "/big":
            size = int(parse_qs(path.query)["n"][0])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = bytes(range(256)) * 256
            sent = 0
            while sent < size:
                piece = chunk[: min(len(chunk), size - sent)]
                self.wfile.write(piece)
                sent += len(piece)
        elif path.path == "/hang":
            self.server.release.wait()  # until the test ends: the client must give up first
        else:
            self._answer(404, b"no such path")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(length)
        kind = self.headers.get("Content-Type", "")
        self._answer(201, f"{kind} {data.decode()}".encode())


class _KeepAliveHandler(_Handler):
    protocol_version = "HTTP/1.1"  # answers with Content-Length: a connection may be reused


class HTTPSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: TestCA) -> None:
        super().__init__(("127.0.0.1", 0), _KeepAliveHandler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.fspath(tls.cert_file), os.fspath(tls.key_file))
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.release = threading.Event()
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(tls: TestCA) -> Iterator[HTTPSServer]:
    running = HTTPSServer(tls)
    yield running
    running.stop()


def request(**spec: Any) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.net.http_client", json.dumps(spec)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_request_with_the_answer_and_its_headers(server: HTTPSServer, tls: TestCA) -> None:
    result = request(url=server.url("/peer"), ca_file=str(tls.ca_file))
    assert result["ok"] and result["status"] == 200 and result["body"] == "127.0.0.1"
    assert result["headers"]["x-test"] == "yes"


def test_a_post_sends_its_body_and_headers(server: HTTPSServer, tls: TestCA) -> None:
    result = request(url=server.url("/echo"), method="POST", body="a=1&b=2",
                     headers={"Content-Type": "application/x-www-form-urlencoded"},
                     ca_file=str(tls.ca_file))  # fmt: skip
    assert (result["status"], result["body"]) == (201, "application/x-www-form-urlencoded a=1&b=2")


def test_an_error_status_is_an_answer(server: HTTPSServer, tls: TestCA) -> None:
    result = request(url=server.url("/nothing"), ca_file=str(tls.ca_file))
    assert (result["ok"], result["status"], result["body"]) == (True, 404, "no such path")


def test_a_large_body_streams_into_the_sink(
    server: HTTPSServer, tls: TestCA, tmp_path: Path
) -> None:
    sink = tmp_path / "body"
    result = request(url=server.url(f"/big?n={BIG}"), ca_file=str(tls.ca_file), sink=str(sink))
    assert result["ok"] and result["size"] == BIG and result["body"] == ""
    data = sink.read_bytes()
    assert len(data) == BIG and data[:512] == bytes(range(256)) * 2


def test_an_answer_over_the_cap_is_refused(server: HTTPSServer, tls: TestCA) -> None:
    result = request(url=server.url("/big?n=300000"), ca_file=str(tls.ca_file), max_body=100000)
    assert result["error"] == "HTTPUnavailable"
    assert "answer longer than 100000 bytes" in result["message"]


def test_an_answer_over_the_cap_can_be_cut_instead(server: HTTPSServer, tls: TestCA) -> None:
    # 5 MiB answered: only the first 100000 bytes are kept, the status with them
    result = request(url=server.url(f"/big?n={BIG}"), ca_file=str(tls.ca_file), max_body=100000,
                     truncate=True)  # fmt: skip
    assert result["ok"] and result["status"] == 200 and result["truncated"]
    assert len(result["body"].encode("latin-1")) == 100000
    # the rest was not read: what arrived is the cap and at most a few socket reads more
    assert 100000 < result["size"] < BIG
    whole = request(url=server.url("/big?n=1000"), ca_file=str(tls.ca_file), max_body=1000,
                    truncate=True)  # fmt: skip
    assert whole["ok"] and not whole["truncated"] and whole["size"] == 1000


def test_the_certificate_is_verified(server: HTTPSServer) -> None:
    result = request(url=server.url("/peer"))  # the system's CAs do not know the test CA
    assert result["error"] == "HTTPUnavailable"
    assert f"127.0.0.1:{server.port}" in result["message"]
    assert "certificate" in result["message"].lower()


def test_only_https(server: HTTPSServer) -> None:
    result = request(url=f"http://127.0.0.1:{server.port}/peer")
    assert result["error"] == "ValueError" and "https://" in result["message"]


def test_a_silent_server_meets_the_deadline(server: HTTPSServer, tls: TestCA) -> None:
    result = request(url=server.url("/hang"), ca_file=str(tls.ca_file), timeout=1)
    assert result["error"] == "HTTPUnavailable"
    assert "no complete answer within 1 s" in result["message"]


@pytest.mark.parametrize("name", ("socks", "socks_auth", "dante", "http", "http_auth"))
def test_through_each_proxy(
    proxy_servers: dict[str, Any], server: HTTPSServer, tls: TestCA, name: str
) -> None:
    result = request(url=server.url("/peer"), ca_file=str(tls.ca_file),
                     proxy=settings(proxy_servers, name))  # fmt: skip
    assert result["ok"], result
    assert result["body"] == source(proxy_servers, name)  # the path, seen by the server


def test_a_proxy_refusing_our_credentials_is_named(
    proxy_servers: dict[str, Any], server: HTTPSServer, tls: TestCA
) -> None:
    proxy = settings(proxy_servers, "http_auth", password="wrong-proxy-password")
    result = request(url=server.url("/peer"), ca_file=str(tls.ca_file), proxy=proxy)
    assert result["error"] == "HTTPUnavailable"
    assert f"{proxy['host']}:{proxy['port']}" in result["message"]
    assert "wrong-proxy-password" not in result["message"]


@pytest.mark.parametrize(("persistent", "connections"), [(True, 1), (False, 3)])
def test_a_persistent_client_reuses_its_connection(
    server: HTTPSServer, tls: TestCA, persistent: bool, connections: int
) -> None:
    result = request(url=server.url("/port"), ca_file=str(tls.ca_file), repeat=3,
                     persistent=persistent)  # fmt: skip
    assert result["ok"] and len(result["bodies"]) == 3
    assert len(set(result["bodies"])) == connections  # one client port per connection
