"""The render plugin's commands and routes: ``postroom responses list|show``,
``GET /responses[/{id}]`` and ``POST /ext-reply`` (the product's
``ReplyFromExtResource``); and its queue-time refusals over HTTP and the CLI.

HTTP through the real Twisted API (the harness of ``tests/kernel/test_web.py``),
the CLI as a user runs it (a subprocess).
"""

from __future__ import annotations

import email
import json
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest

from postroom_render.extreply import QUEUE_KEY
from tests.conftest import run
from tests.kernel.test_cli import postroom
from tests.kernel.test_replies import ingest
from tests.kernel.test_web import Server, serving
from tests.plugins.render.test_render import write_response

INBOUND = (
    b"From: Ann Lee <ann@client.example>\r\nTo: support@centre.example\r\n"
    b"Subject: Where is my order?\r\nMessage-ID: <q1@client.example>\r\n"
    b"Date: Sun, 06 Dec 2026 10:00:00 +0000\r\n\r\nPlease help.\r\n"
)
BOT = "Hello <$ Contact.FirstName $>,\n[ExtAgentReply]\n-- <$ Agent.Signature $>\n"


@pytest.fixture
def site(quickstart: Path) -> Path:
    """The quickstart site with a library of two responses."""
    library = quickstart.parent / "responses"
    library.mkdir()
    write_response(
        library,
        "bot-answer",
        meta="subject: 'Re: <$ Interaction.Subject $>'\ndescription: a bot's answer\n"
        "required: [ExtAgentReply]\n",
        text=BOT,
        html="<p>[ExtAgentReply]</p>",
        attachments={"terms.txt": b"terms"},
    )
    write_response(library, "thanks", subject="Thanks", text="Thank you, <$ Contact.Title $>.")
    quickstart.write_text(
        quickstart.read_text()
        + "standard-responses: {directory: responses, max-output-size: 64KB}\n"
    )
    return quickstart


@pytest.fixture
def api(site: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Server]:
    with serving(caplog, site, enabled=["render"]) as server:
        yield server


def outbound_count(server: Server) -> int:
    found = run(server.kernel.store.list_interactions(100, 0, None))
    return len([i for i in found if i.type == "Outbound"])


# ------------------------------------------------------------------- listing

BOT_LISTED = {
    "id": "bot-answer",
    "subject": "Re: <$ Interaction.Subject $>",
    "description": "a bot's answer",
    "parts": ["text", "html"],
    "fields": ["Interaction.Subject", "Contact.FirstName", "ExtAgentReply", "Agent.Signature"],
    "required": ["ExtAgentReply"],
    "attachments": [{"name": "terms.txt", "size": 5}],
}


def test_get_responses_lists_the_library(api: Server) -> None:
    code, body = api.get("/responses")
    assert code == 200 and body["problems"] == []
    assert [r["id"] for r in body["responses"]] == ["bot-answer", "thanks"]
    assert body["responses"][0] == BOT_LISTED
    assert body["responses"][1]["fields"] == ["Contact.Title"]


def test_get_one_response_shows_its_templates_too(api: Server) -> None:
    code, body = api.get("/responses/bot-answer")
    assert code == 200 and body == {**BOT_LISTED, "text": BOT, "html": "<p>[ExtAgentReply]</p>"}
    assert api.get("/responses/nope") == (404, {"error": "no standard response 'nope'"})
    code, body = api.get("/responses/..%2Fsecret")
    assert code == 404 and "is not a standard response id" in body["error"]


def test_a_broken_response_is_reported_beside_the_others(api: Server, site: Path) -> None:
    (site.parent / "responses" / "thanks" / "response.yaml").write_text("colour: red\n")
    code, body = api.get("/responses")
    assert code == 200 and [r["id"] for r in body["responses"]] == ["bot-answer"]
    [problem] = body["problems"]
    assert problem.endswith("thanks/response.yaml:1: unknown key 'colour' (known: subject, "
                            "description, required)")  # fmt: skip
    code, body = api.get("/responses/thanks")
    assert code == 500 and "unknown key 'colour'" in body["error"]


def test_the_listing_sits_behind_the_token(api: Server) -> None:
    assert api.get("/responses", token="x" * 20)[0] == 401


def test_without_a_library_the_listing_says_so(quickstart: Path, caplog: Any) -> None:
    with serving(caplog, quickstart, enabled=["render"]) as server:
        assert server.get("/responses") == (
            404, {"error": "no standard-responses.directory is configured"}
        )  # fmt: skip


def test_postroom_responses_list_and_show(site: Path) -> None:
    listed = postroom("responses", "list", "-c", str(site))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "ID          PARTS      ATTACHMENTS  SUBJECT",
        "bot-answer  text,html  1            Re: <$ Interaction.Subject $>",
        "thanks      text       0            Thanks",
    ]
    as_json = postroom("responses", "list", "-c", str(site), "--json")
    first = as_json.stdout.splitlines()[0]
    assert json.loads(first) == BOT_LISTED
    shown = postroom("responses", "show", "-c", str(site), "bot-answer")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("id: bot-answer\nsubject: Re: <$ Interaction.Subject $>\n")
    assert "required: ExtAgentReply\nattachments: terms.txt (5 bytes)\n" in shown.stdout
    assert shown.stdout.endswith(f"--- body.txt\n{BOT}\n--- body.html\n<p>[ExtAgentReply]</p>\n")
    one = postroom("responses", "show", "-c", str(site), "bot-answer", "--json")
    assert json.loads(one.stdout)["text"] == BOT


def test_postroom_responses_failures(site: Path, quickstart: Path) -> None:
    unknown = postroom("responses", "show", "-c", str(site), "nope")
    assert (unknown.returncode, unknown.stderr) == (1, "error: no standard response 'nope'\n")
    (site.parent / "responses" / "thanks" / "body.txt").write_bytes(b"\xff")
    broken = postroom("responses", "list", "-c", str(site))  # the site is read first
    assert broken.returncode == 2 and "thanks/body.txt: not UTF-8" in broken.stderr
    site.write_text(site.read_text().replace("directory: responses, ", ""))
    bare = postroom("responses", "list", "-c", str(site))
    assert bare.returncode == 2
    assert bare.stderr == f"error: no standard-responses.directory is configured in {site}\n"


# -------------------------------------------------- refusals when queued (CLI)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"id": "nope"}, "--option: standard_response: no standard response 'nope'"),
        ({"id": "bot-answer"}, "--option: standard_response: standard response 'bot-answer' "
                               "requires ExtAgentReply (required in its response.yaml): missing"),
        ({"id": "thanks", "fields": {"Contact": {"Title": " "}}},
         "--option: standard_response: standard response 'thanks' requires Contact.Title"),
        ({"id": "thanks", "fields": {"Contact": {"Title": {}}}},
         "--option: standard_response.fields.Contact.Title must be a string"),
    ],
)  # fmt: skip
def test_postroom_send_and_render_refuse_what_the_library_cannot_send_with_exit_2(
    site: Path, spec: dict[str, Any], error: str
) -> None:
    """An unknown standard response, a missing field value, a value of the wrong type."""
    (site.parent / "responses" / "thanks" / "response.yaml").write_text(
        "subject: Thanks\nrequired: [Contact.Title]\n"
    )
    option = f"standard_response={json.dumps(spec)}"
    result = postroom("send", "-c", str(site), "--to", "a@x.example", "--option", option)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {error}"), result.stderr
    assert not (site.parent / "outbox").exists()
    listed = postroom("interactions", "list", "-c", str(site), "--json")
    assert listed.returncode == 0 and listed.stdout == ""
    request = {"to": "a@x.example", "options": {"standard_response": spec}}
    rendered = postroom("render", "-c", str(site), stdin=json.dumps(request))
    assert rendered.returncode == 2
    assert rendered.stderr.startswith("error: " + error.replace("--option", "options", 1))


# ------------------------------------------------- refusals when queued (HTTP)


def test_post_send_refuses_what_the_library_cannot_send_with_a_400(api: Server) -> None:
    for spec, error in (
        ({"id": "nope"}, "options: standard_response: no standard response 'nope'"),
        ({"id": "bot-answer"}, "options: standard_response: standard response 'bot-answer' "
                               "requires ExtAgentReply (required in its response.yaml): missing"),
        ({"id": "thanks", "fields": {"Contact": {"Title": ["Dr"]}}},
         "options: standard_response.fields.Contact.Title must be a string, number or boolean"),
    ):  # fmt: skip
        for path in ("/send", "/render"):
            code, body = api.send({"to": "a@x.example", "options": {"standard_response": spec}},
                                  path=path)  # fmt: skip
            assert (code, body["field"]) == (400, "options"), body
            assert body["error"].startswith(error), body
    assert api.queued() == 0 and outbound_count(api) == 0


def test_post_render_shows_the_rendered_response(api: Server) -> None:
    spec = {"id": "thanks", "fields": {"Contact": {"Title": "Dr Lee"}}}
    code, body = api.send({"to": "a@x.example", "options": {"standard_response": spec}},
                          path="/render")  # fmt: skip
    assert code == 200 and body["sendable"], body
    assert body["subject"] == "Thanks" and body["text"] == "Thank you, Dr Lee."
    assert api.queued() == 0


# ------------------------------------------------------------ ReplyFromExtResource


def ext_reply(api: Server, data: dict[str, Any]) -> tuple[int, Any]:
    return api.send(data, path="/ext-reply")


def test_ext_reply_queues_an_agents_reply_with_the_external_text(
    api: Server, site: Path, tmp_path: Path
) -> None:
    parent = ingest(api.kernel, tmp_path, INBOUND)
    code, body = ext_reply(api, {
        "in_reply_to": parent.id, "standard_response": "bot-answer",
        "ext_reply_text": "Restart the router.\nThen wait <5 min>.", "queue": "Bot results",
        "fields": {"Contact": {"FirstName": "Ann"}, "Agent": {"Signature": "Support bot"}},
    })  # fmt: skip
    assert code == 202, body
    assert body["parent_id"] == parent.id and body["subtype"] == "OutboundReply"
    assert body["to"] == ["ann@client.example"]
    assert body["attached_data"][QUEUE_KEY] == "Bot results"
    stored = run(api.kernel.store.get_interaction(body["id"]))
    assert stored.attached_data[QUEUE_KEY] == "Bot results"
    entry = run(api.kernel.store.get_outbox(body["id"]))
    assert entry.request.options["standard_response"]["ext_reply_text"].startswith("Restart")
    run(api.gateway.outbound.run_pass())  # the outbox worker's next pass
    [eml] = [p for p in (site.parent / "outbox").iterdir() if p.suffix == ".eml"]
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert message["Subject"] == "Re: Where is my order?"
    assert message["In-Reply-To"] == "<q1@client.example>"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert text.replace("\r\n", "\n") == (
        "Hello Ann,\nRestart the router.\nThen wait <5 min>.\n-- Support bot\n"
    )
    assert html.replace("\r\n", "\n") == (
        "<p>Restart the router.<br>\nThen wait &lt;5 min&gt;.</p>\n"
    )


@pytest.mark.parametrize(
    ("change", "field", "error"),
    [
        ({"in_reply_to": None}, "in_reply_to", "in_reply_to: is required"),
        ({"in_reply_to": "no-such-id"}, "in_reply_to", "in_reply_to: no interaction 'no-such-id'"),
        ({"standard_response": None}, "standard_response", "standard_response: is required"),
        ({"standard_response": 7}, "standard_response", "must be a non-empty string"),
        ({"standard_response": "nope"}, "standard_response", "no standard response 'nope'"),
        ({"ext_reply_text": ""}, "ext_reply_text", "must be a non-empty string"),
        ({"ext_reply_text": "x" * 65537}, "ext_reply_text", "longer than 65536 characters"),
        ({"queue": 3}, "queue", "queue: must be a non-empty string"),
        ({"queue": "q" * 256}, "queue", "longer than 255 characters"),
        ({"queue": "a\nb"}, "queue", "contains a control character"),
        ({"fields": {"Customer": {}}}, "fields", "fields: unknown group 'Customer'"),
        ({"colour": "red"}, "colour", "unknown key 'colour'"),
    ],
)
def test_a_refused_ext_reply_is_a_400_naming_its_field_and_queues_nothing(
    api: Server, tmp_path: Path, change: dict[str, Any], field: str, error: str
) -> None:
    parent = ingest(api.kernel, tmp_path, INBOUND)
    data = {"in_reply_to": parent.id, "standard_response": "bot-answer", "ext_reply_text": "x"}
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None}
    code, body = ext_reply(api, data)
    assert (code, body["field"]) == (400, field), body
    assert error in body["error"], body
    assert api.queued() == 0 and outbound_count(api) == 0


def test_a_required_field_missing_from_an_ext_reply_names_fields(
    api: Server, site: Path, tmp_path: Path
) -> None:
    (site.parent / "responses" / "bot-answer" / "response.yaml").write_text(
        "required: [ExtAgentReply, Contact.FirstName]\n"
    )
    parent = ingest(api.kernel, tmp_path, INBOUND)
    code, body = ext_reply(api, {"in_reply_to": parent.id, "standard_response": "bot-answer",
                                 "ext_reply_text": "x"})  # fmt: skip
    assert (code, body["field"]) == (400, "fields")
    assert "requires Contact.FirstName" in body["error"] and api.queued() == 0
