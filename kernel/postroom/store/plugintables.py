"""Giving a store the plugins' own tables, before it is opened."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from postroom.interfaces import ISQLAccess

if TYPE_CHECKING:
    from postroom.plugins.facade import Hooks


def add_plugin_tables(driver: Any, hooks: Hooks) -> list[str]:
    """Ask the plugins for their tables' migrations in *driver*'s dialect and
    hand them to it (applied by its ``open()``); returns their owners. A store
    without :class:`~postroom.interfaces.ISQLAccess` gets nothing: plugins
    that need tables refuse to start on it."""
    if not ISQLAccess.providedBy(driver):
        return []
    owners = []
    for migrations in hooks.store_migrations(driver.dialect_name):
        driver.add_plugin_migrations(migrations)
        owners.append(migrations.owner)
    return owners
