"""Growth-rate checks: does processing time grow linearly with input size?

(``postroom.testing.assert_linear``: a plugin's ``postroom_analyze`` must take
time linear in the message's size; this is how postroom's own tests check it.)

A hostile message must not cost more than linear time. Fixed time limits in
tests lie on a loaded machine, so these tests compare the program with itself
in the same test, in CPU time of the test process (``time.process_time``:
other processes on the machine do not count): the size is doubled from a
small start until one run takes at least ``min_seconds`` (N), then the time
at 2N must be below ``factor`` times the time at N, best of ``repeat`` runs
each. Quadratic code gives a
ratio near 4, cubic near 8; linear code near 2.

    def test_long_subject_is_linear():
        assert_linear(lambda n: b"Subject: a" + b" " * n + b" b\\r\\n\\r\\nx", parse, start=1000)
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

T = TypeVar("T")

#: the issue's rule: time(2N) < 3 * time(N)
DEFAULT_FACTOR = 3.0
#: N is large enough when one run at N takes this long
MIN_SECONDS = 0.1
#: the sizes tried stop here: an input this large that is still fast is fine
MAX_SIZE = 1 << 26


@attrs.frozen
class Growth:
    """What :func:`measure_growth` found: sizes and best-of times."""

    n: int
    seconds_n: float
    seconds_2n: float

    @property
    def ratio(self) -> float:
        return self.seconds_2n / self.seconds_n if self.seconds_n > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"N={self.n}: {self.seconds_n * 1000:.1f} ms, 2N: {self.seconds_2n * 1000:.1f} ms, "
            f"ratio {self.ratio:.2f}"
        )


def timed(run: Callable[[T], Any], data: T) -> float:
    """CPU seconds of one ``run(data)``, the cyclic garbage collector held off.

    A collection's cost grows with every object the test process holds, the
    earlier tests' included: left on, it makes a linear function look
    superlinear depending on what ran before. It runs before each measurement.
    """
    gc.collect()
    gc.disable()
    try:
        started = time.process_time()
        run(data)
        return time.process_time() - started
    finally:
        gc.enable()


def best_time(run: Callable[[T], Any], data: T, repeat: int = 3) -> float:
    """The fastest of *repeat* runs of ``run(data)``, in CPU seconds of this process."""
    return min(timed(run, data) for _ in range(repeat))


def measure_growth(
    make: Callable[[int], T],
    run: Callable[[T], Any],
    *,
    start: int = 1000,
    min_seconds: float = MIN_SECONDS,
    max_size: int = MAX_SIZE,
    repeat: int = 3,
) -> Growth:
    """Double *n* from *start* until ``run(make(n))`` takes *min_seconds*, then time 2N.

    The search runs each size once; the comparison at N and 2N takes the best
    of *repeat* runs each, with both inputs made before either is timed and
    the runs at N and 2N taking turns.
    """
    n = start
    while True:
        data = make(n)
        if timed(run, data) >= min_seconds or n * 2 > max_size:
            break
        n *= 2
    small, large = make(n), make(2 * n)
    # interleaved, not N's runs then 2N's: a burst of load on the machine
    # (cache and memory bandwidth count in CPU time too) then slows both alike
    seconds_n = seconds_2n = float("inf")
    for _ in range(repeat):
        seconds_n = min(seconds_n, timed(run, small))
        seconds_2n = min(seconds_2n, timed(run, large))
    return Growth(n=n, seconds_n=seconds_n, seconds_2n=seconds_2n)


def assert_linear(
    make: Callable[[int], T],
    run: Callable[[T], Any],
    *,
    start: int = 1000,
    factor: float = DEFAULT_FACTOR,
    min_seconds: float = MIN_SECONDS,
    max_size: int = MAX_SIZE,
) -> Growth:
    """Fail unless the time at 2N is below *factor* times the time at N.

    Returns the :class:`Growth` so a test can also check the result of the
    run. When even *max_size* takes less than *min_seconds* the input family
    is fast at every size worth sending: that passes.
    """
    growth = measure_growth(make, run, start=start, min_seconds=min_seconds, max_size=max_size)
    if growth.seconds_n < min_seconds and growth.n * 2 > max_size:
        return growth  # fast even at the largest size tried
    assert growth.seconds_2n < factor * growth.seconds_n, f"superlinear: {growth}"
    return growth
