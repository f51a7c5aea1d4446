"""``postroom.config``'s modules import downwards only: no cycle, not even under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import postroom.config

PACKAGE = Path(postroom.config.__file__).parent
#: lowest first; a module imports modules of lower layers only
LAYERS = [
    {"declaration", "interpolate"},
    {"types"},
    {"options"},
    {"document", "site"},
    {"validator"},
    {"loader"},
    {"connections", "retention"},
    {"core"},
    {"docs"},
]


def imports_of(module: str) -> set[str]:
    """The ``postroom.config`` modules a module imports, anywhere in it; the package
    itself counts as ``__init__``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))):
        names = (
            [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        for name in names:
            if name == "postroom.config":
                found.add("__init__")
            elif name.startswith("postroom.config."):
                found.add(name.split(".")[2])
    return found


def test_every_module_has_a_layer() -> None:
    assert {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"} == set().union(*LAYERS)


def test_modules_import_only_lower_layers() -> None:
    rank = {module: i for i, layer in enumerate(LAYERS) for module in layer}
    rank["__init__"] = len(LAYERS)
    upward = sorted(
        (module, imported)
        for module in rank
        if module != "__init__"
        for imported in imports_of(module)
        if rank[imported] >= rank[module]
    )
    assert upward == []
