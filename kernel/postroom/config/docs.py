"""The configuration reference (``docs/configuration.md``), rendered from the declarations.

Rendering from the schema keeps the reference true by construction; the output
is deterministic (places in a fixed order, sections and driver groups sorted,
the kernel's options first, then each plugin's in its declaration order) so a
test can check the committed file is current.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

from postroom.config.core import KERNEL
from postroom.config.options import (
    MAILBOX_SECTION,
    SMTP_SECTION,
    STORE_SECTION,
    Option,
    OptionSchema,
    Scope,
)

_EXAMPLE = """\
tenant-id: 101
store: {driver: sqlite, path: var/postroom.db}
# plugins: [dsn, mdn]     # exactly these hook plugins, in this order; absent = all installed
email-processing:
  default-domain: example.com
  maximum-msg-size: 10MB
  enable-message-id-check: true
pop-client:
  - name: support
    type: maildir
    folder-path: examples/quickstart/maildir
smtp-client:
  server-type: file
  folder-path: var/outbox
"""

_VALUES = """\
## Values

Every value is converted from its text by the option's declared type, never by
YAML's own guesses: `10:00:00` is ten hours for a duration option and the text
`10:00:00` for a text option (a YAML 1.1 loader would make it 36000), and `yes`
is true only for a boolean option.

- **Durations** are written `HH:MM:SS` (`00:05:00` is five minutes; the seconds
  may have a fraction, `00:00:00.5`) or as whole seconds (`300`).
- **Sizes** are bytes (`123`) or a number with a unit `KB`, `MB`, `GB` or `TB`,
  any case, a space allowed (`512KB`, `10 MB`). Units are **1024-based**:
  `1KB` = 1024 bytes, `1MB` = 1024 KB (`KiB`, `MiB`... are accepted too).
- **Booleans** are `true`/`false`, `yes`/`no` or `on`/`off`, in any case.
- **Lists** are YAML lists or one comma-separated text (`dsn, mdn`).
- **Paths** that are relative are relative to the configuration file's directory.
- An empty value, `~` or `null` means "not set": the default applies (quote it,
  `""`, to mean empty text).
- YAML anchors, aliases and merge keys (`<<: *defaults`) may be used to share
  settings between mailboxes; top-level keys starting with `x-` are ignored, to
  hold such anchors:

  ```yaml
  x-imap: &imap {type: imap, server: imap.example.com, port: 993}
  pop-client:
    - {<<: *imap, name: agent1, password: "${AGENT1_PASSWORD}"}
    - {<<: *imap, name: agent2, password: "${AGENT2_PASSWORD}"}
  ```

### Environment variables and files

Any value may refer to the environment or to a file, resolved before conversion;
this is how passwords and tokens stay out of the file:

| written | gives |
|---|---|
| `${NAME}` | the environment variable `NAME`; an error if it is not set |
| `${NAME:-default}` | `default` when `NAME` is unset or empty |
| `${file:path}` | the file's content without its trailing newline (relative paths: \
from the configuration file's directory) |
| `$${` | a literal `${` |

Values of secret options are never printed: not in logs, not in error messages,
not by `postroom check`. Errors name the file, the line and the option, and
unknown keys get a "did you mean".
"""


def render_markdown(schema: OptionSchema) -> str:
    """The configuration reference as Markdown."""
    order = {id(o): i for i, o in enumerate(schema)}

    def ordered(options: Iterable[Option]) -> list[Option]:
        def key(o: Option) -> tuple[bool, str, int]:
            kernel = o.declared_by in ("", KERNEL)
            return (not kernel, "" if kernel else o.declared_by, order[id(o)])

        return sorted(options, key=key)

    out: list[str] = [
        "# Configuration reference",
        "",
        "<!-- Generated from the option declarations by "
        "postroom.config.docs.render_markdown; do not edit by hand. -->",
        "",
        "The site configuration is one YAML file. The kernel, each driver and each plugin "
        "declare their options; this reference, `postroom check` and the validation of the "
        "file all come from those declarations. A minimal configuration:",
        "",
        "```yaml",
        _EXAMPLE.rstrip("\n"),
        "```",
        "",
        _VALUES.rstrip("\n"),
        "",
        "### Types",
        "",
        "| type | written as |",
        "|---|---|",
    ]
    for info in schema.types:
        out.append(f"| `{info.name}` | {_cell(info.description)} |")
    out.append("")

    sections = sorted(schema.sections())
    out += ["## Top level", ""]
    structural = [
        f"`{STORE_SECTION}`",
        f"`{MAILBOX_SECTION}`",
        f"`{SMTP_SECTION}`",
        "`secret-<name>`",
        *(f"`{s}`" for s in sections),
    ]
    out += [
        "Besides the options below, the top level holds the sections "
        + ", ".join(structural)
        + ", described after them.",
        "",
    ]
    out += _options(ordered(schema.select(Scope.GLOBAL, None)), "###", "the top level")

    out += [
        f"## `{STORE_SECTION}`",
        "",
        "Where interactions, the outbox and the cursors are kept. `driver` chooses the "
        "store driver; the other options depend on it.",
        "",
    ]
    out += _grouped(ordered(schema.select(Scope.STORE)), "Every driver", "Driver", "driver")

    out += [
        f"## `{MAILBOX_SECTION}`",
        "",
        "The mailboxes: a list of mappings, each with a unique `name` and a `type` (the "
        "source driver); one mapping alone is taken as a list of one. Mailboxes with a "
        "server choose their auth driver with `auth` (default `basic`).",
        "",
    ]
    mailbox = ordered(schema.select(Scope.MAILBOX))
    honoured = [o.name for o in mailbox if o.name.startswith("mail.")]
    out += [
        "**Pass-through properties.** As the commercial product passes JavaMail properties "
        "through, a key of a mailbox that starts with `mail.` is a pass-through property "
        "(e.g. `mail.pop3.disabletop: true`). Those postroom honours are declared options "
        "below; any other is kept as text in the mailbox's pass-through properties and "
        "draws a warning. Honoured: "
        + (", ".join(f"`{n}`" for n in sorted(honoured)) if honoured else "none yet")
        + ".",
        "",
    ]
    out += _grouped(mailbox, "Every mailbox type", "Mailboxes of type", "mailboxes of type")

    out += [
        f"## `{SMTP_SECTION}`",
        "",
        "How outbound mail is sent: `server-type` chooses the sender driver; the other "
        "options depend on it. Keys starting with `mail.` are pass-through properties, "
        "as for mailboxes.",
        "",
    ]
    out += _grouped(
        ordered(schema.select(Scope.SMTP_CLIENT)),
        "Every server-type",
        "Server-type",
        "server-type",
    )

    for section in sections:
        out += [f"## Section `{section}`", ""]
        out += _options(
            ordered(schema.select(Scope.GLOBAL, section)), "###", f"section `{section}`"
        )

    out += [
        "## `secret-<name>`",
        "",
        "Named secrets, referred to by name from other options (e.g. a Google mailbox's "
        "`secret: google` refers to `secret-google`). Every such section takes these "
        "options:",
        "",
    ]
    out += _options(ordered(schema.select(Scope.SECRET)), "###", "every `secret-<name>` section")
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def _grouped(options: list[Option], common: str, title: str, what: str) -> list[str]:
    groups: dict[tuple[str, ...], list[Option]] = {}
    for option in options:
        groups.setdefault(tuple(sorted(option.types)) if option.types else (), []).append(option)
    out: list[str] = []
    for kinds in sorted(groups, key=lambda k: (bool(k), k)):
        if kinds:
            heading = f"{title} " + ", ".join(f"`{k}`" for k in kinds)
            applies = f"{what} " + ", ".join(f"`{k}`" for k in kinds)
        else:
            heading, applies = common, common.lower()
        out += [f"### {heading}", ""]
        out += _options(groups[kinds], "####", applies)
    return out


def _bound(option: Option, value: float) -> str:
    """A bound written as the option's values are: ``01:00:00``, ``64MB``, ``100``."""
    if option.type == "duration" and float(value).is_integer():
        seconds = int(value)
        return f"`{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}`"
    if option.type == "size" and float(value).is_integer():
        size = int(value)
        for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
            if size and size % factor == 0:
                return f"`{size // factor}{unit}`"
        return f"{size} byte" + ("s" if size != 1 else "")
    return _number(value)


def _options(options: list[Option], level: str, applies: str) -> list[str]:
    if not options:
        return ["No options are declared here.", ""]
    out: list[str] = []
    for option in options:
        out += [f"{level} `{option.name}`", ""]
        if option.description:
            out += [option.description, ""]
        kind = f"`{option.type}`"
        bounds = [
            f"{label} {_bound(option, v)}"
            for label, v in (("minimum", option.minimum), ("maximum", option.maximum))
            if v is not None
        ]
        if bounds:
            kind += " (" + ", ".join(bounds) + ")"
        out.append(f"- type: {kind}")
        if option.choices:
            out.append("- choices: " + ", ".join(f"`{c}`" for c in option.choices))
        if option.required:
            out.append("- required")
        else:
            out.append(f"- default: {_default(option)}")
        out.append(f"- applies to: {applies}")
        if option.aliases:
            out.append("- aliases: " + ", ".join(f"`{a}`" for a in option.aliases))
        if option.is_secret:
            out.append("- secret: never printed")
        out.append(f"- declared by: {option.declared_by or KERNEL}")
        out.append("")
    return out


def _default(option: Option) -> str:
    value: Any = option.default
    if value is None:
        return "none"
    if option.is_secret:
        return "set (not shown)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, list | tuple):
        return "`" + ", ".join(str(v) for v in value) + "`" if value else "empty"
    if isinstance(value, PurePath):
        value = value.as_posix()
    text = str(value)
    return f"`{text}`" if text else '`""`'


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _cell(text: str) -> str:
    return text.replace("``", "`").replace("|", "\\|").replace("\n", " ")
