"""The ``transcript`` hook plugin: chat transcripts in outbound e-mail.

The stack passes the chat's XML in the send request's plugin options,
``options: {"transcript": {"xml": "<chatTranscript ...>"}}``; a request
without them is left alone.

* ``postroom_render``: each ``[ChatTranscript]`` (legacy) and each
  ``<Genesys_Chat_Transcript><Timestamp>PATTERN</Timestamp></Genesys_Chat_Transcript>``
  in the HTML and text parts is replaced by the transcript; with neither, it is
  appended at the end. The new tag adds the start time, duration, subject and
  transferred files, its timestamps in PATTERN (Java ``SimpleDateFormat``); the
  legacy tag and the default use ``yyyy-MM-dd'T'HH:mm:ss``. Times are the
  customer's local times. A text part is made beside the HTML when the request
  has none. An invalid PATTERN falls back and logs 30001.
* ``postroom_validate_request``: the option's shape is checked when the request
  is queued (an object whose ``xml`` is a non-empty string, no other key): a
  malformed option is refused there (HTTP 400, exit 2). The XML itself is not read
  then: a transcript that cannot be read is the product's error 30002, which fails
  that e-mail's outbound interaction (kept, with the reason), not the request.
* ``postroom_veto``: a transcript whose XML cannot be read logs 30002 and
  stops that e-mail (never retried); rendering leaves such a request alone.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import css_inline
from babel import Locale, UnknownLocaleError

from postroom.api import (
    ConfigError,
    Context,
    OptionSchema,
    OutboundRequest,
    RequestError,
    Scope,
    hookimpl,
)
from postroom_transcript import render
from postroom_transcript.javadate import FALLBACK_PATTERN, JavaDateFormat, PatternError
from postroom_transcript.transcript import Transcript, TranscriptError, parse

log = logging.getLogger(__name__)

OPTION = "transcript"  # the send request's plugin options key
SECTION = "transcript"  # the site configuration's section
LOCALE = "locale"
INLINE_CSS = "inline-css"
DEFAULT_LOCALE = "en_US"
DATE_FORMAT_ERROR = "30001|STANDARD|CHAT_DATE_FORMAT_PARSE_ERROR"
UNMARSHALL_ERROR = "30002|STANDARD|CHAT_UNMARSHALL_ERROR"
_NEW_MARK = "\x00postroom-transcript-new\x00"  # where a tag was, in the HTML read as text
_LEGACY_MARK = "\x00postroom-transcript-legacy\x00"
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


@hookimpl
def postroom_add_options(schema: OptionSchema) -> None:
    schema.add(
        LOCALE,
        "str",
        scope=Scope.GLOBAL,
        section=SECTION,
        default=DEFAULT_LOCALE,
        description="Locale (as Babel names it: `en_US`, `de_DE`) of the month and day names, "
        "AM/PM and week rules in chat transcript timestamps; the Java pattern is the "
        "template's.",
    )
    schema.add(
        INLINE_CSS,
        "bool",
        scope=Scope.GLOBAL,
        section=SECTION,
        default=False,
        description="Also copy the HTML part's `<style>` rules into `style` attributes "
        "(css-inline), for mail clients that drop `<style>`, when a chat transcript is "
        "rendered; the `<style>` block stays.",
    )


@hookimpl
def postroom_configure(config: Any) -> None:
    name = config.get(SECTION, LOCALE)
    try:
        Locale.parse(name)
    except (UnknownLocaleError, ValueError) as exc:
        raise ConfigError(f"{SECTION}.{LOCALE}: unknown locale {name!r} ({exc})") from exc


@hookimpl
def postroom_validate_request(request: OutboundRequest) -> None:
    """Refuse a malformed ``options.transcript`` before it is queued (its XML is read
    when the e-mail is rendered: 30002 fails that e-mail, see the module's docstring)."""
    found = request.options.get(OPTION)
    if found is None:
        return
    if not isinstance(found, dict):
        raise RequestError(
            "options", f'{OPTION} must be an object: {{"xml": "<chatTranscript ..."}}'
        )
    unknown = sorted(key for key in found if key != "xml")
    if unknown:
        shown = unknown[0] if len(unknown[0]) <= 60 else unknown[0][:60] + "..."
        raise RequestError("options", f"{OPTION}: unknown key {shown!r} (known: xml)")
    xml = found.get("xml")
    if not isinstance(xml, str) or not xml.strip():
        raise RequestError("options", f"{OPTION}.xml must be the chat's XML (a non-empty string)")


def _xml(request: OutboundRequest) -> str | None:
    """The transcript XML of the request, "" when the option is there but holds
    none, None when the request has no transcript."""
    found = request.options.get(OPTION)
    if found is None:
        return None
    xml = found.get("xml") if isinstance(found, dict) else None
    return xml if isinstance(xml, str) else ""


def _read(request: OutboundRequest) -> Transcript | None:
    xml = _xml(request)
    if xml is None:
        return None
    if not xml:
        raise TranscriptError(f'options["{OPTION}"] has no "xml" text')
    return parse(xml)


def _locale(ctx: Context) -> str:
    value = ctx.option(SECTION, LOCALE)
    return str(value) if value else DEFAULT_LOCALE


class _Formats:
    """The patterns of one request, each compiled (and an invalid one logged) once,
    whether the HTML part, the text part or both use it."""

    def __init__(self, locale: str) -> None:
        self.locale = locale
        self.default = JavaDateFormat(FALLBACK_PATTERN, locale)
        self._found: dict[str, JavaDateFormat] = {}

    def get(self, pattern: str) -> JavaDateFormat:
        """*pattern* compiled, or the fallback with error 30001 logged."""
        if pattern not in self._found:
            try:
                self._found[pattern] = JavaDateFormat(pattern, self.locale)
            except PatternError as exc:
                log.error(
                    "%s: pattern %r: %s; using %r",
                    DATE_FORMAT_ERROR,
                    pattern,
                    exc,
                    FALLBACK_PATTERN,
                )
                self._found[pattern] = self.default
        return self._found[pattern]


class _Renderer:
    """Replaces the tags of one part (HTML or text) by the transcript."""

    def __init__(self, transcript: Transcript, formats: _Formats, in_html: bool) -> None:
        self.transcript = transcript
        self.formats = formats
        self.in_html = in_html
        self.default = formats.default

    def fragment(self, fmt: JavaDateFormat, with_summary: bool) -> str:
        """The transcript in this part's form (HTML or text), times in *fmt*."""
        make = render.to_html if self.in_html else render.to_text
        return make(self.transcript, fmt, with_summary)

    def has_tag(self, body: str) -> bool:
        return render.LEGACY_TAG in body or render.NEW_TAG.search(body) is not None

    def replace(self, body: str) -> str:
        """Every tag replaced (the caller appends when there is none)."""

        def new(match: re.Match[str]) -> str:
            pattern = render.pattern_of(match.group(1), self.in_html)
            return self.fragment(self.formats.get(pattern), True)

        body = render.NEW_TAG.sub(new, body)
        if render.LEGACY_TAG in body:
            body = body.replace(render.LEGACY_TAG, self.fragment(self.default, False))
        return body

    def place(self, body: str) -> str:
        """Tags replaced, or the transcript appended (in HTML before ``</body>``)."""
        if self.has_tag(body):
            return self.replace(body)
        fragment = self.fragment(self.default, False)
        if self.in_html:
            ends = list(_BODY_END.finditer(body))
            if ends:
                at = ends[-1].start()
                return f"{body[:at]}{fragment}\n{body[at:]}"
            return f"{body}\n{fragment}"
        return f"{body.rstrip()}\n\n{fragment}" if body.strip() else fragment


def _text_beside(html_body: str, transcript: Transcript, formats: _Formats) -> str:
    """The text part made from the HTML template: its tags' places kept."""
    text_renderer = _Renderer(transcript, formats, in_html=False)
    html_renderer = _Renderer(transcript, formats, in_html=True)
    patterns: list[str] = []

    def mark(match: re.Match[str]) -> str:
        patterns.append(render.pattern_of(match.group(1), True))
        return _NEW_MARK

    marked = render.NEW_TAG.sub(mark, html_body).replace(render.LEGACY_TAG, _LEGACY_MARK)
    text = render.html_to_text(marked)
    if not html_renderer.has_tag(html_body):
        return text_renderer.place(text)
    pieces = re.split(f"({_NEW_MARK}|{_LEGACY_MARK})", text)
    out = [pieces[0]]
    found = iter(patterns)
    for i in range(1, len(pieces), 2):
        if pieces[i] == _LEGACY_MARK:
            out.append(text_renderer.fragment(text_renderer.default, False))
        else:
            out.append(text_renderer.fragment(formats.get(next(found)), True))
        out.append(pieces[i + 1])
    return "\n".join(p.strip("\n") for p in out if p.strip())


@hookimpl
def postroom_field_values(request: OutboundRequest) -> dict[str, dict[str, str]] | None:
    """The customer's ``userData`` in the transcript (``FirstName``, ``LastName``,
    ``EmailAddress``...) as ``Contact`` values for a standard response's field
    codes, where the request gives none. A transcript that cannot be read offers
    nothing (the veto says why the e-mail is not sent)."""
    try:
        transcript = _read(request)
    except TranscriptError:
        return None
    customer = transcript.customer if transcript is not None else None
    if customer is None or not customer.user_data:
        return None
    return {"Contact": dict(customer.user_data)}


def _inline(markup: str) -> str:
    inliner = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)
    return str(inliner.inline(markup))


@hookimpl
def postroom_render(request: OutboundRequest, ctx: Context) -> None:
    try:
        transcript = _read(request)
    except TranscriptError:
        return  # postroom_veto stops it
    if transcript is None:
        return
    formats = _Formats(_locale(ctx))
    html_body, text_body = request.html, request.text
    if text_body is not None:
        request.text = _Renderer(transcript, formats, in_html=False).place(text_body)
    elif html_body is not None:
        request.text = _text_beside(html_body, transcript, formats)
    else:
        request.text = _Renderer(transcript, formats, in_html=False).place("")
    if html_body is not None:
        request.html = _Renderer(transcript, formats, in_html=True).place(html_body)
        if ctx.option(SECTION, INLINE_CSS):
            request.html = _inline(request.html)


@hookimpl
def postroom_veto(request: OutboundRequest) -> str | None:
    try:
        _read(request)
    except TranscriptError as exc:
        reason = f"{UNMARSHALL_ERROR}: the chat transcript cannot be read: {exc}"
        log.error("%s", reason)
        return reason
    return None
