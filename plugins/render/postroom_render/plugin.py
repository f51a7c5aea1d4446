"""The ``render`` hook plugin: standard responses on outbound requests.

* ``postroom_add_options`` / ``postroom_configure``: the section
  ``standard-responses`` (the library's folder, the template and render limits);
  a library that cannot be read is a configuration error naming the file.
* ``postroom_validate_request``: when a request is queued (or previewed), its
  ``options.standard_response`` is checked, the response read, its required field
  values looked for and the template rendered once: what cannot be sent is refused
  with a :class:`~postroom.api.RequestError` naming ``options`` (HTTP 400,
  ``postroom send`` exit 2), nothing queued.
* ``postroom_render``: a request with ``options.standard_response`` gets its
  subject (unless the request gave one), text and HTML from the template, field codes filled in
  from the request's ``fields``, the parent interaction (``in_reply_to``) and its
  attached data. A template that cannot be used (removed or broken after the
  request was queued) is *not* an exception here (that would be retried): the
  reason is kept in the request's options for the veto.
* ``postroom_veto``: refuses such a request with that reason, for good.
* ``postroom_register_commands`` / ``postroom_register_routes``: ``postroom
  responses list|show``, ``GET /responses``, ``GET /responses/{id}``
  (:mod:`postroom_render.listing`) and ``POST /ext-reply``, the product's
  ``ReplyFromExtResource`` (:mod:`postroom_render.extreply`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from postroom.api import (
    Context,
    FileError,
    Interaction,
    OptionSchema,
    OutboundAttachment,
    OutboundRequest,
    PluginCommands,
    RequestError,
    Route,
    Scope,
    check_limits,
    file_limits,
    hookimpl,
    outbound_file,
)
from postroom_render import extreply, listing
from postroom_render.library import (
    ATTACHED_PREFIX,
    AttachmentFile,
    StandardResponse,
    TemplateError,
    UnknownResponse,
    load_library,
    load_response,
)
from postroom_render.options import (
    DIRECTORY,
    MAX_OUTPUT_SIZE,
    MAX_TEMPLATE_SIZE,
    OPTION,
    SECTION,
    library_directory,
    max_output_size,
    max_template_size,
)
from postroom_render.sandbox import (
    EXT_REPLY_NAME,
    Budget,
    Fields,
    RenderError,
    ext_reply_value,
    render_template,
)

log = logging.getLogger(__name__)

#: where render leaves its reason for the veto (render runs first on every attempt,
#: and always replaces it, so a caller cannot plant one that sticks; a request
#: naming it is refused when queued)
ERROR_KEY = "_render_error"
FIELD_GROUPS = ("Contact", "Agent")
#: a field's name (``Contact.<name>``): what a field code can reach by attribute
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
#: at most this many fields per group, each value at most this many characters
MAX_FIELDS = 200
MAX_FIELD_VALUE = 65535
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


class SpecError(TemplateError):
    """What is wrong with a request's option; *key* is the part it concerns
    (``id``, ``fields``, ``ext_reply_text``, ``in_reply_to``), None for the whole."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def read_spec(value: Any, max_text: int | None = None) -> Spec:
    """The request's option, or :class:`SpecError` saying what is wrong with it.

    *max_text*: the longest ``ext_reply_text`` (the site's output budget).
    """
    where = f"options.{OPTION}"
    if not isinstance(value, dict):
        raise SpecError(f"{where} must be an object")
    unknown = sorted(set(value) - {"id", "fields", "ext_reply_text"})
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(map(_shown, unknown))}")
    response_id = value.get("id")
    if not isinstance(response_id, str) or not response_id:
        raise SpecError(f"{where}.id must be a non-empty string", "id")
    fields = value.get("fields") or {}
    if not isinstance(fields, dict):
        raise SpecError(f"{where}.fields must be an object", "fields")
    groups: dict[str, dict[str, Any]] = {}
    for group, values in fields.items():
        if group not in FIELD_GROUPS:
            raise SpecError(
                f"{where}.fields: unknown group {_shown(group)} (known: {', '.join(FIELD_GROUPS)})",
                "fields",
            )
        if not isinstance(values, dict):
            raise SpecError(f"{where}.fields.{group} must be an object", "fields")
        if len(values) > MAX_FIELDS:
            raise SpecError(f"{where}.fields.{group}: more than {MAX_FIELDS} fields", "fields")
        for name, field in values.items():
            if not FIELD_NAME.fullmatch(name):
                raise SpecError(
                    f"{where}.fields.{group}: {_shown(name)} is not a field name (letters, "
                    "digits, '_', '.', '-', a letter or '_' first, at most 64)",
                    "fields",
                )
            if not isinstance(field, str | int | float | bool) or field is None:
                raise SpecError(
                    f"{where}.fields.{group}.{name} must be a string, number or boolean",
                    "fields",
                )
            if isinstance(field, str) and len(field) > MAX_FIELD_VALUE:
                raise SpecError(
                    f"{where}.fields.{group}.{name}: longer than {MAX_FIELD_VALUE} characters",
                    "fields",
                )
        groups[group] = dict(values)
    ext = value.get("ext_reply_text")
    if ext is not None and not isinstance(ext, str):
        raise SpecError(f"{where}.ext_reply_text must be a string", "ext_reply_text")
    if ext is not None and max_text is not None and len(ext) > max_text:
        raise SpecError(
            f"{where}.ext_reply_text: longer than {max_text} characters "
            f"({SECTION}.{MAX_OUTPUT_SIZE})",
            "ext_reply_text",
        )
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
    #: the response's own files (its ``attachments/`` folder), not read yet
    files: tuple[AttachmentFile, ...] = ()


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


def missing_required(
    response: StandardResponse, spec: Spec, parent: Interaction | None
) -> list[str]:
    """The fields *response* requires (``required`` in its response.yaml) that
    have no value, or an empty one, for this request."""
    missing = []
    interaction = interaction_fields(parent)
    for name in response.required:
        value: Any
        if name == EXT_REPLY_NAME:
            value = spec.ext_reply_text
        elif name.startswith(ATTACHED_PREFIX):
            key = name[len(ATTACHED_PREFIX) :]
            value = parent.attached_data.get(key) if parent is not None else None
        else:
            group, _, field = name.partition(".")
            if group == "Interaction":
                _, value = interaction.lookup(field)
            else:
                value = spec.fields.get(group, {}).get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            missing.append(name)
    return missing


def _missing_key(missing: list[str]) -> str:
    """Which part of the request leaves *missing* out (for the error's field)."""
    if any(name.split(".", 1)[0] in FIELD_GROUPS for name in missing):
        return "fields"
    return "ext_reply_text" if EXT_REPLY_NAME in missing else "in_reply_to"


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


def with_offered(spec: Spec, offered: Mapping[str, Mapping[str, Any]]) -> Spec:
    """*spec* with the values other plugins offer (``postroom_field_values``: a
    chat transcript's ``userData``, a directory) where the request gives none:
    the request's own values win. Offered names or values a request could not
    give (a bad name, a value over the length limit) are left out."""
    groups = {group: dict(values) for group, values in spec.fields.items()}
    for group in FIELD_GROUPS:
        for name, value in (offered.get(group) or {}).items():
            usable = FIELD_NAME.fullmatch(name) and not (
                isinstance(value, str) and len(value) > MAX_FIELD_VALUE
            )
            if usable and len(groups.get(group, {})) < MAX_FIELDS:
                groups.setdefault(group, {}).setdefault(name, value)
    return attrs.evolve(spec, fields=groups)


async def render_request(
    request: OutboundRequest,
    ctx: Context,
    value: Any,
    offered: Mapping[str, Mapping[str, Any]] | None = None,
) -> Rendered:
    """*request*'s standard response (*value*: its option) rendered, or the
    :class:`TemplateError` (an unusable option or response, a required field
    without value) or :class:`RenderError` saying why it cannot be. The one path
    of the queue-time check and the rendering. *offered*: the field values
    other plugins give (``postroom_field_values``)."""
    spec = with_offered(read_spec(value, max_output_size(ctx)), offered or {})
    directory = library_directory(ctx)
    try:
        response = await _load(ctx, directory, spec.id, max_template_size(ctx))
    except UnknownResponse as exc:
        raise SpecError(str(exc), "id") from None
    parent = await _parent(request, ctx)  # a store failure raises: retried
    missing = missing_required(response, spec, parent)
    if missing:
        raise SpecError(
            f"standard response {spec.id!r} requires {', '.join(missing)} "
            "(required in its response.yaml): missing or empty",
            _missing_key(missing),
        )
    rendered = await _render(ctx, response, spec, parent, max_output_size(ctx))
    _check_files(request, response.attachments, ctx)
    return attrs.evolve(rendered, files=response.attachments)


def _check_files(
    request: OutboundRequest, files: tuple[AttachmentFile, ...], ctx: Context
) -> None:
    """The response's files after the request's own must keep within the site's
    limits (:class:`TemplateError` naming the file and the option)."""
    if not files:
        return
    sized = [*request.attachments, *(OutboundAttachment(f.name, size=f.size) for f in files)]
    try:
        check_limits(sized, file_limits(ctx))
    except FileError as exc:
        raise TemplateError(f"its attachments: {exc}") from None


async def _read_files(ctx: Context, files: tuple[AttachmentFile, ...]) -> list[OutboundAttachment]:
    """The response's files with their bytes (blocking reads, in the thread pool)."""

    def read() -> list[OutboundAttachment]:
        return [outbound_file(f.name, f.path.read_bytes()) for f in files]

    try:
        return await ctx.runner.run(read) if ctx.runner is not None else read()
    except (OSError, FileError) as exc:
        raise TemplateError(f"its attachments cannot be read: {exc}") from None


class OptionError(RequestError):
    """A request whose ``options.standard_response`` cannot be sent; *key* is the
    part concerned (:class:`SpecError`), for callers that name it their way."""

    def __init__(self, message: str, key: str | None) -> None:
        super().__init__("options", message)
        self.key = key


def refusal(exc: TemplateError | RenderError) -> OptionError:
    """The queue-time refusal for what :func:`render_request` raised."""
    text = str(exc)
    prefix = f"options.{OPTION}"
    text = text.removeprefix("options.") if text.startswith(prefix) else f"{OPTION}: {text}"
    return OptionError(text, getattr(exc, "key", None))


@hookimpl
async def postroom_validate_request(
    request: OutboundRequest, ctx: Context, fields: Mapping[str, Mapping[str, Any]]
) -> None:
    """Refuse, before it is queued, a request whose standard response cannot be
    sent: a malformed option, an unknown id, a required field without value, a
    template that does not render with these values. The template is rendered
    once here; the send renders it again (a parent or template changed since)."""
    value = request.options.get(OPTION)
    if value is None:
        return
    try:
        await render_request(request, ctx, value, fields)
    except (TemplateError, RenderError) as exc:
        raise refusal(exc) from None


@hookimpl
async def postroom_render(
    request: OutboundRequest, ctx: Context, fields: Mapping[str, Mapping[str, Any]]
) -> None:
    value = request.options.get(OPTION)
    if value is None:
        return
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != ERROR_KEY}
    try:
        rendered = await render_request(request, ctx, value, fields)
        files = await _read_files(ctx, rendered.files)
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
            value["id"],
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
    # the response's own files follow the request's (the kernel reads the
    # queued ones from the outbox, and checks the whole against the site's limits)
    request.attachments.extend(files)


@hookimpl
def postroom_veto(request: OutboundRequest) -> str | None:
    value = request.options.get(OPTION)
    if isinstance(value, dict) and value.get(ERROR_KEY):
        return f"standard response: {value[ERROR_KEY]}"
    return None


@hookimpl
def postroom_register_commands(commands: PluginCommands) -> None:
    listing.add_commands(commands)


@hookimpl
def postroom_register_routes() -> list[Route]:
    return [*listing.routes(), extreply.route()]
