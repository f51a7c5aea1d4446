"""``postroom erase --address``: remove every trace of a person, and say what was done.

The kernel's tables first (:meth:`~postroom.store.sql.erasure.ErasureRecords.erase_address`),
then every plugin's own data (``postroom_erase``), then a verification that
searches every text column of the store's database and every raw message for
the address. An erasure is *complete* when no plugin failed and nothing was
found; otherwise it is reported incomplete (and the command exits 1), never
silently partial. A real run writes an audit row and a log line with the
counts and a keyed hash of the address, never the address itself.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

from postroom.addresses import AddressError, parse_mailbox

log = logging.getLogger(__name__)


def normalize(address: str) -> str:
    """The address as erasure matches it: ``local@domain``, lower case, the
    domain in ASCII (A-labels), as the kernel reads addresses
    (:mod:`postroom.addresses`); ``Name <addr>`` is accepted. AddressError when
    it is not one address."""
    mailbox = parse_mailbox(address.strip())
    return f"{mailbox.local_part}@{mailbox.domain}".lower()


@attrs.define
class ErasureReport:
    """What an erasure did (or, dry, would do)."""

    address_hash: str | None
    dry_run: bool
    #: kernel table -> rows deleted or rewritten (``table.rewritten``)
    counts: dict[str, int]
    #: plugin -> what it reported ({"table": rows}), or {"error": ...} when it failed
    plugins: dict[str, Any]
    #: ``table.column`` -> rows still naming the address after the run
    remaining: dict[str, int]

    @property
    def complete(self) -> bool:
        failed = any(isinstance(v, dict) and "error" in v for v in self.plugins.values())
        return not failed and not self.remaining

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "complete": self.complete,
            "address_hash": self.address_hash,
            "counts": self.counts,
            "plugins": self.plugins,
            "remaining": self.remaining,
        }


async def erase(kernel: Any, address: str, dry_run: bool = False) -> ErasureReport:
    """Erase *address* from the site's store and plugins (*kernel* open)."""
    key = normalize(address)
    store = kernel.store
    plan = await store.plan_erasure(key)
    if dry_run:
        counts = await store.plan_counts(plan)
    else:
        counts = await store.erase_address(key, plan)
    reported, failures = await kernel.hooks.erase(key, plan.interactions, dry_run, kernel.ctx)
    plugins: dict[str, Any] = dict(reported)
    for failure in failures:
        plugins[failure.plugin] = {"error": str(failure.cause)}
    remaining = {} if dry_run else await store.find_address(key)
    digest = await store.address_hash(key)
    report = ErasureReport(digest, dry_run, counts, plugins, remaining)
    if not dry_run:
        report.address_hash = await store.record_erasure(key, counts, plugins, report.complete)
        level = logging.INFO if report.complete else logging.ERROR
        log.log(
            level,
            "erasure %s: address hash %s, rows %s, plugins %s%s",
            "complete" if report.complete else "INCOMPLETE",
            report.address_hash,
            counts,
            plugins,
            f", still found in {remaining}" if remaining else "",
        )
    return report


async def audits(kernel: Any, address: str) -> list[dict[str, Any]]:
    """The audit rows of earlier erasures of *address* (hashed again to find them)."""
    rows: list[dict[str, Any]] = await kernel.store.erasure_audits(normalize(address))
    return rows


__all__ = ["AddressError", "ErasureReport", "audits", "erase", "normalize"]
