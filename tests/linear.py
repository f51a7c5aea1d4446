"""The growth-rate checks moved to :mod:`postroom.testing.linear`; kept for the tests' imports."""

from postroom.testing.linear import (
    DEFAULT_FACTOR,
    MAX_SIZE,
    MIN_SECONDS,
    Growth,
    assert_linear,
    best_time,
    measure_growth,
    timed,
)

__all__ = [
    "DEFAULT_FACTOR",
    "MAX_SIZE",
    "MIN_SECONDS",
    "Growth",
    "assert_linear",
    "best_time",
    "measure_growth",
    "timed",
]
