"""Replies done for the agent: what ``in_reply_to`` fills in from the interaction answered.

A send request naming its parent may leave out ``to`` and ``subject``: the
recipients are the parent's Reply-To, else its From (the parent's To when the
parent is our own outbound mail: a follow-up), and the subject is the parent's
with the site's ``subject-reply-prefix`` put before it once. The built
message's ``In-Reply-To`` is the parent's Message-ID and its ``References``
the parent's chain followed by that id (RFC 5322, section 3.6.4), bounded as
:func:`postroom.model.bounded_references` keeps it.
"""

from __future__ import annotations

import re
from email.utils import format_datetime
from html import escape
from html.parser import HTMLParser

import attrs

from postroom.model import Interaction, InteractionType, bounded_references

#: the reply prefix when the site sets none
DEFAULT_REPLY_PREFIX = "Re:"
#: the forward prefix when the site sets none
DEFAULT_FORWARD_PREFIX = "Fwd:"


def reply_recipients(parent: Interaction) -> list[str]:
    """Who a reply to *parent* goes to, when the request names nobody."""
    if parent.type == InteractionType.OUTBOUND.value:
        return list(parent.to)
    if parent.reply_to:
        return list(parent.reply_to)
    return [parent.from_addr] if parent.from_addr else []


def _prefix_pattern(prefix: str, markers: tuple[str, ...] = ("re",)) -> re.Pattern[str]:
    """Leading *markers* (reply markers: ``Re:``, ``RE :``, ``Re[2]:``) and the
    site's own prefix, any number of them, in any case."""
    words = set(markers)
    word = prefix.strip().rstrip(":").strip()
    if word:
        words.add(re.escape(word.lower()))
    alternatives = "|".join(sorted(words))
    return re.compile(rf"^\s*(?:(?:{alternatives})\s*(?:\[\d{{1,4}}\])?\s*:\s*)+", re.IGNORECASE)


#: what a request's subject may not hold (see :mod:`postroom.sendrequest`): control
#: characters, made blanks here, since the parent's subject is the sender's text
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]+")
#: a request's subject is at most this long (the send-request schema)
_MAX_SUBJECT = 998


def reply_subject(
    subject: str, prefix: str = DEFAULT_REPLY_PREFIX, markers: tuple[str, ...] = ("re",)
) -> str:
    """*subject* with *prefix* before it once: markers already there are replaced,
    so a reply to ``RE: Re: order`` is ``Re: order``, never ``Re: Re: ...``. Control
    characters become blanks and the result is cut to what a request may hold, so
    any stored subject can be answered."""
    marker = prefix.strip()
    rest = _prefix_pattern(prefix, markers).sub("", _CONTROL.sub(" ", subject), count=1)
    rest = rest[: max(0, _MAX_SUBJECT - len(marker) - 1)]
    if not marker:
        return rest
    return f"{marker} {rest}" if rest else marker


def forward_subject(subject: str, prefix: str = DEFAULT_FORWARD_PREFIX) -> str:
    """*subject* with the forward *prefix* once (``Fwd: Fw: x`` forwarded is
    ``Fwd: x``); reply markers stay: ``Fwd: Re: order`` says what it is."""
    return reply_subject(subject, prefix, markers=("fw", "fwd"))


def reply_references(parent: Interaction) -> list[str]:
    """The References of a reply to *parent*: its chain, then its Message-ID, bounded."""
    chain = list(parent.references)
    if parent.message_id and parent.message_id not in chain[-1:]:
        chain.append(parent.message_id)
    return bounded_references(chain)


# ------------------------------------------------------------------- quoting

#: the parent's text is quoted up to this many characters (a reply is no archive)
MAX_QUOTED_CHARS = 200_000


@attrs.frozen
class QuoteStyle:
    """The site's ``quote-*`` options: the prefix of each quoted line, the separator
    line, and the labels of the quoted header lines (an empty label leaves its line out)."""

    prefix: str = "> "
    separator: str = "-----Original Message-----"
    from_label: str = "From:"
    to_label: str = "To:"
    cc_label: str = "Cc:"
    sent_label: str = "Sent:"
    subject_label: str = "Subject:"


class _Text(HTMLParser):
    """The text of an HTML body, for a parent that has no plain-text part."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in ("br", "p", "div", "tr", "li"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_text(html_body: str, limit: int = MAX_QUOTED_CHARS) -> str:
    """The text of an HTML body (scripts and styles left out), at most *limit* characters."""
    reader = _Text()
    reader.feed(html_body[: limit * 4])
    reader.close()
    return re.sub(r"\n{3,}", "\n\n", "".join(reader.parts)).strip()[:limit]


def before_body_end(html_body: str, block: str) -> str:
    """*html_body* with *block* put before ``</body>``, else at its end."""
    closing = re.search(r"</body\s*>", html_body, re.IGNORECASE)
    if closing is None:
        return f"{html_body}\n{block}"
    return html_body[: closing.start()] + block + html_body[closing.start() :]


def _parent_text(parent: Interaction) -> str:
    if parent.text is not None:
        text = parent.text[:MAX_QUOTED_CHARS]
    elif parent.html is not None:
        text = html_text(parent.html)
    else:
        text = ""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return text.rstrip("\n")


def _header_lines(parent: Interaction, style: QuoteStyle) -> list[tuple[str, str]]:
    sent = parent.date if parent.date is not None else parent.created_at
    lines = [
        (style.from_label, parent.from_addr or ""),
        (style.sent_label, format_datetime(sent)),
        (style.to_label, ", ".join(parent.to)),
        (style.cc_label, ", ".join(parent.cc)),
        (style.subject_label, parent.subject),
    ]
    # an empty label leaves its line out; so does an empty Cc
    return [
        (label, value) for label, value in lines if label and (value or label != style.cc_label)
    ]


def quote_text(text: str | None, parent: Interaction, style: QuoteStyle) -> str:
    """*text* with *parent* quoted below it: the separator, the header lines, then
    the parent's text with the prefix before every line."""
    head = [style.separator] if style.separator else []
    head += [f"{label} {value}".rstrip() for label, value in _header_lines(parent, style)]
    quoted = [f"{style.prefix}{line}".rstrip() for line in _parent_text(parent).split("\n")]
    mine = (text or "").rstrip("\n")
    return "\n".join([mine, "", *head, "", *quoted]).lstrip("\n") + "\n"


def quote_html(html_body: str, parent: Interaction, style: QuoteStyle) -> str:
    """*html_body* with *parent* quoted below it in a ``<blockquote type="cite">``;
    every value from the parent is escaped (it is the sender's text, not markup)."""
    rows = "".join(
        f"<b>{escape(label)}</b> {escape(value)}<br>\n"
        for label, value in _header_lines(parent, style)
    )
    separator = f"<p>{escape(style.separator)}</p>\n" if style.separator else ""
    quoted = escape(_parent_text(parent)).replace("\n", "<br>\n")
    block = (
        f'<div class="postroom-quote">\n<hr>\n{separator}<p>{rows}</p>\n'
        f'<blockquote type="cite">\n{quoted}\n</blockquote>\n</div>\n'
    )
    return before_body_end(html_body, block)
