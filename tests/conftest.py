"""Shared test helpers: paths, the corpus, driving Deferreds without a reactor."""

from __future__ import annotations

import shutil
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

#: records the hooks each test module makes the kernel call (tests/hooks/test_hooks_tested.py)
pytest_plugins = ["tests.hooks.hookcalls"]

ROOT = Path(__file__).resolve().parents[1]
CORPUS = (ROOT / ".." / "shared" / "corpus").resolve()


def run(d: Deferred[Any] | Coroutine[Any, Any, Any]) -> Any:
    """The result of a Deferred (or coroutine) that must already have fired.

    Unit tests use an inline runner and ``task.Clock``, so everything fires
    synchronously; a Deferred still waiting means the code under test waits
    for something the test did not provide, which is a failure.
    """
    if not isinstance(d, Deferred):
        d = ensureDeferred(d)
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


@pytest.fixture
def corpus() -> Path:
    assert CORPUS.is_dir(), f"the shared corpus is missing: expected it at {CORPUS}"
    return CORPUS


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """A fresh copy of the quickstart site; returns its configuration file."""
    target = tmp_path / "quickstart"
    shutil.copytree(ROOT / "examples" / "quickstart", target)
    return target / "postroom.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the mail servers, the proxies, the private RabbitMQ node or slapd
    carry the ``servers`` marker, so ``make test-unit`` can leave them out
    (``-m "not servers"``)."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if {"mail_servers", "proxy_servers", "amqp_broker", "ldap_server"} & used:
            item.add_marker(pytest.mark.servers)
