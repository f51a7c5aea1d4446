"""Every hook has a section in docs/hooks.md that starts with its exact signature.

datasette's ``test_plugin_hooks_are_documented``, for postroom: the signature is
the hook's name followed by its parameters as :func:`inspect.signature` renders
them without annotations, e.g. ``postroom_classify(message, ctx)``.
"""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Callable
from typing import Any

import pytest

from postroom import PROJECT_NAME, hookspecs
from tests.conftest import ROOT
from tests.hooks.support import plugin_set

HOOKS_MD = ROOT / "docs" / "hooks.md"
_HEADING = re.compile(r"^## (.+?)[ \t]*$", re.MULTILINE)
_FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def hook_specs() -> dict[str, Callable[..., Any]]:
    """The hook specifications of postroom.hookspecs, by name."""
    marker = f"{PROJECT_NAME}_spec"
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, marker)
    }


def signature(name: str, fn: Callable[..., Any]) -> str:
    """The canonical rendering: ``name(arg, ...)``, annotations dropped."""
    sig = inspect.signature(fn)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    bare = sig.replace(parameters=params, return_annotation=inspect.Signature.empty)
    return f"{name}{bare}"


def sections() -> dict[str, str]:
    """``## <heading>`` sections of docs/hooks.md: heading -> body up to the next one."""
    text = HOOKS_MD.read_text(encoding="utf-8")
    found = list(_HEADING.finditer(text))
    bodies: dict[str, str] = {}
    for match, following in zip(found, [*found[1:], None], strict=True):
        end = following.start() if following is not None else len(text)
        bodies[match.group(1)] = text[match.end() : end]
    return bodies


def hook_sections() -> dict[str, str]:
    """Sections headed by a hook's name (a single word starting with ``postroom_``)."""
    return {
        name: body
        for name, body in sections().items()
        if name.startswith("postroom_") and " " not in name
    }


def python_examples() -> list[tuple[str, str]]:
    """(where, code) of every ```python block of docs/hooks.md."""
    text = HOOKS_MD.read_text(encoding="utf-8")
    examples = []
    for match in _FENCE.finditer(text):
        if match.group(1) == "python":
            line = text.count("\n", 0, match.start()) + 1
            examples.append((f"docs/hooks.md:{line}", match.group(2)))
    return examples


def test_hook_specs_are_found() -> None:
    specs = hook_specs()
    assert "postroom_classify" in specs
    assert signature("postroom_classify", specs["postroom_classify"]) == (
        "postroom_classify(message, ctx)"
    )


@pytest.mark.parametrize("hook", sorted(hook_specs()))
def test_hook_is_documented_with_its_signature(hook: str) -> None:
    documented = hook_sections()
    assert hook in documented, f"docs/hooks.md has no section '## {hook}'"
    expected = signature(hook, hook_specs()[hook])
    first_block = _FENCE.search(documented[hook])
    assert first_block is not None, f"docs/hooks.md: section {hook} has no code block"
    assert first_block.group(2).strip() == expected, (
        f"docs/hooks.md: section {hook} must start with the signature {expected!r}"
    )
    before = documented[hook][: first_block.start()].strip()
    assert not before, f"docs/hooks.md: section {hook} must start with its signature block"


def test_every_hook_section_names_a_hook() -> None:
    unknown = sorted(set(hook_sections()) - set(hook_specs()))
    assert not unknown, f"docs/hooks.md documents hooks that do not exist: {unknown}"


def test_hook_sections_follow_the_hookspecs_order() -> None:
    assert [h for h in hook_sections() if h in hook_specs()] == list(hook_specs())


@pytest.mark.parametrize(
    ("where", "code"), [pytest.param(w, c, id=w) for w, c in python_examples()]
)
def test_example_registers_as_a_plugin(where: str, code: str) -> None:
    """Each example runs as a module and is a valid plugin: known hooks, known arguments."""
    module = types.ModuleType("hooks_md_example")
    exec(compile(code, where, "exec"), module.__dict__)
    candidates: list[tuple[str, object]] = [("example", module)]
    if "plugin" in module.__dict__:
        candidates.append(("example-object", module.__dict__["plugin"]))
    plugins = plugin_set(*candidates)  # unknown hooks or arguments raise PluginLoadError
    implemented = [
        hook for name, _ in candidates for hook in plugins.hooks_of(plugins.pm.get_plugin(name))
    ]
    assert implemented, f"{where}: the example implements no hook"
