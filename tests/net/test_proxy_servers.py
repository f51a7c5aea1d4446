"""``proxied_endpoint`` through real proxies: microsocks, Dante and tinyproxy on loopback.

Each proxy connects onwards from its own address (127.0.0.2 ...), and the
target greets with the address it sees, so every success proves the path.
The client runs on the real reactor in a subprocess (tests/net/proxy_client.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.net.proxies import (
    MAIL_HOST,
    ROOT,
    EchoServer,
    free_port,
    make_tls_files,
    settings,
    source,
)
from tests.pki import TestCA

pytestmark = pytest.mark.servers

WITH_CREDENTIALS = ("socks_auth", "dante", "http_auth")
EVERY = ("socks", "socks_auth", "dante", "http", "http_auth")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_echo(tls_files: TestCA) -> Iterator[EchoServer]:
    server = EchoServer((tls_files.cert_file, tls_files.key_file))
    yield server
    server.stop()


def connect(proxy: dict[str, Any], host: str, port: int, **extra: Any) -> dict[str, Any]:
    spec = {"proxy": proxy, "host": host, "port": port, **extra}
    done = subprocess.run(
        [sys.executable, "-m", "tests.net.proxy_client", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("name", EVERY)
def test_tunnel_through_each_proxy(
    proxy_servers: dict[str, Any], echo: EchoServer, name: str
) -> None:
    result = connect(settings(proxy_servers, name), "127.0.0.1", echo.port)
    assert result == {"ok": True, "lines": [f"hello {source(proxy_servers, name)}", "echo ping"]}


@pytest.mark.parametrize("name", ("socks", "dante", "http"))
def test_target_name_resolved_at_the_proxy(
    proxy_servers: dict[str, Any], echo: EchoServer, name: str
) -> None:
    result = connect(settings(proxy_servers, name), "localhost", echo.port)
    assert result["lines"] == [f"hello {source(proxy_servers, name)}", "echo ping"]


def test_socks5_name_resolution_here_or_at_the_proxy(
    proxy_servers: dict[str, Any], echo: EchoServer
) -> None:
    """microsocks logs the destination as it got it: the name, or the address."""
    log = Path(proxy_servers["proxies"]["socks"]["log"])
    before = log.read_text()
    assert connect(settings(proxy_servers, "socks"), "localhost", echo.port)["ok"]
    here = settings(proxy_servers, "socks", resolve_at_proxy=False)
    assert connect(here, "localhost", echo.port)["ok"]
    new = log.read_text()[len(before) :].splitlines()
    assert [line.split(": ", 1)[1] for line in new] == [
        f"connected to localhost:{echo.port}",
        f"connected to 127.0.0.1:{echo.port}",
    ]


@pytest.mark.parametrize("name", WITH_CREDENTIALS)
def test_wrong_password(proxy_servers: dict[str, Any], echo: EchoServer, name: str) -> None:
    wrong = "wrong-Pa55word"
    result = connect(settings(proxy_servers, name, password=wrong), "127.0.0.1", echo.port)
    user = proxy_servers["proxies"][name]["user"]
    assert result["error"] == "ProxyError"
    assert result["reason"].startswith(f"the proxy refused our credentials (user {user!r})")
    if name == "http_auth":
        assert result["reason"].endswith(": 401 Unauthorized")  # tinyproxy: 401, not 407
    assert wrong not in result["message"]
    port = proxy_servers["proxies"][name]["port"]
    assert result["message"].startswith(
        f"{'HTTP' if 'http' in name else 'SOCKS5'} proxy 127.0.0.1:{port}"
    )


@pytest.mark.parametrize("name", WITH_CREDENTIALS)
def test_missing_credentials(proxy_servers: dict[str, Any], echo: EchoServer, name: str) -> None:
    anonymous = settings(proxy_servers, name, user=None, password=None)
    result = connect(anonymous, "127.0.0.1", echo.port)
    assert result["error"] == "ProxyError"
    assert result["reason"].startswith("the proxy requires credentials (none configured)")
    if name == "http_auth":
        assert result["reason"].endswith(": 407 Proxy Authentication Required")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("socks", "connection refused by the target"),
        ("dante", "connection refused by the target"),
        ("http", "the proxy answered CONNECT with 500 Unable to connect"),
    ],
)
def test_target_refuses(proxy_servers: dict[str, Any], name: str, reason: str) -> None:
    port = free_port()
    result = connect(settings(proxy_servers, name), "127.0.0.1", port)
    assert (result["error"], result["reason"]) == ("ProxyError", reason)
    assert f"(to 127.0.0.1:{port})" in result["message"]


@pytest.mark.parametrize("kind", ["socks5", "http"])
def test_proxy_unreachable(echo: EchoServer, kind: str) -> None:
    port = free_port()
    result = connect({"kind": kind, "host": "127.0.0.1", "port": port}, "127.0.0.1", echo.port)
    assert result["error"] == "ProxyError"
    assert result["reason"].startswith("cannot reach the proxy: connection refused")
    assert f"proxy 127.0.0.1:{port} " in result["message"]


@pytest.mark.parametrize("name", WITH_CREDENTIALS)
def test_tls_end_to_end_with_sni(
    proxy_servers: dict[str, Any],
    tls_echo: EchoServer,
    tls_files: TestCA,
    name: str,
) -> None:
    """TLS runs inside the tunnel: SNI and the certificate are the mail host's."""
    tls = {"hostname": MAIL_HOST, "ca_file": str(tls_files.ca_file)}
    result = connect(settings(proxy_servers, name), "127.0.0.1", tls_echo.port, tls=tls)
    assert result == {
        "ok": True,
        "lines": [f"hello {source(proxy_servers, name)} sni {MAIL_HOST}", "echo ping"],
    }


def test_tls_to_a_name_the_proxy_resolves(
    proxy_servers: dict[str, Any], tls_echo: EchoServer, tls_files: TestCA
) -> None:
    tls = {"hostname": "localhost", "ca_file": str(tls_files.ca_file)}
    result = connect(settings(proxy_servers, "dante"), "localhost", tls_echo.port, tls=tls)
    assert result["lines"] == [f"hello {source(proxy_servers, 'dante')} sni localhost", "echo ping"]


@pytest.mark.parametrize("name", ("socks", "http"))
def test_tls_checks_the_certificate_against_the_mail_host(
    proxy_servers: dict[str, Any],
    tls_echo: EchoServer,
    tls_files: TestCA,
    name: str,
) -> None:
    tls = {"hostname": "other.example.test", "ca_file": str(tls_files.ca_file)}
    result = connect(settings(proxy_servers, name), "127.0.0.1", tls_echo.port, tls=tls)
    assert result["error"] == "VerificationError"
    assert "other.example.test" in result["message"]
