"""What a hook implementation may ask of the store: ``ctx.store``.

The kernel's store (:class:`~postroom.store.async_store.AsyncStore`) offers
more, but a plugin that uses only these methods keeps working when the store
changes underneath it. Each returns a Deferred, because the call runs in the
kernel's thread pool: ``await ctx.store.find_by_message_id(mid)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from twisted.internet.defer import Deferred

from postroom.model import AttachedValue, DeliveryReport, Interaction, SuppressionEntry


@runtime_checkable
class StoreAccess(Protocol):
    """The store as plugins see it: lookups for threading, the suppression list,
    attached data added after the commit, and the delivery status reports give."""

    def get_interaction(self, interaction_id: str) -> Deferred[Interaction | None]:
        """The interaction, or None."""
        ...

    def find_by_message_id(self, message_id: str, type: Any = None) -> Deferred[list[Interaction]]:
        """Interactions with this Message-ID (angle brackets included), oldest
        first; only of *type* (``Inbound``/``Outbound``) when given."""
        ...

    def update_attached_data(
        self,
        interaction_id: str,
        values: Mapping[str, AttachedValue],
        remove: Iterable[str] = (),
    ) -> Deferred[None]:
        """Merge *values* into a stored interaction's attached data and drop the
        keys in *remove* (one transaction): an enrichment finished after the
        commit, e.g. from ``postroom_committed``. Fails with KeyError when the
        interaction is unknown. (API 1.2)"""
        ...

    def suppress(
        self, address: str, reason: str, interaction_id: str | None = None
    ) -> Deferred[None]:
        """Put a hard-bounced address on the suppression list."""
        ...

    def is_suppressed(self, address: str) -> Deferred[SuppressionEntry | None]:
        """The address's entry, or None (case-insensitive)."""
        ...

    def record_delivery(
        self, outbound_id: str, report_id: str, reports: Sequence[DeliveryReport]
    ) -> Deferred[bool]:
        """What report interaction *report_id* says about recipients of outbound
        interaction *outbound_id*: each recipient's delivery status, and the
        interaction's status derived from them, change where the report says
        more than what is known (API 1.2). Idempotent: the same report again
        changes nothing. Fires with whether anything changed (False for an id
        that is no outbound interaction)."""
        ...

    def known_source_keys(self, mailbox: str, keys: Iterable[str]) -> Deferred[set[str]]:
        """The subset of *keys* already stored for *mailbox*."""
        ...


__all__ = ["StoreAccess"]
