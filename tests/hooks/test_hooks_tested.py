"""Every hook is exercised by at least one test.

datasette's ``test_plugin_hooks_have_tests``, for postroom: a hook counts as
tested when its name appears in a test module under tests/ other than the two
documentation checks (which name every hook by construction).
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ROOT
from tests.hooks.test_hooks_documented import hook_specs

TESTS = ROOT / "tests"
#: name every hook by construction, so they do not count
EXCLUDED = {
    TESTS / "hooks" / "test_hooks_documented.py",
    TESTS / "hooks" / "test_hooks_tested.py",
}


def candidate_modules() -> list[Path]:
    return sorted(
        path
        for pattern in ("test_*.py", "*_test.py")
        for path in TESTS.rglob(pattern)
        if path not in EXCLUDED
    )


def test_every_hook_has_a_test() -> None:
    sources = "\n".join(p.read_text(encoding="utf-8") for p in candidate_modules())
    untested = sorted(
        hook for hook in hook_specs() if not re.search(rf"\b{re.escape(hook)}\b", sources)
    )
    assert not untested, f"hooks without a test under tests/: {', '.join(untested)}"
