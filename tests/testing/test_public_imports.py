"""What teaches and shows plugin authors imports only the public modules.

``docs/writing-plugins.md``'s Python blocks and ``examples/custom-classifier``
import from the ``postroom`` package only ``postroom.api`` and ``postroom.testing``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from tests.conftest import ROOT
from tests.hooks.test_guide_examples import python_blocks

PUBLIC = {"postroom.api", "postroom.testing"}


def private_imports(source: str, where: str) -> Iterable[str]:
    for node in ast.walk(ast.parse(source, where)):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if (name == "postroom" or name.startswith("postroom.")) and name not in PUBLIC:
                yield f"{where}:{node.lineno}: {name}"


def test_the_guide_imports_only_the_public_modules() -> None:
    found = [p for where, code in python_blocks() for p in private_imports(code, where)]
    assert found == []


def test_the_example_plugin_imports_only_the_public_modules() -> None:
    example = ROOT / "examples" / "custom-classifier"
    found = [
        p
        for path in sorted(example.rglob("*.py"))
        for p in private_imports(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert found == []


def test_a_private_import_is_found() -> None:
    source = "from postroom.model import Interaction\nimport postroom.api\nfrom postroom import x\n"
    assert list(private_imports(source, "x.py")) == ["x.py:1: postroom.model", "x.py:3: postroom"]
