"""What goes on the wire besides the connection: line ends, MAIL/RCPT parameters.

Pure functions, no I/O, so the rules that decide what a server is sent are
unit-tested without a server:

* :func:`normalise_line_ends` makes the message CRLF-only *before* smtplib
  dot-stuffs it. smtplib stuffs a ``.`` only after ``\\n``; a lone ``\\r``
  followed by ``.`` would go out unstuffed and some servers take ``\\r.\\r\\n``
  as the end of DATA (the "SMTP smuggling" family), so every line end becomes
  exactly one CRLF first.
* :func:`plan_transaction` checks the envelope (no CR/LF injection through an
  address or a parameter) and fits its parameters to what the server announced
  in EHLO: DSN parameters are dropped when the server has no DSN extension
  (sending them would get the whole message refused), ``SIZE=`` is declared
  and checked against the server's limit before any byte of the body is sent,
  ``BODY=8BITMIME`` is declared for 8-bit content and ``SMTPUTF8`` for
  non-ASCII addresses.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping, Sequence

import attrs

from postroom.api import SendError

#: DSN parameters (RFC 3461) of MAIL FROM and RCPT TO, by keyword
DSN_MAIL_KEYWORDS = frozenset({"RET", "ENVID"})
DSN_RCPT_KEYWORDS = frozenset({"NOTIFY", "ORCPT"})

_ANY_EOL = re.compile(rb"\r\n|\r|\n")
#: esmtp-param of RFC 5321 section 4.1.2: keyword ["=" value], value without
#: space, "=" or control characters
_ESMTP_PARAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*(=[\x21-\x3c\x3e-\x7e]+)?")
_ADDRESS_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")


def normalise_line_ends(data: bytes) -> bytes:
    """*data* with every line end (CRLF, bare LF, bare CR) turned into exactly one CRLF.

    CRLF stays CRLF (never CR CR LF); the content of lines is not touched.
    """
    crlf = data.count(b"\r\n")
    if crlf == data.count(b"\n") == data.count(b"\r"):
        return data  # already CRLF-only: no copy of a large message
    if b"\r" not in data:
        return data.replace(b"\n", b"\r\n")
    return _ANY_EOL.sub(b"\r\n", data)


def keyword(option: str) -> str:
    """The upper-case keyword of an ESMTP parameter (``NOTIFY`` of ``notify=NEVER``)."""
    return option.split("=", 1)[0].upper()


class EnvelopeError(SendError):
    """The envelope cannot be sent as it is: retrying would not help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


@attrs.frozen
class Transaction:
    """One mail transaction as it will be sent: addresses and parameters."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    mail_options: tuple[str, ...]
    rcpt_options: tuple[str, ...]
    #: DSN parameters left out because the server does not announce DSN
    dropped: tuple[str, ...] = ()


def envelope_address(text: str, what: str) -> str:
    """The addr-spec of *text* (``Support <s@example.org>`` gives ``s@example.org``).

    Requests may carry display names; the envelope takes the bare address.
    Control characters (CR/LF injection into the SMTP command) are refused.
    """
    if _ADDRESS_FORBIDDEN.search(text):
        raise EnvelopeError(f"the {what} address {text!r} contains a control character")
    address = text.strip()
    if address in ("", "<>"):
        return ""  # the null reverse-path (bounces); refused for a recipient by the caller
    if "<" in address or ">" in address:
        address = email.utils.parseaddr(address)[1]
        if not address or _ADDRESS_FORBIDDEN.search(address):
            raise EnvelopeError(f"the {what} address {text!r} cannot be read")
    return address


def _check_options(options: Sequence[str], what: str) -> list[str]:
    checked = []
    for option in options:
        if not isinstance(option, str) or not _ESMTP_PARAM.fullmatch(option):
            raise EnvelopeError(
                f"the {what} parameter {option!r} is not an ESMTP parameter "
                "(KEYWORD or KEYWORD=VALUE, no spaces or control characters)"
            )
        checked.append(option)
    return checked


def _add_once(options: list[str], option: str) -> None:
    if keyword(option) not in {keyword(o) for o in options}:
        options.append(option)


def plan_transaction(
    mail_from: str,
    rcpt_to: Sequence[str],
    mail_options: Sequence[str],
    rcpt_options: Sequence[str],
    features: Mapping[str, str],
    size: int,
    eight_bit: bool,
) -> Transaction:
    """The transaction for an envelope on a server announcing *features*.

    *features* is smtplib's ``esmtp_features`` (lower-case names, parameters as
    text; empty when the server only speaks HELO). *size* is the length of the
    message as it will be sent, *eight_bit* whether it has non-ASCII bytes.
    Raises :class:`EnvelopeError` (permanent) for an envelope no server would
    take: no recipient, a CR/LF in an address or parameter, a message above the
    server's announced SIZE limit, a non-ASCII address without SMTPUTF8.
    """
    if not rcpt_to:
        raise EnvelopeError("the envelope has no recipient")
    mail_from = envelope_address(mail_from, "sender")
    recipients = [envelope_address(r, "recipient") for r in rcpt_to]
    if not all(recipients):
        raise EnvelopeError("the envelope has an empty recipient address")
    mail = _check_options(mail_options, "MAIL FROM")
    rcpt = _check_options(rcpt_options, "RCPT TO")

    dropped: list[str] = []
    if "dsn" not in features:
        dropped += [o for o in mail if keyword(o) in DSN_MAIL_KEYWORDS]
        dropped += [o for o in rcpt if keyword(o) in DSN_RCPT_KEYWORDS]
        mail = [o for o in mail if keyword(o) not in DSN_MAIL_KEYWORDS]
        rcpt = [o for o in rcpt if keyword(o) not in DSN_RCPT_KEYWORDS]

    if "size" in features:
        limit_text = features["size"].strip()
        limit = int(limit_text) if limit_text.isdigit() else 0
        if limit and size > limit:
            raise EnvelopeError(
                f"the message is {size} bytes; the server accepts at most {limit} (its SIZE)"
            )
        mail = [o for o in mail if keyword(o) != "SIZE"]
        mail.insert(0, f"SIZE={size}")

    if eight_bit and "8bitmime" in features:
        _add_once(mail, "BODY=8BITMIME")

    if not all(a.isascii() for a in [mail_from, *recipients]):
        if "smtputf8" not in features:
            raise EnvelopeError(
                "an address of the envelope is not ASCII and the server does not announce "
                "SMTPUTF8 (internationalised addresses)"
            )
        _add_once(mail, "SMTPUTF8")
        if "8bitmime" in features:
            _add_once(mail, "BODY=8BITMIME")

    return Transaction(
        mail_from=mail_from,
        rcpt_to=tuple(recipients),
        mail_options=tuple(mail),
        rcpt_options=tuple(rcpt),
        dropped=tuple(dropped),
    )
