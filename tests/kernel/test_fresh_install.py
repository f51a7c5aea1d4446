"""`pip install .` alone in a fresh virtualenv runs the quickstart; a third-party
plugin installed next to it changes the results with no kernel change."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def sh(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=900
    )
    assert result.returncode == 0, f"{args}: {result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def run_quickstart(venv: Path, where: Path) -> list[dict]:
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(ROOT / "examples" / "quickstart", where)
    config = where / "postroom.yaml"
    sh(venv / "bin" / "postroom", "run", "-c", config, "--once")
    out = sh(venv / "bin" / "postroom", "interactions", "list", "-c", config, "--json")
    return [json.loads(line) for line in out.splitlines()]


def test_kernel_alone_then_with_the_custom_classifier(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv)
    # a non-editable install of the kernel from a copy of the sources
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", "var", ".git", "*.egg-info", "build", "__pycache__", ".*_cache",
            "dropin.cache",
        ),
    )
    sh(venv / "bin" / "pip", "install", "--quiet", src)
    plugins = sh(venv / "bin" / "postroom", "plugins")
    assert "urgent" not in plugins and "postgresql" not in plugins
    # the Twisted dropin is installed: `twist postroom` runs the gateway
    twist = sh(venv / "bin" / "twist", "--help")
    assert "postroom         the postroom e-mail gateway" in twist

    before = run_quickstart(venv, tmp_path / "qs1")
    assert len(before) == 4
    assert not any("Urgent" in row["attached_data"] for row in before)

    sh(venv / "bin" / "pip", "install", "--quiet", src / "examples" / "custom-classifier")
    assert "urgent" in sh(venv / "bin" / "postroom", "plugins")
    after = run_quickstart(venv, tmp_path / "qs2")
    urgent = {row["subject"] for row in after if row["attached_data"].get("Urgent") == "true"}
    assert urgent == {"Re: Prüfbericht für Auftrag 4711"}
