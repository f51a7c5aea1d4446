""":class:`ServerSourceBase`: a source that reads a mailbox on a mail server.

IMAP and POP3 (and any line-protocol source after them) declare the same
connection options and read them the same way; this base does both once, so
a driver only adds what is its own (folders, after-processing...). It also
connects the same way (:meth:`ServerSourceBase.endpoint`: directly or through
the proxy, TLS end to end) and logs in the same way
(:meth:`ServerSourceBase.log_in`: a refused token is refreshed and tried once
more before the login counts as failed, by :func:`~postroom.sources.base.refresh_once`;
:class:`~postroom.sources.base.LoginRefused` is what an attempt raises).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from postroom.config.options import OptionSchema, Scope
from postroom.drivers import Credentials, DriverContext
from postroom.errors import AuthenticationFailed, SourceError
from postroom.net.options import add_connection_options
from postroom.net.proxy import ProxySettings
from postroom.net.proxyconfig import proxy_for
from postroom.net.server import ServerSettings
from postroom.sources.base import SourceBase, refresh_once

#: the mailbox option naming the connection security (the commercial product's name,
#: shared by IMAP and POP3 mailboxes)
MAILBOX_SECURITY_OPTION = "pop-connection-security"


class ServerSourceBase(SourceBase):
    """A :class:`SourceBase` with a server: ``settings``, ``where``, ``tracer``,
    ``tls()``, ``endpoint()`` and ``log_in()``.

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
            mailbox,
            security_option=MAILBOX_SECURITY_OPTION,
            ports=self.ports,
            proxy=self.proxy_settings(),
        )
        #: ``server host:port``, for messages
        self.where = f"server {self.settings.where}"
        self.tracer = self.settings.tracer(self.name)

    def tls(self) -> Any:
        """The verifying TLS connection creator for this server (``startTLS``,
        ``wrapClientTLS``); a ``ca-file`` that cannot be read is a SourceError."""
        try:
            return self.settings.twisted_tls()
        except (OSError, ValueError) as exc:
            raise SourceError(
                f"mailbox {self.name}: cannot read ca-file {self.settings.ca_file}: {exc}"
            ) from exc

    def proxy_settings(self) -> ProxySettings | None:
        """The proxy this mailbox connects through (None: directly): its
        ``mail.<protocol>.socks.*`` / ``mail.<protocol>.proxy.*`` properties,
        else the site's ``proxy`` section (:func:`~postroom.net.proxyconfig.proxy_for`)."""
        return proxy_for(self.context.config, self.mailbox, self.protocol)

    def endpoint(self) -> Any:
        """The Twisted client endpoint to the server (through the proxy, TLS
        end to end for ``ssl``); a ``ca-file`` that cannot be read is a SourceError."""
        try:
            return self.settings.endpoint(self.context.reactor, self.context.clock)
        except (OSError, ValueError) as exc:
            raise SourceError(
                f"mailbox {self.name}: cannot read ca-file {self.settings.ca_file}: {exc}"
            ) from exc

    async def log_in(
        self, attempt: Callable[[Credentials], Awaitable[str]], credentials: Credentials
    ) -> Credentials:
        """Log in with ``attempt(credentials)`` (it returns what ``login-ok``
        says, or raises :class:`LoginRefused`); the credentials that worked.

        A refusal is reported (:meth:`login_refused`: the auth driver drops
        its token) and the auth driver is asked again: when it hands a
        different secret (an expired token, refreshed) the login is tried once
        more at once, without waiting for the login back-off. Only a second
        refusal, or the same secret again, raises
        :class:`~postroom.errors.AuthenticationFailed`.
        """

        async def logged_in(given: Credentials) -> None:
            self.login_ok(await attempt(given))

        _, used = await refresh_once(
            self, logged_in, credentials, refused=self.authentication_failed, where=self.where
        )
        return used

    def authentication_failed(self, detail: str) -> AuthenticationFailed:
        """The error of a refused login, naming the mailbox and the server."""
        return AuthenticationFailed(self._refused(detail))

    def _refused(self, detail: str) -> str:
        return f"login refused for mailbox {self.name} on {self.where}: {detail}"
