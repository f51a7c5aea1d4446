"""ServerSettings: the connection options of a line-protocol driver, read once."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from postroom.api import ServerSettings

PORTS = {"ssl": 995, "starttls": 110, "none": 110}


class Options(dict[str, Any]):
    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[name]


def options(**values: Any) -> Options:
    base = {
        "server": "pop.example.test",
        "port": None,
        "pop-connection-security": "ssl",
        "ca-file": None,
        "connect-timeout": 15.0,
        "protocol-timeout": 90.0,
        "enable-debug": False,
    }
    base.update({k.replace("_", "-"): v for k, v in values.items()})
    return Options(base)


def read(**values: Any) -> ServerSettings:
    return ServerSettings.from_options(
        options(**values), security_option="pop-connection-security", ports=PORTS
    )


def test_read_from_the_options() -> None:
    settings = read(ca_file=Path("/etc/ca.pem"), enable_debug=True)
    assert settings == ServerSettings(
        host="pop.example.test",
        port=995,
        security="ssl",
        ca_file="/etc/ca.pem",
        connect_timeout=15.0,
        protocol_timeout=90.0,
        debug=True,
    )
    assert settings.where == "pop.example.test:995"
    assert settings.encrypted
    assert settings.tracer("box1").enabled


def test_port_follows_security_unless_written() -> None:
    assert read(pop_connection_security="starttls").port == 110
    assert read(pop_connection_security="none").port == 110
    assert not read(pop_connection_security="none").encrypted
    assert read(port="1995").port == 1995


def test_a_subclass_adds_its_own_fields() -> None:
    import attrs

    @attrs.frozen
    class WithHelo(ServerSettings):
        helo_name: str | None = None

    settings = WithHelo.from_options(
        options(), security_option="pop-connection-security", ports=PORTS, helo_name="gw"
    )
    assert (settings.helo_name, settings.port) == ("gw", 995)


def test_tls_verifies_by_default() -> None:
    context = read().stdlib_tls()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_an_unreadable_ca_file_is_an_error_not_an_open_door(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        read(ca_file=tmp_path / "missing.pem").twisted_tls()
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ValueError, match="no PEM certificate"):
        read(ca_file=bogus).twisted_tls()
