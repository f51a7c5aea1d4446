"""The import contracts of ``make lint``: plugins and examples see only the public API,
and the kernel's layers import only downward.

import-linter (configured in pyproject.toml) checks the installed packages;
the AST check here also covers the single-file examples and plugin tests,
which import-linter does not see.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import ROOT

PUBLIC = {"postroom.api", "postroom.testing"}


def postroom_imports(path: Path) -> list[str]:
    """Every ``postroom`` module *path* imports (absolute imports only)."""
    return source_imports(path.read_text(encoding="utf-8"), str(path))


def source_imports(source: str, where: str) -> list[str]:
    """Every ``postroom`` module *source* imports; ``from postroom import x`` counts as
    ``postroom.x`` (a submodule or a name of the private package root)."""
    tree = ast.parse(source, where)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "postroom":
                found += [f"postroom.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
    return [name for name in found if name == "postroom" or name.startswith("postroom.")]


def test_plugins_and_examples_import_only_the_public_api() -> None:
    offenders = []
    for folder in ("plugins", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if any(part.startswith(".") or part == "build" for part in path.parts):
                continue
            bad = [m for m in postroom_imports(path) if m not in PUBLIC]
            if bad:
                offenders.append(f"{path.relative_to(ROOT)}: {', '.join(sorted(set(bad)))}")
    assert offenders == []


def lint_imports(config: Path, *extra_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(p) for p in extra_path] + [str(ROOT / "examples" / "custom-classifier")]
    )
    lint = str(Path(sys.executable).with_name("lint-imports"))
    return subprocess.run(
        [lint, "--no-cache", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def contracts() -> dict[str, dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}


def write_config(path: Path, roots: list[str], contract: dict[str, object]) -> Path:
    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "[tool.importlinter]",
        f"root_packages = {value(roots)}",
        "exclude_type_checking_imports = true",
        "[[tool.importlinter.contracts]]",
    ] + [f"{key} = {value(v)}" for key, v in contract.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_plugin_importing_a_private_module_is_reported(tmp_path: Path) -> None:
    package = tmp_path / "postroom_offender"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from postroom.api import hookimpl\nfrom postroom.store.sql.store import SQLStore\n",
        encoding="utf-8",
    )
    contract = dict(contracts()["public-api"])
    contract["source_modules"] = ["postroom_offender"]
    config = write_config(tmp_path / "contracts.toml", ["postroom", "postroom_offender"], contract)
    result = lint_imports(config, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "postroom_offender is not allowed to import postroom.store" in result.stdout
    assert "-> postroom.api" not in result.stdout  # the public import is fine


def test_the_same_plugin_through_the_public_api_is_kept(tmp_path: Path) -> None:
    package = tmp_path / "postroom_polite"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from postroom.api import SQLStore, hookimpl\n", encoding="utf-8"
    )
    contract = dict(contracts()["public-api"])
    contract["source_modules"] = ["postroom_polite"]
    config = write_config(tmp_path / "contracts.toml", ["postroom", "postroom_polite"], contract)
    result = lint_imports(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_project_keeps_its_contracts() -> None:
    result = lint_imports(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
