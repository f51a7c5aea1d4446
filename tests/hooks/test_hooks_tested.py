"""Every hook is called by a test: a test module that names the hook made the kernel call it.

datasette's ``test_plugin_hooks_have_tests`` looks for a hook's name in the tests,
which a docstring satisfies. Here a name only says *where* to look: the plugin of
:mod:`tests.hooks.hookcalls` records the hooks the kernel calls while each test
module runs, and a hook counts as tested when one of the modules naming it made
the kernel call it.

The check runs after every other test of the session. A session that left out
modules it needs (``pytest tests/hooks/test_hooks_tested.py``, a ``-k``) runs
them in a subprocess first, a module at a time, the one naming the most hooks
still unaccounted for first; the full unit run needs none.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from postroom import hookimpl
from postroom.model import Interaction
from tests.conftest import ROOT, run
from tests.hooks import hookcalls
from tests.hooks.hookcalls import RECORDER
from tests.hooks.support import hooks_with, make_ctx
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


def naming_modules(hooks: Iterable[str], modules: Iterable[Path]) -> dict[str, set[Path]]:
    """For each hook, the test modules that name it."""
    sources = {path: path.read_text(encoding="utf-8") for path in modules}
    return {
        hook: {path for path, text in sources.items() if re.search(rf"\b{re.escape(hook)}\b", text)}
        for hook in hooks
    }


def untested(
    hooks: Iterable[str], naming: Mapping[str, Collection[Path]], calls: Mapping[Path, set[str]]
) -> list[str]:
    """The hooks no module naming them made the kernel call."""
    return sorted(
        hook for hook in hooks if not any(hook in calls.get(m, set()) for m in naming[hook])
    )


def run_modules(modules: list[Path], output: Path) -> tuple[dict[Path, set[str]], set[Path]]:
    """Run test modules in a pytest subprocess (unit tests only); what they called,
    and the modules that ran complete."""
    env = {**os.environ, hookcalls.OUTPUT_ENV: str(output)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-p", "tests.hooks.hookcalls", "-m", "not postgresql and not servers",
         *map(str, modules)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    # 0: passed, 1: some failed (their calls still count); anything else: nothing ran
    assert done.returncode in (0, 1), f"pytest {modules}: {done.stdout[-2000:]}{done.stderr}"
    record = json.loads(output.read_text(encoding="utf-8"))
    calls = {Path(path): set(hooks) for path, hooks in record["calls"].items()}
    return calls, {Path(path) for path in record["complete"]}


def fill_in(
    hooks: list[str],
    naming: Mapping[str, Collection[Path]],
    calls: dict[Path, set[str]],
    complete: set[Path],
    scratch: Path,
) -> list[Path]:
    """Run the naming modules this session did not run in full, while a hook is
    unaccounted for; the modules run."""
    run: list[Path] = []
    while True:
        missing = untested(hooks, naming, calls)
        counts: dict[Path, int] = {}
        for hook in missing:
            for module in naming[hook]:
                if module not in complete:
                    counts[module] = counts.get(module, 0) + 1
        if not counts:
            return run
        module = max(sorted(counts), key=lambda m: counts[m])
        found, _complete = run_modules([module], scratch / f"calls-{len(run)}.json")
        calls[module] = calls.get(module, set()) | found.get(module, set())
        complete.add(module)  # run in full now, whatever it called
        run.append(module)


def test_every_hook_is_called_by_a_test_that_names_it(tmp_path: Path) -> None:
    hooks = list(hook_specs())
    naming = naming_modules(hooks, candidate_modules())
    unnamed = sorted(hook for hook in hooks if not naming[hook])
    assert not unnamed, f"hooks no test module under tests/ names: {', '.join(unnamed)}"
    calls = {path: set(found) for path, found in RECORDER.calls.items()}
    fill_in(hooks, naming, calls, RECORDER.complete_modules(), tmp_path)
    missing = [
        f"{hook} (named in {', '.join(sorted(str(m.relative_to(ROOT)) for m in naming[hook]))})"
        for hook in untested(hooks, naming, calls)
    ]
    assert not missing, f"hooks no test makes the kernel call: {'; '.join(missing)}"


# ----------------------------------------------------------- the check itself


class Observer:
    @hookimpl
    def postroom_sent(self) -> None:
        """Observes nothing: being called is all it does."""


def test_a_call_through_the_facade_is_recorded_for_the_running_module() -> None:
    here = Path(__file__)
    RECORDER.calls[here].discard("postroom_sent")
    run(hooks_with().sent(Interaction(), make_ctx()))
    assert "postroom_sent" not in RECORDER.calls[here]  # no implementation: nothing called
    run(hooks_with(("observer", Observer())).sent(Interaction(), make_ctx()))
    assert "postroom_sent" in RECORDER.calls[here]


def test_a_hook_that_a_module_only_names_is_reported(tmp_path: Path) -> None:
    """A module naming hooks in text only: its run records no call, so both are reported."""
    module = tmp_path / "test_names_only.py"
    module.write_text(
        '"""Tests postroom_committed and postroom_veto (in words only)."""\n\n\n'
        "def test_nothing() -> None:\n    assert True\n",
        encoding="utf-8",
    )
    hooks = ["postroom_committed", "postroom_veto"]
    naming = naming_modules(hooks, [module])
    assert naming == {"postroom_committed": {module}, "postroom_veto": {module}}
    calls: dict[Path, set[str]] = {}
    assert fill_in(hooks, naming, calls, set(), tmp_path) == [module]  # run, found nothing
    assert untested(hooks, naming, calls) == hooks
    assert untested(hooks, naming, {module: {"postroom_veto"}}) == ["postroom_committed"]
