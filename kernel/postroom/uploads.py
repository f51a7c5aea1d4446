"""Send requests uploaded as ``multipart/form-data``: the JSON request and its files.

A client attaching files to ``POST /send`` need not put them in base64 inside
the JSON (a third larger, and built in memory): it may send a form with one
field ``request`` holding the JSON send request and one part per file (any
field name, a ``filename``), in the order they are to be attached, after the
request's own ``attachments``. A file's media type is its part's
``Content-Type`` when that says more than ``application/octet-stream``, else
guessed from its name.

The form is read by python-multipart's streaming parser, in one pass and
without recursion: a part declaring itself ``multipart/*`` is a file like any
other, never parsed further. Part headers are bounded by the parser; their
values (RFC 2231 ``filename*`` included) are read by the ``email`` package's
header parser. Every refusal is a :class:`~postroom.sendrequest.RequestError`
(400, nothing queued).
"""

from __future__ import annotations

from email import policy
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from postroom.model import OutboundAttachment, OutboundRequest
from postroom.outbound_files import FIELD, FileError, outbound_file
from postroom.sendrequest import RequestError, parse_json, request_from_json

#: the form field that holds the JSON send request
REQUEST_FIELD = "request"
#: most parts a form may have: the request and at most 100 files (the schema's bound)
MAX_PARTS = 101
_GENERIC_TYPE = "application/octet-stream"


class _Part:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.field = b""
        self.value = b""
        self.chunks: list[bytes] = []


class _Form:
    """The parts of one form, gathered by the parser's callbacks."""

    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self.ended = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._field,
            "on_header_value": self._value,
            "on_header_end": self._header_end,
            "on_part_data": self._data,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise RequestError(None, f"the form has more than {MAX_PARTS} parts")
        self.parts.append(_Part())

    def _field(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].field += data[start:end]

    def _value(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].value += data[start:end]

    def _header_end(self) -> None:
        part = self.parts[-1]
        part.headers.append((part.field.lower(), part.value))
        part.field, part.value = b"", b""

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].chunks.append(data[start:end])

    def _end(self) -> None:
        self.ended = True


def is_form(content_type: str | bytes | None) -> bool:
    """Whether a request's ``Content-Type`` announces ``multipart/form-data``."""
    if not content_type:
        return False
    value = content_type.encode("latin-1") if isinstance(content_type, str) else content_type
    return parse_options_header(value)[0].lower() == b"multipart/form-data"


def request_from_form(
    content_type: bytes, body: bytes, forbidden: frozenset[str]
) -> OutboundRequest:
    """The send request of a ``multipart/form-data`` body, its uploaded files attached."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 70:
        raise RequestError(None, "multipart/form-data without a usable boundary (1-70 characters)")
    form = _Form()
    parser = MultipartParser(boundary, form.callbacks())  # type: ignore[arg-type]
    try:
        parser.write(body)
        parser.finalize()
    except RequestError:
        raise
    except Exception as exc:  # the parser's own errors name the fault, never our state
        raise RequestError(None, f"the form cannot be read: {type(exc).__name__}: {exc}") from None
    if not form.ended:
        raise RequestError(None, "the form ends before its closing boundary")
    request_json: bytes | None = None
    files: list[OutboundAttachment] = []
    for n, part in enumerate(form.parts):
        name, filename = _disposition(part, n)
        data = b"".join(part.chunks)
        if filename is None:
            if name != REQUEST_FIELD:
                raise RequestError(
                    None,
                    f"form part {n} ({name!r}) is neither the {REQUEST_FIELD!r} field "
                    "nor a file (a part with a filename)",
                )
            if request_json is not None:
                raise RequestError(None, f"the form has the {REQUEST_FIELD!r} field twice")
            request_json = data
            continue
        try:
            files.append(outbound_file(filename, data, _media_type(part)))
        except FileError as exc:
            raise RequestError(FIELD, f"uploaded file {filename[:80]!r}: {exc.message}") from None
    if request_json is None:
        raise RequestError(None, f"the form has no {REQUEST_FIELD!r} field (the JSON request)")
    request = request_from_json(parse_json(request_json), forbidden)
    request.attachments = [*request.attachments, *files]
    return request


def _header(part: _Part, name: bytes) -> str | None:
    found = [value for field, value in part.headers if field == name]
    if len(found) > 1:
        raise RequestError(None, f"a form part has {name.decode()} twice")
    # header bytes as sent: UTF-8 by today's browsers (RFC 7578, section 5.1.1)
    return found[0].decode("utf-8", "replace") if found else None


def _disposition(part: _Part, n: int) -> tuple[str, str | None]:
    """The part's field name and file name (None: not a file)."""
    value = _header(part, b"content-disposition")
    if value is None:
        raise RequestError(None, f"form part {n} has no Content-Disposition")
    header: Any = policy.HTTP.header_factory("content-disposition", value)
    if header.content_disposition != "form-data" or header.defects:
        raise RequestError(None, f"form part {n}: Content-Disposition is not a valid form-data")
    params = header.params
    name = params.get("name")
    if not name:
        raise RequestError(None, f"form part {n}: Content-Disposition has no field name")
    filename = params.get("filename")
    return str(name), (None if filename is None else str(filename))


def _media_type(part: _Part) -> str | None:
    value = _header(part, b"content-type")
    if value is None:
        return None
    header: Any = policy.HTTP.header_factory("content-type", value)
    media = str(header.content_type).lower()
    return None if media == _GENERIC_TYPE or header.defects else media
