"""The entry functions: a site configuration from a file, or from the declarations alone.

``load`` reads and validates a file in one call, for a schema that is complete
already (tests, tools); the kernel reads, loads drivers and validates in steps
(:mod:`postroom.config.document`, :mod:`postroom.config.validator`).
``default_site`` and ``defaults`` build values without any file, for
``postroom ingest`` without ``-c`` and objects made in code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from postroom.config.declaration import Scope
from postroom.config.document import Document, read_document
from postroom.config.options import OptionSchema
from postroom.config.site import OptionValues, SiteConfig
from postroom.config.validator import validate


def load(
    path: str | os.PathLike[str],
    schema: OptionSchema,
    *,
    environ: Mapping[str, str] | None = None,
) -> SiteConfig:
    """Read and validate a configuration file; raises ConfigErrors with every problem."""
    return validate(read_document(path), schema, environ=environ)


def defaults(
    schema: OptionSchema,
    scope: Scope,
    *,
    section: str | None = None,
    driver: str | None = None,
    base_dir: Path | None = None,
) -> OptionValues:
    """The declared defaults of one place, converted (``"00:01:00"`` -> 60.0).

    For objects built without a file, e.g. the mailbox ``postroom ingest`` invents;
    options without a default are None. ``driver=None`` keeps the options that
    apply to every driver only.
    """
    base = (base_dir or Path.cwd()).absolute()
    options = [
        o
        for o in schema.select(scope, section)
        if (o.types is None if driver is None else o.applies_to(driver))
    ]
    values = {
        o.name: None if o.default is None else schema.types.convert(o.default, o, base_dir=base)
        for o in options
    }
    return OptionValues(values, {o.name for o in options if o.is_secret})


def default_site(schema: OptionSchema, base_dir: Path | None = None) -> SiteConfig:
    """The embedded defaults, no file (``postroom ingest`` without ``-c``)."""
    base = (base_dir or Path.cwd()).absolute()
    return validate(Document(file="(built-in defaults)", base_dir=base), schema)
