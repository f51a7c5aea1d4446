"""docs/api.md is the public API's reference: it lists exactly ``postroom.api.__all__``
(and ``postroom.testing.__all__`` under its own heading), and its code blocks run."""

from __future__ import annotations

import importlib
import re

import pytest

import postroom.api
from tests.conftest import ROOT

DOC = ROOT / "docs" / "api.md"
_ROW = re.compile(r"^\| `([A-Za-z_][A-Za-z0-9_]*)` \|", re.MULTILINE)
_TESTING_HEADING = "\n# postroom.testing"


def documented(part: str) -> list[str]:
    return _ROW.findall(part)


def parts() -> tuple[str, str]:
    text = DOC.read_text(encoding="utf-8")
    api, _, testing = text.partition(_TESTING_HEADING)
    return api, testing


def test_every_public_name_is_documented_once() -> None:
    names = documented(parts()[0])
    assert sorted(names) == sorted(set(names)), "a name is documented twice"
    missing = sorted(set(postroom.api.__all__) - set(names))
    extra = sorted(set(names) - set(postroom.api.__all__))
    assert (missing, extra) == ([], []), "docs/api.md and postroom.api.__all__ differ"


def test_every_public_name_exists() -> None:
    assert [n for n in postroom.api.__all__ if not hasattr(postroom.api, n)] == []


def test_testing_names_are_documented() -> None:
    try:
        testing = importlib.import_module("postroom.testing")
    except ModuleNotFoundError:
        pytest.fail("postroom.testing is missing")
    names = documented(parts()[1])
    assert sorted(names) == sorted(testing.__all__)


def test_the_code_blocks_run() -> None:
    text = DOC.read_text(encoding="utf-8")
    for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL):
        exec(compile(block, str(DOC), "exec"), {"__name__": "api_doc_example"})
