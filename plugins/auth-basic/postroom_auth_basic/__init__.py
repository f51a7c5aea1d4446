"""postroom-auth-basic: user name and password from the site configuration.

The ``basic`` auth driver (``postroom.auth:basic``), the default ``auth`` of
every mailbox and of ``smtp-client``. It declares no options of its own: the
protocol drivers declare ``mailbox``/``user`` and ``password`` with
:func:`postroom.net.options.add_connection_options`, and this driver only reads
them, so the same driver serves IMAP, POP3 and SMTP.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from postroom.api import ConfigError, Credentials, IAuthenticator, Secret

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.0"

__all__ = ["BasicAuthenticator"]

#: the user name option, by where the driver is used: mailboxes say
#: ``mailbox``, ``smtp-client`` says ``user`` (the commercial product's names)
_USER_OPTIONS = ("mailbox", "user")

@implementer(IAuthenticator)
class BasicAuthenticator:
    """Hands out the configured user name and password, unchanged.

    Nothing expires, so ``invalidate`` has nothing to refresh: a refused
    password stays refused until the operator changes the file (the protocol
    driver reports the refusal on that mailbox).
    """

    def __init__(self, config: Any, context: Any = None) -> None:
        self.config = config
        self.context = context

    @property
    def _where(self) -> str:
        name = str(getattr(self.config, "name", "?"))
        # smtp-client, or smtp-client[<mailbox>] for a mailbox's own account
        return name if name.startswith("smtp-client") else f"mailbox {name!r}"

    def _option(self, names: tuple[str, ...]) -> tuple[str, Any]:
        """The first of *names* declared where this driver is used, and its value."""
        for name in names:
            try:
                return name, self.config.get(name)
            except KeyError:
                continue
        return names[0], None

    def _missing(self, option: str, what: str) -> ConfigError:
        message = (
            f"{self._where}: no {what} configured (option {option!r}); "
            "the basic auth driver needs a user name and a password"
        )
        error = getattr(self.config, "error", None)
        if callable(error):
            made = error(message, option)
            if isinstance(made, ConfigError):
                return made
        return ConfigError(message, option=option)

    def credentials(self, protocol: str) -> defer.Deferred[Credentials]:
        """The same credentials for every *protocol*; a missing one is a ConfigError."""
        user_option, user = self._option(_USER_OPTIONS)
        if user is None or not str(user).strip():
            return defer.fail(self._missing(user_option, "user name"))
        _name, password = self._option(("password",))
        if password is None or not password:
            return defer.fail(self._missing("password", "password"))
        secret = password.reveal() if isinstance(password, Secret) else str(password)
        return defer.succeed(Credentials(str(user), secret, "PLAIN"))

    def invalidate(self) -> None:
        """Nothing to refresh: a static password is what it is."""
