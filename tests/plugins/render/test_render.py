"""The ``render`` plugin: standard responses with field codes, through a TestKernel.

Each response is written to a library folder in ``tmp_path``; requests go through
the real outbox (render, veto, build) to the kernel's fake sender.
"""

from __future__ import annotations

import logging
import pickle
import shutil
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from twisted.internet import defer

from postroom.api import (
    ConfigError,
    Interaction,
    OutboundRequest,
    ParsedMessage,
    RequestError,
    SendError,
    hookimpl,
)
from postroom.testing import TestKernel, result_of
from postroom_render import plugin
from postroom_render.library import TemplateError, list_responses, load_response
from postroom_render.sandbox import Budget, Fields, RenderError, render_template

RENDER_EP = EntryPoint(name="render", value="postroom_render.plugin", group="postroom.plugins")
CONTACT = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@client.example"}
AGENT = {"FirstName": "Bob", "Signature": "Bob, support"}


def write_response(
    library: Path,
    response_id: str,
    *,
    subject: str | None = "Your request",
    text: str | None = None,
    html: str | None = None,
    attachments: dict[str, bytes] | None = None,
    meta: str | None = None,
) -> Path:
    folder = library / response_id
    folder.mkdir(parents=True)
    if meta is not None:
        (folder / "response.yaml").write_text(meta, encoding="utf-8")
    elif subject is not None:
        (folder / "response.yaml").write_text(
            yaml.safe_dump({"subject": subject, "description": "test response"}),
            encoding="utf-8",
        )
    if text is not None:
        (folder / "body.txt").write_text(text, encoding="utf-8")
    if html is not None:
        (folder / "body.html").write_text(html, encoding="utf-8")
    for name, data in (attachments or {}).items():
        (folder / "attachments").mkdir(exist_ok=True)
        (folder / "attachments" / name).write_bytes(data)
    return folder


class Tagger:
    """Gives inbound interactions attached data, as a classifier would."""

    @hookimpl
    def postroom_enrich(self, interaction: Interaction) -> None:
        interaction.attached_data["OrderId"] = "4711"
        interaction.attached_data["crm.Tier"] = "gold"


INBOUND = (
    b"From: Ann Lee <ann@client.example>\r\nTo: support@centre.example\r\n"
    b"Subject: Where is my order?\r\nMessage-ID: <q1@client.example>\r\n"
    b"Date: Sun, 06 Dec 2026 10:00:00 +0000\r\n\r\nPlease help.\r\n"
)


@pytest.fixture
def library(tmp_path: Path) -> Path:
    folder = tmp_path / "responses"
    folder.mkdir()
    return folder


def make_kernel(library: Path, extra: str = "") -> TestKernel:
    site = f"standard-responses:\n  directory: {library}\n{extra}"
    return TestKernel([("tagger", Tagger()), ("render", plugin)], site)


@pytest.fixture
def kernel(library: Path) -> Iterator[TestKernel]:
    with make_kernel(library) as made:
        yield made


def request(response_id: str, **extra: Any) -> OutboundRequest:
    spec: dict[str, Any] = {
        "id": response_id,
        "fields": {"Contact": dict(CONTACT), "Agent": dict(AGENT)},
    }
    spec.update(extra.pop("spec", {}))
    return OutboundRequest(
        to=["ann@client.example"],
        from_addr="support@centre.example",
        options={"standard_response": spec},
        **extra,
    )


def send(kernel: TestKernel, req: OutboundRequest) -> Interaction:
    return kernel.send(req)


def outbound(kernel: TestKernel) -> list[Interaction]:
    return [i for i in kernel.interactions() if i.type == "Outbound"]


def refused_at_queue(kernel: TestKernel, req: OutboundRequest) -> RequestError:
    """*req* is refused when queued (a 400 / exit 2, field ``options``): nothing stored."""
    with pytest.raises(RequestError) as info:
        kernel.send(req)
    assert info.value.field == "options"
    assert kernel.outbox() == [] and outbound(kernel) == [] and kernel.sender.sent == []
    return info.value


def queued_then(kernel: TestKernel, req: OutboundRequest, change: Any) -> Interaction:
    """*req* queued while its response is fine (its first attempt fails for a
    reason of the sender's), then *change* (the site edits its library), then the
    retry: the outbound interaction as stored after it."""
    kernel.sender.fail_next(SendError("421 try again later"))
    first = kernel.send(req)
    assert first.status == "Queued", first.attached_data
    change()
    kernel.clock.advance(30)
    assert kernel.run_outbox() == 1
    found = kernel.interaction(first.id)
    assert found is not None
    return found


def sent_parts(kernel: TestKernel) -> tuple[str, str | None, str | None]:
    [sent] = kernel.sender.sent
    message = sent.message
    html = message.get_body(("html",))
    return (
        str(message["Subject"]),
        sent.text,
        None if html is None else str(html.get_content()).replace("\r\n", "\n"),  # type: ignore[attr-defined]
    )


def render(source: str, values: dict[str, Any] | None = None, *, html: bool = False,
           limit: int = 100_000) -> tuple[str, Budget, list[str]]:  # fmt: skip
    """One template straight through the sandbox: output, budget, missing names."""
    budget, missing = Budget(limit), []
    variables = values if values is not None else {"Contact": Fields("Contact", CONTACT)}
    out = render_template(source, "t/body.txt", variables, html=html, budget=budget,
                          missing=missing)  # fmt: skip
    return out, budget, missing


def refused(source: str, **kwargs: Any) -> str:
    with pytest.raises(RenderError) as info:
        render(source, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------ packaging


def test_the_entry_point_is_the_plugin_with_its_hooks(library: Path) -> None:
    assert RENDER_EP.load() is plugin
    site = f"standard-responses:\n  directory: {library}\n"
    with TestKernel([RENDER_EP], site) as kernel:
        assert kernel.plugins[-1] == "render"
        assert kernel.hooks_of("render") == [
            "postroom_add_options",
            "postroom_configure",
            "postroom_register_commands",
            "postroom_register_routes",
            "postroom_render",
            "postroom_validate_request",
            "postroom_veto",
        ]


# ------------------------------------------------------------------ rendering


def test_a_subject_the_request_gives_wins_over_the_templates(
    kernel: TestKernel, library: Path
) -> None:
    """The template's subject replaces only what the kernel filled in for a
    reply (``Re: <parent's subject>``), never a subject the agent wrote."""
    write_response(library, "short", subject="From the template", text="Hello\n")
    [parent] = kernel.ingest(INBOUND)
    result = send(kernel, request("short", in_reply_to=parent.id, subject="Written by the agent"))
    assert result.status == "Sent", result.attached_data
    assert sent_parts(kernel)[0] == "Written by the agent"


def test_a_template_without_a_subject_keeps_the_replys(kernel: TestKernel, library: Path) -> None:
    write_response(library, "no-subject", subject=None, text="Hello\n")
    [parent] = kernel.ingest(INBOUND)
    result = send(kernel, request("no-subject", in_reply_to=parent.id))
    assert result.status == "Sent", result.attached_data
    assert sent_parts(kernel)[0] == "Re: Where is my order?"


def test_contact_agent_interaction_and_attached_data_fill_both_parts(
    kernel: TestKernel, library: Path
) -> None:
    write_response(
        library,
        "order-status",
        subject="Re: <$ Interaction.Subject $> [<$ Interaction.AttachedData['OrderId'] $>]",
        text='Dear <$ Contact.FirstName + " " + Contact.LastName $>,\n'
        "you wrote on <$ Interaction.DateCreated $> from <$ Interaction.FromAddress $>.\n"
        "Order <$ Interaction.AttachedData.OrderId $>, "
        "tier <$ Interaction.AttachedData['crm.Tier'] $>.\n"
        "<$ Agent.Signature $>\n",
        html="<p>Dear <$ Contact.FirstName $>,</p><p><$ Agent.Signature $></p>",
    )
    [parent] = kernel.ingest(INBOUND)
    result = send(kernel, request("order-status", in_reply_to=parent.id))
    assert result.status == "Sent", result.attached_data
    subject, text, html = sent_parts(kernel)
    assert subject == "Re: Where is my order? [4711]"
    created = parent.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert text == (
        "Dear Ann Lee,\n"
        f"you wrote on {created} from ann@client.example.\n"
        "Order 4711, tier gold.\n"
        "Bob, support\n"
    )
    assert html == "<p>Dear Ann,</p><p>Bob, support</p>\n"


def test_the_request_subject_wins_and_a_text_only_template_keeps_no_html(
    kernel: TestKernel, library: Path
) -> None:
    write_response(library, "hello", subject="From the template", text="Hi <$ Contact.FirstName $>")
    result = send(kernel, request("hello", subject="Agent's own subject"))
    assert result.status == "Sent"
    subject, text, html = sent_parts(kernel)
    assert (subject, text, html) == ("Agent's own subject", "Hi Ann\n", None)


def test_a_missing_field_renders_empty_and_is_logged_by_name(
    kernel: TestKernel, library: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_response(
        library,
        "missing",
        text="[<$ Contact.MiddleName $>][<$ Contact.FirstName + Contact.Title $>]"
        "[<$ Interaction.Subject $>][<$ Nothing.At.All $>][<$ -Contact.Age $>]",
    )
    with caplog.at_level(logging.WARNING, logger="postroom_render.plugin"):
        result = send(kernel, request("missing"))
    assert result.status == "Sent", result.attached_data
    assert sent_parts(kernel)[1] == "[][Ann][][][]\n"
    [record] = [r for r in caplog.records if "missing field" in r.getMessage()]
    message = record.getMessage()
    for name in ("Contact.MiddleName", "Contact.Title", "Interaction.Subject", "Nothing",
                 "Contact.Age"):  # fmt: skip
        assert name in message
    assert "Ann" not in message and "Lee" not in message  # names, never values


def test_values_are_escaped_in_html_and_plain_in_text(kernel: TestKernel, library: Path) -> None:
    write_response(
        library,
        "escape",
        subject="For <$ Contact.LastName $>",
        text="Name: <$ Contact.LastName $>",
        html='<b>Name:</b> <$ Contact.LastName + " & co" $>',
    )
    req = request("escape")
    req.options["standard_response"]["fields"]["Contact"]["LastName"] = "<script>alert(1)</script>"
    assert send(kernel, req).status == "Sent"
    subject, text, html = sent_parts(kernel)
    assert text == "Name: <script>alert(1)</script>\n"
    assert html == "<b>Name:</b> &lt;script&gt;alert(1)&lt;/script&gt; &amp; co\n"
    assert subject == "For <script>alert(1)</script>"


def test_a_line_break_in_a_value_does_not_reach_the_subject_header(
    kernel: TestKernel, library: Path
) -> None:
    write_response(library, "subj", subject="Hello <$ Contact.FirstName $>", text="x")
    req = request("subj")
    req.options["standard_response"]["fields"]["Contact"]["FirstName"] = (
        "Ann\r\nBcc: x@evil.example"
    )
    assert send(kernel, req).status == "Sent"
    [sent] = kernel.sender.sent
    assert sent.message["Subject"] == "Hello Ann Bcc: x@evil.example"
    assert sent.message["Bcc"] is None
    assert sent.envelope.rcpt_to == ["ann@client.example"]


def test_ext_agent_reply_is_replaced_escaped_with_line_breaks_kept(
    kernel: TestKernel, library: Path
) -> None:
    write_response(
        library,
        "bot",
        text="Hello,\n[ExtAgentReply]\nRegards",
        html="<p>[ExtAgentReply]</p>",
    )
    req = request("bot", spec={"ext_reply_text": "Try <this>:\nrestart & retry <$ Agent $>"})
    assert send(kernel, req).status == "Sent"
    _, text, html = sent_parts(kernel)
    # the external text is data: its own "<$ ... $>" is not evaluated
    assert text == "Hello,\nTry <this>:\nrestart & retry <$ Agent $>\nRegards\n"
    assert html == "<p>Try &lt;this&gt;:<br>\nrestart &amp; retry &lt;$ Agent $&gt;</p>\n"


# ------------------------------------------------------------------ refusals


def test_an_unknown_id_is_refused_when_queued_and_nothing_is_queued(kernel: TestKernel) -> None:
    error = refused_at_queue(kernel, request("no-such-response"))
    assert str(error) == "options: standard_response: no standard response 'no-such-response'"


def test_a_response_removed_after_queueing_is_vetoed_and_nothing_is_sent(
    kernel: TestKernel, library: Path
) -> None:
    """The send-time veto stays the safety net for a library edited meanwhile."""
    folder = write_response(library, "gone", text="Hello")
    result = queued_then(kernel, request("gone"), lambda: shutil.rmtree(folder))
    assert result.status == "Failed"
    error = str(result.attached_data["_SendError"])
    assert error == "vetoed by render: standard response: no standard response 'gone'"
    assert kernel.sender.sent == []
    assert [e.state for e in kernel.outbox()] == ["failed"]


@pytest.mark.parametrize("bad_id", ["../secret", "..", "/etc/passwd", ".hidden", "a/b", ""])
def test_an_id_that_is_a_path_opens_nothing_outside_the_library(
    kernel: TestKernel, library: Path, bad_id: str
) -> None:
    secret = library.parent / "secret"
    secret.mkdir()
    (secret / "body.txt").write_text("TOP SECRET", encoding="utf-8")
    error = refused_at_queue(kernel, request(bad_id))
    assert "TOP SECRET" not in str(error)
    req = request(bad_id)  # rendered all the same (a request queued before): vetoed
    assert "TOP SECRET" not in str(render_with(kernel, PickledRunner(), req))


def test_a_template_that_cannot_be_rendered_is_refused_with_its_file_and_line(
    kernel: TestKernel, library: Path
) -> None:
    write_response(library, "broken", text="line one\nHello <$ Contact.FirstName $\n")
    error = refused_at_queue(kernel, request("broken"))
    assert str(error).startswith("options: standard_response: broken/body.txt:2: ")


def test_a_template_broken_after_queueing_is_vetoed_with_its_file_and_line(
    kernel: TestKernel, library: Path
) -> None:
    folder = write_response(library, "later", text="fine")

    def break_it() -> None:
        (folder / "body.txt").write_text("line one\nHello <$ Contact.FirstName $\n")

    result = queued_then(kernel, request("later"), break_it)
    assert result.status == "Failed"
    assert "later/body.txt:2:" in str(result.attached_data["_SendError"])
    assert kernel.sender.sent == []


def test_a_planted_render_error_is_refused_and_never_sticks(
    kernel: TestKernel, library: Path
) -> None:
    """A caller cannot veto by hand: the key is refused when queued, and render always
    replaces it (a fixed request is not refused for an old reason)."""
    write_response(library, "fine", text="ok")
    error = refused_at_queue(kernel, request("fine", spec={"_render_error": "planted"}))
    assert "unknown key(s) '_render_error'" in str(error)
    planted = request("fine", spec={"_render_error": "x"})
    assert render_with(kernel, PickledRunner(), planted) is None


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("order-status", "options: standard_response must be an object"),
        ({"id": 7}, "options: standard_response.id must be a non-empty string"),
        ({"id": "x", "fields": {"Customer": {}}}, "unknown group 'Customer'"),
        ({"id": "x", "fields": {"Contact": {"A": [1]}}}, "Contact.A must be a string"),
        ({"id": "x", "fields": {"Contact": {"A": None}}}, "Contact.A must be a string"),
        ({"id": "x", "fields": {"Contact": {"A b": "1"}}}, "'A b' is not a field name"),
        ({"id": "x", "fields": {"Contact": {"A": "x" * 65536}}}, "longer than 65535"),
        ({"id": "x", "fields": {"Contact": {f"F{n}": 1 for n in range(201)}}}, "more than 200"),
        ({"id": "x", "colour": "red"}, "unknown key(s) 'colour'"),
        ({"id": "x", "ext_reply_text": 3}, "ext_reply_text must be a string"),
        ({"id": "x", "ext_reply_text": "x" * 1_048_577}, "ext_reply_text: longer than 1048576"),
    ],
)
def test_a_malformed_option_is_refused_when_queued(
    kernel: TestKernel, spec: Any, reason: str
) -> None:
    req = OutboundRequest(to=["ann@client.example"], options={"standard_response": spec})
    assert reason in str(refused_at_queue(kernel, req))
    # a request queued before (by an older version) is still vetoed when sent
    req = OutboundRequest(to=["ann@client.example"], options={"standard_response": spec})
    veto = render_with(kernel, PickledRunner(), req)
    assert veto is not None and reason.removeprefix("options: ") in veto


def test_without_a_library_a_standard_response_is_refused() -> None:
    with TestKernel([("render", plugin)]) as kernel:
        error = refused_at_queue(kernel, request("x"))
    assert str(error) == (
        "options: standard_response: no standard-responses.directory is configured"
    )


def test_a_required_field_without_value_is_refused_and_others_render_empty(
    kernel: TestKernel, library: Path
) -> None:
    """A missing field renders empty unless the response requires it (response.yaml)."""
    write_response(
        library,
        "strict",
        meta="subject: Hi\nrequired: [Contact.FirstName, Agent.Signature]\n",
        text="<$ Contact.FirstName $> <$ Contact.Title $>\n<$ Agent.Signature $>",
    )
    for fields in ({"Contact": {"LastName": "Lee"}, "Agent": dict(AGENT)},
                   {"Contact": {"FirstName": "  "}, "Agent": dict(AGENT)},
                   {"Contact": dict(CONTACT)}):  # fmt: skip
        error = refused_at_queue(kernel, request("strict", spec={"fields": fields}))
        assert "requires" in str(error) and "(required in its response.yaml)" in str(error)
        assert getattr(error, "key", None) == "fields"
    error = refused_at_queue(kernel, request("strict", spec={"fields": {}}))
    assert "requires Contact.FirstName, Agent.Signature" in str(error)
    assert send(kernel, request("strict")).status == "Sent"  # Contact.Title: empty
    assert sent_parts(kernel)[1] == "Ann \nBob, support\n"


def test_required_interaction_values_and_the_external_text(
    kernel: TestKernel, library: Path
) -> None:
    write_response(
        library,
        "bot",
        meta="required: [Interaction.AttachedData.OrderId, Interaction.Subject, ExtAgentReply]\n",
        text="[ExtAgentReply] <$ Interaction.AttachedData.OrderId $>",
    )
    error = refused_at_queue(kernel, request("bot", spec={"ext_reply_text": "Done."}))
    assert "requires Interaction.AttachedData.OrderId, Interaction.Subject " in str(error)
    assert getattr(error, "key", None) == "in_reply_to"  # no parent: nothing to read
    [parent] = kernel.ingest(INBOUND)
    error = refused_at_queue(kernel, request("bot", in_reply_to=parent.id))
    assert "requires ExtAgentReply " in str(error)
    assert getattr(error, "key", None) == "ext_reply_text"
    result = send(kernel, request("bot", in_reply_to=parent.id, spec={"ext_reply_text": "Done."}))
    assert result.status == "Sent"
    assert sent_parts(kernel)[1] == "Done. 4711\n"


@pytest.mark.parametrize(
    ("meta", "where"),
    [
        ("required: Contact.FirstName\n", "response.yaml:1: required must be a list"),
        ("required: [Customer.Name]\n", "response.yaml:1: required: 'Customer.Name' is not a"),
        ("required: [Interaction.Colour]\n", "response.yaml:1: required: 'Interaction.Colour'"),
        ("required:\n  - [a]\n", "response.yaml:2: required: '(not a name)' is not a field"),
    ],
)
def test_a_bad_required_list_names_the_file_and_line(
    library: Path, meta: str, where: str
) -> None:
    write_response(library, "bad", meta=meta, text="x")
    with pytest.raises(TemplateError) as info:
        load_response(library, "bad", 1000)
    assert f"{library / 'bad'}/{where}" in str(info.value)


def test_a_request_without_the_option_is_left_alone(kernel: TestKernel) -> None:
    req = OutboundRequest(to=["ann@client.example"], subject="plain", text="as written")
    assert send(kernel, req).status == "Sent"
    assert sent_parts(kernel) == ("plain", "as written\n", None)


# ------------------------------------------------------------------ sandbox

ESCAPES = [
    "<$ Contact.__class__ $>",
    "<$ Contact.__class__.__mro__[1].__subclasses__() $>",
    "<$ Contact.FirstName.__class__.__base__.__subclasses__() $>",
    "<$ Contact.FirstName.mro() $>",
    "<$ ''.__class__.mro()[1].__subclasses__() $>",
    "<$ Contact.lookup.__globals__ $>",
    "<$ Contact._values $>",
    "<$ Contact.FirstName.format $>",
    "<$ '{0.__class__.__init__.__globals__}'.format(Contact) $>",
    "<$ Contact.FirstName.format_map(Contact) $>",
    "<$ cycler.__init__.__globals__.os.popen('id').read() $>",
    "<$ joiner.__init__.__globals__ $>",
    "<$ namespace.__init__.__globals__ $>",
    "<$ lipsum.__globals__['os'].listdir('/') $>",
    "<$ self.__init__.__globals__.__builtins__ $>",
    "<$ self._TemplateReference__context $>",
    "<$ config $><$ request $><$ environment $><$ context $>",
    "<$ __import__('os').system('touch pwned') $>",
    "<$ import os $>",
    "<$ open('/etc/passwd').read() $>",
    "<$ range(10**9) $>",
    "<$ dict(a=1) $>",
    "<$ Contact|attr('__class__') $>",
    "<$ Contact.FirstName|map('upper') $>",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_escape_attempts_render_empty_or_are_refused(source: str) -> None:
    try:
        out, budget, _ = render(source)
    except RenderError as exc:
        assert "t/body.txt" in str(exc)
        return
    assert out.strip() == ""
    assert budget.spent < 100


def test_reading_a_file_is_impossible(kernel: TestKernel, library: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET", encoding="utf-8")
    write_response(
        library,
        "reader",
        text=f"[<$ open('{secret}').read() $>][<$ self.__init__.__globals__['__builtins__']"
        f"['open']('{secret}').read() $>]",
    )
    result = send(kernel, request("reader"))
    assert result.status == "Sent"
    assert sent_parts(kernel)[1] == "[][]\n"


def test_a_huge_string_is_refused_before_it_is_made() -> None:
    reason = refused('<$ ("ab"*50000000)|length $>', limit=1_000_000)
    assert "budget of 1000000 characters" in reason
    budget = Budget(1_000_000)
    with pytest.raises(RenderError):
        render_template('<$ ("ab"*50000000)|length $>', "t", {}, html=False, budget=budget,
                        missing=[])  # fmt: skip
    assert (budget.spent, budget.refused) == (0, 1)  # nothing was made


def test_the_budget_counts_every_value_including_repeated_field_reads() -> None:
    values = {"Contact": Fields("Contact", {"Big": "x" * 30_000})}
    source = "<$ " + " ~ ".join(["Contact.Big"] * 100) + " $>"
    budget = Budget(1_000_000)
    with pytest.raises(RenderError):
        render_template(source, "t", values, html=False, budget=budget, missing=[])
    assert budget.refused == 1 and budget.spent <= 1_000_000


@pytest.mark.parametrize(
    "source",
    [
        "<$ 'x' * 600000 + 'y' * 600000 $>",
        "<$ ['a'] * 10**7 $>",
        "<$ 'ab' * 600000 $><$ 'ab' * 600000 $>",
        "<$ ('x' * 500000)|upper|lower|title $>",
    ],
)
def test_repetition_and_filters_are_charged(source: str) -> None:
    reason = refused(source, limit=1_000_000)
    assert "budget" in reason


@pytest.mark.parametrize("source", ["<$ 2 ** 100000 $>", "<$ 10 ** (10 ** 10) $>",
                                    "<$ (2 ** 4000) * (2 ** 4000) $>"])  # fmt: skip
def test_huge_numbers_are_refused(source: str) -> None:
    assert "4096 bits" in refused(source)


def test_deep_nesting_is_refused_not_a_crash() -> None:
    assert "nested too deeply" in refused("<$ " + "(" * 5000 + "1" + ")" * 5000 + " $>")


def test_string_formatting_is_refused() -> None:
    assert "string formatting" in refused('<$ "%999999999d" % 1 $>')


def test_block_and_comment_syntax_is_plain_text() -> None:
    source = (
        "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}"
        "{{ 7 * 7 }}{# hidden #}{%- raw %}"
    )
    out, budget, _ = render(source)
    assert out == source
    assert budget.spent == 0


def test_a_template_with_a_nul_is_refused_at_load(library: Path) -> None:
    write_response(library, "nul", text="a\x00<")
    with pytest.raises(TemplateError, match=r"nul/body\.txt: contains a NUL"):
        load_response(library, "nul", 1000)


def test_a_template_over_the_size_limit_is_refused(kernel: TestKernel, library: Path) -> None:
    folder = write_response(library, "big", text="x")
    (folder / "body.txt").write_text("x" * 300_000)  # after start-up read the library
    error = refused_at_queue(kernel, request("big"))
    assert "larger than the template limit of 262144 bytes" in str(error)


def test_the_output_limit_is_the_sites(library: Path) -> None:
    write_response(library, "rep", text="<$ 'x' * 2000 $>")
    with make_kernel(library, "  max-output-size: 1KB\n") as kernel:
        error = refused_at_queue(kernel, request("rep"))
    assert "budget of 1024 characters" in str(error)


def test_strings_and_numbers_concatenate_and_slices_work() -> None:
    out, _, _ = render("<$ Contact.FirstName + 1 $>|<$ Contact.FirstName[1:] $>|<$ 3 + 4 $>")
    assert out == "Ann1|nn|7"


# ------------------------------------------------------------------ library


def test_the_library_lists_ids_subjects_parts_and_attachments(library: Path) -> None:
    write_response(library, "b-html", subject="B", html="<p>b</p>",
                   attachments={"terms.pdf": b"%PDF-1.4 terms", "a.txt": b"hello"})  # fmt: skip
    write_response(library, "a-both", subject="A", text="a", html="<p>a</p>")
    listing = list_responses(library, 1000)
    assert [(r.id, r.subject, r.parts, r.attachments) for r in listing] == [
        ("a-both", "A", ("text", "html"), ()),
        ("b-html", "B", ("html",), (("a.txt", 5), ("terms.pdf", 14))),
    ]
    assert listing[0].description == "test response"


@pytest.mark.parametrize(
    ("meta", "where"),
    [
        ("subject: [unclosed\n", "response.yaml:2"),
        ("subject: ok\ncolour: red\n", "response.yaml:2: unknown key 'colour'"),
        ("subject: ok\nsubject: again\n", "response.yaml:2: subject given twice"),
        ("description: ok\nsubject: 42\n", "response.yaml:2: subject must be a string"),
        ("- a list\n", "response.yaml:1: expected a mapping"),
    ],
)
def test_loading_errors_name_the_file_and_line(library: Path, meta: str, where: str) -> None:
    write_response(library, "bad", meta=meta, text="x")
    with pytest.raises(TemplateError) as info:
        load_response(library, "bad", 1000)
    assert f"{library / 'bad'}/{where}" in str(info.value)


def test_a_response_without_a_body_is_an_error(library: Path) -> None:
    write_response(library, "empty", subject="S")
    with pytest.raises(TemplateError, match=r"has neither body\.txt nor body\.html"):
        load_response(library, "empty", 1000)


def test_a_broken_library_is_a_configuration_error_naming_the_file(library: Path) -> None:
    write_response(library, "bad", meta="subject: ok\ncolour: red\n", text="x")
    with pytest.raises(ConfigError) as info:
        make_kernel(library)
    assert "bad/response.yaml:2: unknown key 'colour'" in str(info.value)
    assert info.value.line == 2  # the site file's line of `directory`


def test_a_missing_library_folder_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        make_kernel(tmp_path / "nowhere")


def test_a_parsed_message_is_not_touched(kernel: TestKernel) -> None:
    """The plugin has no inbound hooks: an inbound interaction gets no keys of its."""
    interaction = kernel.enrich(ParsedMessage(from_addr="a@b.example", subject="s"))
    assert "_PluginErrors" not in interaction.attached_data


# ------------------------------------------------------------------ worker processes


class OverBudget(Exception):
    """Named as the kernel's worker-pool error (not part of postroom.api)."""


class PickledRunner:
    """A cpu_runner that sends the call's arguments and result through pickle, as
    the kernel's worker processes do, or fails as a killed worker does."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.failure = failure

    def run(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        self.calls.append(fn.__name__)
        if self.failure is not None:
            return defer.fail(self.failure)
        result = fn(*pickle.loads(pickle.dumps(args)))
        return defer.succeed(pickle.loads(pickle.dumps(result)))


def render_with(kernel: TestKernel, runner: PickledRunner, req: OutboundRequest) -> str | None:
    ctx = attrs.evolve(kernel.ctx, cpu_runner=runner)
    result_of(defer.ensureDeferred(plugin.postroom_render(req, ctx, {})))
    return plugin.postroom_veto(req)


def test_rendering_runs_in_the_budgeted_workers_when_there_are_some(
    kernel: TestKernel, library: Path
) -> None:
    write_response(library, "w", text="Hi <$ Contact.FirstName $> <$ Contact.Nope $>")
    [parent] = kernel.ingest(INBOUND)
    runner = PickledRunner()
    req = request("w", in_reply_to=parent.id)
    assert render_with(kernel, runner, req) is None
    assert runner.calls == ["render_response"]
    assert req.text == "Hi Ann "


def test_a_worker_killed_for_its_budget_vetoes_the_request(
    kernel: TestKernel, library: Path
) -> None:
    write_response(library, "w", text="x")
    runner = PickledRunner(OverBudget("analysis used more than 30 s of CPU time"))
    reason = render_with(kernel, runner, request("w"))
    assert reason == "standard response: w: analysis used more than 30 s of CPU time"


def test_another_worker_failure_is_retried_not_vetoed(kernel: TestKernel, library: Path) -> None:
    write_response(library, "w", text="x")
    with pytest.raises(RuntimeError, match="pool is stopped"):
        render_with(kernel, PickledRunner(RuntimeError("the worker pool is stopped")), request("w"))


def test_ext_agent_reply_without_the_text_renders_empty_and_is_logged(
    kernel: TestKernel, library: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_response(library, "bot", text="[[ExtAgentReply]]")
    with caplog.at_level(logging.WARNING, logger="postroom_render.plugin"):
        assert send(kernel, request("bot")).status == "Sent"
    assert sent_parts(kernel)[1] == "[]\n"
    assert any("ExtAgentReply" in r.getMessage() for r in caplog.records)


def test_a_missing_key_computed_from_a_value_is_not_logged_by_that_value() -> None:
    values = {
        "Contact": Fields("Contact", CONTACT),
        "Interaction": Fields(
            "Interaction", {"AttachedData": Fields("Interaction.AttachedData", {})}
        ),
    }
    out, _, missing = render(
        '<$ Interaction.AttachedData["OrderId"] $>'
        "<$ Interaction.AttachedData[Contact.FirstName] $>",
        values,
    )
    assert out == ""
    assert missing == ["Interaction.AttachedData[OrderId]", "Interaction.AttachedData[?]"]
