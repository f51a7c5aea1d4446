"""Files sent with outbound mail: what a request gives, the checks, the MIME parts.

A send request's ``attachments`` are uploaded (``{filename, content_type,
content}``, the content in base64; or a multipart upload, or ``postroom send
--attach``) or taken by reference from a stored interaction (``{interaction,
index}``). The kernel reads a referenced file from that interaction's raw
message when it queues the request (:mod:`postroom.services.outbound`), checks
every file against the site's limits, and the outbox keeps the bytes apart from
the request, so a retry after a restart still has them.

When the message is built each file becomes a MIME part with
``Content-Disposition: attachment``; a name outside ASCII is written as RFC 2231
``filename*=utf-8''...`` (and ``name`` for old clients) by the ``email``
package.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
import re
from collections.abc import Iterable, Sequence
from email.message import EmailMessage
from typing import Any

import attrs

from postroom.errors import PostroomError
from postroom.model import OutboundAttachment

FIELD = "attachments"

#: RFC 6838 type and subtype names (what the send-request schema accepts)
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,62}"
_MEDIA_TYPE = re.compile(f"{_TOKEN}/{_TOKEN}")
#: what a file name may not hold: control characters, path separators
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029/\\]")
_BASE64_BLANKS = re.compile(r"[\r\n]")
MAX_NAME = 255
MAX_FILES = 100
FALLBACK_TYPE = "application/octet-stream"


class FileError(PostroomError, ValueError):
    """A file of a request that can never be sent (the request's ``attachments``)."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


@attrs.frozen
class FileLimits:
    """The site's bounds on the files of one outbound message (bytes, count)."""

    max_size: int = 10 * 1024**2
    max_total: int = 20 * 1024**2
    max_count: int = 20


def file_limits(site: Any) -> FileLimits:
    """The site's ``outbound-attachment-*`` options (*site*: a context or a
    configuration: anything with ``option(section, name)`` or ``get(section, name)``)."""
    get = getattr(site, "option", None) or site.get
    return FileLimits(
        max_size=int(get("email-processing", "outbound-attachment-max-size")),
        max_total=int(get("email-processing", "outbound-attachments-max-total")),
        max_count=int(get("email-processing", "outbound-attachment-max-count")),
    )


def guess_type(filename: str) -> str:
    """The media type of a file name's extension; ``application/octet-stream`` when unknown."""
    guessed, _encoding = mimetypes.guess_type(filename, strict=False)
    return guessed if guessed and _MEDIA_TYPE.fullmatch(guessed) else FALLBACK_TYPE


def sendable_type(media: str) -> str:
    """*media* when a file may be sent with it, else ``application/octet-stream``."""
    ok = _MEDIA_TYPE.fullmatch(media) and not media.lower().startswith("multipart/")
    return media.lower() if ok else FALLBACK_TYPE


def name_problem(filename: str) -> str | None:
    """What makes *filename* unfit to send, or None."""
    if not filename or not filename.strip():
        return "the file name is empty"
    if len(filename) > MAX_NAME:
        return f"the file name is longer than {MAX_NAME} characters"
    if _BAD_NAME.search(filename):
        return "the file name holds a control character or a slash"
    return None


def outbound_file(
    filename: str, data: bytes, content_type: str | None = None
) -> OutboundAttachment:
    """A file given with a request (or added by a renderer), checked: its name and
    media type (guessed from the name when not given); :class:`FileError` when not."""
    problem = name_problem(filename)
    if problem is not None:
        raise FileError("", problem)
    media = content_type or guess_type(filename)
    if not _MEDIA_TYPE.fullmatch(media) or media.lower().startswith("multipart/"):
        raise FileError("", f"{media[:80]!r} is not a media type for a file (type/subtype)")
    return OutboundAttachment(
        filename=filename,
        content_type=media.lower(),
        data=data,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def files_from_json(items: Sequence[Any]) -> list[OutboundAttachment]:
    """The files of a request's ``attachments`` (already checked against the schema)."""
    files = []
    for n, item in enumerate(items):
        where = f"[{n}]"
        try:
            if "interaction" in item:
                name = item.get("filename", "")
                if name and (problem := name_problem(name)) is not None:
                    raise FileError("", problem)
                files.append(
                    OutboundAttachment(
                        filename=name, interaction=item["interaction"], index=item["index"]
                    )
                )
                continue
            try:
                data = base64.b64decode(_BASE64_BLANKS.sub("", item["content"]), validate=True)
            except (binascii.Error, ValueError):
                raise FileError("", "content is not valid base64") from None
            files.append(outbound_file(item["filename"], data, item.get("content_type")))
        except FileError as exc:
            raise FileError(f"{where}", exc.message) from None
    return files


def checked(files: Iterable[OutboundAttachment]) -> list[OutboundAttachment]:
    """Files made in Python (an embedding application, a plugin, a stored request):
    the same checks as files given in JSON; each returned as a new object."""
    result = []
    for n, item in enumerate(files):
        where = f"[{n}]"
        if not isinstance(item, OutboundAttachment):
            raise FileError(where, f"{type(item).__name__} is not an OutboundAttachment")
        if item.by_reference:
            if item.index is None or not 0 <= item.index < 1000:
                raise FileError(where, "a file by reference needs an index from 0 to 999")
            if item.filename and (problem := name_problem(item.filename)) is not None:
                raise FileError(where, problem)
            result.append(attrs.evolve(item))
            continue
        if item.data is None:
            if not item.sha256:  # neither bytes nor stored: nothing to send
                raise FileError(where, "a file needs its content or an interaction and index")
            result.append(attrs.evolve(item))
            continue
        try:
            result.append(outbound_file(item.filename, item.data, item.content_type or None))
        except FileError as exc:
            raise FileError(where, exc.message) from None
    if len(result) > MAX_FILES:
        raise FileError("", f"{len(result)} files; at most {MAX_FILES} per request")
    return result


def check_limits(files: Sequence[OutboundAttachment], limits: FileLimits) -> None:
    """Refuse files over the site's limits (:class:`FileError`), naming the one at fault."""
    if len(files) > limits.max_count:
        raise FileError(
            "",
            f"{len(files)} files; the site allows {limits.max_count} "
            "(email-processing: outbound-attachment-max-count)",
        )
    total = 0
    for n, item in enumerate(files):
        if item.size > limits.max_size:
            raise FileError(
                f"[{n}]",
                f"{item.filename!r} is {item.size} bytes; the site allows {limits.max_size} "
                "per file (email-processing: outbound-attachment-max-size)",
            )
        total += item.size
    if total > limits.max_total:
        raise FileError(
            "",
            f"the files add up to {total} bytes; the site allows {limits.max_total} "
            "per message (email-processing: outbound-attachments-max-total)",
        )


def add_to_message(msg: EmailMessage, files: Sequence[OutboundAttachment]) -> None:
    """Each file as an ``attachment`` part of *msg*, in order (bytes must be loaded).

    Files go in base64, byte for byte, except an attached message
    (``message/rfc822``), which RFC 2046 lets travel only unencoded: as such
    when its lines allow (no NUL, none over 998 bytes), else as an
    ``application/octet-stream`` file of the same name.
    """
    for item in files:
        if item.data is None:
            raise ValueError(f"the bytes of {item.filename!r} were not loaded")
        maintype, _, subtype = item.content_type.partition("/")
        if maintype == "message":
            cte = _unencoded_transfer(item.data) if subtype == "rfc822" else None
            if cte is None:
                maintype, subtype = "application", "octet-stream"
            else:
                msg.add_attachment(
                    item.data, maintype=maintype, subtype=subtype, cte=cte,
                    filename=item.filename,
                )  # fmt: skip
                continue
        msg.add_attachment(item.data, maintype=maintype, subtype=subtype, filename=item.filename)
    for part in msg.iter_attachments():
        del part["MIME-Version"]  # the email package adds it to every part: the top's is enough


def _unencoded_transfer(data: bytes) -> str | None:
    """``7bit`` or ``8bit`` when *data* can travel unencoded, else None."""
    if b"\x00" in data or any(len(line) > 998 for line in data.splitlines()):
        return None
    return "7bit" if data.isascii() else "8bit"
