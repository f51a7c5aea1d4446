"""What a failed connection attempt tells the operator, without secrets.

pyOpenSSL's errors carry a list of ``(library, function, reason)`` tuples and
``service_identity`` raises its own error for a host-name mismatch; these
helpers turn both, and Twisted's connection errors, into short readable text.
"""

from __future__ import annotations

from twisted.internet import defer, error


def is_hostname_mismatch(exc: BaseException | None) -> bool:
    """The certificate is valid but names another host (``service_identity``)."""
    if exc is None:
        return False
    kind = type(exc)
    return kind.__name__ == "VerificationError" or kind.__module__.startswith("service_identity")


def tls_reasons(exc: BaseException | None) -> list[str] | None:
    """The reasons of a TLS failure (``["certificate verify failed"]``), or
    None when *exc* is not a TLS error."""
    if exc is None:
        return None
    kind = type(exc)
    if not (kind.__module__.startswith("OpenSSL") or "SSL" in kind.__name__):
        return None
    reasons: list[str] = []
    first = exc.args[0] if exc.args else None
    for entry in first if isinstance(first, list) else []:
        if isinstance(entry, tuple) and entry and entry[-1]:
            reasons.append(str(entry[-1]))
    return reasons or [str(exc) or "handshake failed"]


def describe_connection_error(exc: BaseException) -> str | None:
    """Twisted's and the OS's connection failures in words, or None when
    *exc* is none of those (the protocol describes it)."""
    if isinstance(exc, error.TimeoutError | defer.TimeoutError):
        return "no answer in time (protocol-timeout)"
    if isinstance(exc, error.DNSLookupError):
        return "host name not found"
    if isinstance(exc, error.ConnectionRefusedError):
        return f"connection refused ({exc})" if str(exc) else "connection refused"
    if isinstance(exc, error.ConnectionDone | error.ConnectionLost):
        return "connection closed by the server"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return None
