"""Transcripts as HTML and plain text, and where they go in a request's body.

The HTML uses the class names the product's transcript stylesheets target
(specification, section 6), so a site's stylesheet, carried in the template's
``<style>`` block, lays it out unchanged: the customer's messages are ``you``
(right), the agents' and bots' ``them`` (left), notices and departures
``system``. Every text from the chat is escaped; line breaks become ``<br/>``.
The fragment is well-formed XML as well as HTML.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import attrs

from postroom_transcript.javadate import JavaDateFormat
from postroom_transcript.transcript import Event, Transcript, TransferredFile

LEGACY_TAG = "[ChatTranscript]"
#: the new tag; its pattern may be wrapped over lines by the template's editor
NEW_TAG = re.compile(
    r"<Genesys_Chat_Transcript>\s*<Timestamp>(.*?)</Timestamp>\s*</Genesys_Chat_Transcript>",
    re.DOTALL | re.IGNORECASE,
)
_WRAPPED = re.compile(r"[ \t]*\r?\n\s*")

_ARROWS = (
    '<div class="bubble-arrow">'
    '<svg class="left" width="7" height="16" viewBox="0 0 7 16"><path d="M7 0L0 8l7 8z"/></svg>'
    '<svg class="right" width="7" height="16" viewBox="0 0 7 16"><path d="M0 0l7 8-7 8z"/></svg>'
    "</div>"
)


def pattern_of(found: str, in_html: bool) -> str:
    """The Java pattern between ``<Timestamp>`` tags: entities decoded in an HTML
    part, and a line break the editor wrapped it at (with the blanks around it)
    read as the one space it stands for."""
    if in_html:
        found = html.unescape(found)
    return _WRAPPED.sub(" ", found.strip())


def duration_text(seconds: int) -> str:
    """``1 h 1 min 43 s``: hours and minutes only where there are any."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    if hours or minutes:
        parts.append(f"{minutes} min")
    parts.append(f"{secs} s")
    return " ".join(parts)


def size_text(size: int | None) -> str:
    if size is None:
        return "size unknown"
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def file_text(file: TransferredFile) -> str:
    return f"{file.name} ({size_text(file.size)})"


@attrs.frozen
class Line:
    """One shown event: who, when, what, and its side."""

    side: str  # you, them, system
    name: str
    time: str
    text: str


def lines(transcript: Transcript, when: Callable[[int], str]) -> list[Line]:
    """The events the customer may see, in order (``newParty`` is not shown: the
    stack writes a notice when someone joins)."""
    found: list[Line] = []
    for event in transcript.visible:
        line = _line(transcript, event, when(event.time_shift))
        if line is not None:
            found.append(line)
    return found


def _line(transcript: Transcript, event: Event, time: str) -> Line | None:
    party = transcript.parties.get(event.user_id)
    name = party.nick if party is not None else ""
    if event.kind == "message":
        side = "you" if party is not None and party.type == "CLIENT" else "them"
        return Line(side, name, time, event.text)
    if event.kind == "notice":
        text = event.text or (f"{file_text(event.file)}" if event.file is not None else "")
        return Line("system", name, time, text)
    if event.kind == "partyLeft":
        return Line("system", name, time, f"{name or 'A participant'} left the chat")
    return None


@attrs.frozen
class Summary:
    """What the new tag adds before the messages."""

    started: str
    duration: str
    subject: str | None
    files: list[str]

    def rows(self) -> list[tuple[str, str, str]]:
        """(class, label, value) for each line."""
        rows = [("started", "Chat started", self.started), ("duration", "Duration", self.duration)]
        if self.subject:
            rows.append(("subject", "Subject", self.subject))
        rows.extend(("file", "File", name) for name in self.files)
        return rows


def summary(transcript: Transcript, when: Callable[[int], str]) -> Summary:
    return Summary(
        started=when(0),
        duration=duration_text(transcript.duration),
        subject=transcript.subject,
        files=[file_text(f) for f in transcript.files],
    )


def _escaped(text: str) -> str:
    return "<br/>".join(html.escape(part) for part in text.replace("\r\n", "\n").split("\n"))


def to_html(transcript: Transcript, fmt: JavaDateFormat, with_summary: bool) -> str:
    def when(shift: int) -> str:
        return fmt.format(transcript.local(shift))

    out = ['<div class="transcript cx-theme">']
    if with_summary:
        out.append('<table class="transcript-summary">')
        for cls, label, value in summary(transcript, when).rows():
            out.append(
                f'<tr class="{cls}"><th>{html.escape(label)}:</th><td>{_escaped(value)}</td></tr>'
            )
        out.append("</table>")
    for line in lines(transcript, when):
        if line.side == "system":
            out.append(
                '<div class="message system notice"><div class="bubble">'
                f'<div class="message-text">{_escaped(line.text)}</div>'
                f'<span class="time">{_escaped(line.time)}</span></div></div>'
            )
            continue
        avatar = "avatar-customer" if line.side == "you" else "avatar-agent"
        out.append(
            f'<div class="message {line.side}">'
            f'<div class="avatar-wrapper"><div class="avatar cx-img-map px48 {avatar}"></div></div>'
            f"{_ARROWS}"
            '<div class="bubble">'
            f'<span class="name">{_escaped(line.name)}</span>'
            f'<div class="message-text">{_escaped(line.text)}</div>'
            f'<span class="time">{_escaped(line.time)}</span>'
            "</div></div>"
        )
    out.append("</div>")
    return "\n".join(out)


def to_text(transcript: Transcript, fmt: JavaDateFormat, with_summary: bool) -> str:
    def when(shift: int) -> str:
        return fmt.format(transcript.local(shift))

    out: list[str] = []
    if with_summary:
        out.extend(f"{label}: {value}" for _, label, value in summary(transcript, when).rows())
        out.append("")
    for line in lines(transcript, when):
        text = line.text.replace("\r\n", "\n").replace("\n", "\n    ")
        who = f"{line.name}: " if line.side != "system" else ""
        out.append(f"[{line.time}] {who}{text}")
    return "\n".join(out)


# ------------------------------------------------------------- html to text

_DROP = re.compile(r"<(style|script|head)\b.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_BREAK = re.compile(r"<br\s*/?>|</(p|div|tr|li|h[1-6])\s*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")


def html_to_text(markup: str) -> str:
    """A plain-text reading of a template's HTML, for the text part beside it:
    styles dropped, breaks and block ends as line ends, tags removed, entities
    decoded, blanks collapsed as a browser would."""
    markup = _DROP.sub("", markup)
    markup = _BREAK.sub("\n", re.sub(r"\s*\n\s*", " ", markup))
    text = html.unescape(_TAG.sub("", markup))
    out = [re.sub(r"[ \t\xa0]+", " ", line).strip() for line in text.split("\n")]
    return "\n".join(out).strip()
