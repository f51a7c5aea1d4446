"""Send requests: one validation for the HTTP API, ``postroom send`` and ``Gateway.send``.

A request is first checked against the published JSON Schema
(``postroom/schemas/send-request.json``: types, strict booleans, lengths,
characters), then against what a schema cannot say: header names compared
after trimming blanks and ignoring case, the headers postroom owns, control
characters hidden in RFC 2047 encoded words, and addresses read as RFC 5322
address lists (:mod:`postroom.addresses`). A refusal is a :class:`RequestError`
naming the request's field: the HTTP API answers 400, ``postroom send`` exits
with status 2, and nothing is queued. The result is a normalised
:class:`~postroom.model.OutboundRequest`: header names trimmed, one mailbox per
address entry, domains in ASCII, ``Reply-To`` and ``Sender`` rewritten from
the mailboxes they name.

Whether ``in_reply_to`` names a stored interaction needs the store, and whether
``mailbox`` names a configured mailbox needs the site: the outbox checks both when it
queues the request.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from email import policy
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from postroom.addresses import AddressError, Mailbox, parse_address_list, parse_mailbox
from postroom.errors import PostroomError
from postroom.model import OutboundRequest
from postroom.outbound_files import FIELD as FILES_FIELD
from postroom.outbound_files import FileError, checked, files_from_json

#: JSON nested deeper than this is refused (a request needs four levels)
MAX_DEPTH = 16
#: recipients of one request, to, cc and bcc together
MAX_RECIPIENTS = 500

#: Headers never sent, whatever a request or a plugin asks (lower case). A site
#: replaces this list with ``smtp-client: forbidden-headers-file``; requests
#: may set neither these nor the site's.
BUILTIN_FORBIDDEN_HEADERS = frozenset(
    {
        "bcc",
        "resent-bcc",
        "return-path",
        "received",
        "delivered-to",
        "x-original-to",
        "envelope-to",
        "x-envelope-from",
        "x-envelope-to",
        "content-length",
        "status",
        "x-status",
        "x-uid",
        "x-keywords",
        "x-mozilla-status",
        "x-mozilla-status2",
    }
)

#: Headers the kernel writes from the request's fields or by itself (lower case;
#: every ``content-*`` too): neither a request nor a plugin sets them as such.
KERNEL_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "message-id",
        "date",
        "orig-date",
        "mime-version",
        "in-reply-to",
        "references",
    }
)

#: Headers plugins write when a request asks through its fields or options
#: (``automatic``, the ``mdn`` option): a request cannot set them directly.
PLUGIN_HEADERS = frozenset({"auto-submitted", "disposition-notification-to", "x-loop"})

#: what to use instead of a header a request may not set
_INSTEAD = {
    "from": "the from field",
    "to": "the to field",
    "cc": "the cc field",
    "bcc": "the bcc field (recipients that no header shows)",
    "subject": "the subject field",
    "in-reply-to": "the in_reply_to field",
    "references": "the in_reply_to field",
    "auto-submitted": "the automatic field",
    "disposition-notification-to": "the mdn option (postroom-mdn)",
    "x-loop": "the automatic field (postroom-autoreply adds X-Loop to automatic mail)",
}

#: raw headers whose value is an address list (True: exactly one mailbox)
ADDRESS_HEADERS = {"reply-to": False, "sender": True}

#: an RFC 5322 field name: printable ASCII but the colon
_FIELD_NAME = re.compile(r"[!-9;-~]+")
#: control characters: C0 but TAB, DEL, C1 (NEL...), the line and paragraph separators
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_BLANKS = " \t"

_JSON_TYPES = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}
_LIMITS = {
    "minLength": "shorter than {} characters",
    "maxLength": "longer than {} characters",
    "minItems": "fewer than {} entries",
    "maxItems": "more than {} entries",
    "maxProperties": "more than {} keys",
}
_TYPE_NAMES = {
    "boolean": "a boolean (true or false)",
    "number": "a number",
    "integer": "an integer",
    "string": "a string",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


class RequestError(PostroomError, ValueError):
    """A send request that can never be sent as it is; *field* is the request's key."""

    def __init__(self, field: str | None, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


# ------------------------------------------------------------------ the schema


def schema_text() -> str:
    """The published JSON Schema of a send request."""
    return resources.files("postroom").joinpath("schemas/send-request.json").read_text("utf-8")


@cache
def _validator() -> Any:
    return jsonschema.Draft202012Validator(json.loads(schema_text()))


def _schema_error(data: Any) -> RequestError | None:
    error = jsonschema.exceptions.best_match(_validator().iter_errors(data))
    return None if error is None else _refusal(error)


def _refusal(error: Any) -> RequestError:
    """A :class:`RequestError` saying in plain words what *error* (jsonschema's) found."""
    path = list(error.absolute_path)
    validator, instance, schema = error.validator, error.instance, error.schema
    if validator == "anyOf" and error.context:
        types = [e.validator_value for e in error.context if e.validator == "type"]
        if len(types) == len(error.context):  # none of the types: say which are allowed
            return RequestError(
                _field(path), f"{_where(path)}must be {_types(types)}, not {_type_of(instance)}"
            )
        # the branch of the right type failed: that branch's error is the one to tell
        return _refusal(
            jsonschema.exceptions.best_match(e for e in error.context if e.validator != "type")
        )
    if validator == "required":
        missing = next(k for k in error.validator_value if k not in instance)
        if missing == "to":
            return RequestError(missing, "is required unless in_reply_to names the mail answered")
        if path:  # a key of a value inside a field (a file's content)
            return RequestError(_field(path), f"{_where([*path, missing])}is required")
        return RequestError(missing, "is required")
    if validator == "additionalProperties":
        unknown = sorted(k for k in instance if k not in schema.get("properties", {}))
        known = ", ".join(schema.get("properties", {}))
        return RequestError(
            _field(path) or unknown[0], f"unknown key {_show(unknown[0])} (known: {known})"
        )
    where = _where(path)
    if "propertyNames" in error.relative_schema_path:
        where += f"key {_show(instance)}: "
    if validator == "type":
        return RequestError(
            _field(path),
            f"{where}must be {_types([error.validator_value])}, not {_type_of(instance)}",
        )
    if validator == "minLength" and error.validator_value == 1:
        return RequestError(_field(path), f"{where}empty")
    if validator in _LIMITS:
        return RequestError(_field(path), where + _LIMITS[validator].format(error.validator_value))
    if validator == "not":  # the forbidden form says what it is
        return RequestError(_field(path), where + error.validator_value.get("description", ""))
    description = schema.get("description") or error.message
    return RequestError(_field(path), f"{where}{description}")


def _field(path: list[Any]) -> str | None:
    return str(path[0]) if path else None


def _where(path: list[Any]) -> str:
    """``to[2]: `` or ``headers['X-A']: `` for a value inside a field, else nothing."""
    if len(path) < 2:
        return ""
    return "".join(f"[{p}]" if isinstance(p, int) else f"[{_show(p)}]" for p in path[1:]) + ": "


def _types(names: Iterable[str | list[str]]) -> str:
    flat: list[str] = []
    for name in names:
        flat += name if isinstance(name, list) else [name]
    return " or ".join(_TYPE_NAMES.get(n, n) for n in flat)


def _type_of(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _show(text: Any, limit: int = 60) -> str:
    text = str(text)
    return repr(text if len(text) <= limit else text[:limit] + "...")


# ----------------------------------------------------------------- JSON input


def parse_json(raw: bytes | str, field: str | None = None) -> Any:
    """JSON text as Python values, refusing what a request never needs.

    Duplicate keys, ``NaN``/``Infinity`` and nesting deeper than
    :data:`MAX_DEPTH` are refused. The standard parser stops at Python's
    recursion limit (about a thousand levels) whatever the input, so a body of
    millions of ``[`` costs nothing; :func:`check_json` then bounds the depth.
    """
    try:
        data = json.loads(raw, object_pairs_hook=_object, parse_constant=_constant)
    except RecursionError:
        raise RequestError(field, f"JSON nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        raise RequestError(field, f"not valid JSON: {exc}") from None
    check_json(data, field)
    return data


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {_show(key)} appears twice")
        result[key] = value
    return result


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check_json(data: Any, field: str | None = None) -> None:
    """Refuse values JSON cannot carry: depth over :data:`MAX_DEPTH`, lone
    surrogates, non-finite numbers, keys that are not strings, other types.

    Iterative, so a deep structure handed over by Python code cannot exhaust
    the stack either.
    """
    stack: list[tuple[Any, int, str | None]] = [(data, 1, field)]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):  # isascii: a flag, O(1)
                raise RequestError(where, "a string holds a lone surrogate (not Unicode text)")
        elif isinstance(value, bool) or value is None or isinstance(value, int):
            continue
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise RequestError(where, f"{value} is not a JSON number")
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise RequestError(where, f"JSON nested more than {MAX_DEPTH} levels deep")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(value, dict):
                    if not isinstance(key, str):
                        raise RequestError(where, f"the key {key!r} is not a string")
                    stack.append((key, depth + 1, where or key))
                stack.append((item, depth + 1, where or (key if isinstance(key, str) else None)))
        else:
            raise RequestError(where, f"{type(value).__name__} is not a JSON value")


# ------------------------------------------------------------- header content


def header_name(name: str) -> str:
    """*name* without surrounding blanks; refused unless an RFC 5322 field name."""
    trimmed = name.strip(_BLANKS)
    if not _FIELD_NAME.fullmatch(trimmed):
        raise RequestError(
            "headers",
            f"{_show(name)} is not a header name (printable ASCII, no blanks or colon)",
        )
    return trimmed


def is_kernel_header(name: str) -> bool:
    """Whether the kernel writes *name* (any case) itself: see :data:`KERNEL_HEADERS`."""
    lower = name.lower()
    return lower in KERNEL_HEADERS or lower.startswith("content-")


def request_header_refusal(name: str, forbidden: frozenset[str]) -> str | None:
    """Why a request may not set the (trimmed) header *name*, or None when it may."""
    lower = name.lower()
    if lower in _INSTEAD:
        return f"the header {name!r} is postroom's: use {_INSTEAD[lower]}"
    if lower in forbidden or lower in BUILTIN_FORBIDDEN_HEADERS:
        return f"the header {name!r} is never sent (forbidden header)"
    if is_kernel_header(lower) or lower in PLUGIN_HEADERS or lower.startswith("resent-"):
        return f"the header {name!r} is written by postroom, not by a request"
    return None


def header_text_problem(value: str) -> str | None:
    """What makes *value* unfit for a header, or None.

    A control character (C0 but TAB, DEL, C1 such as NEL, U+2028, U+2029) is
    refused, and so is one hidden in an RFC 2047 encoded word
    (``=?utf-8?q?a=0D=0A?=``): the ``email`` package decodes those when the
    message is built, and a decoded line break would make the header unusable.
    """
    if _CONTROL.search(value):
        return "contains a control character (CR, LF, NUL, VT, NEL, U+2028, U+2029...)"
    if "=?" in value:
        try:
            decoded = str(policy.default.header_factory("x-postroom-check", value))
        except Exception:
            return "holds an encoded word that cannot be decoded"
        if _CONTROL.search(decoded):
            return "holds an encoded word hiding a control character (CR, LF...)"
    return None


def _check_text(field: str, value: str, what: str = "") -> None:
    problem = header_text_problem(value)
    if problem is not None:
        raise RequestError(field, f"{what}{problem}")


# ------------------------------------------------------------------ addresses


def _mailboxes(field: str, value: Any) -> list[Mailbox]:
    """The mailboxes of a recipients field (an address list or an array of them)."""
    found: list[Mailbox] = []
    for n, text in enumerate([value] if isinstance(value, str) else value):
        where = f"[{n}]: " if not isinstance(value, str) else ""
        _check_text(field, text, where)
        try:
            found += parse_address_list(text)
        except AddressError as exc:
            raise RequestError(field, f"{where}{exc}") from None
    return found


def _one_mailbox(field: str, text: str, what: str = "") -> Mailbox:
    _check_text(field, text, what)
    try:
        return parse_mailbox(text)
    except AddressError as exc:
        raise RequestError(field, f"{what}{exc}") from None


def mailboxes_of(entries: Iterable[str]) -> list[Mailbox]:
    """The mailboxes of a validated request's address entries (one mailbox each)."""
    return [parse_mailbox(entry) for entry in entries]


def needs_smtputf8(request: OutboundRequest) -> bool:
    """Whether a validated request names an address with a UTF-8 local part."""
    entries = [*request.to, *request.cc, *request.bcc, request.from_addr or ""]
    entries += [v for k, v in request.headers.items() if k.lower() in ADDRESS_HEADERS]
    return any(m.needs_smtputf8 for entry in entries if entry for m in parse_address_list(entry))


# ------------------------------------------------------------------- requests


def request_from_json(
    data: Any, forbidden: frozenset[str] = BUILTIN_FORBIDDEN_HEADERS
) -> OutboundRequest:
    """The normalised request for *data* (the JSON of ``POST /send``), or a :class:`RequestError`.

    *forbidden* is the site's list of headers never sent; a request may set
    neither those, nor the built-in ones, nor those postroom owns.
    """
    check_json(data)
    problem = _schema_error(data)
    if problem is not None:
        raise problem

    headers: dict[str, str] = {}
    seen: set[str] = set()
    for raw_name, value in data.get("headers", {}).items():
        name = header_name(raw_name)
        if name.lower() in seen:
            raise RequestError("headers", f"the header {name!r} is given twice")
        seen.add(name.lower())
        refusal = request_header_refusal(name, forbidden)
        if refusal is not None:
            raise RequestError("headers", refusal)
        _check_text("headers", value, f"the value of {name!r} ")
        single = ADDRESS_HEADERS.get(name.lower())
        if single is True:
            value = str(_one_mailbox("headers", value, f"{name}: "))
        elif single is False:
            try:
                value = ", ".join(map(str, parse_address_list(value)))
            except AddressError as exc:
                raise RequestError("headers", f"{name}: {exc}") from None
        headers[name] = value

    subject = data.get("subject", "")
    _check_text("subject", subject)
    recipients = {key: _mailboxes(key, data[key]) for key in ("to", "cc", "bcc") if key in data}
    total = sum(map(len, recipients.values()))
    if total > MAX_RECIPIENTS:
        raise RequestError("to", f"{total} recipients; at most {MAX_RECIPIENTS} per request")
    quote = data.get("quote", False)
    if quote and data.get("in_reply_to") is None:
        raise RequestError("quote", "needs in_reply_to: the interaction to quote")
    if data.get("forward_of") is not None and data.get("in_reply_to") is not None:
        raise RequestError("forward_of", "a request answers (in_reply_to) or forwards, not both")
    try:
        files = files_from_json(data.get("attachments", []))
    except FileError as exc:
        raise RequestError(FILES_FIELD, exc.message if not exc.where else str(exc)) from None
    sender = data.get("from")
    return OutboundRequest(
        to=[str(m) for m in recipients.get("to", [])],
        cc=[str(m) for m in recipients.get("cc", [])],
        bcc=[str(m) for m in recipients.get("bcc", [])],
        subject=subject,
        text=data.get("text"),
        html=data.get("html"),
        from_addr=None if sender is None else str(_one_mailbox("from", sender)),
        mailbox=data.get("mailbox"),
        headers=headers,
        in_reply_to=data.get("in_reply_to"),
        forward_of=data.get("forward_of"),
        attachments=files,
        quote=quote,
        attached_data=dict(data.get("attached_data", {})),
        automatic=data.get("automatic", False),
        options=dict(data.get("options", {})),
    )


def request_data(request: OutboundRequest) -> dict[str, Any]:
    """*request* in the JSON shape of the schema, to validate a request made in Python."""
    data: dict[str, Any] = {
        "to": request.to,
        "cc": request.cc,
        "bcc": request.bcc,
        "from": request.from_addr,
        "mailbox": request.mailbox,
        "subject": request.subject,
        "text": request.text,
        "html": request.html,
        "headers": request.headers,
        "in_reply_to": request.in_reply_to,
        "forward_of": request.forward_of,
        "quote": request.quote,
        "attached_data": request.attached_data,
        "automatic": request.automatic,
        "options": request.options,
    }
    if not request.to and request.in_reply_to is not None:
        del data["to"]  # filled from the parent at queueing
    return data


def validate_request(
    request: OutboundRequest, forbidden: frozenset[str] = BUILTIN_FORBIDDEN_HEADERS
) -> OutboundRequest:
    """The same validation for a request made in Python (an embedding application, a plugin).

    Its files are checked as they are (:func:`postroom.outbound_files.checked`),
    not turned into base64 and back.
    """
    validated = request_from_json(request_data(request), forbidden)
    try:
        validated.attachments = checked(request.attachments)
    except FileError as exc:
        raise RequestError(FILES_FIELD, str(exc) if exc.where else exc.message) from None
    return validated
