"""The exchange log is the plugin's own table: made through the kernel's
``postroom_store_migrations``, refused at start-up on a store that cannot keep it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from postroom.errors import ConfigError
from postroom.interfaces import ISQLAccess
from postroom.kernel import Kernel
from postroom.runner import InlineRunner
from postroom.store.async_store import AsyncStore
from postroom_autoreply import exchanges
from tests.conftest import run
from tests.plugins.autoreply.support import CUSTOMER, START, Harness


def test_the_kernel_makes_the_plugins_table_and_counts_in_it() -> None:
    clock = MemoryReactorClock()
    clock.advance(START)
    kernel = Kernel(reactor=clock, clock=clock, enabled_plugins=["autoreply"],
                    store_override={"driver": "memory"}, runner=InlineRunner())  # fmt: skip
    run(kernel.open())
    try:
        assert kernel.store_driver.plugin_schema_version(exchanges.OWNER) == 1
        run(exchanges.record(kernel.store, CUSTOMER, exchanges.IN, START, "i-1"))
        assert run(exchanges.count(kernel.store, CUSTOMER, START)) == 1
    finally:
        run(kernel.close())


class NoPluginTables:
    """A third party's store driver without ISQLAccess."""


@implementer(ISQLAccess)
class OtherDialect:
    """A third party's SQL store of a dialect the plugin has no tables for."""

    dialect_name = "mysql"

    def plugin_schema_version(self, owner: str) -> int:
        return 0


def starting(harness: Harness, driver: Any) -> None:
    kernel = SimpleNamespace(
        ctx=harness.ctx,
        store_driver=driver,
        store=AsyncStore(driver, InlineRunner()),
        config=SimpleNamespace(store_driver="acme"),
    )
    run(exchanges.postroom_startup(kernel))


def test_a_store_without_plugin_tables_is_refused_at_start(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    with pytest.raises(ConfigError, match=r"store driver 'acme': .* keeps no plugin tables"):
        starting(harness, NoPluginTables())


def test_a_store_without_the_plugins_tables_in_its_dialect_is_refused(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    starting(harness, harness.driver)  # the memory store with the tables: fine
    with pytest.raises(ConfigError, match="no tables for its SQL dialect 'mysql'"):
        starting(harness, OtherDialect())


def test_with_war_detection_off_any_store_will_do(tmp_path: Path) -> None:
    harness = Harness(tmp_path, **{"enable-autowar-detect": "false"})
    starting(harness, NoPluginTables())
