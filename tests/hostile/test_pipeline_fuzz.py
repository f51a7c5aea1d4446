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

import hashlib
import os
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from postroom.ingest import ingest_mailbox
from postroom.kernel import Kernel
from postroom.model import FetchedMessage, RawRef
from postroom.pipeline.inbound import InboundPipeline
from tests.conftest import run
from tests.hostile.messages import messages

FOUND = Path(__file__).with_name("found")
FUZZ_EXAMPLES = int(os.environ.get("POSTROOM_FUZZ", "0"))


@pytest.fixture(scope="module")
def pipeline() -> Iterator[tuple[Kernel, InboundPipeline]]:
    """Every installed plugin, a throwaway store, everything inline."""
    kernel = Kernel(store_override={"driver": "memory"})
    run(kernel.open())
    try:
        yield kernel, InboundPipeline(kernel.hooks, kernel.ctx, kernel.analysis)
    finally:
        run(kernel.close())


def ingest(pipeline: tuple[Kernel, InboundPipeline], raw: bytes, spool: Path) -> None:
    kernel, inbound = pipeline
    mailbox = ingest_mailbox(kernel, "fuzz")
    if "copy-message-to-recipients" in mailbox.options:  # the split plugin is installed
        mailbox.options["copy-message-to-recipients"] = True
    path = spool / hashlib.sha256(raw).hexdigest()
    path.write_bytes(raw)
    fetched = FetchedMessage(mailbox="fuzz", source_key=path.name, raw=RawRef.from_path(path))
    processed = run(inbound.process(fetched, mailbox))
    assert processed.interactions, "no interaction for a message"
    path.unlink()


def found_inputs() -> list[Path]:
    return sorted(FOUND.glob("*.eml"))


@pytest.mark.parametrize("path", found_inputs(), ids=lambda p: p.stem)
def test_found_inputs(
    pipeline: tuple[Kernel, InboundPipeline], path: Path, tmp_path: Path
) -> None:
    ingest(pipeline, path.read_bytes(), tmp_path)


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
def test_generated_messages(
    pipeline: tuple[Kernel, InboundPipeline], raw: bytes, tmp_path: Path
) -> None:
    try:
        ingest(pipeline, raw, tmp_path)
    except BaseException as error:
        if FUZZ_EXAMPLES:
            _keep(raw, error)
        raise
