"""Hostile input: the header and subject rules take linear time, and still decide.

The growth tests (``tests/linear.py``) time
:func:`postroom_autoreply.analysis.analyse`, where every rule reads the
message, on messages built directly (header values as the parser gives them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from postroom.context import AnalysisContext
from postroom.model import ParsedMessage
from postroom_autoreply.analysis import Analysis, analyse
from tests.linear import assert_linear
from tests.plugins.autoreply.support import OUR_MAILBOX, SITE_WITH_MAILBOX, Harness


def mail(*headers: tuple[str, str], subject: str = "Question") -> ParsedMessage:
    return ParsedMessage(
        headers=[("From", "customer@example.org"), ("Subject", subject), *headers],
        subject=subject,
        from_addr="customer@example.org",
    )


#: name: (make, start, the largest size worth trying)
FAMILIES: dict[str, tuple[Callable[[int], ParsedMessage], int, int]] = {
    # comments nested n deep: one pass, not one per level
    "nested comments": (
        lambda n: mail(("Auto-Submitted", "(" * n + "robot" + ")" * n + " no")), 1 << 18, 1 << 24),
    # "until" and a run of blanks before a question mark: cubic before; now so
    # fast that 4 MB of blanks take milliseconds
    "a Notes subject with blanks": (
        lambda n: mail(subject="Jane is out of the office until" + " " * n + "?"),
        1 << 18,
        1 << 22,
    ),
    # email.utils.getaddresses recursed once per group (RecursionError)
    "an X-Loop of groups": (lambda n: mail(("X-Loop", "a:" * n)), 1 << 20, 1 << 24),
    # the families of issue 8 that hit address lists and header counts
    "an X-Loop of quotes": (lambda n: mail(("X-Loop", '"a' * n)), 1 << 19, 1 << 24),
    "many headers": (lambda n: mail(*[("X-Header", "value")] * n), 1 << 16, 1 << 24),
}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> AnalysisContext:
    harness = Harness(Path(tmp_path_factory.mktemp("site")), SITE_WITH_MAILBOX)
    return AnalysisContext(config=harness.config)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_rules_take_linear_time(name: str, ctx: AnalysisContext) -> None:
    make, start, max_size = FAMILIES[name]
    assert_linear(make, lambda message: analyse(message, ctx), start=start, max_size=max_size)


def test_what_they_decide(ctx: AnalysisContext) -> None:
    def found(name: str, n: int = 200) -> Analysis:
        return analyse(FAMILIES[name][0](n), ctx)

    assert found("nested comments").headers is None  # the comment goes: "no"
    assert found("a Notes subject with blanks").headers is None  # a question: a person
    notes = analyse(mail(subject="Jane is out of the office until" + " " * 200 + "."), ctx)
    assert notes.headers is not None and notes.headers.rule == "subject"
    for name in ("an X-Loop of quotes", "an X-Loop of groups"):
        loop = found(name)
        assert loop.headers is not None and loop.headers.rule == "x-loop"
        assert loop.x_loop_own is None
    ours = analyse(mail(("X-Loop", "(ours) " + "a:" * 200 + f" <{OUR_MAILBOX.upper()}>")), ctx)
    assert ours.x_loop_own is not None and ours.x_loop_own.startswith("(ours) a:a:")
    assert len(ours.x_loop_own) <= 120  # quoted in a reason: cut
