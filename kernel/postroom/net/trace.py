"""Protocol traces (``enable-debug``) with secrets redacted."""

from __future__ import annotations

import logging
import re

_PATTERNS = [
    # IMAP: a1 LOGIN user password  /  a1 AUTHENTICATE PLAIN <b64>
    re.compile(rb"^(\S+ LOGIN \S+ ).*$", re.IGNORECASE),
    re.compile(rb"^(\S+ AUTHENTICATE \S+ ).*$", re.IGNORECASE),
    # POP3 / SMTP
    re.compile(rb"^(PASS ).*$", re.IGNORECASE),
    re.compile(rb"^(AUTH \S+ ).*$", re.IGNORECASE),
    re.compile(rb"^(APOP \S+ ).*$", re.IGNORECASE),
]

REDACTED = b"<redacted>"


def redact(line: bytes, *, continuation: bool = False) -> bytes:
    """The line with credentials replaced. *continuation*: the line answers
    a ``+``/``334`` challenge during AUTH, so it is a secret as a whole."""
    if continuation:
        return REDACTED
    stripped = line.rstrip(b"\r\n")
    for pattern in _PATTERNS:
        match = pattern.match(stripped)
        if match:
            return match.group(1) + REDACTED
    return stripped


class Tracer:
    """Logs each line sent or received at DEBUG when ``enable-debug`` is on."""

    def __init__(self, mailbox: str, enabled: bool, logger: logging.Logger | None = None):
        self.mailbox = mailbox
        self.enabled = enabled
        self.log = logger or logging.getLogger("postroom.trace")
        self.in_auth = False

    def sent(self, line: bytes) -> None:
        if self.enabled:
            text = redact(line, continuation=self.in_auth).decode("utf-8", "replace")
            self.log.debug("%s C: %s", self.mailbox, text, extra={"mailbox": self.mailbox})

    def received(self, line: bytes) -> None:
        if self.enabled:
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            self.log.debug("%s S: %s", self.mailbox, text, extra={"mailbox": self.mailbox})
