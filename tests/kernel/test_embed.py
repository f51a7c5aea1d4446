"""examples/embed runs: a host Twisted application embedding the gateway."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.integration.sites import free_port


def test_embedding_example_routes_every_interaction_and_serves_the_api(
    quickstart: Path,
) -> None:
    quickstart.write_text(quickstart.read_text() + f"http: {{port: {free_port()}}}\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embed" / "embed_gateway.py"), str(quickstart)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    routed = [line for line in result.stdout.splitlines() if line.startswith("routed ")]
    assert len(routed) == 4
    assert "api: GET /health 200 ok" in result.stdout  # the gateway's child service
    assert "done: 4 interaction(s) routed, ok=True, api closed=True" in result.stdout
