"""Every numeric option is bounded, and ``postroom check`` refuses what is out of range.

A value that passes the check must work at run time: ``max-mime-depth: 500``
used to pass and then fail every message. These tests run over the options of
every installed plugin and driver, so a new option cannot forget its bounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from postroom.cli.main import installed_schema
from postroom.config.document import parse_document
from postroom.config.options import MAILBOX_SECTION, SMTP_SECTION, Option, OptionSchema, Scope
from postroom.config.types import convert_port
from postroom.config.validator import validate
from postroom.errors import ConfigErrors
from postroom.parsing.limits import ParseLimits
from tests.kernel.test_cli import postroom

#: types whose values are numbers compared with minimum/maximum
NUMERIC = ("int", "float", "duration", "size")

SCHEMA: OptionSchema = installed_schema()
BOUNDED = [o for o in SCHEMA if o.type in NUMERIC]


def _id(option: Option) -> str:
    where = option.section or option.place
    drivers = f"[{','.join(option.types)}]" if option.types else ""
    return f"{where}{drivers}.{option.name}"


def test_every_installed_driver_and_plugin_is_in_the_schema() -> None:
    declared_by = {o.declared_by for o in SCHEMA}
    drivers = ("sources:imap", "sources:pop3", "senders:smtp", "stores:sqlite")
    for who in ("postroom", "autoreply", "split", *(f"postroom.{d}" for d in drivers)):
        assert who in declared_by, who


@pytest.mark.parametrize("option", list(SCHEMA), ids=_id)
def test_every_numeric_option_has_both_bounds(option: Option) -> None:
    """Including options of a plugin's own type whose values are numbers."""
    number = False
    if option.default is not None:
        value = SCHEMA.types.convert(option.default, option)
        number = isinstance(value, int | float) and not isinstance(value, bool)
    if option.type == "port":  # the converter bounds it
        assert convert_port("65534", option) == 65534
        for bad in ("0", "65535"):
            with pytest.raises(ValueError):
                convert_port(bad, option)
        return
    if option.type in NUMERIC or number:
        assert option.minimum is not None and option.maximum is not None, (
            f"{_id(option)} (declared by {option.declared_by}) needs minimum= and maximum=: "
            "the range the code using it accepts"
        )
        assert option.minimum <= option.maximum
        if option.default is not None:
            assert option.minimum <= SCHEMA.types.convert(option.default, option) <= option.maximum


def _sample(option: Option) -> str:
    """A valid value for a required option."""
    if option.type == "choice":
        assert option.choices
        return option.choices[0]
    if option.type in ("int", "float", "duration", "size") and option.minimum is not None:
        return str(int(option.minimum))
    return {"port": "25", "email": "a@example.com", "url": "https://example.com/x"}.get(
        option.type, "x"
    )


def _required(scope: Scope, driver: str, skip: set[str]) -> list[str]:
    return [
        f"{o.name}: {_sample(o)}"
        for o in SCHEMA.select(scope, None, driver)
        if o.required and o.name not in skip
    ]


def site_with(option: Option, value: str) -> tuple[str, int]:
    """A minimal site with *option* set to *value*: its text and the option's line."""
    lines: list[str] = []
    setting = f"{option.name}: '{value}'"
    if option.scope is Scope.GLOBAL and option.section is None:
        lines.append(setting)
    elif option.scope is Scope.GLOBAL:
        lines += [f"{option.section}:", f"  {setting}"]
    elif option.scope is Scope.MAILBOX:
        driver = option.types[0] if option.types else "maildir"
        lines += [f"{MAILBOX_SECTION}:", "  - name: box", f"    type: {driver}"]
        required = _required(Scope.MAILBOX, driver, {"name", "type", option.name})
        lines += [f"    {r}" for r in required]
        lines.append(f"    {setting}")
    elif option.scope is Scope.SMTP_CLIENT:
        driver = option.types[0] if option.types else "file"
        lines += [f"{SMTP_SECTION}:", f"  server-type: {driver}"]
        required = _required(Scope.SMTP_CLIENT, driver, {"server-type", option.name})
        lines += [f"  {r}" for r in required]
        lines.append(f"  {setting}")
    elif option.scope is Scope.STORE:
        driver = option.types[0] if option.types else "sqlite"
        lines += ["store:", f"  driver: {driver}"]
        lines += [f"  {r}" for r in _required(Scope.STORE, driver, {"driver", option.name})]
        lines.append(f"  {setting}")
    else:
        pytest.fail(f"no place for {_id(option)}")
    return "\n".join(lines) + "\n", len(lines)


def check(text: str, tmp_path: Path) -> Any:
    file = str(tmp_path / "site.yaml")
    return validate(parse_document(text, file=file, base_dir=tmp_path), SCHEMA, environ={})


def _text(option: Option, value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@pytest.mark.parametrize("option", BOUNDED, ids=_id)
def test_the_bounds_themselves_are_accepted(option: Option, tmp_path: Path) -> None:
    assert option.minimum is not None and option.maximum is not None
    for edge in (option.minimum, option.maximum):
        text, _line = site_with(option, _text(option, edge))
        check(text, tmp_path)


@pytest.mark.parametrize("option", BOUNDED, ids=_id)
def test_out_of_range_values_are_errors_naming_file_line_and_option(
    option: Option, tmp_path: Path
) -> None:
    assert option.minimum is not None and option.maximum is not None
    values = [(_text(option, option.maximum + 1), "must be at most")]
    if option.minimum > 0 or option.type in ("int", "float"):
        values.append((_text(option, option.minimum - 1), "must be at least"))
    # far beyond any bound: must not overflow anything on its way to the check
    values.append(("9" * 30, "must be at most"))
    for value, message in values:
        text, line = site_with(option, value)
        with pytest.raises(ConfigErrors) as info:
            check(text, tmp_path)
        [error] = info.value.errors
        assert error.file == str(tmp_path / "site.yaml")
        assert error.line == line, (value, str(error))
        assert error.option is not None and error.option.endswith(option.name), str(error)
        assert message in error.message, (value, str(error))


def test_the_mime_limits_are_exactly_what_the_parser_accepts() -> None:
    depth = SCHEMA.find("max-mime-depth")
    parts = SCHEMA.find("max-mime-parts")
    size = SCHEMA.find("maximum-msg-size")
    assert depth is not None and parts is not None and size is not None
    assert depth.maximum is not None and parts.maximum is not None and size.maximum is not None
    ParseLimits(max_depth=int(depth.maximum), max_parts=int(parts.maximum),
                max_size=int(size.maximum))  # fmt: skip
    ParseLimits(max_depth=int(depth.minimum or 0), max_parts=int(parts.minimum or 0),
                max_size=int(size.minimum or 0))  # fmt: skip
    with pytest.raises(ValueError):
        ParseLimits(max_depth=int(depth.maximum) + 1)


def test_check_refuses_a_mime_depth_the_parser_would_refuse(quickstart: Path) -> None:
    """The issue's example, end to end: exit status 2, file:line and option named."""
    text = quickstart.read_text().replace(
        "email-processing:\n", "email-processing:\n  max-mime-depth: 500\n"
    )
    quickstart.write_text(text)
    line = text.splitlines().index("  max-mime-depth: 500") + 1
    result = postroom("check", "-c", str(quickstart))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{quickstart}:{line}: option 'email-processing.max-mime-depth'" in result.stderr
    assert "must be at most 100 (got '500')" in result.stderr
    assert "Traceback" not in result.stderr
