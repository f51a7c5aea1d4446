"""Drivers: the protocol, auth, sender and store implementations chosen by name.

Each group is an entry-point group; :func:`load_driver` loads one entry point
with stevedore only when the site configuration names it (so an SDK that is
installed but not configured is never imported), checks the class against the
group's zope interface, and turns any failure into a
:class:`~postroom.errors.PluginLoadError` naming group, name, distribution and
cause. A driver class may declare its options in a ``postroom_add_options``
static method, read by the kernel like a hook.

A name that no installed distribution provides is a mistake in the site file,
not a load failure: the kernel loads installed names only and validation reports
the others with file, line and option (:func:`installed_drivers`).
"""

from __future__ import annotations

import difflib
from importlib.metadata import entry_points
from typing import Any, cast

import attrs
from stevedore import driver as stevedore_driver
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyClass

from postroom._apiversion import check_api
from postroom.config.validator import InstalledDrivers
from postroom.errors import PluginLoadError
from postroom.interfaces import (
    AUTH_GROUP,
    SENDERS_GROUP,
    SOURCES_GROUP,
    STORES_GROUP,
    IAuthenticator,
    ISender,
    ISource,
    IStore,
)

INTERFACES: dict[str, Any] = {
    SOURCES_GROUP: ISource,
    SENDERS_GROUP: ISender,
    AUTH_GROUP: IAuthenticator,
    STORES_GROUP: IStore,
}


@attrs.frozen
class SourceItem:
    """A message a source has listed: its key and, when known, its size."""

    source_key: str
    size: int | None = None
    cursor: str | None = None  # the cursor value once this one is committed


@attrs.frozen
class SendResult:
    """What a sender reports: ``message_id`` is the Message-ID the message went
    out with (a server may replace the one assigned; the outbound interaction
    records this one, so that replies thread), ``accepted`` and ``refused``
    recipients, and a ``detail`` for the log."""

    message_id: str
    accepted: list[str]
    refused: dict[str, str] = attrs.field(factory=dict)
    detail: str = ""


#: ``Credentials.mechanism`` values meaning "``secret`` is an OAuth 2.0 access
#: token": the protocol driver picks XOAUTH2 or OAUTHBEARER from what the
#: server offers (and ``mail.<protocol>.auth.mechanisms``)
BEARER_MECHANISMS = frozenset({"BEARER", "XOAUTH2", "OAUTHBEARER"})


@attrs.frozen
class Credentials:
    """What an auth driver hands a protocol driver; ``secret`` never logged.

    ``mechanism`` is ``PLAIN`` (or ``LOGIN``) for a password, ``BEARER`` for
    an access token (``XOAUTH2`` and ``OAUTHBEARER`` are read the same way).
    """

    username: str
    secret: str = attrs.field(repr=False)
    mechanism: str = "PLAIN"

    @property
    def bearer(self) -> bool:
        """Whether ``secret`` is an access token rather than a password."""
        return self.mechanism.upper() in BEARER_MECHANISMS


@attrs.frozen
class DriverContext:
    """What a source or sender driver is built with (besides its options)."""

    reactor: Any
    clock: Any
    runner: Any
    config: Any
    spool_dir: str
    authenticator: Any = None
    #: ``auth_event(mailbox, event, detail)``: drivers report authentication
    #: events (``login-ok``, ``login-failed``, ``token-refreshed``,
    #: ``needs-reauthorisation``) to the ``postroom_auth_event`` hook with it
    auth_event: Any = None
    #: ``known_source_keys(mailbox, keys) -> Deferred[set[str]]``: which of
    #: these source keys the store already holds (sources that leave mail on
    #: the server use it to skip what was handed in before)
    known_source_keys: Any = None
    #: the gateway's :class:`postroom.oauth.OAuthRuntime` (token cache, grant
    #: vault, token HTTP client), shared by every OAuth auth driver
    oauth: Any = None


def needs_auth(cls: type) -> bool:
    """Whether the kernel builds an auth driver for this source or sender class.

    A driver says so with a ``needs_auth`` class attribute (see
    :class:`~postroom.interfaces.ISource`); one that does not say is
    assumed to log in to a server, as every driver but a local one does.
    """
    return bool(getattr(cls, "needs_auth", True))


def driver_names(group: str) -> list[str]:
    return sorted({ep.name for ep in entry_points(group=group)})


def installed_drivers() -> InstalledDrivers:
    """Every group's installed driver names, for validating the names a site gives.

    A name that is not among them is a mistake in the site file, reported by
    :func:`~postroom.config.validator.validate` with its line like any other;
    :func:`load_driver` is only asked for installed names.
    """
    return InstalledDrivers(
        sources=frozenset(driver_names(SOURCES_GROUP)),
        senders=frozenset(driver_names(SENDERS_GROUP)),
        stores=frozenset(driver_names(STORES_GROUP)),
        auth=frozenset(driver_names(AUTH_GROUP)),
    )


def distribution_of(group: str, name: str) -> tuple[str | None, str | None]:
    for ep in entry_points(group=group, name=name):
        dist = getattr(ep, "dist", None)
        if dist is not None:
            return dist.metadata["Name"], dist.version
    return None, None


def load_driver(group: str, name: str) -> type:
    """The driver class *name* of *group*, checked against the group's interface."""
    if name not in driver_names(group):
        known = driver_names(group)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PluginLoadError(
            group,
            name,
            None,
            LookupError(
                f"no driver of that name is installed (installed: {', '.join(known) or 'none'})"
                f"{hint}; install the distribution that provides it"
            ),
        )
    dist, _version = distribution_of(group, name)
    errors: list[BaseException] = []

    def on_failure(_manager: Any, _ep: Any, exc: BaseException) -> None:
        errors.append(exc)

    try:
        manager = stevedore_driver.DriverManager(
            namespace=group,
            name=name,
            invoke_on_load=False,
            on_load_failure_callback=on_failure,
        )
        cls = manager.driver
    except Exception as exc:
        cause = errors[0] if errors else exc
        raise PluginLoadError(group, name, dist, cause) from cause
    check_api(cls, group, name, dist)
    try:
        verifyClass(INTERFACES[group], cls)
    except Invalid as exc:
        raise PluginLoadError(
            group, name, dist, TypeError(f"does not implement {INTERFACES[group].__name__}: {exc}")
        ) from exc
    return cast(type, cls)
