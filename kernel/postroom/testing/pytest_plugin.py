"""pytest fixtures for plugin tests, registered through the ``pytest11`` entry point.

Installed with postroom, so any test suite can ask for them::

    def test_vip(make_postroom_kernel):
        kernel = make_postroom_kernel([plugin], "vip: {domains: [bigcorp.example]}")
        ...

``make_postroom_kernel`` takes :class:`~postroom.testing.TestKernel`'s
arguments and closes every kernel it made when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from postroom.testing.fakes import FakeSender
from postroom.testing.kernel import TestKernel


@pytest.fixture
def make_postroom_kernel() -> Iterator[Callable[..., TestKernel]]:
    """A factory of :class:`TestKernel` (same arguments); each is closed after the test."""
    made: list[TestKernel] = []

    def make(*args: Any, **kwargs: Any) -> TestKernel:
        kernel = TestKernel(*args, **kwargs)
        made.append(kernel)
        return kernel

    yield make
    for kernel in reversed(made):
        kernel.close()


@pytest.fixture
def fake_sender() -> FakeSender:
    """A fresh :class:`FakeSender` (pass it as ``TestKernel(sender=...)``)."""
    return FakeSender()
