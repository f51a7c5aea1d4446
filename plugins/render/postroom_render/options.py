"""The plugin's names: its site options (section ``standard-responses``) and what
they give, and the send request's option it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from postroom_render.library import TemplateError

#: the send request's option naming a standard response
OPTION = "standard_response"
SECTION = "standard-responses"
DIRECTORY = "directory"
MAX_TEMPLATE_SIZE = "max-template-size"
MAX_OUTPUT_SIZE = "max-output-size"


class NoLibrary(TemplateError):
    """The site configures no library: no standard response can be used."""


def library_directory(ctx: Any) -> Path:
    """The site's library folder; :class:`NoLibrary` when none is configured."""
    directory = ctx.option(SECTION, DIRECTORY)
    if directory is None:
        raise NoLibrary(f"no {SECTION}.{DIRECTORY} is configured")
    return Path(directory)


def max_template_size(ctx: Any) -> int:
    return int(ctx.option(SECTION, MAX_TEMPLATE_SIZE))


def max_output_size(ctx: Any) -> int:
    return int(ctx.option(SECTION, MAX_OUTPUT_SIZE))
