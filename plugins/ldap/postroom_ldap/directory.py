"""The directory as the hooks use it: cache, circuit, a bounded wait, off the reactor.

:meth:`Directory.lookup` answers from the cache when it can; otherwise, unless
the circuit says the directory is down, it runs :func:`postroom_ldap.search.lookup`
in the kernel's thread pool and waits at most ``timeout`` seconds of the
gateway's clock for it (``Deferred.addTimeout``): an unresponsive server costs
an e-mail that long, a server known to be down costs it nothing. Either way
the look-up is :class:`DirectoryUnavailable`, which the enrich step records as
owed; the thread that was given up finishes on its own (ldap3's socket
timeouts) and its answer is dropped. At most :data:`MAX_IN_FLIGHT` look-ups
occupy threads at once, so a hanging directory cannot take the pool.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError
from twisted.python.failure import Failure

from postroom.api import Backoff
from postroom_ldap.cache import MISS, ContactCache
from postroom_ldap.circuit import Circuit
from postroom_ldap.contacts import Contact, normalise
from postroom_ldap.search import LookupFailed, lookup
from postroom_ldap.settings import Settings

log = logging.getLogger(__name__)

#: look-ups that may occupy pool threads at once
MAX_IN_FLIGHT = 4

Search = Callable[[Settings, str], Contact | None]


class DirectoryUnavailable(Exception):
    """The directory did not answer this look-up (the message says why); owed."""


class Directory:
    """One site's directory: its settings, cache and circuit (one per kernel)."""

    def __init__(
        self,
        settings: Settings,
        clock: Any,
        runner: Any,
        search: Search = lookup,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.runner = runner
        self.search = search
        self.cache = ContactCache(
            settings.cache_size, settings.cache_ttl, settings.negative_cache_ttl, clock.seconds
        )
        self.circuit = Circuit(
            backoff or Backoff(initial=settings.retry_initial, maximum=settings.retry_max),
            clock,
        )
        #: look-ups sent to the directory (answered or not): for tests and checks
        self.attempts = 0
        self.in_flight = 0

    async def lookup(self, address: str | None) -> Contact | None:
        """The contact of *address*, None when there is none (or no address);
        :class:`DirectoryUnavailable` when the directory did not answer."""
        key = normalise(address)
        if key is None:
            return None
        cached = self.cache.get(key)
        if cached is not MISS:
            assert cached is None or isinstance(cached, Contact)
            return cached
        if self.in_flight >= MAX_IN_FLIGHT:
            raise DirectoryUnavailable(f"{MAX_IN_FLIGHT} look-ups are still waiting for "
                                       f"{self.settings.shown_url}")  # fmt: skip
        if not self.circuit.allows():
            raise DirectoryUnavailable(self._down())
        try:
            contact = await self._ask(key)
        except Exception as exc:  # every failure ends the trial: the circuit never sticks
            if isinstance(exc, TimeoutError):
                reason = f"no answer within {self.settings.timeout:g}s"
            elif isinstance(exc, LookupFailed):
                reason = str(exc)
            else:
                log.error("ldap-contacts: the look-up failed unexpectedly", exc_info=True)
                reason = f"{type(exc).__name__}: {exc}"
            delay = self.circuit.failed(reason)
            log.warning(
                "ldap-contacts: %s did not answer (%s); look-ups are skipped for %.0fs and "
                "the e-mails' look-ups are owed (retried after the commit)",
                self.settings.shown_url, reason, delay,
            )  # fmt: skip
            raise DirectoryUnavailable(f"{self.settings.shown_url}: {reason}") from None
        if self.circuit.succeeded():
            log.warning("ldap-contacts: %s answers again", self.settings.shown_url)
        self.cache.put(key, contact)
        return contact

    def _down(self) -> str:
        circuit = self.circuit
        wait = max(0.0, (circuit.retry_at or 0.0) - self.clock.seconds())
        return (
            f"{self.settings.shown_url} is down ({circuit.reason}); "
            f"tried again in {wait:.0f}s"
        )

    def _ask(self, address: str) -> Deferred[Contact | None]:
        """The search in a pool thread, waited for at most ``timeout`` on the clock."""
        self.attempts += 1
        self.in_flight += 1
        answer: Deferred[Contact | None] = Deferred()

        def thread_done(result: Contact | Failure | None) -> None:
            self.in_flight -= 1
            if not answer.called:  # else given up (timed out): the answer is dropped
                answer.callback(result)  # a Failure errbacks

        try:
            running: Deferred[Contact | None] = self.runner.run(
                self.search, self.settings, address
            )
        except Exception:
            self.in_flight -= 1
            raise
        running.addBoth(thread_done)
        if not answer.called:
            answer.addTimeout(self.settings.timeout, self.clock)
        return answer
