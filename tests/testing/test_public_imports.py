"""What teaches plugin authors imports only the public modules: ``docs/writing-plugins.md``'s
Python blocks import from the ``postroom`` package only ``postroom.api`` and ``postroom.testing``
(tests/kernel/test_import_contracts.py checks the files under plugins/ and examples/)."""

from __future__ import annotations

from tests.hooks.test_guide_examples import python_blocks
from tests.kernel.test_import_contracts import PUBLIC, source_imports


def test_the_guide_imports_only_the_public_modules() -> None:
    found = [
        f"{where}: {name}"
        for where, code in python_blocks()
        for name in source_imports(code, where)
        if name not in PUBLIC
    ]
    assert found == []


def test_a_private_import_is_found() -> None:
    source = "from postroom.model import Interaction\nimport postroom.api\nfrom postroom import x\n"
    assert source_imports(source, "x.py") == ["postroom.model", "postroom.api", "postroom.x"]
