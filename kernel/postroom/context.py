"""What a hook implementation can reach: the ``ctx`` argument of the hooks."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Self

import attrs

if TYPE_CHECKING:
    from postroom.config.site import MailboxConfig, SiteConfig
    from postroom.store.async_store import AsyncStore


class _SiteView:
    """What both contexts offer over the site configuration and the mailbox."""

    config: SiteConfig
    mailbox: MailboxConfig | None

    @property
    def tenant_id(self) -> int:
        return int(self.config.tenant_id)

    def option(self, section: str, name: str) -> Any:
        return self.config.get(section, name)

    def for_mailbox(self, mailbox: MailboxConfig | None) -> Self:
        return attrs.evolve(self, mailbox=mailbox)  # type: ignore[misc]


@attrs.frozen
class Context(_SiteView):
    """Per-call context: the site configuration, the store, the clock, a logger.

    ``mailbox`` is the :class:`~postroom.config.site.MailboxConfig` the
    message came from (None outside the inbound path, e.g. ``postroom ingest``
    without a mailbox gives a synthetic one). ``store`` methods return
    Deferreds (they run in the thread pool): ``await ctx.store.find_by_message_id(mid)``.
    """

    config: SiteConfig
    store: AsyncStore
    clock: Any
    runner: Any = None
    #: runs CPU-bound picklable calls (parsing): worker processes, or the
    #: thread runner when there are none
    cpu_runner: Any = None
    mailbox: MailboxConfig | None = None
    log: logging.Logger = attrs.field(factory=lambda: logging.getLogger("postroom"))


@attrs.frozen
class AnalysisContext(_SiteView):
    """What ``postroom_analyze`` can reach: configuration, the mailbox, a logger.

    It runs in a worker process under the per-message budget: there is no
    store, clock, thread pool or network there, so none is offered.
    """

    config: SiteConfig
    mailbox: MailboxConfig | None = None
    log: logging.Logger = attrs.field(factory=lambda: logging.getLogger("postroom"))
