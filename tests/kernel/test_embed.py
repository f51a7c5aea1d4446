"""examples/embed runs: a host Twisted application embedding the gateway."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_embedding_example_routes_every_interaction(quickstart: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embed" / "embed_gateway.py"), str(quickstart)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    routed = [line for line in result.stdout.splitlines() if line.startswith("routed ")]
    assert len(routed) == 4
    assert "done: 4 interaction(s) routed, ok=True" in result.stdout
