"""``${...}`` references in configuration values, resolved before type conversion.

Secrets belong in the environment or in files readable by the gateway only, not in
the YAML file, so any value may say where to find itself:

* ``${NAME}``: the environment variable ``NAME`` (an error if unset);
* ``${NAME:-default}``: ``default`` when ``NAME`` is unset or empty (as in a shell);
* ``${file:path}``: the file's content, one trailing newline removed; a relative
  path is relative to the configuration file's directory;
* ``$${``: a literal ``${``.

Error messages name the variable or the file, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

_TOKEN = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
_REFERENCE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)


class InterpolationError(ValueError):
    """A ``${...}`` reference that cannot be resolved; the message holds no value."""


def has_reference(text: str) -> bool:
    return "${" in text


def interpolate(text: str, *, environ: Mapping[str, str], base_dir: Path) -> str:
    """Resolve every ``${...}`` in ``text``."""
    if "${" not in text:
        return text
    return _TOKEN.sub(lambda m: _resolve(m, environ, base_dir), text)


def _resolve(match: re.Match[str], environ: Mapping[str, str], base_dir: Path) -> str:
    if match.group(0) == "$${":
        return "${"
    body = match.group("body")
    if body is None:
        raise InterpolationError("unterminated '${' (write '$${' for a literal '${')")
    if body.startswith("file:"):
        return _read_file(body[len("file:") :].strip(), base_dir)
    ref = _REFERENCE.fullmatch(body.strip())
    if ref is None:
        raise InterpolationError(
            "invalid '${...}' reference: expected ${NAME}, ${NAME:-default} or ${file:path}"
        )
    name, default = ref.group("name"), ref.group("default")
    value = environ.get(name)
    if default is not None:
        return value if value else default
    if value is None:
        raise InterpolationError(f"environment variable {name} is not set")
    return value


def _read_file(spec: str, base_dir: Path) -> str:
    if not spec:
        raise InterpolationError("'${file:...}' needs a path")
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    try:
        # bytes then decode: read_text's newline translation would alter a secret
        content = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InterpolationError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InterpolationError(f"cannot read {path}: not UTF-8 text") from None
    if content.endswith("\r\n"):
        return content[:-2]
    if content.endswith("\n"):
        return content[:-1]
    return content
