""":class:`ServerSourceBase`: a source that reads a mailbox on a mail server.

IMAP and POP3 (and any line-protocol source after them) declare the same
connection options and read them the same way; this base does both once, so
a driver only adds what is its own (folders, after-processing...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from postroom.config.options import OptionSchema, Scope
from postroom.drivers import DriverContext
from postroom.errors import SourceError
from postroom.net.options import add_connection_options
from postroom.net.server import ServerSettings
from postroom.sources.base import SourceBase

#: the mailbox option naming the connection security (the commercial product's name,
#: shared by IMAP and POP3 mailboxes)
MAILBOX_SECURITY_OPTION = "pop-connection-security"


class ServerSourceBase(SourceBase):
    """A :class:`SourceBase` with a server: ``settings``, ``where``, ``tracer``, ``tls()``.

    Subclasses set :attr:`types` (their ``type:`` names) and :attr:`ports`,
    and call :meth:`add_server_options` from their ``postroom_add_options``.
    """

    #: the mailbox ``type`` values the connection options apply to
    types: ClassVar[tuple[str, ...]] = ()
    #: the usual port for each ``pop-connection-security`` value
    ports: ClassVar[Mapping[str, int]] = {}

    @classmethod
    def add_server_options(cls, schema: OptionSchema) -> None:
        """Declare server, port, user, password, security, CA file, timeouts, debug."""
        add_connection_options(
            schema,
            scope=Scope.MAILBOX,
            types=cls.types,
            security_option=MAILBOX_SECURITY_OPTION,
            ports=cls.ports,
        )

    def __init__(self, mailbox: Any, context: DriverContext) -> None:
        super().__init__(mailbox, context)
        self.settings = ServerSettings.from_options(
            mailbox, security_option=MAILBOX_SECURITY_OPTION, ports=self.ports
        )
        #: ``server host:port``, for messages
        self.where = f"server {self.settings.where}"
        self.tracer = self.settings.tracer(self.name)

    def tls(self) -> Any:
        """The verifying TLS connection creator for this server (``connectSSL``,
        ``startTLS``); a ``ca-file`` that cannot be read is a SourceError."""
        try:
            return self.settings.twisted_tls()
        except (OSError, ValueError) as exc:
            raise SourceError(
                f"mailbox {self.name}: cannot read ca-file {self.settings.ca_file}: {exc}"
            ) from exc
