"""An interaction's body made safe to show: sanitised HTML, and text from HTML.

The HTML of a mail from outside is shown to agents in a browser. It is cleaned
with nh3 (the Ammonia sanitiser): ammonia's safe tags and attributes only, so
no scripts, styles, forms, frames, event handlers or ``style`` attributes;
``script``/``style``/``head`` lose their content too; comments go. Links keep
``http:``, ``https:`` and ``mailto:`` targets only (no ``javascript:``, no
relative URLs that would resolve against the gateway) and get
``rel="noopener noreferrer"``. Images keep a ``src`` only when it is ``cid:``
(a part of the same mail) or ``data:image/...`` (not SVG): a remote image is a
tracking pixel or a request the sender controls, so it is dropped and its
``alt`` text stays. The original is untouched in the raw message.

A mail with HTML and no text part gets a text rendering of the HTML
(:func:`html_to_text`, stdlib ``html.parser``: one pass, linear).
"""

from __future__ import annotations

from html.parser import HTMLParser

import nh3

#: link targets kept (``href``); everything else is dropped
LINK_SCHEMES = ("http:", "https:", "mailto:")
#: image sources kept (``src``)
IMAGE_PREFIXES = ("cid:", "data:image/")


def _attribute(tag: str, name: str, value: str) -> str | None:
    """nh3's attribute filter: the URL rules above."""
    if name == "href":
        ok = value.strip().lower().startswith(LINK_SCHEMES)
        return value if ok else None
    if name == "src":
        lowered = value.strip().lower()
        ok = lowered.startswith(IMAGE_PREFIXES) and not lowered.startswith("data:image/svg")
        return value if ok else None
    return value


_CLEANER = nh3.Cleaner(
    clean_content_tags={"script", "style", "head", "title", "template", "noscript"},
    url_schemes={"http", "https", "mailto", "cid", "data"},
    attribute_filter=_attribute,
    link_rel="noopener noreferrer",
    strip_comments=True,
)


def sanitise_html(html: str) -> str:
    """*html* cleaned for display in a browser (see the module's rules)."""
    return _CLEANER.clean(html)


#: elements that end a line in the text rendering
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "caption", "dd", "div", "dl",
        "dt", "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6",
        "header", "hr", "li", "ol", "p", "pre", "section", "table", "tr", "ul",
    }
)  # fmt: skip
#: elements whose content is not text to read
_SKIPPED = frozenset({"script", "style", "head", "title", "template", "noscript"})


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self.skip += 1
        elif tag == "pre":
            self.pre += 1
        if tag in _BLOCKS:
            self.out.append("\n")
        if tag == "li":
            self.out.append("- ")
        elif tag in ("td", "th"):
            self.out.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skip = max(0, self.skip - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _BLOCKS and tag not in ("li", "br", "dt", "dd", "tr"):
            self.out.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.pre:
            self.out.append(data)
            return
        # runs of blanks as one space, keeping a leading or trailing one so
        # that words split across elements stay apart
        words = " ".join(data.split())
        after_blank = not self.out or self.out[-1][-1:] in (" ", "\n")
        lead = " " if data[:1].isspace() and not after_blank else ""
        trail = " " if data[-1:].isspace() and words else ""
        self.out.append(lead + words + trail)


def html_to_text(html: str) -> str:
    """A readable plain-text rendering of *html*: its text, a line per block,
    at most one empty line in a row, no markup."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.out).split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()
