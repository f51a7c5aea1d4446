""":class:`SourceBase`: what every source driver shares with the others.

One behaviour for all sources, so no driver grows its own variant:

* **credentials** come from the mailbox's auth driver
  (``DriverContext.authenticator``), for every source that declares
  ``needs_auth`` (the default). A source built without one (an embedding
  that gave none) fails to connect with a :class:`~postroom.errors.SourceError`
  naming the missing driver; there is no fall-back to the mailbox's own
  ``password``, which would bypass token refresh for OAuth mailboxes;
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
from typing import Any, ClassVar

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
