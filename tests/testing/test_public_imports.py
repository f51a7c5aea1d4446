"""What teaches plugin authors imports only the public modules: the Python blocks of
``docs/`` (the guide, the hooks, the API) import from the ``postroom`` package only
``postroom.api`` and ``postroom.testing`` (tests/kernel/test_import_contracts.py
checks the files under plugins/ and examples/)."""

from __future__ import annotations

from tests.conftest import ROOT
from tests.hooks.test_guide_examples import python_blocks
from tests.kernel.test_import_contracts import PUBLIC, source_imports


def test_the_docs_import_only_the_public_modules() -> None:
    found = [
        f"{where}: {name}"
        for doc in sorted((ROOT / "docs").rglob("*.md"))
        for where, code in python_blocks(doc)
        for name in source_imports(code, where)
        if name not in PUBLIC
    ]
    assert found == []


def test_a_private_import_is_found() -> None:
    source = "from postroom.model import Interaction\nimport postroom.api\nfrom postroom import x\n"
    assert source_imports(source, "x.py") == ["postroom.model", "postroom.api", "postroom.x"]
