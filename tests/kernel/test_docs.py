"""docs/configuration.md is generated from the option declarations: it must be current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_configuration_reference_is_current() -> None:
    postroom = str(Path(sys.executable).with_name("postroom"))
    result = subprocess.run(
        [postroom, "config-reference"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    current = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert result.stdout == current, "docs/configuration.md is stale: run `make docs`"
