"""The growth-rate helper tells linear from quadratic work (it guards every hostile-input test)."""

from __future__ import annotations

import pytest

from tests.linear import assert_linear


def _quadratic(n: int) -> int:
    total = 0
    for i in range(n):
        for j in range(n):
            total += i ^ j
    return total


def _linear(n: int) -> int:
    return sum(i ^ 7 for i in range(n * 200))


def test_quadratic_work_fails() -> None:
    with pytest.raises(AssertionError, match="superlinear"):
        assert_linear(lambda n: n, _quadratic, start=64)


def test_linear_work_passes() -> None:
    growth = assert_linear(lambda n: n, _linear, start=64)
    assert growth.n >= 64 * 8  # it did search for a size worth measuring
    assert growth.ratio < 3
