"""The parse stage: a message's raw bytes to a :class:`ParsedMessage`.

:func:`parse_message` is pure and synchronous (the kernel runs it in a worker)
and never raises for bad input: a message it cannot read becomes the
*wrapping message* of the specification (section 3), described by the result
with ``wrapping_reason`` set.

**Unparsable** (wrapped), with the exact ``wrapping_reason``:

- ``message size N bytes exceeds maximum-msg-size M bytes``: the size the
  server announced, or the size on disk, is over ``max_size`` (checked first;
  only the header block is read, so Subject and From still show);
- ``message is empty``: no bytes, or only blanks;
- ``no header block found: the message begins with a blank line`` and
  ``no header block found: the message does not begin with a header field``
  (binary garbage, a bare body; an mbox ``From`` line is skipped first);
- ``NUL bytes in the header block``;
- ``header block larger than N bytes`` (``max_header_bytes``) and ``header
  block of a MIME part larger than N bytes`` (the same bound on each part's
  and each attached message's header block);
- ``MIME nesting deeper than N levels`` and ``more than N MIME parts``
  (``max_depth``, ``max_parts``: checked on the raw bytes before the ``email``
  package, which recurses per level, sees them, and again on the tree);
- ``parser error: <exception type>: <message>``: anything raised inside.

**Lesser defects** (not wrapped; listed in ``ParsedMessage.defects`` as
``"<part path or 'root'>: <what>"``): every defect the ``email`` package
records on any part (``MissingHeaderBodySeparatorDefect`` when headers were
still readable, ``StartBoundaryNotFoundDefect``, ``CloseBoundaryNotFoundDefect``,
``InvalidBase64PaddingDefect``, ``UndecodableBytesDefect``...), charset
repairs (``1: charset 'us-ascii' was wrong, decoded as windows-1252``), header
values in 8-bit bytes that are not UTF-8, and ``message/rfc822`` parts sent
base64 or quoted-printable encoded (decoded and parsed anyway).

The wrapping message keeps the original's headers as far as they can be read
(the header block; lines with NUL bytes dropped). Its subject is the original
subject, or ``Unknown subject`` when none could be read (no header block, no
Subject field, or an empty one: an agent needs something to see). Its From is
the original address when it has the form ``local@domain``, else
``unknown@<default_domain>``. Its text is ``wrapping_text(reason)``: the
specification's two sentences with the reason on the line between them; its
one attachment describes the original (``original.eml``, ``message/rfc822``,
the raw size); the store keeps the original bytes from the RawRef.

Repairs made silently before parsing (common in real mail, harmless): field
names written with blanks before the colon (``Subject :``) are closed up, and
a Content-Type missing the ``;`` before its first parameter gets it, so the
boundary is found. 8-bit bytes never make a message unparsable: a boundary
with them still splits the parts, and a report part's field name with them
(``Rem\\xf6te-MTA:``) stays in the part's text, decoded like the rest.

**Cost.** Parsing takes time linear in the size of the message, whatever its
content (the growth-rate tests in ``tests/parsing/test_hostile_headers.py``
keep it so). Header values are read with linear patterns and scans (no
pattern retried from every character of a run, no membership test on a list
per item, no text built by repeated concatenation), and the superlinear parts
of the ``email`` package are fed bounded input: a structured header object is
built only for values of at most 1 KiB without 8-bit bytes (a longer or
8-bit Content-Type is read by
:func:`~postroom.parsing.headers.parse_content_type` and handed to the package
as type, boundary and charset), an address list
reaches its structured parser in items of at most 1 KiB and 16 KiB per message
in all (the rest is salvaged: addresses kept, display names lost), a
Content-Type's parameters are read up to 100, and a message makes at most 32
charset detections (after that the charset detected last is reused). Every
header block is bounded by ``max_header_bytes``; the whole message by
``max_size``.

Parts are numbered as IMAP does: the root is ``""``, children of a multipart
``"1"``, ``"2"``, ``"1.2"``. An attached ``message/rfc822`` (or
``message/global``) part at ``P`` is descended into: the encapsulated message's
root is ``P`` again when it is a multipart (IMAP gives it no number of its
own; ``depth`` tells the two apart) and ``P.1`` when it is a single part, and
its children are ``P.1``, ``P.2``. A root that is itself a message/rfc822
numbers its content from ``"1"``.

Body and attachments follow the JMAP rules (RFC 8621, section 4.1.4): ``text``
joins the ``text/plain`` parts a client shows (several inline ones in a
``multipart/mixed`` are shown one after another), ``html`` the ``text/html``
ones, each None when there is none. Every other leaf of the message itself
(not of messages attached to it) is an attachment: files, inline images,
``text/plain`` parts marked as attachment or named and not first, other text
types, and attached messages (``is_message``).
"""

from __future__ import annotations

import io
import quopri
import re
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser
from typing import Any

import attrs

from postroom.model import Attachment, ParsedMessage, Part, RawRef
from postroom.parsing._policy import TOLERANT
from postroom.parsing.attachments import decode_filename
from postroom.parsing.bodies import (
    BodySource,
    BytesSource,
    Decoded,
    FileSource,
    crosses_boundary,
    decode_text,
    skeleton,
    transfer_decoded,
)
from postroom.parsing.charsets import (
    decode_bytes,
    detection_budget,
    display_name,
    resolve_charset,
)
from postroom.parsing.headers import (
    Address,
    AddressBudget,
    ContentType,
    decode_base64,
    decode_words,
    normalize_message_id,
    parse_addresses,
    parse_content_type,
    parse_date,
    parse_message_ids,
    raw_header_text,
    repair_content_type,
    strip_comments,
)
from postroom.parsing.limits import ParseLimits
from postroom.parsing.scan import LeafBody, check_header_block, read_head, scan_structure

WRAP_INTRO = "Error encountered during preprocessing of this message"
WRAP_OUTRO = "Original Incoming Email is attached to this Email"
UNKNOWN_SUBJECT = "Unknown subject"
ORIGINAL_NAME = "original.eml"

#: Report and header parts whose content is text, kept in ``Part.text``.
TEXTUAL_TYPES = frozenset(
    {
        "message/delivery-status",
        "message/global-delivery-status",
        "message/disposition-notification",
        "message/global-disposition-notification",
        "message/rfc822-headers",
        "message/global-headers",
        "message/feedback-report",
        "text/rfc822-headers",
    }
)
#: Parts that hold a whole message, descended into.
ENCAPSULATING_TYPES = frozenset({"message/rfc822", "message/global"})

_MAX_DEFECTS = 200
_MAX_REASON = 300
#: display names kept per message (by address), and the characters of each
MAX_NAMES = 200
MAX_NAME_CHARS = 200
_LINEBREAK = re.compile(r"\r\n|\n|\r")
_VALID_ADDR = re.compile(r"[^@\s<>\"]+@[^@\s<>\"]+")
_CHARSET_MENTION = re.compile(
    rb"""(?:charset\s*=\s*["']?|=\?)([A-Za-z][A-Za-z0-9_.:-]{1,39})""", re.IGNORECASE
)
_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{2,40})""", re.IGNORECASE
)
_FLAT_POLICY = TOLERANT.clone(refold_source="none")
_BLANKS = " \t"
#: Charset mentions are looked for in this much of the message.
_HINT_BYTES = 1 << 22
#: Leaf bodies from this size on are decoded from the raw in pieces, not by the
#: email package (see :mod:`postroom.parsing.bodies`).
LARGE_BODY = 256 * 1024


class _Unparsable(Exception):
    """Raised inside the parse to wrap the message with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Reparse(Exception):
    """The email package read the skeleton otherwise than the structure scan:
    parse again, every body through the email package."""


def wrapping_text(reason: str) -> str:
    """The text of a wrapping message (specification, section 3)."""
    return f"{WRAP_INTRO}\n{reason}\n{WRAP_OUTRO}"


# ------------------------------------------------------------------ envelope


@attrs.define
class _Envelope:
    headers: list[tuple[str, str]]
    subject: str | None = None
    from_addr: str | None = None
    from_name: str | None = None
    to: list[str] = attrs.field(factory=list)
    cc: list[str] = attrs.field(factory=list)
    reply_to: list[str] = attrs.field(factory=list)
    message_id: str | None = None
    in_reply_to: list[str] = attrs.field(factory=list)
    references: list[str] = attrs.field(factory=list)
    date: datetime | None = None
    names: dict[str, str] = attrs.field(factory=dict)


def _envelope_fields(env: _Envelope) -> dict[str, Any]:
    """The header-derived fields every ParsedMessage copies from the envelope."""
    return {
        "headers": env.headers,
        "to": env.to,
        "cc": env.cc,
        "reply_to": env.reply_to,
        "message_id": env.message_id,
        "in_reply_to": env.in_reply_to,
        "references": env.references,
        "date": env.date,
        "names": env.names,
    }


def _decode_headers(
    pairs: list[tuple[str, str]], hints: Sequence[str], notes: list[str], label: str
) -> list[tuple[str, str]]:
    """``(name, text)``: 8-bit bytes decoded, still folded, words not decoded."""
    out: list[tuple[str, str]] = []
    reported: set[str] = set()
    for name, raw in pairs:
        name = name.strip()
        text, codec = raw_header_text(raw, hints)
        if codec is not None and name.lower() not in reported:
            reported.add(name.lower())
            notes.append(f"{label}: header {name} is not UTF-8, decoded as {display_name(codec)}")
        out.append((name, text))
    return out


def _envelope(pairs: list[tuple[str, str]], hints: Sequence[str], notes: list[str]) -> _Envelope:
    texts = _decode_headers(pairs, hints, notes, "root")
    return _envelope_of(texts, [(key, decode_words(value)) for key, value in texts])


def _envelope_of(texts: list[tuple[str, str]], headers: list[tuple[str, str]]) -> _Envelope:
    """The envelope from the root's header *texts* (8-bit bytes decoded) and
    the same *headers* with their encoded-words decoded (as shown)."""

    def first(name: str) -> str | None:
        for key, value in texts:
            if key.lower() == name:
                return value
        return None

    def every(name: str) -> list[str]:
        return [value for key, value in texts if key.lower() == name]

    budget = AddressBudget()  # what the structured parser reads, for all fields
    names: dict[str, str] = {}

    def named(address: Address) -> None:
        if address.name and len(names) < MAX_NAMES and address.addr not in names:
            names[address.addr] = address.name[:MAX_NAME_CHARS]

    # dicts as ordered sets: a membership test on a list per item is quadratic
    def addresses(name: str) -> list[str]:
        found: dict[str, None] = {}
        for value in every(name):
            for address in parse_addresses(value, budget):
                found.setdefault(address.addr, None)
                named(address)
        return list(found)

    def ids(name: str) -> list[str]:
        found: dict[str, None] = {}
        for value in every(name):
            for mid in parse_message_ids(value):
                found.setdefault(mid, None)
        return list(found)

    env = _Envelope(headers=headers)
    subject = first("subject")
    env.subject = decode_words(subject) if subject is not None else None
    sender = first("from")
    if sender is not None:
        found = parse_addresses(sender, budget)
        if found:
            env.from_addr, env.from_name = found[0].addr, found[0].name
            named(found[0])
        else:  # a name without an address ("From: Whomever")
            env.from_name = decode_words(strip_comments(sender)).strip(' "') or None
    env.to, env.cc, env.reply_to = addresses("to"), addresses("cc"), addresses("reply-to")
    message_id = first("message-id")
    if message_id is not None:
        mids = parse_message_ids(message_id, single=True)
        env.message_id = mids[0] if mids else None
    env.in_reply_to, env.references = ids("in-reply-to"), ids("references")
    date = first("date")
    env.date = parse_date(date) if date is not None else None
    env.names = names
    return env


# --------------------------------------------------------------------- nodes


@attrs.define(eq=False)
class _Node:
    msg: Message
    path: str
    depth: int
    index: int
    top: bool
    kind: str = "leaf"  # "multipart", "message" or "leaf"
    ctype: str = "text/plain"
    ct: ContentType | None = None
    cd: ContentType | None = None
    filename: str | None = None
    texts: list[tuple[str, str]] = attrs.field(factory=list)  # 8-bit decoded, words not
    headers: list[tuple[str, str]] = attrs.field(factory=list)  # as shown: words decoded too
    children: list[_Node] = attrs.field(factory=list)
    inner: Message | None = None
    size: int = 0
    text: str | None = None

    @property
    def label(self) -> str:
        return self.path or "root"

    @property
    def disposition(self) -> str | None:
        return self.cd.maintype if self.cd is not None else None


def _effective_type(msg: Message) -> str:
    """The content type the email package parsed by, without comments/blanks.

    A type with characters no token has (8-bit bytes, which the email package
    keeps as lone surrogates) is invalid: text/plain, as RFC 2045 says.
    """
    ctype = re.sub(r"\s+", "", strip_comments(msg.get_content_type())).lower()
    valid = ctype.isascii() and ctype.count("/") == 1 and not ctype.startswith("/")
    return ctype if valid else "text/plain"


def _flatten(msg: Message) -> bytes:
    buf = io.BytesIO()
    BytesGenerator(buf, mangle_from_=False, policy=_FLAT_POLICY).flatten(msg)
    return buf.getvalue()


def _cte(msg: Message) -> str:
    value = msg.get("content-transfer-encoding")
    return strip_comments(str(value)).strip().lower() if value is not None else ""


def _transfer_decode(data: bytes, cte: str) -> bytes:
    if cte == "base64":
        return decode_base64(data)
    if cte == "quoted-printable":
        return quopri.decodestring(data)
    return data


#: Transfer encodings under which a payload's text is its bytes.
_IDENTITY_CTES = frozenset({"", "7bit", "8bit", "binary"})


def _raw_text(item: Message) -> Any:
    """The payload of *item* with its 8-bit bytes kept as surrogate escapes.

    ``get_payload()`` would decode them as ASCII with U+FFFD replacements
    (a field name like ``Rem\\xf6te-MTA`` ends the fields of a
    delivery-status group, so its line lands in the payload)."""
    body = item.get_payload()
    if isinstance(body, str) and not body.isascii() and _cte(item) in _IDENTITY_CTES:
        raw = item.get_payload(decode=True)
        if isinstance(raw, bytes):
            return raw.decode("ascii", "surrogateescape")
    return body


def _leaf_bytes(node: _Node) -> bytes:
    """The content of a leaf, transfer encoding undone (what its size counts)."""
    payload = node.msg.get_payload()
    if isinstance(payload, list):
        text = _reconstruct(payload, blocks=node.ctype == "message/delivery-status")
        return _transfer_decode(text.encode("ascii", "surrogateescape"), _cte(node.msg))
    try:
        decoded = node.msg.get_payload(decode=True)
    except MemoryError:
        raise  # the worker's memory budget: quarantined, never wrapped
    except Exception:
        decoded = None
    if isinstance(decoded, bytes):
        return decoded
    if isinstance(payload, str):
        return payload.encode("ascii", "surrogateescape")
    return b""


def _reconstruct(payload: list[Any], blocks: bool) -> str:
    """The text of a ``message/*`` report part the email package parsed into
    header blocks (``blocks``: delivery-status) or one headers-only message.

    The text is ASCII with 8-bit bytes as surrogate escapes, so it encodes
    back to the bytes received."""
    texts: list[str] = []
    for item in payload:
        if not isinstance(item, Message):
            continue
        lines = [f"{name}: {value.lstrip(_BLANKS)}" for name, value in item.raw_items()]
        text = "\n".join(lines)
        body = _raw_text(item)
        if isinstance(body, list):
            body = b"".join(_flatten(sub) for sub in body if isinstance(sub, Message)).decode(
                "ascii", "surrogateescape"
            )
        if isinstance(body, str) and body:
            separated = not blocks and not any(
                type(d).__name__ == "MissingHeaderBodySeparatorDefect" for d in item.defects
            )
            joint = "\n\n" if separated else "\n"
            text = f"{text}{joint}{body}" if text else body
        texts.append(text)
    text = _LINEBREAK.sub("\n", "\n\n".join(texts))
    if not text.isascii():  # characters, not bytes, in a payload the email package decoded
        text = text.encode("utf-8", "surrogateescape").decode("ascii", "surrogateescape")
    return text


def _charset_hints(data: bytes) -> tuple[str, ...]:
    """Charsets this message declares somewhere, most used first: the best
    guess for its undeclared or mis-declared text."""
    counts: Counter[str] = Counter()
    for match in _CHARSET_MENTION.finditer(data, 0, min(len(data), _HINT_BYTES)):
        codec = resolve_charset(match.group(1).decode("ascii"))
        if codec is not None and codec not in ("ascii", "utf-8"):
            counts[codec] += 1
    return tuple(codec for codec, _ in counts.most_common(5))


class _LazyHints(Sequence[str]):
    """A sequence computed on first access."""

    def __init__(self, compute: Callable[[], tuple[str, ...]]) -> None:
        self._compute = compute
        self._value: tuple[str, ...] | None = None

    def _get(self) -> tuple[str, ...]:
        if self._value is None:
            self._value = self._compute()
        return self._value

    def __getitem__(self, index: Any) -> Any:
        return self._get()[index]

    def __len__(self) -> int:
        return len(self._get())


class _Parse:
    """One message's parse: the state shared by the steps.

    *data* is the message (for charset hints), unless *hints* are given;
    *large* maps the tokens standing for large bodies in what the email
    package parses to those bodies, which are read from *source*.
    """

    def __init__(
        self,
        data: bytes,
        limits: ParseLimits,
        large: dict[str, LeafBody] | None = None,
        source: BodySource | None = None,
        hints: Sequence[str] | None = None,
    ) -> None:
        self.data = data
        self.limits = limits
        self.large = dict(large or {})
        self.source = source
        self.claimed: list[tuple[_Node, LeafBody]] = []
        self.notes: list[str] = []
        # Only a charset repair needs them, and finding them scans the raw
        # bytes: computed on first use.
        self.hints: Sequence[str] = (
            hints if hints is not None else _LazyHints(lambda: _charset_hints(self.data))
        )
        self.count = 0

    # -- tree

    def build(self, root: Message) -> list[_Node]:
        """The nodes in pre-order, iteratively (no recursion per level)."""
        order: list[_Node] = []
        stack = [self._node(root, "", 0, 0, top=True)]
        while stack:
            node = stack.pop()
            self.count += 1
            if self.count > self.limits.max_parts:
                raise _Unparsable(f"more than {self.limits.max_parts} MIME parts")
            if node.depth > self.limits.max_depth:
                raise _Unparsable(f"MIME nesting deeper than {self.limits.max_depth} levels")
            order.append(node)
            if node.kind == "multipart":
                payload = node.msg.get_payload()
                assert isinstance(payload, list)
                for index, sub in enumerate(payload, 1):
                    if isinstance(sub, Message):
                        path = f"{node.path}.{index}" if node.path else str(index)
                        node.children.append(self._node(sub, path, node.depth + 1, index, node.top))
            elif node.kind == "message" and node.inner is not None:
                base = node.path or "1"
                inner_multi = node.inner.get_content_maintype() == "multipart" and isinstance(
                    node.inner.get_payload(), list
                )
                path = base if inner_multi else f"{base}.1"
                node.children.append(self._node(node.inner, path, node.depth + 1, 1, top=False))
            stack.extend(reversed(node.children))
        return order

    def _node(self, msg: Message, path: str, depth: int, index: int, top: bool) -> _Node:
        node = _Node(msg=msg, path=path, depth=depth, index=index, top=top)
        node.texts = _decode_headers(list(msg.raw_items()), self.hints, self.notes, node.label)
        raw_ct = next((v for k, v in node.texts if k.lower() == "content-type"), None)
        raw_cd = next((v for k, v in node.texts if k.lower() == "content-disposition"), None)
        node.ct = parse_content_type(repair_content_type(raw_ct)) if raw_ct is not None else None
        node.cd = parse_content_type(raw_cd) if raw_cd is not None else None
        node.headers = [(k, decode_words(v)) for k, v in node.texts]
        node.filename = decode_filename(node.cd, node.ct)
        node.ctype = _effective_type(msg)
        payload = msg.get_payload()
        if isinstance(payload, list):
            if msg.get_content_maintype() == "multipart":
                node.kind = "multipart"
            elif node.ctype in ENCAPSULATING_TYPES and payload and isinstance(payload[0], Message):
                node.kind = "message"
                node.inner = self._encapsulated(node, payload[0])
        self._content(node)
        return node

    def _encapsulated(self, node: _Node, inner: Message) -> Message:
        """The attached message, decoded and parsed again when it was sent in
        base64 or quoted-printable (forbidden by RFC 2046, seen in the wild)."""
        cte = _cte(node.msg)
        if cte not in ("base64", "quoted-printable"):
            return inner
        data = _transfer_decode(_flatten(inner).lstrip(b"\r\n"), cte)
        if not data or data.isspace():
            return inner
        remaining_depth = self.limits.max_depth - node.depth - 1
        if remaining_depth < 0:
            raise _Unparsable(f"MIME nesting deeper than {self.limits.max_depth} levels")
        problem = scan_structure(
            data,
            remaining_depth,
            max(self.limits.max_parts - self.count, 1),
            max_header_bytes=self.limits.max_header_bytes,
        )
        if problem is not None:
            raise _Unparsable(problem)
        self.notes.append(
            f"{node.label}: {node.ctype} part has Content-Transfer-Encoding {cte}; decoded"
        )
        return BytesParser(policy=TOLERANT).parsebytes(data)

    def _content(self, node: _Node) -> None:
        """Size and, for textual parts, text."""
        if node.kind == "multipart":
            return
        if node.kind == "message":
            try:
                node.size = len(_flatten(node.inner)) if node.inner is not None else 0
            except MemoryError:
                raise  # the worker's memory budget: quarantined, never wrapped
            except Exception:
                node.size = 0
            return
        payload = node.msg.get_payload()
        if self.large and isinstance(payload, str) and payload in self.large:
            self._large_content(node, self.large.pop(payload))
            return
        data = _leaf_bytes(node)
        node.size = len(data)
        if node.ctype.startswith("text/") or node.ctype in TEXTUAL_TYPES:
            node.text = self._text(node, data)
        elif node.ctype.startswith("multipart/"):
            # No part was found in it (boundary missing or never used): keep
            # its content as text, as mail clients show it (a bounce in a
            # broken multipart is still read by the report plugins).
            self.notes.append(f"{node.label}: {node.ctype} without parts; kept as text")
            node.text = self._text(node, data)

    def _large_content(self, node: _Node, leaf: LeafBody) -> None:
        """:meth:`_content` for a body left out of the skeleton: the same
        results, decoded from the raw in pieces."""
        if not node.top or self.source is None:
            raise _Reparse(f"{node.label}: a large body where the scan saw none")
        source = self.source
        self.claimed.append((node, leaf))
        # Exactly the email package's test in get_payload(decode=True).
        cte = str(node.msg.get("content-transfer-encoding", "")).lower()
        body = transfer_decoded(lambda: source.pieces(leaf.start, leaf.end), cte)
        for defect in body.defects:
            node.msg.policy.handle_defect(node.msg, defect)
        if node.ctype.startswith("text/") or node.ctype in TEXTUAL_TYPES:
            node.text, node.size = self._large_text(node, body)
        elif node.ctype.startswith("multipart/"):
            self.notes.append(f"{node.label}: {node.ctype} without parts; kept as text")
            node.text, node.size = self._large_text(node, body)
        else:
            node.size = body.size()

    def check_large(self, root: _Node) -> None:
        """Raise :class:`_Reparse` unless the email package would have read each
        large body just as its token: every token found as a body of the
        message itself, and no line of the body a boundary of a multipart
        around it (everything before a body being the same, the email package
        is in the same state when it starts reading it)."""
        if self.large:
            raise _Reparse(f"{len(self.large)} large bodies not where the scan saw them")
        if not self.claimed or self.source is None:
            return
        around: dict[int, tuple[str, ...]] = {}
        stack: list[tuple[_Node, tuple[str, ...]]] = [(root, ())]
        while stack:
            node, boundaries = stack.pop()
            around[id(node)] = boundaries
            if node.kind == "multipart":
                boundary = node.msg.get_boundary()
                inner = boundaries if boundary is None else (*boundaries, boundary)
                stack.extend((child, inner) for child in node.children)
        for node, leaf in self.claimed:
            if crosses_boundary(self.source.pieces(leaf.start, leaf.end), around[id(node)]):
                raise _Reparse(f"{node.label}: a boundary line inside a large body")

    def _declared(self, node: _Node, start: bytes) -> str | None:
        """The charset a part declares (for HTML, also in a ``<meta>`` near its *start*)."""
        declared = node.ct.param("charset") if node.ct is not None else None
        if not declared and node.ctype == "text/html":
            meta = _META_CHARSET.search(start, 0, 4096)
            if meta is not None:
                declared = meta.group(1).decode("ascii")
        return declared

    def _note(self, node: _Node, declared: str | None, note: str | None) -> None:
        report = node.ctype.startswith("message/") or node.ctype == "text/rfc822-headers"
        if note is not None and not (report and not declared and note.endswith("as utf-8")):
            self.notes.append(f"{node.label}: {note}")

    def _text(self, node: _Node, data: bytes) -> str:
        declared = self._declared(node, data)
        text, note = decode_bytes(data, declared, self.hints)
        self._note(node, declared, note)
        return text.replace("\r\n", "\n")

    def _large_text(self, node: _Node, body: Decoded) -> tuple[str, int]:
        declared = self._declared(node, body.head(4096))
        text, note, size = decode_text(body, declared, self.hints)
        self._note(node, declared, note)
        return text, size

    # -- defects

    def defects(self, nodes: list[_Node]) -> list[str]:
        found: list[str] = []
        for node in nodes:
            sources = [node.msg]
            payload = node.msg.get_payload()
            if node.kind == "leaf" and isinstance(payload, list):
                sources.extend(item for item in payload if isinstance(item, Message))
            for source in sources:
                for defect in source.defects:
                    # the email package quotes the offending line, 8-bit bytes
                    # as lone surrogates, which no store can encode
                    detail = _printable(str(defect).strip())
                    text = f"{node.label}: {type(defect).__name__}"
                    found.append(f"{text}: {detail[:200]}" if detail else text)
        found.extend(self.notes)
        unique = list(dict.fromkeys(found))
        if len(unique) > _MAX_DEFECTS:
            extra = len(unique) - _MAX_DEFECTS
            unique = [*unique[:_MAX_DEFECTS], f"... and {extra} more defects"]
        return unique


def _printable(text: str) -> str:
    """*text* with lone surrogates (undecodable bytes) as replacement characters."""
    if text.isascii():
        return text
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        data = text.encode("utf-8", "replace")
    return data.decode("utf-8", "replace")


# ---------------------------------------------------------------- JMAP bodies


def _inline_media(ctype: str) -> bool:
    return ctype.split("/", 1)[0] in ("image", "audio", "video")


def _structure(
    parts: list[_Node],
    multipart_type: str,
    in_alternative: bool,
    html_body: list[_Node] | None,
    text_body: list[_Node] | None,
    attachments: list[_Node],
) -> None:
    """RFC 8621, section 4.1.4 ``parseStructure``, transcribed."""
    text_length = len(text_body) if text_body is not None else -1
    html_length = len(html_body) if html_body is not None else -1
    for i, part in enumerate(parts):
        is_inline = (
            part.disposition != "attachment"
            and (part.ctype in ("text/plain", "text/html") or _inline_media(part.ctype))
            and (
                i == 0
                or (
                    multipart_type != "related" and (_inline_media(part.ctype) or not part.filename)
                )
            )
        )
        if part.kind == "multipart":
            sub = part.ctype.split("/", 1)[1]
            _structure(
                part.children,
                sub,
                in_alternative or sub == "alternative",
                html_body,
                text_body,
                attachments,
            )
        elif is_inline and part.kind == "leaf":
            if multipart_type == "alternative":
                if part.ctype == "text/plain" and text_body is not None:
                    text_body.append(part)
                elif part.ctype == "text/html" and html_body is not None:
                    html_body.append(part)
                else:
                    attachments.append(part)
                continue
            if in_alternative:
                if part.ctype == "text/plain":
                    html_body = None
                if part.ctype == "text/html":
                    text_body = None
            if text_body is not None:
                text_body.append(part)
            if html_body is not None:
                html_body.append(part)
            if (text_body is None or html_body is None) and _inline_media(part.ctype):
                attachments.append(part)
        else:
            attachments.append(part)
    if multipart_type == "alternative" and text_body is not None and html_body is not None:
        if text_length == len(text_body) and html_length != len(html_body):
            text_body.extend(html_body[html_length:])
        if html_length == len(html_body) and text_length != len(text_body):
            html_body.extend(text_body[text_length:])


def _join(texts: list[str]) -> str:
    out = ""
    for text in texts:
        if out and not out.endswith("\n"):
            out += "\n"
        out += text
    return out


def _bodies(root: _Node, nodes: list[_Node]) -> tuple[str | None, str | None, list[_Node]]:
    """``(text, html, attachment nodes)`` of the message itself."""
    text_body: list[_Node] = []
    html_body: list[_Node] = []
    jmap_attachments: list[_Node] = []
    _structure([root], "mixed", False, html_body, text_body, jmap_attachments)
    plain = [n for n in text_body if n.ctype == "text/plain"]
    html = [n for n in html_body if n.ctype == "text/html"]
    shown = {id(n) for n in plain + html}
    for node in text_body + html_body:
        if node.ctype in ("text/plain", "text/html"):
            shown.add(id(node))
    attachments = [n for n in nodes if n.top and n.kind != "multipart" and id(n) not in shown]
    text = _join([n.text or "" for n in plain]) if plain else None
    html_text = _join([n.text or "" for n in html]) if html else None
    return text, html_text, attachments


# ----------------------------------------------------------------- assembly


def _part(node: _Node, limits: ParseLimits) -> Part:
    return Part(
        path=node.path,
        content_type=node.ctype,
        params=node.ct.params if node.ct is not None else (),
        headers=tuple(node.headers),
        disposition=node.disposition,
        filename=node.filename,
        size=node.size,
        depth=node.depth,
        text=node.text[: limits.max_part_text] if node.text is not None else None,
    )


def _attachment(node: _Node) -> Attachment:
    cid = next((v for k, v in node.headers if k.lower() == "content-id"), None)
    return Attachment(
        filename=node.filename,
        content_type=node.ctype,
        size=node.size,
        is_message=node.kind == "message",
        disposition=node.disposition,
        content_id=normalize_message_id(cid) if cid else None,
        part_path=node.path,
    )


def _head_pairs(head: bytes) -> list[tuple[str, str]]:
    """The readable header fields of a header block (lines with NULs dropped)."""
    if not head:
        return []
    if b"\x00" in head:
        head = b"\n".join(line for line in head.splitlines() if b"\x00" not in line) + b"\n"
    try:
        msg = BytesParser(policy=TOLERANT).parsebytes(head, headersonly=True)
        return [(name, value) for name, value in msg.raw_items()]
    except MemoryError:
        raise  # the worker's memory budget: quarantined, never wrapped
    except Exception:
        return []


@detection_budget()
def _wrapped(
    reason: str,
    head: bytes,
    limits: ParseLimits,
    raw_size: int,
    raw_sha256: str,
    defects: list[str] | None = None,
) -> ParsedMessage:
    """The wrapping message for an unparsable original (specification, section 3)."""
    reason = reason[:_MAX_REASON]
    notes: list[str] = []
    try:
        env = _envelope(_head_pairs(head), (), notes)
    except MemoryError:
        raise  # the worker's memory budget: quarantined, never wrapped
    except Exception:  # the headers are unreadable after all
        env = _Envelope(headers=[])
    from_ok = env.from_addr is not None and _VALID_ADDR.fullmatch(env.from_addr) is not None
    text = wrapping_text(reason)
    original = Part(
        path="2",
        content_type="message/rfc822",
        disposition="attachment",
        filename=ORIGINAL_NAME,
        size=raw_size,
        depth=1,
    )
    return ParsedMessage(
        **_envelope_fields(env),
        subject=env.subject or UNKNOWN_SUBJECT,
        from_addr=env.from_addr if from_ok else f"unknown@{limits.default_domain}",
        from_name=env.from_name if from_ok else None,
        text=text,
        html=None,
        parts=[
            Part(path="", content_type="multipart/mixed", depth=0),
            Part(
                path="1",
                content_type="text/plain",
                params=(("charset", "utf-8"),),
                size=len(text.encode("utf-8")),
                depth=1,
                text=text,
            ),
            original,
        ],
        attachments=[
            Attachment(
                filename=ORIGINAL_NAME,
                content_type="message/rfc822",
                size=raw_size,
                is_message=True,
                disposition="attachment",
                part_path="2",
            )
        ],
        defects=list(dict.fromkeys([*(defects or []), *notes])),
        wrapping_reason=reason,
        raw_size=raw_size,
        raw_sha256=raw_sha256,
    )


@attrs.frozen
class _Prepared:
    """What the parse needs of a message's bytes, which can then be let go.

    ``head`` is the top header block (blanks before colons closed up), for a
    wrapping message; ``problem`` the reason to wrap, if any; ``skeleton`` what
    the email package parses (the message with its large leaf bodies replaced
    by the tokens of ``large``); ``hints`` the message's charset hints, found
    already when the message is not kept (else None: found in ``skeleton``,
    the message itself, if needed); ``shift`` what to add to a scanned offset
    to find it in the raw.
    """

    head: bytes
    problem: str | None = None
    skeleton: bytes = b""
    large: dict[str, LeafBody] = attrs.field(factory=dict)
    hints: tuple[str, ...] | None = None
    shift: int = 0


def _bounded_head(data: bytes, limit: int) -> bytes:
    """The header block's lines that fit in *limit* bytes: all a wrapping
    message keeps of a header block larger than that."""
    cut = max(data.rfind(b"\n", 0, limit), data.rfind(b"\r", 0, limit))
    return check_header_block(data[: cut + 1], limit).data if cut >= 0 else b""


def _prepare(data: bytes, limits: ParseLimits, large_body: int | None) -> _Prepared:
    """Check the header block and the MIME structure of *data*; build the
    skeleton (leaf bodies of at least *large_body* bytes left out; None: none)."""
    block = check_header_block(data, limits.max_header_bytes)
    if block.problem is not None:
        head = block.data
        if block.end > limits.max_header_bytes:
            head = _bounded_head(data, limits.max_header_bytes)
        return _Prepared(head, block.problem)
    shift = block.end - len(block.data)
    if shift:  # field names with blanks before the colon, closed up
        data = b"".join((block.data, memoryview(data)[block.end :]))
    leaves: list[LeafBody] = []
    problem = scan_structure(
        data, limits.max_depth, limits.max_parts, leaves, max_header_bytes=limits.max_header_bytes
    )
    if problem is not None:
        return _Prepared(block.data, problem)
    if large_body is None:
        return _Prepared(block.data, None, data, {}, None, shift)
    parsed, large = skeleton(data, leaves, large_body)
    return _Prepared(
        block.data, None, parsed, large, _charset_hints(data) if large else None, shift
    )


@detection_budget()
def _parse(
    prep: _Prepared,
    source: BodySource | None,
    limits: ParseLimits,
    raw_size: int,
    raw_sha256: str,
) -> ParsedMessage:
    if prep.problem is not None:
        return _wrapped(prep.problem, prep.head, limits, raw_size, raw_sha256)
    state = _Parse(prep.skeleton, limits, prep.large, source, prep.hints)
    try:
        root_msg = BytesParser(policy=TOLERANT).parsebytes(prep.skeleton)
        nodes = state.build(root_msg)
        state.check_large(nodes[0])
        env = _envelope_of(nodes[0].texts, nodes[0].headers)  # decoded once, for both
        text, html, attachment_nodes = _bodies(nodes[0], nodes)
        root = nodes[0]
        if text is None and html is None and root.kind == "leaf" and root.text is not None:
            text = root.text  # a multipart without parts: its content is all there is
    except _Unparsable as exc:
        return _wrapped(exc.reason, prep.head, limits, raw_size, raw_sha256)
    return ParsedMessage(
        **_envelope_fields(env),
        subject=env.subject or "",
        from_addr=env.from_addr,
        from_name=env.from_name,
        text=text,
        html=html,
        parts=[_part(node, limits) for node in nodes],
        attachments=[_attachment(node) for node in attachment_nodes],
        defects=state.defects(nodes),
        raw_size=raw_size,
        raw_sha256=raw_sha256,
    )


def _parse_error(
    exc: Exception, head: bytes, limits: ParseLimits, size: int, sha: str
) -> ParsedMessage:
    reason = f"parser error: {type(exc).__name__}: {exc}"
    return _wrapped(reason, head, limits, size, sha)


def _error_head(data: bytes, limits: ParseLimits) -> bytes:
    """The header block for the wrapping message of a parse that failed
    (*data*: the message, or at least its first ``max_header_bytes + 2`` bytes)."""
    try:
        block = check_header_block(data, limits.max_header_bytes)
        if block.end > limits.max_header_bytes:
            return _bounded_head(data, limits.max_header_bytes)
        return block.data
    except MemoryError:
        raise  # the worker's memory budget: quarantined, never wrapped
    except Exception:
        return b""


def parse_bytes(
    data: bytes, limits: ParseLimits, *, raw_size: int | None = None, raw_sha256: str = ""
) -> ParsedMessage:
    """Parse a message held in memory (no size check: see :func:`parse_message`).

    Never raises: an exception inside becomes a wrapping message whose reason
    names it.
    """
    size = len(data) if raw_size is None else raw_size
    try:
        try:
            prep = _prepare(data, limits, LARGE_BODY)
            return _parse(prep, BytesSource(data, prep.shift), limits, size, raw_sha256)
        except _Reparse:
            return _parse(_prepare(data, limits, None), None, limits, size, raw_sha256)
    except MemoryError:
        raise  # the worker's memory budget: quarantined, never wrapped
    except Exception as exc:
        return _parse_error(exc, _error_head(data, limits), limits, size, raw_sha256)


def _prepare_file(raw: RawRef, limits: ParseLimits) -> _Prepared:
    """:func:`_prepare` on the raw's bytes, which are let go on return."""
    return _prepare(raw.read(), limits, LARGE_BODY)


def parse_message(
    raw: RawRef, limits: ParseLimits, server_size: int | None = None
) -> ParsedMessage:
    """Parse the message stored at *raw*, or describe its wrapping message.

    The size check comes first: when *server_size* (announced by the server) or
    ``raw.size`` exceeds ``limits.max_size`` (if not 0) only the header block is
    read; so it is when the header block is larger than ``max_header_bytes``.
    Otherwise the raw is read once into memory for the structure checks and
    let go before its large leaf bodies are decoded from the file in pieces,
    so that a message needs a small multiple of its size in memory, not the
    email package's 10 to 20. Errors reading the file (``OSError``) are not bad
    input and propagate.
    """
    if limits.max_size > 0:
        over = [s for s in (server_size, raw.size) if s is not None and s > limits.max_size]
        if over:
            reason = (
                f"message size {max(over)} bytes exceeds maximum-msg-size {limits.max_size} bytes"
            )
            with raw.open() as fh:
                head = read_head(fh, limits.max_header_bytes)
            block = check_header_block(head, limits.max_header_bytes)
            return _wrapped(reason, block.data, limits, raw.size, raw.sha256)
    try:
        if raw.size > limits.max_header_bytes + 2:
            too_large = _header_block_too_large(raw, limits)
            if too_large is not None:
                return too_large
        try:
            prep = _prepare_file(raw, limits)
            return _parse(prep, FileSource(raw.path, prep.shift), limits, raw.size, raw.sha256)
        except _Reparse:
            whole = _prepare(raw.read(), limits, None)
            return _parse(whole, None, limits, raw.size, raw.sha256)
    except OSError:
        raise
    except MemoryError:
        raise  # the worker's memory budget: quarantined, never wrapped
    except Exception as exc:
        head = _first_bytes(raw, limits.max_header_bytes + 2)
        return _parse_error(exc, _error_head(head, limits), limits, raw.size, raw.sha256)


class PartNotFound(LookupError):
    """The message has no part at that path (or cannot be parsed into parts)."""


def part_bytes(raw: RawRef, path: str, limits: ParseLimits) -> bytes:
    """The content of the part at *path* (an :class:`~postroom.model.Attachment`'s
    ``part_path``) of the stored message *raw*: its bytes with the transfer
    encoding undone, or an attached message as it is written.

    The message is parsed exactly as when it was taken in (same limits, same
    part numbering), so an attachment listed then is found now: a forward or a
    reply sends the file the agent saw. Runs in a worker under the budget, like
    any parse of mail from outside. :class:`PartNotFound` when there is no such part.
    """
    prep = _prepare(raw.read(), limits, None)
    if prep.problem is not None:
        raise PartNotFound(f"the message has no readable parts: {prep.problem}")
    state = _Parse(prep.skeleton, limits, {}, None, prep.hints)
    try:
        nodes = state.build(BytesParser(policy=TOLERANT).parsebytes(prep.skeleton))
    except _Unparsable as exc:
        raise PartNotFound(f"the message has no readable parts: {exc.reason}") from None
    for node in nodes:
        if node.path == path and node.kind != "multipart":
            if node.kind == "message":
                return _flatten(node.inner) if node.inner is not None else b""
            return _leaf_bytes(node)
    raise PartNotFound(f"the message has no part {path!r}")


def _first_bytes(raw: RawRef, size: int) -> bytes:
    with raw.open() as fh:
        return fh.read(size)


def _header_block_too_large(raw: RawRef, limits: ParseLimits) -> ParsedMessage | None:
    """The wrapping message when the header block is larger than the limit,
    found from the first ``max_header_bytes + 2`` bytes alone (as it would be
    from all of them), else None."""
    head = _first_bytes(raw, limits.max_header_bytes + 2)
    block = check_header_block(head, limits.max_header_bytes)
    if block.problem is None or block.end <= limits.max_header_bytes:
        return None
    bounded = _bounded_head(head, limits.max_header_bytes)
    return _wrapped(block.problem, bounded, limits, raw.size, raw.sha256)
