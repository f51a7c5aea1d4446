"""The Graph fake refuses malformed requests, so its acceptance means something."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from postroom.api import ConnectionDown
from postroom.testing import result_of
from tests.fakes.graph import GraphFake
from tests.fakes.graph.client import BlockingHTTP, Response

TOKEN = "good-token"
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}
BOX = "support@contoso.test"
MIME = b"Message-ID: <one@test>\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[GraphFake]:
    with GraphFake(tmp_path, tokens=[TOKEN]) as fake:
        yield fake


def call(graph: GraphFake, method: str, path: str, *, token: str | None = TOKEN,
         headers: dict[str, str] | None = None, body: bytes | None = None) -> Response:
    http = BlockingHTTP(graph.ca_file)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    answer: Response = result_of(http.request(method, graph.url + path, headers=sent, body=body))
    return answer


def error_code(answer: Response) -> str:
    return str(json.loads(answer.body)["error"]["code"])


DELTA = f"/v1.0/users/{BOX}/mailFolders/inbox/messages/delta"


def test_a_correct_delta_lists_ids_sizes_and_pages(graph: GraphFake) -> None:
    ids = [graph.add_message(BOX, "inbox", MIME) for _ in range(3)]
    query = ("?$select=id,internetMessageId&$expand=singleValueExtendedProperties("
             "$filter=id%20eq%20'Integer%200x0E08')")
    prefer = {"Prefer": 'IdType="ImmutableId", odata.maxpagesize=2'}
    first = call(graph, "GET", DELTA + query, headers=prefer)
    assert first.status == 200, first.body
    page = json.loads(first.body)
    assert [m["id"] for m in page["value"]] == ids[:2]
    assert page["value"][0]["internetMessageId"] == "<one@test>"
    assert page["value"][0]["singleValueExtendedProperties"] == [
        {"id": "Integer 0xe08", "value": str(len(MIME))}
    ]
    link = page["@odata.nextLink"].removeprefix(graph.url)
    second = json.loads(call(graph, "GET", link, headers=prefer).body)
    assert [m["id"] for m in second["value"]] == ids[2:]
    delta = second["@odata.deltaLink"].removeprefix(graph.url)
    graph.remove(BOX, ids[0])
    new = graph.add_message(BOX, "inbox", MIME)
    third = json.loads(call(graph, "GET", delta, headers=prefer).body)
    assert {m["id"]: "@removed" in m for m in third["value"]} == {ids[0]: True, new: False}
    graph.expire_deltas()
    gone = call(graph, "GET", delta, headers=prefer)
    assert (gone.status, error_code(gone)) == (410, "syncStateNotFound")
    assert graph.problems == []


@pytest.mark.parametrize(
    ("method", "path", "headers", "code"),
    [
        ("GET", DELTA + "?$top=5&$bogus=1", IMMUTABLE, "BadRequest"),
        ("GET", DELTA + "?$select=id,sizeInBytes", IMMUTABLE, "BadRequest"),
        ("GET", DELTA + "?$expand=attachments", IMMUTABLE, "BadRequest"),
        ("GET", DELTA, {}, "MissingImmutableIdPreference"),
        ("POST", DELTA, IMMUTABLE, "UnsupportedMethod"),
        ("GET", f"/beta/users/{BOX}/mailFolders/inbox", {}, "BadRequest"),
        ("POST", f"/v1.0/users/{BOX}/sendMail", {"Content-Type": "application/json"},
         "ErrorMimeContentInvalid"),
        ("POST", "/v1.0/$batch", {"Content-Type": "text/plain"}, "UnsupportedMediaType"),
    ],
)
def test_malformed_requests_are_refused_and_recorded(
    graph: GraphFake, method: str, path: str, headers: dict[str, str], code: str
) -> None:
    graph.mailbox(BOX)
    answer = call(graph, method, path, headers=headers, body=b"{}" if method == "POST" else None)
    assert answer.status in (400, 405, 415)
    assert error_code(answer) == code
    assert len(graph.problems) == 1


def test_tokens_are_required_and_checked(graph: GraphFake) -> None:
    graph.mailbox(BOX)
    missing = call(graph, "GET", f"/v1.0/users/{BOX}/mailFolders/inbox", token=None)
    assert (missing.status, error_code(missing)) == (401, "InvalidAuthenticationToken")
    assert len(graph.problems) == 1  # no token at all is a client bug
    refused = call(graph, "GET", f"/v1.0/users/{BOX}/mailFolders/inbox", token="expired")
    assert refused.status == 401
    assert graph.counts["refused"] == 1
    assert len(graph.problems) == 1  # a refused token is not a protocol error


def batch(graph: GraphFake, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answer = call(graph, "POST", "/v1.0/$batch", headers={"Content-Type": "application/json"},
                  body=json.dumps({"requests": requests}).encode())
    assert answer.status == 200, answer.body
    responses: list[dict[str, Any]] = json.loads(answer.body)["responses"]
    return responses


def test_batch_moves_and_deletes_and_checks_each_request(graph: GraphFake) -> None:
    one, two, three = (graph.add_message(BOX, "inbox", MIME) for _ in range(3))
    done = graph.folder(BOX, "Inbox/Done")
    json_immutable = {**IMMUTABLE, "Content-Type": "application/json"}
    responses = batch(graph, [
        {"id": "1", "method": "POST", "url": f"/users/{BOX}/messages/{one}/move",
         "headers": json_immutable, "body": {"destinationId": done.id}},
        {"id": "2", "method": "DELETE", "url": f"/users/{BOX}/messages/{two}",
         "headers": IMMUTABLE},
        {"id": "3", "method": "DELETE", "url": f"/users/{BOX}/messages/{three}"},
    ])
    assert [(r["id"], r["status"]) for r in responses] == [("1", 201), ("2", 204), ("3", 400)]
    assert responses[0]["body"]["id"] == one  # immutable: the id survives the move
    assert [m.id for m in graph.messages_in(BOX, "Inbox/Done")] == [one]
    assert [m.id for m in graph.messages_in(BOX, "inbox")] == [three]
    assert len(graph.problems) == 1
    too_many = call(graph, "POST", "/v1.0/$batch", headers={"Content-Type": "application/json"},
                    body=json.dumps({"requests": [
                        {"id": str(i), "method": "DELETE", "url": f"/users/{BOX}/messages/x"}
                        for i in range(21)]}).encode())
    assert too_many.status == 400


def test_throttling_answers_retry_after(graph: GraphFake) -> None:
    graph.mailbox(BOX)
    graph.throttle(2, retry_after=7, status=503)
    path = f"/v1.0/users/{BOX}/mailFolders/inbox"
    first, second, third = (call(graph, "GET", path) for _ in range(3))
    assert (first.status, first.headers["retry-after"]) == (503, "7")
    assert second.status == 503
    assert third.status == 200
    assert graph.counts["throttled"] == 2


def test_value_deleted_on_fetch_cut_and_send(graph: GraphFake) -> None:
    item = graph.add_message(BOX, "inbox", MIME)
    value = f"/v1.0/users/{BOX}/messages/{item}/$value"
    whole = call(graph, "GET", value, headers=IMMUTABLE)
    assert (whole.status, whole.body) == (200, MIME)
    graph.cut_next_download()
    with pytest.raises(ConnectionDown):
        call(graph, "GET", value, headers=IMMUTABLE)
    graph.delete_on_fetch(item)
    gone = call(graph, "GET", value, headers=IMMUTABLE)
    assert (gone.status, error_code(gone)) == (404, "ErrorItemNotFound")
    sent = call(graph, "POST", f"/v1.0/users/{BOX}/sendMail",
                headers={"Content-Type": "text/plain"}, body=base64.b64encode(MIME))
    assert sent.status == 202
    assert graph.sent(BOX) == [MIME]
    assert graph.problems == []


def test_nested_folders_are_found_by_display_name(graph: GraphFake) -> None:
    support = graph.folder(BOX, "Inbox/Support")
    answer = call(graph, "GET", f"/v1.0/users/{BOX}/mailFolders/inbox/childFolders"
                  "?$filter=displayName%20eq%20'Support'")
    assert [f["id"] for f in json.loads(answer.body)["value"]] == [support.id]
    unknown = call(graph, "GET", "/v1.0/users/nobody@test/mailFolders/inbox")
    assert unknown.status == 404


def test_upload_sessions_check_ranges_and_refuse_the_token(graph: GraphFake) -> None:
    graph.mailbox(BOX)
    draft = call(graph, "POST", f"/v1.0/users/{BOX}/messages",
                 headers={"Content-Type": "text/plain"}, body=base64.b64encode(MIME))
    assert draft.status == 201
    item = json.loads(draft.body)["id"]
    base = f"/v1.0/users/{BOX}/messages/{item}"
    json_type = {"Content-Type": "application/json"}
    odd = call(graph, "POST", f"{base}/attachments/createUploadSession", headers=json_type,
               body=json.dumps({"AttachmentItem": {"attachmentType": "file", "name": "a",
                                                   "size": 4_000_000, "colour": "red"}}).encode())
    assert odd.status == 400 and len(graph.problems) == 1
    session = call(graph, "POST", f"{base}/attachments/createUploadSession", headers=json_type,
                   body=json.dumps({"AttachmentItem": {"attachmentType": "file", "name": "a",
                                                       "size": 4_000_000}}).encode())
    assert session.status == 201
    url = json.loads(session.body)["uploadUrl"]
    assert url.startswith(graph.url + "/upload/")
    path = url[len(graph.url):]
    data = bytes(range(256)) * 15625  # 4_000_000 bytes
    answers = [
        # a bearer token goes nowhere near the pre-authenticated upload URL
        call(graph, "PUT", path, body=data[:10],
             headers={"Content-Range": "bytes 0-9/4000000"}).status,
        # a range that does not start where the last one stopped
        call(graph, "PUT", path, token=None, body=data[5:15],
             headers={"Content-Range": "bytes 5-14/4000000"}).status,
        # a range whose length is not the body's
        call(graph, "PUT", path, token=None, body=data[:10],
             headers={"Content-Range": "bytes 0-19/4000000"}).status,
        # the total is not the session's size
        call(graph, "PUT", path, token=None, body=data[:10],
             headers={"Content-Range": "bytes 0-9/5000000"}).status,
    ]
    assert answers == [400, 400, 400, 400] and len(graph.problems) == 5
    first = call(graph, "PUT", path, token=None, body=data[:3_000_000],
                 headers={"Content-Range": "bytes 0-2999999/4000000"})
    assert first.status == 200
    assert json.loads(first.body)["nextExpectedRanges"] == ["3000000-"]
    last = call(graph, "PUT", path, token=None, body=data[3_000_000:],
                headers={"Content-Range": "bytes 3000000-3999999/4000000"})
    assert last.status == 201 and last.headers["location"]
    sent = call(graph, "POST", f"{base}/send")
    assert sent.status == 202 and len(graph.problems) == 5
    [mime] = graph.sent(BOX)
    from email import message_from_bytes

    parts = [p for p in message_from_bytes(mime).walk() if p.get_filename() == "a"]
    assert parts[0].get_payload(decode=True) == data


def draft(graph: GraphFake, mime: bytes = MIME) -> str:
    answer = call(graph, "POST", f"/v1.0/users/{BOX}/messages",
                  headers={"Content-Type": "text/plain", **IMMUTABLE},
                  body=base64.b64encode(mime))
    assert answer.status == 201, answer.body
    created = json.loads(answer.body)
    assert created["internetMessageId"] == "<one@test>"
    return str(created["id"])


def patch(graph: GraphFake, item: str, properties: Any,
          headers: dict[str, str] | None = None) -> Response:
    return call(graph, "PATCH", f"/v1.0/users/{BOX}/messages/{item}",
                headers=headers if headers is not None else {
                    **IMMUTABLE, "Content-Type": "application/json"},
                body=json.dumps(properties).encode())


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"singleValueExtendedProperties": [{"id": "Boolean 0xE01", "value": "true"}]}, None),
        ({"singleValueExtendedProperties": [{"id": "Integer 0x0E01", "value": "1"}]}, None),
        ({"singleValueExtendedProperties": [{"id": "Boolean 0x8001", "value": "true"}]}, None),
        ({"singleValueExtendedProperties": [{"id": "Bool 0x0E01", "value": "true"}]}, None),
        ({"singleValueExtendedProperties": [{"id": "Boolean 0x0E01", "value": "yes"}]}, None),
        ({"singleValueExtendedProperties": [{"id": "Boolean 0x0E01", "value": True}]}, None),
        ({"singleValueExtendedProperties": []}, None),
        ({"subject": "changed"}, None),
        ({"singleValueExtendedProperties": [{"id": "Boolean 0x0E01", "value": "true"}]},
         {"Content-Type": "application/json"}),
    ],
)
def test_malformed_extended_properties_are_refused_and_recorded(
    graph: GraphFake, body: Any, headers: dict[str, str] | None
) -> None:
    graph.mailbox(BOX)
    answer = patch(graph, draft(graph), body, headers)
    assert answer.status == 400, answer.body
    assert len(graph.problems) == 1


def test_delete_after_submit_keeps_a_sent_draft_out_of_sent_items(graph: GraphFake) -> None:
    graph.mailbox(BOX)
    quiet, saved = draft(graph), draft(graph)
    named = "String {00020386-0000-0000-C000-000000000046} Name X-Custom"
    answer = patch(graph, quiet, {"singleValueExtendedProperties": [
        {"id": "Boolean 0x0E01", "value": "true"}, {"id": named, "value": "x"}]})
    assert answer.status == 200, answer.body
    for item in (quiet, saved):
        assert call(graph, "POST", f"/v1.0/users/{BOX}/messages/{item}/send",
                    headers=IMMUTABLE).status == 202
    assert len(graph.sent(BOX)) == 2
    assert graph.messages_in(BOX, "drafts") == []
    # only the draft without PidTagDeleteAfterSubmit was saved
    assert len(graph.messages_in(BOX, "sentitems")) == 1
    assert graph.problems == []


def test_a_message_is_read_and_deleted_by_id(graph: GraphFake) -> None:
    graph.mailbox(BOX)
    graph.rewrite_message_ids = True
    graph.omit_created_message_id = True
    created = call(graph, "POST", f"/v1.0/users/{BOX}/messages",
                   headers={"Content-Type": "text/plain", **IMMUTABLE},
                   body=base64.b64encode(MIME))
    assert "internetMessageId" not in json.loads(created.body)
    item = json.loads(created.body)["id"]
    path = f"/v1.0/users/{BOX}/messages/{item}"
    got = call(graph, "GET", path + "?$select=internetMessageId", headers=IMMUTABLE)
    kept = json.loads(got.body)["internetMessageId"]
    assert kept.endswith("@exchange.fake>")  # Exchange gave it its own Message-ID
    [stored] = graph.messages_in(BOX, "drafts")
    assert f"Message-ID: {kept}".encode() in stored.mime and b"<one@test>" not in stored.mime
    assert call(graph, "GET", path + "?$select=sizeInBytes", headers=IMMUTABLE).status == 400
    assert call(graph, "DELETE", path, headers=IMMUTABLE).status == 204
    assert call(graph, "DELETE", path, headers=IMMUTABLE).status == 404
    assert call(graph, "DELETE", path).status == 400  # no Prefer: IdType
    assert len(graph.problems) == 2


def test_an_upload_range_can_be_made_to_fail(graph: GraphFake) -> None:
    graph.mailbox(BOX)
    item = draft(graph)
    session = call(graph, "POST", f"/v1.0/users/{BOX}/messages/{item}/attachments/"
                   "createUploadSession", headers={"Content-Type": "application/json"},
                   body=json.dumps({"AttachmentItem": {"attachmentType": "file", "name": "a",
                                                       "size": 4_000_000}}).encode())
    path = json.loads(session.body)["uploadUrl"][len(graph.url):]
    graph.fail_next_upload(429, retry_after=9)
    failed = call(graph, "PUT", path, token=None, body=b"x" * 10,
                  headers={"Content-Range": "bytes 0-9/4000000"})
    assert (failed.status, failed.headers["retry-after"]) == (429, "9")
    again = call(graph, "PUT", path, token=None, body=b"x" * 10,
                 headers={"Content-Range": "bytes 0-9/4000000"})
    assert again.status == 200  # only the next range fails
    assert graph.problems == []
