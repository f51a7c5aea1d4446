""":class:`SourceBase`: what every source driver shares with the others.

One behaviour for all sources, so no driver grows its own variant:

* **credentials** come from the mailbox's auth driver
  (``DriverContext.authenticator``), for every source that declares
  ``needs_auth`` (the default). A source built without one (an embedding
  that gave none) fails to connect with a :class:`~postroom.errors.SourceError`
  naming the missing driver; there is no fall-back to the mailbox's own
  ``password``, which would bypass token refresh for OAuth mailboxes;
* **a refused token is refreshed once** (:func:`refresh_once`): the login of
  a line-protocol source (:meth:`ServerSourceBase.log_in`) and each request
  of an HTTP one (Graph, EWS) that the server answers "refused" report it, take
  fresh credentials from the auth driver and try once more, one way for all;
* **auth events** go to the ``postroom_auth_event`` hook through
  ``DriverContext.auth_event`` the same way: ``login-ok`` after a login,
  ``login-failed`` (and ``invalidate()`` on the auth driver, so OAuth tokens
  are refreshed) when the server refused the credentials. A failing hook never
  fails the login;
* **listing progress**: a source that lists a large folder page by page
  reports its count per page (:meth:`SourceBase.listing_progress`), shown the
  way the kernel shows the import that follows;
* **spool files** are :class:`~postroom.sources.spool.SpoolFile`\\s in the
  kernel's spool folder, named after the mailbox, hashed while written, and
  measured against ``maximum-msg-size``.

Back-off between reconnects is the kernel's (:class:`postroom.backoff.Backoff`
in the mailbox service): a source fails with ``SourceError`` or
``ConnectionDown`` and is built again. A refused login fails with
:class:`~postroom.errors.AuthenticationFailed` (after :meth:`SourceBase.login_refused`),
which the mailbox service backs off by the login policy instead
(:mod:`postroom.loginpolicy`: longer delays, state ``auth-failed``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Protocol, TypeVar

from twisted.internet import defer
from zope.interface import implementer

from postroom.drivers import Credentials, DriverContext
from postroom.errors import SourceError
from postroom.interfaces import ISource
from postroom.model import FetchedMessage
from postroom.progress import ListingProgress
from postroom.sources.spool import SpoolFile, remove_spooled

log = logging.getLogger(__name__)

LOGIN_OK = "login-ok"
LOGIN_FAILED = "login-failed"

T = TypeVar("T")


class LoginRefused(Exception):
    """The server refused the credentials (a wrong password, an expired or
    revoked token); ``detail`` is what it said. Not for temporary failures
    (``NO [UNAVAILABLE]``, ``-ERR [SYS/TEMP]``): those are connection errors."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class CredentialsOwner(Protocol):
    """What :func:`refresh_once` asks for credentials and tells of refusals:
    a :class:`SourceBase`, or a sender with the same two methods."""

    name: str

    async def credentials(self) -> Credentials: ...

    def login_refused(self, detail: str) -> None: ...


async def refresh_once(
    owner: CredentialsOwner,
    attempt: Callable[[Credentials], Awaitable[T]],
    credentials: Credentials,
    *,
    refused: Callable[[str], Exception],
    where: str,
    who: str | None = None,
) -> tuple[T, Credentials]:
    """``attempt(credentials)``, and once more with fresh credentials when the
    server refused them; ``(its result, the credentials that worked)``.

    *attempt* raises :class:`LoginRefused` when the server refused the
    credentials (a login, or a request answered 401). The refusal is reported
    (``owner.login_refused``: the auth driver drops its token) and *owner* is
    asked again: a different secret (an expired token, refreshed) is tried at
    once, without waiting for the login back-off. The same secret again, or a
    second refusal, raises ``refused(detail)`` (an
    :class:`~postroom.errors.AuthenticationFailed` or the sender's kind).
    """
    try:
        return await attempt(credentials), credentials
    except LoginRefused as first:
        owner.login_refused(first.detail)
        detail = first.detail
    fresh = await owner.credentials()
    if fresh.secret == credentials.secret:
        raise refused(detail)
    log.info(
        "%s: credentials refused by %s; trying once more with fresh ones",
        who or f"mailbox {owner.name}",
        where,
        extra={"mailbox": owner.name},
    )
    try:
        return await attempt(fresh), fresh
    except LoginRefused as again:
        owner.login_refused(again.detail)
        raise refused(again.detail) from None


# the ISource methods are the subclasses'; the kernel verifies each concrete class
@implementer(ISource)
class SourceBase:  # type: ignore[misc]
    """Base class of source drivers: ``cls(mailbox, context)`` as ISource says.

    A subclass is declared an :class:`~postroom.interfaces.ISource` by this
    base; it sets :attr:`protocol` (what it asks the auth driver for) and
    implements the ISource methods (the kernel checks them when it loads it).
    """

    #: the kernel builds the mailbox's auth driver for this source (``auth``
    #: option); a source without a server (``maildir``) sets it False
    needs_auth: ClassVar[bool] = True
    supports_push: bool = False
    #: the ``protocol`` argument of ``IAuthenticator.credentials``
    protocol: ClassVar[str] = ""

    def __init__(self, mailbox: Any, context: DriverContext) -> None:
        self.mailbox = mailbox
        self.context = context
        self.name: str = mailbox.name

    # -- credentials and auth events

    async def credentials(self) -> Credentials:
        """The credentials to log in with, from the auth driver."""
        authenticator = self.context.authenticator
        if authenticator is None:
            auth = getattr(self.mailbox, "auth", None)
            raise SourceError(
                f"mailbox {self.name}: no auth driver"
                + (f" {auth!r}" if auth else "")
                + " was given to the source; it cannot log in"
            )
        credentials: Credentials = await defer.maybeDeferred(
            authenticator.credentials, self.protocol
        )
        return credentials

    def login_ok(self, detail: str) -> None:
        """Report a successful login (``login-ok``)."""
        self.auth_event(LOGIN_OK, detail)

    def login_refused(self, detail: str) -> None:
        """The server refused the credentials: have the auth driver refresh them
        before the next attempt, and report ``login-failed`` with the server's words.
        The caller then raises :class:`~postroom.errors.AuthenticationFailed`."""
        authenticator = self.context.authenticator
        if authenticator is not None:
            authenticator.invalidate()
        self.auth_event(LOGIN_FAILED, detail)

    def auth_event(self, event: str, detail: str) -> None:
        """Tell the ``postroom_auth_event`` hook; its failures are only logged."""
        report = self.context.auth_event
        if report is None:
            return
        d = defer.maybeDeferred(report, self.name, event, detail)
        d.addErrback(lambda f: log.debug("auth event hook failed: %s", f.getErrorMessage()))

    # -- quarantine

    def quarantine_released(self, keys: set[str]) -> None:
        """The kernel says these messages were released from quarantine since
        the last pass (``postroom quarantine replay``). One that could not be
        fetched is still on the server: a source that lists everything the
        folder holds (IMAP, POP3) finds it again by itself and ignores this; a
        source whose cursor has passed it (a delta link, a sync state) lists
        the folder whole at its next listing."""

    # -- progress

    def listing_progress(self) -> ListingProgress:
        """A progress display for a listing done page by page (Graph's delta
        pages, EWS's SyncFolderItems): ``with self.listing_progress() as p:``
        and ``p.add(len(page))`` per page. Shown as the kernel's import
        progress is (every few seconds on the injected clock, one line on a
        terminal, log lines otherwise); a quick listing shows nothing."""
        return ListingProgress(self.name, self.context.clock)

    # -- spool

    @property
    def max_message_size(self) -> int:
        """``email-processing.maximum-msg-size`` in bytes (0: no limit)."""
        try:
            return int(self.context.config.get("email-processing", "maximum-msg-size") or 0)
        except (AttributeError, KeyError, TypeError, ValueError):
            return 0

    def spool(self, label: str = "") -> SpoolFile:
        """A new spool file for one download (*label*: e.g. the UID, for the name)."""
        prefix = f"{self.protocol or 'msg'}-{self.name}-{label + '-' if label else ''}"
        return SpoolFile.create(
            self.context.spool_dir, prefix=prefix, max_size=self.max_message_size
        )

    def note_size(self, source_key: str, size: int | None) -> None:
        """Log a message the server announces as over ``maximum-msg-size``: it is
        downloaded all the same, to keep its raw bytes (stored wrapped)."""
        limit = self.max_message_size
        if limit and size is not None and size > limit:
            log.info(
                "mailbox %s: message %s is %d bytes, over maximum-msg-size (%d): "
                "downloading it to keep its raw bytes",
                self.name,
                source_key,
                size,
                limit,
                extra={"mailbox": self.name},
            )

    def drop_spooled(self, message: FetchedMessage) -> None:
        """Delete *message*'s spool file (acknowledged or released); a raw file
        outside the spool folder is not the source's to delete."""
        path = message.raw.path
        spool = os.path.abspath(self.context.spool_dir)
        if os.path.abspath(path).startswith(spool + os.sep):
            remove_spooled(path)
