"""The template library: one folder per site, one sub-folder per standard response.

Layout (documented in the README)::

    <standard-responses.directory>/
      <id>/                    id: letters, digits, ".", "_", "-" (max 128), not starting with "."
        response.yaml          subject: ..., description: ... (optional strings),
                               required: [Contact.FirstName, ...] (optional: the field
                               values a request must give, else it is refused)
        body.txt               plain-text part (optional)
        body.html              HTML part (optional; at least one of the two)
        attachments/           files attached to every mail made from it (optional)

Errors name the file, and the line for YAML. Reading is blocking file I/O: the
plugin runs it through ``ctx.runner``, never on the reactor thread.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import attrs
import yaml

from postroom_render.sandbox import EXT_REPLY_NAME, field_codes

RESPONSE_FILE = "response.yaml"
TEXT_FILE = "body.txt"
HTML_FILE = "body.html"
ATTACHMENTS_DIR = "attachments"
KNOWN_KEYS = ("subject", "description", "required")
#: the names ``Interaction.<Name>`` has (postroom_render.plugin.interaction_fields)
INTERACTION_NAMES = (
    "Id", "ParentId", "Type", "SubtypeId", "Status", "Mailbox", "MessageId", "Subject",
    "FromAddress", "ToAddresses", "CcAddresses", "DateCreated", "Text",
)  # fmt: skip
ATTACHED_PREFIX = "Interaction.AttachedData."
#: a required field: Contact.<Name>, Agent.<Name>, Interaction.<Name>,
#: Interaction.AttachedData.<key> or ExtAgentReply
_REQUIRED = re.compile(
    r"(?:(?:Contact|Agent)\.[A-Za-z_][A-Za-z0-9_.-]{0,63}"
    r"|Interaction\.(?:" + "|".join(INTERACTION_NAMES) + r")"
    r"|Interaction\.AttachedData\.[^\x00-\x1f\x7f]{1,255}"
    r"|" + EXT_REPLY_NAME + r")"
)
MAX_REQUIRED = 100

#: an id names a folder: no separator, no "..", nothing hidden
ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


class TemplateError(Exception):
    """A standard response that cannot be used; the message names the file (and line)."""


class UnknownResponse(TemplateError):
    """No standard response with that id in the library."""


@attrs.frozen
class AttachmentFile:
    name: str
    size: int
    path: Path


@attrs.frozen
class StandardResponse:
    """One response as read from disk: the template texts, not rendered."""

    id: str
    subject: str
    description: str
    text: str | None
    html: str | None
    attachments: tuple[AttachmentFile, ...]
    #: the field values a request must give (``required`` in response.yaml)
    required: tuple[str, ...] = ()

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(name for name, body in (("text", self.text), ("html", self.html)) if body)

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields its subject and bodies read, in order of first use."""
        found: list[str] = []
        for source in (self.subject, self.text, self.html):
            found += field_codes(source or "")
        return tuple(dict.fromkeys(found))


@attrs.frozen
class ResponseSummary:
    """What a listing shows of one response."""

    id: str
    subject: str
    description: str
    parts: tuple[str, ...]
    attachments: tuple[tuple[str, int], ...]  # (file name, size in bytes)
    fields: tuple[str, ...] = ()  # the field codes it reads
    required: tuple[str, ...] = ()  # the field values a request must give

    @classmethod
    def of(cls, response: StandardResponse) -> ResponseSummary:
        return cls(
            id=response.id,
            subject=response.subject,
            description=response.description,
            parts=response.parts,
            attachments=tuple((a.name, a.size) for a in response.attachments),
            fields=response.fields,
            required=response.required,
        )

    def as_json(self) -> dict[str, object]:
        """What ``GET /responses`` and ``postroom responses list --json`` show of it."""
        return {
            "id": self.id,
            "subject": self.subject,
            "description": self.description,
            "parts": list(self.parts),
            "fields": list(self.fields),
            "required": list(self.required),
            "attachments": [{"name": name, "size": size} for name, size in self.attachments],
        }


def valid_id(response_id: object) -> bool:
    return isinstance(response_id, str) and ID_PATTERN.fullmatch(response_id) is not None


def _read_text(path: Path, max_size: int) -> str:
    """A template file as text: UTF-8, no NUL, at most *max_size* bytes."""
    try:
        info = path.lstat()
    except OSError as exc:
        raise TemplateError(f"{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise TemplateError(f"{path}: not a regular file")
    if info.st_size > max_size:
        raise TemplateError(
            f"{path}: {info.st_size} bytes, larger than the template limit of {max_size} bytes"
        )
    try:
        data = path.read_bytes()[: max_size + 1]
        text = data.decode("utf-8")
    except OSError as exc:
        raise TemplateError(f"{path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{path}: not UTF-8 (byte {exc.start})") from None
    if len(data) > max_size:
        raise TemplateError(f"{path}: larger than the template limit of {max_size} bytes")
    if "\x00" in text:
        raise TemplateError(f"{path}: contains a NUL character")
    return text


def _read_meta(path: Path, max_size: int) -> dict[str, str | tuple[str, ...]]:
    text = _read_text(path, max_size)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise TemplateError(f"{where}: {problem}") from None
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise TemplateError(f"{path}:{node.start_mark.line + 1}: expected a mapping of keys")
    meta: dict[str, str | tuple[str, ...]] = {}
    for key, value in node.value:
        line = key.start_mark.line + 1
        name = key.value if isinstance(key, yaml.ScalarNode) else None
        if name not in KNOWN_KEYS:
            raise TemplateError(
                f"{path}:{line}: unknown key {name!r} (known: {', '.join(KNOWN_KEYS)})"
            )
        if name in meta:
            raise TemplateError(f"{path}:{line}: {name} given twice")
        if name == "required":
            meta[name] = _required(path, value)
            continue
        if not _is_string(value):
            raise TemplateError(f"{path}:{value.start_mark.line + 1}: {name} must be a string")
        meta[name] = value.value
    return meta


def _is_string(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str"


def _required(path: Path, node: yaml.Node) -> tuple[str, ...]:
    """``required``: a list of field names (``Contact.FirstName``, ``ExtAgentReply``...)."""
    if not isinstance(node, yaml.SequenceNode):
        raise TemplateError(f"{path}:{node.start_mark.line + 1}: required must be a list")
    if len(node.value) > MAX_REQUIRED:
        raise TemplateError(
            f"{path}:{node.start_mark.line + 1}: required lists more than {MAX_REQUIRED} fields"
        )
    names: list[str] = []
    for item in node.value:
        line = item.start_mark.line + 1
        if not _is_string(item) or not _REQUIRED.fullmatch(item.value):
            shown = item.value if isinstance(item, yaml.ScalarNode) else "(not a name)"
            raise TemplateError(
                f"{path}:{line}: required: {shown!r} is not a field (Contact.<Name>, "
                f"Agent.<Name>, Interaction.<Name>, {ATTACHED_PREFIX}<key>, {EXT_REPLY_NAME})"
            )
        names.append(item.value)
    return tuple(dict.fromkeys(names))


def _attachments(folder: Path) -> tuple[AttachmentFile, ...]:
    if not folder.exists():
        return ()
    if not folder.is_dir() or folder.is_symlink():
        raise TemplateError(f"{folder}: not a folder")
    found = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_file(follow_symlinks=False):
            raise TemplateError(f"{folder / entry.name}: not a regular file")
        found.append(
            AttachmentFile(entry.name, entry.stat(follow_symlinks=False).st_size, Path(entry.path))
        )
    return tuple(found)


def load_response(directory: Path, response_id: str, max_size: int) -> StandardResponse:
    """The response *response_id* of the library in *directory*.

    :class:`UnknownResponse` for an id that is not a folder there (or not a
    valid id: nothing outside the library is ever opened); :class:`TemplateError`
    naming the file for one that cannot be read.
    """
    if not valid_id(response_id):
        raise UnknownResponse(f"{response_id!r} is not a standard response id")
    folder = directory / response_id
    if not folder.is_dir() or folder.is_symlink():
        raise UnknownResponse(f"no standard response {response_id!r}")
    meta_path = folder / RESPONSE_FILE
    meta = _read_meta(meta_path, max_size) if meta_path.exists() else {}
    text_path, html_path = folder / TEXT_FILE, folder / HTML_FILE
    text = _read_text(text_path, max_size) if text_path.exists() else None
    html = _read_text(html_path, max_size) if html_path.exists() else None
    if text is None and html is None:
        raise TemplateError(f"{folder}: has neither {TEXT_FILE} nor {HTML_FILE}")
    required = meta.get("required", ())
    subject, description = meta.get("subject", ""), meta.get("description", "")
    assert isinstance(subject, str) and isinstance(description, str)
    assert isinstance(required, tuple)
    return StandardResponse(
        id=response_id,
        subject=subject,
        description=description,
        text=text,
        html=html,
        attachments=_attachments(folder / ATTACHMENTS_DIR),
        required=required,
    )


def load_library(directory: Path, max_size: int) -> tuple[list[StandardResponse], list[str]]:
    """Every response in *directory*, and the problems of those that cannot be read."""
    responses: list[StandardResponse] = []
    problems: list[str] = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        return [], [f"{directory}: cannot be read ({exc.strerror})"]
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        if not valid_id(entry.name):
            problems.append(f"{directory / entry.name}: not a valid standard response id")
            continue
        try:
            responses.append(load_response(directory, entry.name, max_size))
        except TemplateError as exc:
            problems.append(str(exc))
    return responses, problems


def list_responses(directory: Path, max_size: int) -> list[ResponseSummary]:
    """The library as a listing shows it.

    Raises :class:`TemplateError` with every problem when a response cannot be read.
    """
    responses, problems = load_library(directory, max_size)
    if problems:
        raise TemplateError("; ".join(problems))
    return [ResponseSummary.of(r) for r in responses]


def read_listing(directory: Path, max_size: int) -> tuple[list[ResponseSummary], list[str]]:
    """The responses that can be read, and the problems of those that cannot
    (a listing shows both: one broken response hides no other)."""
    responses, problems = load_library(directory, max_size)
    return [ResponseSummary.of(r) for r in responses], problems
