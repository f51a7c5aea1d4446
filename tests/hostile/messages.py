"""Hypothesis strategies for hostile e-mail: what anyone on the internet can send.

The messages are built from the pieces that have broken mail parsers before:
runs of blanks and blank lines, folding in odd places, 8-bit and NUL bytes,
encoded words (valid, invalid, nested in quotes), quotes and brackets left
open, repeated parameters, boundaries with 8-bit bytes or that never close,
delivery-status and disposition-notification parts, attached messages, and
senders that look like mail systems, so every plugin's analysis gets its turn.
"""

from __future__ import annotations

from hypothesis import strategies as st

HEADER_NAMES = [
    "Subject", "From", "To", "Cc", "Reply-To", "References", "In-Reply-To", "Message-ID",
    "Date", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "Return-Path",
    "Auto-Submitted", "X-Loop", "Precedence", "X-Auto-Response-Suppress", "List-Id",
    "Disposition-Notification-To", "X-Priority", "Importance", "MIME-Version", "Received",
]
SENDERS = [
    "MAILER-DAEMON@mx.example", "postmaster@example.org", "Mail Delivery System <>",
    "customer@example.com", '"Müller, Jürgen" <j@example.de>', "<>", "a@", "@b",
]
ATOMS = [
    " ", "\t", "  ", "\r\n ", "\r\n\t", "\n", "\r", '"', "'", "<", ">", "(", ")", "\\", ",",
    ";", ":", "=", "@", "a", "ab", "x@y.example", "<id@host>", "=?utf-8?q?caf=C3=A9?=",
    "=?utf-8?b?w7w=?=", "=?iso-8859-1?q?=E9?=", "=?bogus?x?y?=", "=?utf-8?q?", "?=",
    "=?utf-8?q?a=0D=0Ab?=", "boundary=", "charset=", "name*0*=utf-8''a%E9", "\x00",
    "\xe9", "\xff\xfe", "€", "\u202e", "Final-Recipient: rfc822; a@b", "Action: failed",
    "Status: 5.1.1", "message-id:", "to:", ">", "\r\n\r\n", "--",
]
CONTENT_TYPES = [
    "text/plain", "text/html", "multipart/mixed", "multipart/alternative", "multipart/report",
    "message/rfc822", "message/delivery-status", "message/disposition-notification",
    "application/octet-stream", "text/rfc822-headers", "message/global", "bogus",
]


def _latin1(text: str) -> bytes:
    """Atoms become bytes: 8-bit characters as Latin-1 or UTF-8, the rest as they are."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


@st.composite
def header_value(draw: st.DrawFn) -> bytes:
    pieces = draw(st.lists(st.sampled_from(ATOMS), max_size=30))
    if draw(st.booleans()):
        pieces.insert(draw(st.integers(0, len(pieces))), " " * draw(st.integers(0, 3000)))
    if draw(st.integers(0, 9)) == 0:
        pieces.append(draw(st.binary(max_size=40)).decode("latin-1"))
    return b"".join(_latin1(p) for p in pieces)


@st.composite
def header_block(draw: st.DrawFn, content_type: bytes) -> bytes:
    names = draw(st.lists(
        st.one_of(st.sampled_from(HEADER_NAMES), st.text("abcXYZ-\xe9 ", min_size=1, max_size=12)),
        max_size=12,
    ))
    lines = [b"From: " + _latin1(draw(st.sampled_from(SENDERS)))]
    lines += [_latin1(name) + b": " + draw(header_value()) for name in names]
    lines.append(b"Content-Type: " + content_type)
    return b"\r\n".join(lines)


@st.composite
def body(draw: st.DrawFn, depth: int = 0) -> tuple[bytes, bytes]:
    """(content type with parameters, content) of one MIME entity."""
    ctype = draw(st.sampled_from(CONTENT_TYPES))
    if ctype.startswith("multipart/") and depth < 3:
        boundary = draw(st.sampled_from(["b1", "=_x", "b\xe9", "a" * 70, "", "b1 b1"]))
        params = f'; boundary="{boundary}"'
        if ctype == "multipart/report":
            params += "; report-type=" + draw(st.sampled_from(
                ["delivery-status", "disposition-notification", "feedback-report", "x"]))
        if draw(st.booleans()):
            params += "; charset=a" * draw(st.integers(0, 50))
        parts = []
        for _ in range(draw(st.integers(0, 4))):
            child_type, child = draw(body(depth + 1))
            parts.append(b"Content-Type: " + child_type + b"\r\n\r\n" + child)
        close = draw(st.booleans())
        delimiter = b"--" + _latin1(boundary)
        content = b"".join(delimiter + b"\r\n" + p + b"\r\n" for p in parts)
        content += delimiter + b"--\r\n" if close else b""
        return _latin1(ctype + params), draw(st.sampled_from([b"", b"preamble\r\n"])) + content
    if ctype in ("message/rfc822", "message/global") and depth < 3:
        inner_type, inner = draw(body(depth + 1))
        return _latin1(ctype), draw(header_block(inner_type)) + b"\r\n\r\n" + inner
    if ctype in ("message/delivery-status", "message/disposition-notification"):
        fields = draw(st.lists(header_value(), max_size=8))
        groups = b"\r\n".join(b"Reporting-MTA: dns; mx\r\n" + f for f in fields)
        if draw(st.booleans()):
            groups += b"\r\n\r\nRem\xf6te-MTA: dns; x\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            groups += b"Final-Recipient: rfc822; gone@example.com"
        return _latin1(ctype), groups
    text = b"".join(draw(st.lists(st.sampled_from([
        b"Delivery failed.", b"\r\n", b"\n" * 50, b"   ", b"> message-id: <a@b>", b"to: x@y",
        b"=?utf-8?q?a?=", b"\xe9\xff", b"<html><meta charset=koi8-r>", b"\x00", b"a" * 200,
    ]), max_size=40)))
    return _latin1(ctype + draw(st.sampled_from(["", "; charset=utf-8", "; charset=bogus"]))), text


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """One whole message, as raw bytes."""
    ctype, content = draw(body())
    separator = draw(st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n", b""]))
    return draw(header_block(ctype)) + separator + content
