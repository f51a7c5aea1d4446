"""TLS that verifies certificates, for Twisted clients and for the standard library."""

from __future__ import annotations

import os
import ssl
from typing import Any


def twisted_client_tls(hostname: str, ca_file: str | os.PathLike[str] | None = None) -> Any:
    """A connection creator for ``startTLS``/``connectSSL`` checking the
    certificate against *hostname* and the system's CAs (or *ca_file*)."""
    from twisted.internet import ssl as tssl

    if ca_file is not None:
        with open(ca_file, "rb") as fh:
            pem = fh.read()
        trust = tssl.trustRootFromCertificates(
            [tssl.Certificate.loadPEM(block) for block in _pem_blocks(pem)]
        )
    else:
        trust = tssl.platformTrust()
    return tssl.optionsForClientTLS(hostname, trustRoot=trust)


def stdlib_context(ca_file: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for smtplib/imaplib: verification and host name check on."""
    context = ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file else None)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _pem_blocks(pem: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    blocks = []
    for chunk in pem.split(marker):
        if b"-----BEGIN CERTIFICATE-----" in chunk:
            blocks.append(chunk.strip() + b"\n" + marker + b"\n")
    if not blocks:
        raise ValueError("no PEM certificate found")
    return blocks
