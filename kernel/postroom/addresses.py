"""E-mail addresses of send requests: RFC 5322 address lists, read strictly, in linear time.

A request's ``to``, ``cc``, ``bcc`` and ``from`` (and the ``Reply-To`` and
``Sender`` headers) are address lists: ``a@x.example, Anna <b@y.example>``.
postroom reads a strict subset of RFC 5322 (with RFC 6532's UTF-8), so that
what reaches the header and the SMTP envelope is exactly what was asked for:

* each element is an addr-spec (``local@domain``) or a display name with an
  addr-spec in angle brackets; elements are separated by commas, empty ones
  are refused;
* the local part is a dot-atom or a quoted string, at most 64 bytes; UTF-8 is
  allowed (SMTPUTF8, RFC 6531) and kept as it is;
* the domain is a host name: an internationalised one is converted to its
  ASCII form (IDNA 2008 with the UTS #46 mapping), every label letters, digits
  and hyphens. No domain is ever added: ``not an address`` is refused, not
  sent to ``not@<some domain>``;
* groups (``team: a@x, b@y;``), comments (``(...)``), domain literals
  (``a@[192.0.2.1]``) and obsolete forms are refused.

The standard library's ``email`` address parser takes quadratic time on some
inputs and accepts broken ones with only a defect noted, hence this reader:
each element is matched by one regular expression whose alternatives cannot
overlap, so the time grows linearly with the text.
"""

from __future__ import annotations

import re

import attrs
import idna

#: control characters (C0 but TAB, DEL, C1, the Unicode line and paragraph separators)
#: and lone surrogates: never part of an address
_CONTROLS = r"\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff"
#: atext of RFC 5322 plus the non-ASCII characters RFC 6532 allows
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u00a0-\u2027\u202a-\ud7ff\ue000-\U0010ffff]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
#: a quoted string: any printable character or TAB, backslash escapes a character
_QUOTED = rf'"(?:[^"\\{_CONTROLS}]|\\[^{_CONTROLS}])*"'
_ADDR_SPEC = rf"(?P<local>{_DOT_ATOM}|{_QUOTED})@(?P<domain>{_DOT_ATOM})"
#: a display name: one character at a time, or a whole quoted string (never ambiguous);
#: it starts with neither blank, so the blanks before it are matched one way only
_WORD_CHAR = rf'[^"<>,;:@()\[\]\\{_CONTROLS}]'
_PHRASE = rf"(?:(?![ \t]){_WORD_CHAR}|{_QUOTED})(?:{_WORD_CHAR}|{_QUOTED})*"
_END = r"[ \t]*(?P<end>,|\Z)"
_PLAIN = re.compile(rf"[ \t]*{_ADDR_SPEC}{_END}")
_NAMED = re.compile(rf"[ \t]*(?P<name>{_PHRASE})?<[ \t]*{_ADDR_SPEC}[ \t]*>{_END}")
_DOT_ATOM_ONLY = re.compile(_DOT_ATOM)
_ATOMS_ONLY = re.compile(rf"{_ATEXT}+(?: {_ATEXT}+)*")
_QUOTED_PART = re.compile(_QUOTED)
_ESCAPED = re.compile(r"\\(.)")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SPACES = re.compile(r"[ \t]+")

#: RFC 5321 section 4.5.3.1: local part 64 octets, domain 255 (253 without the root dot)
MAX_LOCAL = 64
MAX_DOMAIN = 253


class AddressError(ValueError):
    """Text that is not a valid address list; the message says where and why."""


@attrs.frozen
class Mailbox:
    """One address: an optional display name, the local part (unquoted), the ASCII domain."""

    display_name: str
    local_part: str
    domain: str

    @property
    def addr_spec(self) -> str:
        """``local@domain`` as it goes into the envelope (the local part quoted if need be)."""
        local = self.local_part
        if not _DOT_ATOM_ONLY.fullmatch(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain}"

    @property
    def needs_smtputf8(self) -> bool:
        """A UTF-8 local part: only a server announcing SMTPUTF8 can take it."""
        return not self.local_part.isascii()

    def __str__(self) -> str:
        """The mailbox as a header shows it: ``Name <local@domain>`` or ``local@domain``."""
        if not self.display_name:
            return self.addr_spec
        name = self.display_name
        if not _ATOMS_ONLY.fullmatch(name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{self.addr_spec}>"


def parse_address_list(text: str) -> list[Mailbox]:
    """Every mailbox of *text*; raises :class:`AddressError` naming the first problem."""
    mailboxes: list[Mailbox] = []
    pos, length = 0, len(text)
    if not text.strip(" \t"):
        raise AddressError("no address given")
    while pos < length or not mailboxes:
        match = _PLAIN.match(text, pos) or _NAMED.match(text, pos)
        if match is None:
            raise AddressError(_describe_failure(text, pos))
        mailboxes.append(_mailbox(match))
        pos = match.end()
        if match.group("end") == "," and pos >= length:
            raise AddressError("an empty address after the last comma")
    return mailboxes


def parse_mailbox(text: str) -> Mailbox:
    """The one mailbox of *text* (a From or Sender): refuses a list."""
    found = parse_address_list(text)
    if len(found) != 1:
        raise AddressError(f"one address expected, found {len(found)}")
    return found[0]


def _mailbox(match: re.Match[str]) -> Mailbox:
    local = match.group("local")
    if local.startswith('"'):
        local = _ESCAPED.sub(r"\1", local[1:-1])
    if not local:
        raise AddressError("an empty local part (before the @)")
    if len(local.encode("utf-8")) > MAX_LOCAL:
        raise AddressError(f"the local part of {_show(match.group(0))} is over {MAX_LOCAL} bytes")
    name = match.groupdict().get("name") or ""
    return Mailbox(_display_name(name), local, ascii_domain(match.group("domain")))


def _display_name(phrase: str) -> str:
    """The text of a display name: quoted strings unquoted, runs of blanks made one space."""
    parts = []
    pos = 0
    for quoted in _QUOTED_PART.finditer(phrase):
        parts.append(phrase[pos : quoted.start()])
        parts.append(_ESCAPED.sub(r"\1", quoted.group(0)[1:-1]))
        pos = quoted.end()
    parts.append(phrase[pos:])
    return _SPACES.sub(" ", "".join(parts)).strip()


def ascii_domain(domain: str) -> str:
    """*domain* as a host name in ASCII (A-labels for an internationalised one)."""
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise AddressError(
                f"the domain {_show(domain)} is not a valid host name: {exc}"
            ) from None
    if len(domain) > MAX_DOMAIN:
        raise AddressError(f"the domain {_show(domain)} is over {MAX_DOMAIN} characters")
    labels = domain.split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise AddressError(
                f"the domain {_show(domain)} is not a host name (labels of letters, digits "
                "and inner hyphens, at most 63 characters each)"
            )
    if labels[-1].isdigit():
        raise AddressError(
            f"the domain {_show(domain)} is a bare IP address; address literals are not accepted"
        )
    return domain


def _describe_failure(text: str, pos: int) -> str:
    rest = text[pos:].lstrip(" \t")
    item = rest.split(",", 1)[0]
    if not item.strip(" \t"):
        return "an empty address (two commas in a row, or a comma first)"
    if ":" in item or ";" in item:
        return f"{_show(item)}: groups are not accepted; list the addresses"
    if "@" not in item:
        return f"{_show(item)} is not an address (local@domain; no domain is ever added)"
    if "(" in item:
        return f"{_show(item)}: comments are not accepted"
    if "[" in item:
        return f"{_show(item)}: address literals are not accepted"
    return f"{_show(item)} is not a valid address (local@domain or Name <local@domain>)"


def _show(text: str, limit: int = 80) -> str:
    """*text* quoted for an error message, cut to *limit* characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
