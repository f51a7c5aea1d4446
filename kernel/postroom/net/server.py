"""Where a line-protocol driver connects, read once from its connection options.

IMAP, POP3 and SMTP declare the same options
(:func:`postroom.net.options.add_connection_options`); :class:`ServerSettings`
is those options as one value, so the drivers read host, port, security,
CA file, timeouts and trace switch the same way and build TLS the same way
(certificates verified, against the system's CAs or ``ca-file``).

They also connect the same way: :meth:`ServerSettings.endpoint` for Twisted
clients and :meth:`ServerSettings.connect_socket` for blocking ones (smtplib
in a thread), directly or through the ``proxy``, with implicit TLS end to end
(SNI and certificate checked against the mail host, never the proxy).
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Mapping
from typing import Any, Self

import attrs
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

from postroom.net.options import port_for
from postroom.net.proxy import ProxySettings, connect_through_proxy, proxied_endpoint
from postroom.net.tls import stdlib_context, twisted_client_tls
from postroom.net.trace import Tracer


@attrs.frozen
class ServerSettings:
    """A server and how to reach it (the connection options of one mailbox or sender)."""

    host: str
    port: int
    #: ``none``, ``starttls`` or ``ssl`` (implicit TLS)
    security: str
    ca_file: str | os.PathLike[str] | None = None
    #: seconds for TCP, TLS and the greeting together
    connect_timeout: float = 30.0
    #: seconds the server has for each answer
    protocol_timeout: float = 120.0
    #: ``enable-debug``: trace the protocol (secrets redacted)
    debug: bool = False
    #: the proxy to connect through (None: directly)
    proxy: ProxySettings | None = None

    @classmethod
    def from_options(
        cls, options: Any, *, security_option: str, ports: Mapping[str, int], **extra: Any
    ) -> Self:
        """Read the options declared by ``add_connection_options``; *extra*
        fills the fields a subclass adds."""
        ca_file = options.get("ca-file")
        return cls(
            host=str(options.get("server")),
            port=port_for(options, security_option, ports),
            security=str(options.get(security_option)),
            ca_file=os.fspath(ca_file) if ca_file else None,
            connect_timeout=float(options.get("connect-timeout")),
            protocol_timeout=float(options.get("protocol-timeout")),
            debug=bool(options.get("enable-debug")),
            **extra,
        )

    @property
    def where(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"

    @property
    def encrypted(self) -> bool:
        """TLS from the start (``ssl``) or after the upgrade (``starttls``)."""
        return self.security != "none"

    def twisted_tls(self) -> Any:
        """A verifying connection creator for Twisted (``connectSSL``, ``startTLS``).
        Raises OSError or ValueError when ``ca-file`` cannot be read."""
        return twisted_client_tls(self.host, self.ca_file)

    def stdlib_tls(self) -> ssl.SSLContext:
        """A verifying ``ssl.SSLContext`` (smtplib, imaplib)."""
        return stdlib_context(self.ca_file)

    def endpoint(self, reactor: Any, clock: Any = None) -> Any:
        """The Twisted client endpoint to the server: TCP, or a tunnel through
        ``proxy`` (its handshake within ``connect_timeout`` on *clock*), wrapped
        in verifying TLS for ``ssl``. Raises OSError or ValueError when
        ``ca-file`` cannot be read."""
        endpoint: Any
        if self.proxy is not None:
            endpoint = proxied_endpoint(
                reactor,
                self.proxy,
                self.host,
                self.port,
                timeout=self.connect_timeout,
                clock=clock if clock is not None else reactor,
            )
        else:
            endpoint = HostnameEndpoint(
                reactor, self.host, self.port, timeout=max(1, int(self.connect_timeout))
            )
        if self.security == "ssl":
            endpoint = wrapClientTLS(self.twisted_tls(), endpoint)
        return endpoint

    def connect_socket(
        self, timeout: float | None = None, source_address: tuple[str, int] | None = None
    ) -> socket.socket:
        """A blocking TCP socket to the server, directly or through ``proxy``
        (*timeout*: default ``connect_timeout``); TLS is the caller's (it knows
        its socket timeouts). Raises OSError, or ProxyError naming the proxy."""
        limit = self.connect_timeout if timeout is None else timeout
        if self.proxy is not None:
            return connect_through_proxy(self.proxy, self.host, self.port, limit)
        return socket.create_connection((self.host, self.port), limit, source_address)

    def tracer(self, name: str) -> Tracer:
        """The protocol trace of connection *name*, on when ``enable-debug`` is."""
        return Tracer(name, self.debug)
