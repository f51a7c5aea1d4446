"""Converters from configuration text to typed values, chosen by declared type name.

YAML 1.1 guesses types (``10:00:00`` becomes 36000, ``yes`` becomes True), so the
loader hands every converter the scalar's *text* and the option's declared type
decides. Converters also accept already-typed Python values, because declared
defaults are written in Python (``default=5`` or ``default="00:00:05"``).

A converter is ``fn(value, option) -> converted``. It raises :class:`ValueError`
with a message that does **not** repeat the value: the loader adds the value
itself unless the option is secret or the value came from ``${...}``.

Sizes are 1024-based: ``1KB`` = 1024 bytes, ``1MB`` = 1024 KB, ``1GB`` = 1024 MB
(``KiB``/``MiB``/``GiB`` are accepted as synonyms).
"""

from __future__ import annotations

import hmac
import math
import re
from collections.abc import Callable, Iterator
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from postroom.config.declaration import Option

Converter = Callable[[Any, Option], Any]


class Secret:
    """A password or token: prints as ``***`` everywhere, ``reveal()`` gives the value.

    Wrapping rather than a plain ``str`` makes leaking it through logging, reprs
    or error messages an explicit act.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "***"

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))


@attrs.frozen
class TypeInfo:
    name: str
    convert: Converter
    description: str


class UnknownType(KeyError):
    """An option declared with a type nobody registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown type"


class TypeRegistry:
    """Converters by name; a registry may fall back to a parent.

    Each :class:`~postroom.config.options.OptionSchema` has its own registry whose
    parent is :data:`BUILTIN_TYPES`, so a plugin's type stays with the schema (the
    kernel is per instance, nothing global) while the built-ins are shared.
    """

    def __init__(self, parent: TypeRegistry | None = None) -> None:
        self._types: dict[str, TypeInfo] = {}
        self.parent = parent

    def register(
        self,
        name: str,
        fn: Converter,
        *,
        description: str | None = None,
        replace: bool = False,
    ) -> None:
        """Add a converter; ``description`` (else the first docstring line) feeds the docs."""
        if not replace and name in self:
            raise ValueError(f"option type {name!r} is already registered")
        if description is None:
            doc = (fn.__doc__ or "").strip()
            description = doc.splitlines()[0] if doc else ""
        self._types[name] = TypeInfo(name, fn, description)

    def info(self, name: str) -> TypeInfo:
        if name in self._types:
            return self._types[name]
        if self.parent is not None:
            return self.parent.info(name)
        raise UnknownType(f"unknown option type {name!r}; known types: {', '.join(self.names())}")

    def get(self, name: str) -> Converter:
        return self.info(name).convert

    def __contains__(self, name: object) -> bool:
        return name in self._types or (self.parent is not None and name in self.parent)

    def names(self) -> list[str]:
        """Every type name, sorted (deterministic docs)."""
        names = set(self._types)
        if self.parent is not None:
            names.update(self.parent.names())
        return sorted(names)

    def __iter__(self) -> Iterator[TypeInfo]:
        return (self.info(n) for n in self.names())

    def convert(self, value: Any, option: Option, *, base_dir: Path | None = None) -> Any:
        """Convert ``value`` by ``option.type``, then check ``minimum``/``maximum``.

        A relative :class:`~pathlib.Path` result (from ``path`` or a plugin's type)
        is made relative to ``base_dir``, the configuration file's directory, so the
        same file works whatever the current directory.
        """
        result = self.get(option.type)(value, option)
        if isinstance(result, Path) and base_dir is not None and not result.is_absolute():
            result = base_dir / result
        _check_bounds(result, option)
        return result


def _check_bounds(value: Any, option: Option) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if option.minimum is not None and value < option.minimum:
        raise ValueError(f"must be at least {_number(option.minimum)}{_unit(option)}")
    if option.maximum is not None and value > option.maximum:
        raise ValueError(f"must be at most {_number(option.maximum)}{_unit(option)}")


def _unit(option: Option) -> str:
    return {"duration": " seconds", "size": " bytes"}.get(option.type, "")


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# --- the built-in converters -------------------------------------------------------


def _scalar(value: Any) -> str:
    """The text of a single value; lists and mappings are refused."""
    if isinstance(value, list | tuple):
        raise ValueError("expected a single value, not a list")
    if isinstance(value, dict):
        raise ValueError("expected a single value, not a mapping")
    if isinstance(value, Secret):
        return value.reveal()
    return str(value)


def convert_str(value: Any, option: Option) -> str:
    """Text, taken as written (``yes`` stays ``yes``, ``10:00:00`` stays ``10:00:00``)."""
    return _scalar(value)


_INT = re.compile(r"[+-]?[0-9]+")


def convert_int(value: Any, option: Option) -> int:
    """A whole number, in decimal."""
    if isinstance(value, bool):
        raise ValueError("expected a whole number, not a boolean")
    if isinstance(value, int):
        return value
    text = _scalar(value).strip()
    if not _INT.fullmatch(text):
        raise ValueError("expected a whole number")
    return int(text)


def convert_float(value: Any, option: Option) -> float:
    """A decimal number (``0.5``, ``10``)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    if isinstance(value, int | float):
        result = float(value)
    else:
        text = _scalar(value).strip()
        try:
            result = float(text)
        except ValueError:
            raise ValueError("expected a number") from None
    if not math.isfinite(result):
        raise ValueError("expected a finite number")
    return result


_TRUE = frozenset({"true", "yes", "on"})
_FALSE = frozenset({"false", "no", "off"})


def convert_bool(value: Any, option: Option) -> bool:
    """``true``/``false``, ``yes``/``no`` or ``on``/``off``, in any case."""
    if isinstance(value, bool):
        return value
    text = _scalar(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true/false, yes/no or on/off")


_DURATION = re.compile(r"([0-9]+):([0-5][0-9]):([0-5][0-9](?:\.[0-9]+)?)")


def convert_duration(value: Any, option: Option) -> float:
    """``HH:MM:SS`` (seconds may have a fraction) or whole seconds; gives seconds as a float."""
    if isinstance(value, bool):
        raise ValueError("expected a duration, not a boolean")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError("expected a non-negative duration")
        return float(value)
    text = _scalar(value).strip()
    if text.isdigit():
        return float(int(text))
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError("expected a duration written HH:MM:SS (e.g. 00:05:00) or whole seconds")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600.0 + int(minutes) * 60.0 + float(seconds)


_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(?:(k|m|g|t)(?:i?b)?|b)?", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def convert_size(value: Any, option: Option) -> int:
    """Bytes: ``123``, ``512KB``, ``10MB``, ``1GB`` (1024-based, any case, space allowed)."""
    if isinstance(value, bool):
        raise ValueError("expected a size, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("expected a non-negative size")
        return value
    text = _scalar(value).strip()
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError("expected a size such as 123 (bytes), 512KB, 10MB or 1GB")
    number, unit = match.groups()
    return round(float(number) * _SIZE_UNITS[unit.lower() if unit else None])


def convert_port(value: Any, option: Option) -> int:
    """A TCP port number, 1 to 65534 (the commercial product's range)."""
    try:
        port = convert_int(value, option)
    except ValueError:
        raise ValueError("expected a port number (1 to 65534)") from None
    if not 1 <= port <= 65534:
        raise ValueError("expected a port number (1 to 65534)")
    return port


def convert_path(value: Any, option: Option) -> Path:
    """A file or directory; relative paths are relative to the configuration file's directory."""
    if isinstance(value, Path):
        return value.expanduser()
    text = _scalar(value).strip()
    if not text:
        raise ValueError("expected a path, got an empty value")
    return Path(text).expanduser()


def convert_secret(value: Any, option: Option) -> Secret:
    """A password or token: never printed; best given as ``${NAME}`` or ``${file:path}``."""
    if isinstance(value, Secret):
        return value
    return Secret(_scalar(value))


def convert_choice(value: Any, option: Option) -> str:
    """One of the option's listed values (case-insensitive; stored as listed)."""
    choices = option.choices or ()
    text = _scalar(value).strip()
    if text in choices:
        return text
    folded = {c.lower(): c for c in choices}
    if text.lower() in folded:
        return folded[text.lower()]
    raise ValueError("expected one of: " + ", ".join(choices))


def convert_list(value: Any, option: Option) -> list[str]:
    """A YAML list of single values, or one comma-separated text (``dsn, mdn``)."""
    if isinstance(value, dict):
        raise ValueError("expected a list, not a mapping")
    if isinstance(value, list | tuple):
        items = []
        for item in value:
            if item is None:
                raise ValueError("the list has an empty item")
            if isinstance(item, list | tuple | dict):
                raise ValueError("list items must be single values, not lists or mappings")
            items.append(_scalar(item))
        return items
    text = _scalar(value)
    return [part.strip() for part in text.split(",") if part.strip()]


def convert_email(value: Any, option: Option) -> str:
    """An e-mail address, ``user@example.com`` or ``Name <user@example.com>``."""
    text = _scalar(value).strip()
    _name, address = parseaddr(text)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in address):
        raise ValueError("expected an e-mail address such as user@example.com")
    return text


def convert_url(value: Any, option: Option) -> str:
    """An absolute URL with a scheme and a host (``https://host/path``)."""
    text = _scalar(value).strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError("expected a URL such as https://host/path") from None
    if not parts.scheme or not parts.netloc:
        raise ValueError("expected a URL with a scheme and a host, such as https://host/path")
    return text


def convert_mapping(value: Any, option: Option) -> dict[str, Any]:
    """A YAML mapping, kept as a dict (its values stay text: nothing is guessed)."""
    if not isinstance(value, dict):
        raise ValueError("expected a mapping (key: value)")
    return dict(value)


#: the shared built-in converters; every schema's registry falls back to it
BUILTIN_TYPES = TypeRegistry()

for _name, _fn in {
    "str": convert_str,
    "int": convert_int,
    "float": convert_float,
    "bool": convert_bool,
    "duration": convert_duration,
    "size": convert_size,
    "port": convert_port,
    "path": convert_path,
    "secret": convert_secret,
    "choice": convert_choice,
    "list": convert_list,
    "email": convert_email,
    "url": convert_url,
    "mapping": convert_mapping,
}.items():
    BUILTIN_TYPES.register(_name, _fn)


def register_type(
    name: str, fn: Converter, *, description: str | None = None, replace: bool = False
) -> None:
    """Add a type for every schema; prefer ``schema.register_type`` from a plugin's hook."""
    BUILTIN_TYPES.register(name, fn, description=description, replace=replace)


def convert(value: Any, option: Option, *, base_dir: Path | None = None) -> Any:
    """Convert with the built-in registry (see :meth:`TypeRegistry.convert`)."""
    return BUILTIN_TYPES.convert(value, option, base_dir=base_dir)
