"""Whatever arrives, the inbound pipeline makes an interaction of it, with every plugin on.

Two tests, one property: for any bytes a mailbox can hold, parse, every
installed plugin's analysis, classify, enrich, expand and the commit end in at
least one interaction (an ordinary one or a wrapping message), and no
exception escapes.

* ``test_found_inputs`` replays every input in ``tests/hostile/found/``: what
  fuzzing found once stays fixed.
* ``test_generated_messages`` runs Hypothesis over :mod:`tests.hostile.messages`,
  derandomised in CI (the same examples every run). ``make fuzz`` runs it
  open-ended (``POSTROOM_FUZZ=<examples>``, random seeds) and writes each
  failing input it finds to ``tests/hostile/found/`` (the shortest per failure),
  so committing them adds them to the replay.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.hostile.messages import messages
from tests.hostile.pipeline import EveryPlugin

FOUND = Path(__file__).with_name("found")
FUZZ_EXAMPLES = int(os.environ.get("POSTROOM_FUZZ", "0"))


def ingest(pipeline: EveryPlugin, raw: bytes) -> None:
    assert pipeline.ingest(raw), "no interaction for a message"


def found_inputs() -> list[Path]:
    return sorted(FOUND.glob("*.eml"))


@pytest.mark.parametrize("path", found_inputs(), ids=lambda p: p.stem)
def test_found_inputs(every_plugin: EveryPlugin, path: Path) -> None:
    ingest(every_plugin, path.read_bytes())


def test_the_replay_corpus_is_not_empty() -> None:
    assert len(found_inputs()) >= 10


def _keep(raw: bytes, error: BaseException) -> None:
    """Write a failing input to found/, keeping the shortest one per failure site."""
    frame = traceback.extract_tb(error.__traceback__)[-1]
    site = f"{type(error).__name__}-{Path(frame.filename).stem}-{frame.lineno}"
    target = FOUND / f"fuzz-{site}.eml"
    if not target.exists() or len(raw) < target.stat().st_size:
        target.write_bytes(raw)


@settings(
    max_examples=FUZZ_EXAMPLES or 150,
    derandomize=not FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)
@given(raw=messages())
def test_generated_messages(every_plugin: EveryPlugin, raw: bytes) -> None:
    try:
        ingest(every_plugin, raw)
    except BaseException as error:
        if FUZZ_EXAMPLES:
            _keep(raw, error)
        raise
