"""Fixtures of the hostile-input tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hostile.pipeline import EveryPlugin


@pytest.fixture(scope="module")
def every_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EveryPlugin]:
    """The inbound pipeline with every installed plugin, shared by a module's tests."""
    pipeline = EveryPlugin(tmp_path_factory.mktemp("spool"))
    try:
        yield pipeline
    finally:
        pipeline.close()
