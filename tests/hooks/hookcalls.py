"""A pytest plugin recording which hooks the kernel calls during each test module.

``tests/hooks/test_hooks_tested.py`` asks of every hook that a test module that
names it made the kernel call it. A name in a test module proves nothing (a
docstring will do); a call the kernel made through :class:`postroom.plugins.facade.Hooks`
does. The facade is the only way kernel code calls hooks, so wrapping its one
look-up of implementations (and the two provider hooks it calls through pluggy)
sees every call: a hook counts as called when at least one implementation was
about to run.

Loaded for every session by ``tests/conftest.py``. With ``POSTROOM_HOOK_CALLS``
set to a file name, the session writes what it recorded there as JSON (the check
runs the modules a partial session left out in a subprocess that way).
"""

from __future__ import annotations

import functools
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from postroom.plugins.facade import Hooks

#: the environment variable naming the JSON file a session writes its calls to
OUTPUT_ENV = "POSTROOM_HOOK_CALLS"
#: markers of tests no unit session runs: leaving them out leaves a module complete
SERVER_MARKERS = frozenset({"postgresql", "servers"})
#: the test that checks the record; it runs after every other test of the session
CHECK = "test_hooks_tested.py::test_every_hook_is_called_by_a_test_that_names_it"


class Recorder:
    """Hooks called, by the test module that was running."""

    def __init__(self) -> None:
        self.calls: dict[Path, set[str]] = defaultdict(set)
        #: modules whose every test ran in this session (none deselected)
        self.ran: set[Path] = set()
        self.partial: set[Path] = set()
        self.module: Path | None = None

    def called(self, hook: str) -> None:
        if self.module is not None:
            self.calls[self.module].add(hook)

    def complete_modules(self) -> set[Path]:
        return self.ran - self.partial


RECORDER = Recorder()


def _record_impls(lookup: Callable[[Hooks, str], list[Any]]) -> Callable[[Hooks, str], list[Any]]:
    @functools.wraps(lookup)
    def recording(self: Hooks, hook_name: str) -> list[Any]:
        impls = lookup(self, hook_name)
        if impls:
            RECORDER.called(hook_name)
        return impls

    return recording


def _record_provider(method: Callable[..., Any], hook_name: str) -> Callable[..., Any]:
    @functools.wraps(method)
    def recording(self: Hooks, *args: Any, **kwargs: Any) -> Any:
        if getattr(self.pm.hook, hook_name).get_hookimpls():
            RECORDER.called(hook_name)
        return method(self, *args, **kwargs)

    return recording


def pytest_configure(config: pytest.Config) -> None:
    mp = pytest.MonkeyPatch()
    mp.setattr(Hooks, "_impls", _record_impls(Hooks._impls))
    mp.setattr(Hooks, "parser", _record_provider(Hooks.parser, "postroom_parser"))
    mp.setattr(Hooks, "expand", _record_provider(Hooks.expand, "postroom_expand"))
    config.add_cleanup(mp.undo)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The check runs last: it reads what every other test of the session recorded."""
    last = [item for item in items if item.nodeid.endswith(CHECK)]
    items[:] = [item for item in items if item not in last] + last


def pytest_deselected(items: list[pytest.Item]) -> None:
    for item in items:
        if not SERVER_MARKERS & {mark.name for mark in item.iter_markers()}:
            RECORDER.partial.add(item.path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    RECORDER.module = item.path
    RECORDER.ran.add(item.path)
    try:
        return (yield)
    finally:
        RECORDER.module = None


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(OUTPUT_ENV)
    if target:
        record = {
            "calls": {str(path): sorted(hooks) for path, hooks in RECORDER.calls.items()},
            "complete": sorted(str(path) for path in RECORDER.complete_modules()),
        }
        Path(target).write_text(json.dumps(record), encoding="utf-8")
