"""The ``render`` hook plugin: standard responses on outbound requests.

* ``postroom_add_options`` / ``postroom_configure``: the section
  ``standard-responses`` (the library's folder, the template and render limits);
  a library that cannot be read is a configuration error naming the file.
* ``postroom_render``: a request with ``options.standard_response`` gets its
  subject (unless the request gave one), text and HTML from the template, field codes filled in
  from the request's ``fields``, the parent interaction (``in_reply_to``) and its
  attached data. A template that cannot be used is *not* an exception here (that
  would be retried): the reason is kept in the request's options for the veto.
* ``postroom_veto``: refuses such a request with that reason, for good.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import attrs

from postroom.api import Context, Interaction, OptionSchema, OutboundRequest, Scope, hookimpl
from postroom_render.library import TemplateError, load_library, load_response
from postroom_render.sandbox import (
    EXT_REPLY_NAME,
    Budget,
    Fields,
    RenderError,
    ext_reply_value,
    render_template,
)

log = logging.getLogger(__name__)

SECTION = "standard-responses"
DIRECTORY = "directory"
MAX_TEMPLATE_SIZE = "max-template-size"
MAX_OUTPUT_SIZE = "max-output-size"

#: the request option this plugin reads
OPTION = "standard_response"
#: where render leaves its reason for the veto (render runs first on every attempt,
#: and always replaces it, so a caller cannot plant one that sticks)
ERROR_KEY = "_render_error"
FIELD_GROUPS = ("Contact", "Agent")
_SUBJECT_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
SUBJECT_MAX = 998


@hookimpl
def postroom_add_options(schema: OptionSchema) -> None:
    schema.add(
        DIRECTORY,
        "path",
        scope=Scope.GLOBAL,
        section=SECTION,
        description="The site's standard-response library: one folder per response "
        "(`<id>/response.yaml`, `body.txt` and/or `body.html`, `attachments/`); see "
        "docs/outbound.md. Relative to the configuration file. Unset: requests naming a "
        "standard response are refused.",
    )
    schema.add(
        MAX_TEMPLATE_SIZE,
        "size",
        scope=Scope.GLOBAL,
        section=SECTION,
        default="256KB",
        minimum=1,
        maximum=16 << 20,
        description="Largest template file (`response.yaml`, `body.txt`, `body.html`) read.",
    )
    schema.add(
        MAX_OUTPUT_SIZE,
        "size",
        scope=Scope.GLOBAL,
        section=SECTION,
        default="1MB",
        minimum=1024,
        maximum=25 << 20,  # a send request's body limit
        description="Characters the field codes of one rendering may produce, intermediate "
        'values included (`"ab" * 50000000` is refused before it is made); a request '
        "whose template needs more is refused.",
    )


@hookimpl
def postroom_configure(config: Any) -> None:
    directory = config.get(SECTION, DIRECTORY)
    if directory is None:
        return
    if not Path(directory).is_dir():
        raise config.error(f"{directory} is not a folder", SECTION, DIRECTORY)
    _, problems = load_library(Path(directory), config.get(SECTION, MAX_TEMPLATE_SIZE))
    if problems:
        raise config.error(
            "standard responses that cannot be used: " + "; ".join(problems), SECTION, DIRECTORY
        )


@attrs.frozen
class Spec:
    """``options.standard_response`` of a request, checked."""

    id: str
    fields: dict[str, dict[str, Any]]
    ext_reply_text: str | None


def read_spec(value: Any) -> Spec:
    """The request's option, or :class:`TemplateError` saying what is wrong with it."""
    if not isinstance(value, dict):
        raise TemplateError(f"options.{OPTION} must be an object")
    unknown = sorted(set(value) - {"id", "fields", "ext_reply_text", ERROR_KEY})
    if unknown:
        raise TemplateError(f"options.{OPTION}: unknown key(s) {', '.join(unknown)}")
    response_id = value.get("id")
    if not isinstance(response_id, str) or not response_id:
        raise TemplateError(f"options.{OPTION}.id must be a non-empty string")
    fields = value.get("fields") or {}
    if not isinstance(fields, dict):
        raise TemplateError(f"options.{OPTION}.fields must be an object")
    groups: dict[str, dict[str, Any]] = {}
    for group, values in fields.items():
        if group not in FIELD_GROUPS:
            raise TemplateError(
                f"options.{OPTION}.fields: unknown group {group!r} "
                f"(known: {', '.join(FIELD_GROUPS)})"
            )
        if not isinstance(values, dict):
            raise TemplateError(f"options.{OPTION}.fields.{group} must be an object")
        for name, field in values.items():
            if not isinstance(field, str | int | float | bool) or field is None:
                raise TemplateError(
                    f"options.{OPTION}.fields.{group}.{name} must be a string, number or boolean"
                )
        groups[group] = dict(values)
    ext = value.get("ext_reply_text")
    if ext is not None and not isinstance(ext, str):
        raise TemplateError(f"options.{OPTION}.ext_reply_text must be a string")
    return Spec(response_id, groups, ext)


def _date(interaction: Interaction) -> str:
    return interaction.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")


def interaction_fields(interaction: Interaction | None) -> Fields:
    """``Interaction`` as field codes see it: the commercial product's names
    (docs/outbound.md has the mapping to postroom's model)."""
    if interaction is None:
        return Fields("Interaction", {})
    return Fields(
        "Interaction",
        {
            "Id": interaction.id,
            "ParentId": interaction.parent_id,
            "Type": interaction.type,
            "SubtypeId": interaction.subtype,
            "Status": interaction.status,
            "Mailbox": interaction.mailbox,
            "MessageId": interaction.message_id,
            "Subject": interaction.subject,
            "FromAddress": interaction.from_addr,
            "ToAddresses": ", ".join(interaction.to),
            "CcAddresses": ", ".join(interaction.cc),
            "DateCreated": _date(interaction),
            "Text": interaction.text,
            "AttachedData": Fields("Interaction.AttachedData", interaction.attached_data),
        },
    )


@attrs.frozen
class Rendered:
    subject: str
    text: str | None
    html: str | None
    missing: tuple[str, ...]
    budget: Budget


def clean_subject(subject: str) -> str:
    """A rendered subject as one header line: control characters become a blank."""
    return _SUBJECT_CONTROL.sub(" ", subject).strip()[:SUBJECT_MAX]


def render_response(response: Any, spec: Spec, parent: Interaction | None, limit: int) -> Rendered:
    """Render *response* (a :class:`~postroom_render.library.StandardResponse`):
    :class:`RenderError` when it cannot be."""
    budget = Budget(limit)
    missing: list[str] = []
    base: dict[str, Any] = {
        group: Fields(group, spec.fields.get(group, {})) for group in FIELD_GROUPS
    }
    base["Interaction"] = interaction_fields(parent)

    def render(source: str, name: str, html: bool) -> str:
        variables = dict(base)
        ext = ext_reply_value(spec.ext_reply_text, html)
        if ext is not None:
            variables[EXT_REPLY_NAME] = ext
        return render_template(
            source, f"{response.id}/{name}", variables, html=html, budget=budget, missing=missing
        )

    subject = clean_subject(render(response.subject, "response.yaml", False))
    text = render(response.text, "body.txt", False) if response.text is not None else None
    html = render(response.html, "body.html", True) if response.html is not None else None
    return Rendered(subject, text, html, tuple(dict.fromkeys(missing)), budget)


async def _parent(request: OutboundRequest, ctx: Context) -> Interaction | None:
    if not request.in_reply_to:
        return None
    found: Interaction | None = await ctx.store.get_interaction(request.in_reply_to)
    return found


async def _load(ctx: Context, directory: Path, response_id: str, max_size: int) -> Any:
    if ctx.runner is None:
        return load_response(directory, response_id, max_size)
    return await ctx.runner.run(load_response, directory, response_id, max_size)


async def _render(
    ctx: Context, response: Any, spec: Spec, parent: Interaction | None, limit: int
) -> Rendered:
    """Render in the kernel's budgeted worker processes when it has them (the
    per-message CPU and memory budget, on top of this plugin's own size budget)."""
    runner = ctx.cpu_runner or ctx.runner
    if runner is None:
        return render_response(response, spec, parent, limit)
    try:
        rendered: Rendered = await runner.run(render_response, response, spec, parent, limit)
    except RenderError:
        raise
    except Exception as exc:
        # the kernel's OverBudget is not part of postroom.api: known by name;
        # the same template would exceed it again, so it is a reason, not a retry
        if type(exc).__name__ == "OverBudget":
            raise RenderError(f"{response.id}: {exc}") from None
        raise
    return rendered


@hookimpl
async def postroom_render(request: OutboundRequest, ctx: Context) -> None:
    value = request.options.get(OPTION)
    if value is None:
        return
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != ERROR_KEY}
    try:
        spec = read_spec(value)
        directory = ctx.option(SECTION, DIRECTORY)
        if directory is None:
            raise TemplateError(f"no {SECTION}.{DIRECTORY} is configured")
        response = await _load(
            ctx, Path(directory), spec.id, ctx.option(SECTION, MAX_TEMPLATE_SIZE)
        )
        parent = await _parent(request, ctx)  # a store failure raises: retried
        rendered = await _render(ctx, response, spec, parent, ctx.option(SECTION, MAX_OUTPUT_SIZE))
    except (TemplateError, RenderError) as exc:
        log.warning("standard response refused: %s", exc)
        request.options[OPTION] = {
            **(value if isinstance(value, dict) else {}),
            ERROR_KEY: str(exc),
        }
        return
    request.options[OPTION] = value
    if rendered.missing:
        log.warning(
            "standard response %r: missing field(s) rendered empty: %s",
            spec.id,
            ", ".join(rendered.missing),
        )
    # the template's subject, unless the request gave its own (one the kernel
    # filled for a reply, ``Re: <parent's subject>``, gives way to the template's)
    if rendered.subject and (not request.subject or "subject" in request.filled):
        request.subject = rendered.subject
    if rendered.text is not None:
        request.text = rendered.text
    if rendered.html is not None:
        request.html = rendered.html
    # TODO(kernel): the response's own attachments (response.attachments) once
    # OutboundRequest can carry attachments (issue 12, item 4).


@hookimpl
def postroom_veto(request: OutboundRequest) -> str | None:
    value = request.options.get(OPTION)
    if isinstance(value, dict) and value.get(ERROR_KEY):
        return f"standard response: {value[ERROR_KEY]}"
    return None
