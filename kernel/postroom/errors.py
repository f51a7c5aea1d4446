"""Exceptions that cross module boundaries.

Messages never contain secrets: code that formats one from a value that may be
a password or token passes it through :func:`postroom.logging.redact` first.
"""

from __future__ import annotations


class PostroomError(Exception):
    """Base class: an error with a message meant for the operator."""


class ConfigError(PostroomError):
    """A site configuration problem: names the file, the line and the option."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        option: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.option = option
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        opt = f"option {self.option!r}: " if self.option else ""
        return f"{where}{opt}{self.message}"


class ConfigErrors(PostroomError):
    """Several configuration problems, reported together."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class PluginLoadError(PostroomError):
    """A plugin or driver could not be loaded; names group, name, distribution, cause."""

    def __init__(
        self, group: str, name: str, distribution: str | None, cause: BaseException
    ) -> None:
        self.group = group
        self.name = name
        self.distribution = distribution
        self.cause = cause
        dist = f" (distribution {distribution})" if distribution else ""
        super().__init__(
            f"cannot load {group} entry point {name!r}{dist}: {type(cause).__name__}: {cause}"
        )


class SourceError(PostroomError):
    """A mailbox could not be read (connection, authentication, protocol)."""


class ConnectionDown(SourceError):
    """The connection to the mailbox's server is gone.

    Raised by a source's ``fetch`` when the link broke: only the message being
    fetched counts a failure; the rest of the pass is abandoned (not counted)
    and the mailbox reconnects with back-off.
    """


class AuthenticationFailed(SourceError):
    """The mailbox's server refused the credentials (not a connection failure).

    The mailbox service backs off by :class:`postroom.loginpolicy.LoginPolicy`
    (exponentially, to a cap) instead of the connection back-off, so a wrong
    password never hammers the server into locking the account. The message
    carries the server's words, never the secret.
    """


class SendError(PostroomError):
    """An outbound message could not be sent; ``permanent`` ones are not retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        self.permanent = permanent
        super().__init__(message)


class SenderAuthenticationFailed(SendError):
    """The SMTP server refused the sender's credentials: nothing is wrong with the message.

    The outbox pauses all sending by the login policy; the entry stays queued
    and the attempt is not counted against it.
    """


class HandoffError(PostroomError):
    """A hand-off target (``postroom_submit``) did not take an interaction.

    Raised plain, or ``permanent=False``, it means "not now": the kernel retries
    that target later with back-off. ``permanent=True`` means the target refused
    the interaction for good (a webhook's 410): the kernel marks that target
    ``refused`` and stops retrying it until someone asks for a retry
    (``postroom interactions retry-handoff``). Any other exception counts as
    "not now".
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        self.permanent = permanent
        super().__init__(message)


class FencingError(PostroomError):
    """A write carried a stale lease fencing token: another process owns the mailbox."""


class NotAnalysed(PostroomError, LookupError):
    """A gateway hook asked for analysis ``postroom_analyze`` did not leave.

    The gateway never reads a message's content itself (it would do so without
    the per-message budget): a plugin whose analysis is missing says so loudly.
    """


class OutboxConflict(PostroomError):
    """An outbox operation the entry's state does not allow (``outbox cancel`` of
    an entry being sent, ``retry`` of a sent one): nothing was changed."""

    def __init__(self, entry_id: str, state: str, action: str) -> None:
        self.entry_id = entry_id
        self.state = state
        self.action = action
        why = {
            "sending": "it is being sent right now (try again when the attempt is over)",
            "sent": "it was sent already",
            "cancelled": "it was cancelled",
        }.get(state, f"it is {state}")
        allowed = "queued or failed"
        super().__init__(
            f"cannot {action} outbound {entry_id}: {why}; only a {allowed} entry can be"
            + (" retried" if action == "retry" else " cancelled")
        )
