"""Connection failures in words, the same for every line protocol."""

from __future__ import annotations

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import error

from postroom.api import (
    describe_connection_error,
    is_hostname_mismatch,
    tls_reasons,
    xoauth2_response,
)


def test_tls_reasons_from_pyopenssl() -> None:
    verify = SSL.Error([("SSL routines", "", "certificate verify failed"), ("x", "", "")])
    assert tls_reasons(verify) == ["certificate verify failed"]
    assert tls_reasons(SSL.Error()) == ["handshake failed"]
    assert tls_reasons(ValueError("not TLS")) is None
    assert tls_reasons(None) is None


def test_host_name_mismatch() -> None:
    assert is_hostname_mismatch(VerificationError(errors=["DNSMismatch"]))  # type: ignore[list-item]
    assert not is_hostname_mismatch(SSL.Error())
    assert not is_hostname_mismatch(None)


def test_connection_errors() -> None:
    assert describe_connection_error(error.DNSLookupError("x")) == "host name not found"
    assert describe_connection_error(error.ConnectionRefusedError()).startswith(  # type: ignore[union-attr]
        "connection refused ("
    )
    assert describe_connection_error(error.TimeoutError()) == "no answer in time (protocol-timeout)"
    assert describe_connection_error(error.ConnectionLost()) == "connection closed by the server"
    assert describe_connection_error(OSError(113, "No route to host")) == "No route to host"
    assert describe_connection_error(KeyError("protocol's own")) is None


def test_xoauth2_response() -> None:
    assert xoauth2_response("a@b.test", "tok") == b"user=a@b.test\x01auth=Bearer tok\x01\x01"
