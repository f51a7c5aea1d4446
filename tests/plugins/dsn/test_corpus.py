"""The shared corpus through the real parser and the ``dsn`` plugin.

Floors sit just below what the plugin reaches (see ``docs/plugins/dsn.md``
for the figures and the known misses); the table is printed (``pytest -s``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugins.dsn.corpus_eval import Results, evaluate, stated_in

#: measure -> lowest acceptable ratio
FLOORS = {
    "mimekit DSN: NDR": 1.0,
    "mimekit DSN: _DSNRawInfo exactly as upstream": 1.0,
    "mimekit MDN: not ours": 1.0,
    "sisimai arf: not an NDR": 1.0,
    "sisimai autoreply: not an NDR": 1.0,
    "sisimai non-bounce: not an NDR": 1.0,
    "sisimai delivery-status: NDR (or Report, none failed)": 1.0,
    "sisimai delivery-status: recipient count": 0.99,
    "sisimai delivery-status: status codes stated in the message": 0.98,
    "sisimai vendor format: NDR (or Report, none failed)": 0.99,
    "sisimai vendor format: every recipient has an address": 0.99,
    "sisimai vendor format: recipient count": 0.99,
    "sisimai vendor format: status codes stated in the message": 0.99,
    "stalwart normal messages: neither NDR nor Report": 1.0,
}


@pytest.fixture(scope="module")
def results() -> Results:
    found = evaluate()
    print("\n" + found.table())
    return found


def test_the_corpus_is_there(corpus: Path) -> None:
    for manifest in ("sisimai.json", "mimekit.json", "stalwart.json"):
        assert (corpus / manifest).is_file()


def test_no_message_crashes_the_plugin(results: Results) -> None:
    assert results.crashes == []


@pytest.mark.parametrize("measure", sorted(FLOORS))
def test_accuracy_floor(results: Results, measure: str) -> None:
    score = results.scores[measure]
    assert score.total > 0, f"{measure}: nothing was measured"
    assert score.ratio >= FLOORS[measure], (
        f"{measure}: {score.right}/{score.total} = {score.ratio:.1%} "
        f"< {FLOORS[measure]:.0%}; misses: {score.misses}"
    )


def test_every_bounce_with_a_delivery_status_part_is_recognised(results: Results) -> None:
    # 308 sisimai reports with a delivery-status part: not one may be missed
    score = results.scores["sisimai delivery-status: NDR (or Report, none failed)"]
    assert (score.right, score.total) == (308, 308)


def test_no_normal_message_gets_a_report_verdict(results: Results) -> None:
    # stalwart's 53 normal, RFC example and malformed messages: none is a bounce
    score = results.scores["stalwart normal messages: neither NDR nor Report"]
    assert (score.total, score.misses) == (53, [])


def test_a_code_is_stated_only_when_written_as_one() -> None:
    # upstream's status is measured only where the message states it
    assert stated_in("5.2.2", ["host said: 552 5.2.2 Mailbox full"])
    assert not stated_in("5.2.2", ["As their mailbox is full."])
    assert not stated_in("4.16.55", ["see 4.16.55.1"])
    assert not stated_in("5.1.1", ["version 15.1.1.2"])
