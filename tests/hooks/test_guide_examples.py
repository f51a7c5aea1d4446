"""The Python examples of docs/writing-plugins.md run, and their tests pass.

A ```python block whose first line is a file-name comment (``# postroom_vip/plugin.py``)
is executed as that module, in document order: package modules are importable by
the blocks after them (``from postroom_vip import plugin``), and the ``test_*``
functions of ``tests/...`` blocks are called. Driver classes are checked against
the interfaces they declare, as the kernel checks them when it loads them.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
from pathlib import Path

import pytest
from zope.interface import implementedBy
from zope.interface.verify import verifyClass

from postroom.config.options import OptionSchema
from postroom.plugins.manager import load_plugins
from tests.conftest import ROOT

GUIDE = ROOT / "docs" / "writing-plugins.md"
_FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_FILE_COMMENT = re.compile(r"#\s*([\w/]+)\.py\s*$")


def python_blocks(doc: Path = GUIDE) -> list[tuple[str, str]]:
    """``(file:line, code)`` of each Python block of a Markdown file (the guide by default)."""
    text = doc.read_text(encoding="utf-8")
    return [
        (f"docs/{doc.name}:{text.count(chr(10), 0, m.start()) + 1}", m.group(2))
        for m in _FENCE.finditer(text)
        if m.group(1) == "python"
    ]


def test_the_guide_has_runnable_examples() -> None:
    files = [_FILE_COMMENT.match(code.splitlines()[0]) for _, code in python_blocks()]
    assert sum(f is not None for f in files) >= 3


def test_every_example_compiles() -> None:
    for where, code in python_blocks():
        compile(code, where, "exec")


def test_examples_run_and_their_tests_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    modules: list[types.ModuleType] = []
    for where, code in python_blocks():
        match = _FILE_COMMENT.match(code.splitlines()[0])
        if match is None:
            continue
        path = match.group(1)
        if path.startswith("tests/"):
            module = types.ModuleType("guide_" + path.replace("/", "_"))
        else:
            dotted = path.replace("/", ".")
            module = types.ModuleType(dotted)
            parts = dotted.split(".")
            for n in range(1, len(parts)):
                package = ".".join(parts[:n])
                if package not in sys.modules:
                    monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
            monkeypatch.setitem(sys.modules, dotted, module)
            if len(parts) > 1:
                monkeypatch.setattr(sys.modules[".".join(parts[:-1])], parts[-1], module,
                                    raising=False)
        exec(compile(code, where, "exec"), module.__dict__)
        modules.append(module)

    ran = []
    for module in modules:
        for name, obj in vars(module).items():
            if name.startswith("test_") and inspect.isfunction(obj):
                obj()
                ran.append(name)
            if inspect.isclass(obj) and obj.__module__ == module.__name__:
                for interface in implementedBy(obj):
                    assert verifyClass(interface, obj)
                    declare = getattr(obj, "postroom_add_options", None)
                    if declare is not None:
                        schema = OptionSchema()
                        with schema.declaring(name):
                            declare(schema)
                        assert len(schema) > 0
        if not module.__name__.startswith("guide_"):
            load_plugins([], extra=[(module.__name__, module)])  # a valid plugin
    assert ran, "the guide's tests were not found"
