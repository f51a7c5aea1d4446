"""The store as the reactor sees it: every call runs in the kernel's thread pool.

Store drivers are plain blocking objects (:class:`postroom.interfaces.IStore`);
this proxy is the only way kernel code reaches them, so no database call can
run on the reactor thread by accident. It provides the interfaces its driver
provides, so a plugin detects an optional capability
(:class:`~postroom.interfaces.ISQLAccess`) on ``ctx.store`` with
``providedBy``; the capability's methods then return Deferreds too.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import directlyProvides, providedBy

from postroom.interfaces import IStore
from postroom.runner import Runner

_METHODS = frozenset(IStore.names())


class AsyncStore:
    """``await store.get_interaction(id)`` runs ``driver.get_interaction(id)`` off-thread."""

    def __init__(self, driver: Any, runner: Runner) -> None:
        self.driver = driver
        self.runner = runner
        directlyProvides(self, providedBy(driver))

    def __getattr__(self, name: str) -> Any:
        if name not in _METHODS and not hasattr(type(self.driver), name):
            raise AttributeError(name)
        method = getattr(self.driver, name)

        def call(*args: Any, **kwargs: Any) -> Deferred[Any]:
            return self.runner.run(method, *args, **kwargs)

        call.__name__ = name
        return call
