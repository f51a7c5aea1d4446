"""Building blocks of source drivers (public through :mod:`postroom.api`).

:class:`~postroom.sources.base.SourceBase` gives a driver credentials through
the auth driver, auth events and spool files;
:class:`~postroom.sources.server.ServerSourceBase` adds a mail server's
connection options read into :class:`~postroom.net.server.ServerSettings`;
:class:`~postroom.sources.spool.SpoolFile` is the hashing spool writer. The
line-protocol pieces (server settings, time limits, TLS errors, SASL) are in
:mod:`postroom.net`.
"""

from postroom.sources.base import LOGIN_FAILED, LOGIN_OK, SourceBase
from postroom.sources.server import MAILBOX_SECURITY_OPTION, ServerSourceBase
from postroom.sources.spool import SpoolFile, remove_spooled

__all__ = [
    "LOGIN_FAILED",
    "LOGIN_OK",
    "MAILBOX_SECURITY_OPTION",
    "ServerSourceBase",
    "SourceBase",
    "SpoolFile",
    "remove_spooled",
]
