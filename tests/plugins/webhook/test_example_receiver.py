"""examples/webhook-receiver/receiver.py (the receiver docs/integration.md shows)
against the webhook plugin: it verifies, keeps each interaction once, and
refuses what another secret signed."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom_webhook.signing import new_secret
from tests.conftest import ROOT
from tests.pki import TestCA
from tests.plugins.webhook.conftest import MakeKernel, message
from tests.plugins.webhook.receiver import PATIENCE, Net
from tests.plugins.webhook.test_delivery import ingested, status, submitted

EXAMPLE = ROOT / "examples" / "webhook-receiver" / "receiver.py"


class Example:
    def __init__(self, tls: TestCA, secret: str, out: Path) -> None:
        self.out = out
        self.process = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--port", "0", "--cert", str(tls.cert_file),
             "--key", str(tls.key_file), "--out", str(out)],
            env={**os.environ, "POSTROOM_WEBHOOK_SECRET": secret},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        first = self.line()
        assert first.startswith("listening on https://"), first
        self.url = first.removeprefix("listening on ").strip() + "/postroom"

    def line(self) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], PATIENCE)
        assert ready, "the example printed nothing"
        return self.process.stdout.readline()

    def close(self) -> str:
        self.process.terminate()
        _, errors = self.process.communicate(timeout=PATIENCE)
        return errors


@pytest.fixture
def example(tls: TestCA, secret: str, tmp_path: Path) -> Iterator[Example]:
    running = Example(tls, secret, tmp_path / "received")
    yield running
    errors = running.close()
    assert "Traceback" not in errors, errors


def test_the_example_receiver_takes_each_interaction_once(
    net: Net, example: Example, make_kernel: MakeKernel
) -> None:
    kernel = make_kernel(example.url)
    interaction = ingested(net, kernel, message())
    assert status(kernel, interaction.id) == ("done", 1, None)
    assert example.line().strip() == (
        f"took {interaction.id} from c1@customer.example: webhook 1 été"
    )
    kept = example.out / f"{interaction.id}.json"
    assert json.loads(kept.read_bytes())["message_id"] == "<hook-1@customer.example>"
    # the same interaction again (a retry, a restart): 200, kept once
    before = kept.read_bytes()
    assert submitted(net, kernel, interaction) is None
    assert kept.read_bytes() == before
    assert sorted(p.name for p in example.out.iterdir()) == [kept.name]


def test_the_example_receiver_refuses_another_secret_for_good(
    net: Net, example: Example, make_kernel: MakeKernel
) -> None:
    kernel = make_kernel(example.url, secret=new_secret())
    interaction = ingested(net, kernel, message())
    state, _, error = status(kernel, interaction.id)
    assert state == "failed" and error is not None
    assert "HTTP 401 Unauthorized (refused for good): no valid signature" in error
    assert list(example.out.iterdir()) == []


def test_the_verification_docs_integration_md_shows_is_the_examples() -> None:
    page = (ROOT / "docs" / "integration.md").read_text(encoding="utf-8")
    shown = page.split("def verify(", 1)[1].split("```", 1)[0]
    assert "def verify(" + shown in EXAMPLE.read_text(encoding="utf-8")
