"""The ``transcript`` plugin: the sample chat rendered into the sample standard response.

Through ``postroom.testing``: a kernel with the plugin, the memory store and the
fake sender; what went on the wire is read back part by part. The expected
strings are in :mod:`tests.plugins.transcript.samples`, worked out by hand.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from email.message import EmailMessage
from importlib.metadata import EntryPoint

import pytest

from postroom.api import ConfigError, OutboundRequest, RequestError, SendError
from postroom.testing import TestKernel
from postroom_transcript import plugin
from postroom_transcript.transcript import TranscriptError, parse
from tests.plugins.transcript import samples
from tests.plugins.transcript.samples import DURATION, SHOWN, START, SUBJECT

EP = EntryPoint(name="transcript", value="postroom_transcript.plugin", group="postroom.plugins")
CUSTOMER = "juergen.mueller@customer.example"


def request(
    html: str | None = None, text: str | None = None, xml: str | None = None
) -> OutboundRequest:
    return OutboundRequest(
        to=[CUSTOMER],
        from_addr="support@centre.example",
        subject="Your chat with us",
        html=html,
        text=text,
        options={"transcript": {"xml": samples.xml() if xml is None else xml}},
    )


def sent_parts(kernel: TestKernel) -> dict[str, str]:
    """The sent message's parts by content type (one each), with line ends as written."""
    [sent] = kernel.sender.sent
    message: EmailMessage = sent.message
    return {
        p.get_content_type(): p.get_content().replace("\r\n", "\n")
        for p in message.walk()
        if not p.is_multipart()
    }


def fragment(html: str) -> ET.Element:
    """The transcript's ``<div class="transcript ...">`` (well-formed XML by design)."""
    start = html.index('<div class="transcript cx-theme">')
    end = html.index("\n</div>", start) + len("\n</div>")
    return ET.fromstring(html[start:end])


def classes(element: ET.Element) -> list[str]:
    return (element.get("class") or "").split()


def text_of(element: ET.Element | None) -> str:
    """The element's text with ``<br/>`` as a line end."""
    assert element is not None
    out = [element.text or ""]
    for child in element:
        out.append("\n" if child.tag == "br" else text_of(child))
        out.append(child.tail or "")
    return "".join(out)


def shown(div: ET.Element) -> list[tuple[str, str, str, str]]:
    """(class, name, time, text) of each message of the transcript fragment."""
    found = []
    for message in div.iter("div"):
        if "message" not in classes(message):
            continue
        side = next(c for c in classes(message) if c in {"you", "them", "system", "injected"})
        name = message.find(".//span[@class='name']")
        found.append(
            (
                side,
                text_of(name) if name is not None else "",
                text_of(message.find(".//span[@class='time']")),
                text_of(message.find(".//div[@class='message-text']")),
            )
        )
    return found


# ------------------------------------------------------------------ packaging


def test_the_entry_point_is_the_plugin_with_its_hooks() -> None:
    assert EP.load() is plugin
    with TestKernel([EP]) as kernel:
        assert kernel.plugins[-1] == "transcript"
        assert set(kernel.hooks_of("transcript")) == {
            "postroom_add_options",
            "postroom_configure",
            "postroom_field_values",
            "postroom_render",
            "postroom_validate_request",
            "postroom_veto",
        }


def test_an_unknown_locale_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as info:
        TestKernel([EP], "transcript:\n  locale: xx_NOPE\n")
    assert "unknown locale 'xx_NOPE'" in str(info.value)


# ------------------------------------------------------- the sample, new tag


def test_the_sample_renders_into_an_html_and_a_text_part() -> None:
    with TestKernel([EP]) as kernel:
        outbound = kernel.send(request(html=samples.template()))
        assert outbound.status == "Sent", outbound.attached_data
        parts = sent_parts(kernel)
    assert set(parts) == {"text/plain", "text/html"}
    html, text = parts["text/html"], parts["text/plain"]

    # the HTML part: the template's text and its <style> block, the tag replaced
    assert html.startswith("Dear Jürgen Müller.")
    assert "Genesys_Chat_Transcript" not in html and "<Timestamp>" not in html
    assert html.count('<style type="text/css">') == 1
    assert ".transcript .message.you .bubble {" in html
    div = fragment(html)
    assert classes(div) == ["transcript", "cx-theme"]
    rows = {tr.get("class"): text_of(tr.find("td")) for tr in div.iter("tr")}
    assert rows == {"started": START, "duration": DURATION, "subject": SUBJECT}
    assert shown(div) == [(side, name if side != "system" else "", time, text)
                          for side, name, time, text in SHOWN]  # fmt: skip
    # markup typed in the chat is text: escaped once, never a <b> element
    assert "&lt;b&gt;Einen Moment&lt;/b&gt;" in html
    assert not list(div.iter("b"))
    # the customer's messages carry the customer's avatar, the agent's the agent's
    for message in div.iter("div"):
        if {"you", "them"} & set(classes(message)):
            avatar = "avatar-customer" if "you" in classes(message) else "avatar-agent"
            [found] = [d for d in message.iter("div") if "cx-img-map" in classes(d)]
            assert avatar in classes(found)
            arrows = message.find("div[@class='bubble-arrow']")
            assert arrows is not None
            assert [classes(svg) for svg in arrows] == [["left"], ["right"]]
    assert samples.INTERNAL_TEXT not in html and samples.INTERNAL_TIME not in html

    # the text part: the template's text, then the transcript where the tag was
    lines = text.splitlines()
    assert lines[0].startswith("Dear Jürgen Müller. Please find below the transcript")
    assert "Customer Support ---" in lines[0]
    at = lines.index(f"Chat started: {START}")
    assert lines[at : at + 4] == [
        f"Chat started: {START}",
        f"Duration: {DURATION}",
        f"Subject: {SUBJECT}",
        "",
    ]
    assert lines[at + 4 :] == [
        "[2026/11/20, 03:03:09 PM] Jürgen Müller: "
        "Hallo, meine Rechnung enthält einen Posten doppelt.",
        "[2026/11/20, 03:03:16 PM] Anna Weber joined the chat",
        "[2026/11/20, 03:03:38 PM] Anna Weber: Guten Tag Herr Müller, ich sehe es mir an. "
        "<b>Einen Moment</b> bitte.",
        "[2026/11/20, 03:03:54 PM] Jürgen Müller: Danke!",
        "    Die Positionen 3 und 7 sind gleich.",
        "[2026/11/20, 04:03:12 PM] Anna Weber: Die Gutschrift über 19,99 € ist veranlasst.",
        "[2026/11/20, 04:04:49 PM] Jürgen Müller left the chat",
        "[2026/11/20, 04:04:50 PM] Anna Weber left the chat",
    ]
    assert "ransparent" not in text and "{" not in text  # no CSS in the text part


def test_transferred_files_are_listed_with_their_sizes() -> None:
    with TestKernel([EP]) as kernel:
        kernel.send(request(html=samples.template(), xml=samples.with_files(samples.xml())))
        parts = sent_parts(kernel)
    div = fragment(parts["text/html"])
    files = [text_of(tr.find("td")) for tr in div.iter("tr") if tr.get("class") == "file"]
    assert files == ["rechnung-4711.pdf (47.1 KB)"]  # 48213 / 1024; the internal one not
    assert "File: rechnung-4711.pdf (47.1 KB)" in parts["text/plain"].splitlines()
    assert "approval.txt" not in parts["text/html"] + parts["text/plain"]


def test_without_a_subject_there_is_no_subject_line() -> None:
    source = samples.xml().replace('<item key="Subject"', '<item key="Topic"')
    with TestKernel([EP]) as kernel:
        kernel.send(request(html=samples.template(), xml=source))
        parts = sent_parts(kernel)
    assert [tr.get("class") for tr in fragment(parts["text/html"]).iter("tr")] == [
        "started",
        "duration",
    ]
    assert "Subject:" not in parts["text/plain"]


def test_an_invalid_pattern_falls_back_and_logs_30001(caplog: pytest.LogCaptureFixture) -> None:
    html = (
        "<p>Your chat:</p><Genesys_Chat_Transcript><Timestamp>yyyy-MM-dd bb</Timestamp>"
        "</Genesys_Chat_Transcript>"
    )
    with caplog.at_level(logging.ERROR), TestKernel([EP]) as kernel:
        outbound = kernel.send(request(html=html))
        parts = sent_parts(kernel)
    assert outbound.status == "Sent"
    times = [time for _, _, time, _ in shown(fragment(parts["text/html"]))]
    assert times[0] == "2026-11-20T15:03:09"  # yyyy-MM-dd'T'HH:mm:ss, customer's zone
    assert times[-1] == "2026-11-20T16:04:50"
    assert "Chat started: 2026-11-20T15:03:07" in parts["text/plain"]
    errors = [
        r for r in caplog.records if "30001|STANDARD|CHAT_DATE_FORMAT_PARSE_ERROR" in r.getMessage()
    ]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR  # once, for both parts
    assert "'yyyy-MM-dd bb'" in errors[0].getMessage()


# -------------------------------------------------------- legacy and no tag


def test_a_retried_send_renders_once() -> None:
    """Each attempt renders the request as queued: a retry after a temporary failure
    sends one transcript, not two."""
    with TestKernel([EP]) as kernel:
        kernel.sender.fail_next(SendError("421 4.3.2 try again later"))
        assert kernel.send(request(html=samples.template())).status == "Queued"
        kernel.clock.advance(30)
        assert kernel.run_outbox() == 1
        parts = sent_parts(kernel)
    assert parts["text/html"].count('<div class="transcript cx-theme">') == 1
    assert parts["text/plain"].count("Chat started:") == 1


def test_both_tags_in_an_html_part_make_the_text_part_in_their_places() -> None:
    html = (
        "<p>Summary:</p><Genesys_Chat_Transcript><Timestamp>HH:mm</Timestamp>"
        "</Genesys_Chat_Transcript><p>Legacy:</p>[ChatTranscript]<p>Lisa</p>"
    )
    with TestKernel([EP]) as kernel:
        kernel.send(request(html=html))
        parts = sent_parts(kernel)
    text = parts["text/plain"].splitlines()
    assert text[0:2] == ["Summary:", "Chat started: 15:03"]
    assert text[2:5] == [f"Duration: {DURATION}", f"Subject: {SUBJECT}", ""]
    assert text[5].startswith("[15:03] Jürgen Müller: Hallo")
    legacy = text.index("Legacy:")
    assert text[legacy + 1].startswith("[2026-11-20T15:03:09] Jürgen Müller: Hallo")
    assert text[-1] == "Lisa"  # the text after the legacy tag, its first letter kept
    assert parts["text/html"].count('<div class="transcript cx-theme">') == 2


def test_the_legacy_tag_in_the_text_part() -> None:
    with TestKernel([EP]) as kernel:
        kernel.send(request(text="Hello,\n\n[ChatTranscript]\n\nRegards"))
        parts = sent_parts(kernel)
    assert set(parts) == {"text/plain"}
    lines = parts["text/plain"].splitlines()
    assert lines[:2] == ["Hello,", ""]
    first = "Hallo, meine Rechnung enthält einen Posten doppelt."
    assert lines[2] == f"[2026-11-20T15:03:09] Jürgen Müller: {first}"
    assert lines[-1] == "Regards"
    assert "Chat started" not in parts["text/plain"]  # only the new tag adds the summary
    assert "[ChatTranscript]" not in parts["text/plain"]


def test_without_a_tag_the_transcript_is_appended() -> None:
    html = "<html><body><p>Thank you for chatting with us.</p></body></html>"
    with TestKernel([EP]) as kernel:
        kernel.send(request(html=html, text="Thank you for chatting with us."))
        parts = sent_parts(kernel)
    assert parts["text/html"].startswith("<html><body><p>Thank you for chatting with us.</p>")
    assert parts["text/html"].rstrip().endswith("</div>\n</body></html>")  # before </body>
    assert len(shown(fragment(parts["text/html"]))) == len(SHOWN)
    text = parts["text/plain"].splitlines()
    assert text[:2] == ["Thank you for chatting with us.", ""]
    assert text[-1] == "[2026-11-20T16:04:50] Anna Weber left the chat"


def test_a_request_without_a_transcript_is_left_alone() -> None:
    with TestKernel([EP]) as kernel:
        kernel.send(OutboundRequest(to=[CUSTOMER], from_addr="support@centre.example",
                                    subject="Hi", html="<p>[ChatTranscript]</p>"))  # fmt: skip
        parts = sent_parts(kernel)
    assert parts == {"text/html": "<p>[ChatTranscript]</p>\n"}


def test_inline_css_copies_the_rules_into_style_attributes() -> None:
    site = "transcript:\n  inline-css: true\n"
    with TestKernel([EP], site) as kernel:
        kernel.send(request(html=samples.template()))
        html = sent_parts(kernel)["text/html"]
    assert '<style type="text/css">' in html  # kept for the clients that read it
    assert 'class="message them" style="' in html
    them = html[html.index('class="message them" style="') :].split(">", 1)[0]
    assert "text-align: left" in them
    you = html[html.index('class="message you" style="') :].split(">", 1)[0]
    assert "text-align: right" in you


# ------------------------------------------------------- unreadable XML: 30002


T = '<chatTranscript startAt="2026-11-20T14:03:07Z">'
BOMB = (
    '<!DOCTYPE b [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
)
UNREADABLE = {
    "not XML": "this is not XML",
    "truncated": samples.sample("chat-transcript.xml")[:400],
    "wrong root": '<chatLog startAt="2026-11-20T14:03:07Z"/>',
    "no startAt": '<chatTranscript sessionId="x"/>',
    "bad startAt": '<chatTranscript startAt="yesterday"/>',
    "no timeShift": f'{T}<message userId="a"/></chatTranscript>',
    "bad timeShift": f'{T}<message userId="a" timeShift="x"/></chatTranscript>',
    "no userId": f'{T}<message timeShift="1"/></chatTranscript>',
    "no userInfo": f'{T}<newParty userId="a" timeShift="0"/></chatTranscript>',
    "no userType": f'{T}<newParty userId="a" timeShift="0"><userInfo/></newParty></chatTranscript>',
    "DTD": f"<!DOCTYPE chatTranscript [<!ELEMENT chatTranscript ANY>]>{T}</chatTranscript>",
    "entity bomb": f'{BOMB}{T}<message userId="a" timeShift="1"><msgText>&c;</msgText>'
    "</message></chatTranscript>",
    "external entity": '<!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    f'{T}<message userId="a" timeShift="1"><msgText>&x;</msgText></message></chatTranscript>',
    "empty": "",
}


@pytest.mark.parametrize("xml", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_xml_is_refused(xml: str) -> None:
    with pytest.raises(TranscriptError):
        parse(xml)
    assert plugin.postroom_veto(request(html="<p>x</p>", xml=xml)).startswith(
        "30002|STANDARD|CHAT_UNMARSHALL_ERROR: "
    )


def test_unreadable_xml_is_vetoed_with_30002_and_nothing_is_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = samples.xml().replace("</chatTranscript>", "")
    html = samples.template()
    with caplog.at_level(logging.ERROR), TestKernel([EP]) as kernel:
        outbound = kernel.send(request(html=html, xml=broken))
        assert kernel.sender.sent == []
        assert outbound.status == "Failed"
        error = str(outbound.attached_data["_SendError"])
        assert "vetoed by transcript: 30002|STANDARD|CHAT_UNMARSHALL_ERROR" in error
        assert [e.state for e in kernel.outbox()] == ["failed"]  # never retried
    logged = [r for r in caplog.records if "30002|STANDARD|CHAT_UNMARSHALL_ERROR" in r.getMessage()]
    assert logged and logged[0].levelno == logging.ERROR
    assert "Müller" not in caplog.text and "Rechnung" not in caplog.text  # no chat content


@pytest.mark.parametrize(
    ("option", "error"),
    [
        ("<chatTranscript/>", 'options: transcript must be an object: {"xml": "<chatTranscript'),
        ({"format": "x"}, "options: transcript: unknown key 'format' (known: xml)"),
        ({}, "options: transcript.xml must be the chat's XML (a non-empty string)"),
        ({"xml": " "}, "options: transcript.xml must be the chat's XML"),
        ({"xml": ["<chatTranscript/>"]}, "options: transcript.xml must be the chat's XML"),
    ],
)
def test_a_malformed_option_is_refused_when_queued(option: object, error: str) -> None:
    """The option's shape is the request's business (400 / exit 2, nothing queued);
    the XML in it is read when the e-mail is rendered (30002 fails that e-mail)."""
    with TestKernel([EP]) as kernel:
        bad = OutboundRequest(to=[CUSTOMER], text="x", options={"transcript": option})
        with pytest.raises(RequestError) as info:
            kernel.send(bad)
        assert info.value.field == "options" and str(info.value).startswith(error)
        assert kernel.outbox() == [] and kernel.interactions() == []
        # well-formed or not, XML in the right shape is queued: rendering reads it
        broken = kernel.send(request(text="x", xml="<chatTranscript"))
        assert broken.status == "Failed" and [e.state for e in kernel.outbox()] == ["failed"]


def test_options_without_xml_are_vetoed() -> None:
    """A request queued before the shape was checked (an older version) is still stopped."""
    bare = OutboundRequest(to=[CUSTOMER], text="x", options={"transcript": {"format": "x"}})
    reason = plugin.postroom_veto(bare)
    assert reason is not None and reason.startswith("30002|STANDARD|CHAT_UNMARSHALL_ERROR")
    assert plugin.postroom_veto(OutboundRequest(to=[CUSTOMER], text="x")) is None
