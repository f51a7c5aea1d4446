"""examples/webhook-receiver/receiver.py (the receiver docs/integration.md shows)
against the webhook plugin: it verifies, keeps each interaction once, and
refuses what another secret signed."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
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
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.line()
        assert first.startswith("listening on https://"), first
        self.url = first.removeprefix("listening on ").strip() + "/postroom"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def line(self) -> str:
        """Its next line of output, waited for up to PATIENCE."""
        try:
            return self.lines.get(timeout=PATIENCE)
        except queue.Empty:
            raise AssertionError("the example printed nothing more") from None

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
    assert state == "refused" and error is not None
    assert "HTTP 401 Unauthorized (refused for good): no valid signature" in error
    assert list(example.out.iterdir()) == []


def test_a_gateway_run_hands_every_interaction_to_the_example(
    example: Example, tls: TestCA, secret: str, quickstart: Path
) -> None:
    """The production wiring: ``postroom run --once`` (the global reactor, the
    gateway's hand-off service) over the quickstart's mail."""
    site = quickstart.read_text() + (
        f"webhook:\n  url: {example.url}\n  secret: ${{WEBHOOK_SECRET}}\n"
        f"  ca-file: {tls.ca_file}\n"
    )
    quickstart.write_text(site)
    postroom = str(Path(sys.executable).with_name("postroom"))
    env = {**os.environ, "WEBHOOK_SECRET": secret}
    done = subprocess.run([postroom, "run", "-c", str(quickstart), "--once"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    command = [postroom, "interactions", "list", "-c", str(quickstart), "--json"]
    listed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                            check=True)  # fmt: skip
    ids = {json.loads(line)["id"] for line in listed.stdout.splitlines()}
    assert len(ids) >= 3
    assert {p.stem for p in example.out.iterdir()} == ids
    took = {example.line().split()[1] for _ in ids}
    assert took == ids


def test_the_verification_docs_integration_md_shows_is_the_examples() -> None:
    page = (ROOT / "docs" / "integration.md").read_text(encoding="utf-8")
    shown = page.split("def verify(", 1)[1].split("```", 1)[0]
    assert "def verify(" + shown in EXAMPLE.read_text(encoding="utf-8")
