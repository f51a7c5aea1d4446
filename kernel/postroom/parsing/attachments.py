"""Attachment names, as people expect to see them."""

from __future__ import annotations

import re

from postroom.model import ParsedMessage
from postroom.parsing.headers import ContentType, decode_phrase

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_filename(name: str | None) -> str | None:
    """A decoded name without control characters or surrounding blanks; None if empty.

    Encoded-words left in the name (a value split oddly across RFC 2231
    sections) are decoded here too.
    """
    if name is None:
        return None
    if "=?" in name:
        name = decode_phrase(name)
    name = _CONTROL.sub("", name).strip()
    return name or None


def decode_filename(
    disposition: ContentType | None, content_type: ContentType | None
) -> str | None:
    """The file name of a part: Content-Disposition ``filename``, else
    Content-Type ``name`` (both already RFC 2231 / RFC 2047 decoded by
    :func:`postroom.parsing.headers.parse_content_type`)."""
    for header, param in ((disposition, "filename"), (content_type, "name")):
        if header is not None:
            name = clean_filename(header.param(param))
            if name:
                return name
    return None


def attachment_file_names(parsed: ParsedMessage) -> list[str]:
    """The names for attached key ``_AttachmentFileNames``: every attachment
    that has a name, in message order (nameless parts and attached messages
    without a name are left out)."""
    return [a.filename for a in parsed.attachments if a.filename]
