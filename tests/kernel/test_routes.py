"""Plugins' HTTP routes (``postroom_register_routes``) and ``POST /render``, through the
real Twisted API on 127.0.0.1 (the harness of :mod:`tests.kernel.test_web`): the
route table, the token and the body limit before any plugin code, what handlers
answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from postroom.api import HTTPError, RequestError, Response, Route, RouteRequest, hookimpl
from postroom.errors import ConfigError
from postroom.routes import RouteError, RouteTable
from postroom.services.gateway import Gateway
from tests.conftest import run
from tests.kernel.test_gateway import make_kernel
from tests.kernel.test_web import LIMIT, TOKEN, Server, head_only, parse_answer, serving

# ------------------------------------------------------------- the route table


def nothing(request: RouteRequest) -> None:
    return None


def table(*routes: Route, owner: str = "acme") -> RouteTable:
    return RouteTable.build([Route("GET", "/interactions/{id}", nothing)],
                            [(owner, r) for r in routes])  # fmt: skip


@pytest.mark.parametrize(
    ("route", "why"),
    [
        (Route("GET", "/interactions/x", nothing), "clashes with GET /interactions/{id} of post"),
        (Route("GET", "/{a}/{b}", nothing), "clashes with GET /interactions/{id}"),
        (Route("FETCH", "/x", nothing), "method 'FETCH' is not one of"),
        (Route("GET", "x", nothing), "a path starts with '/'"),
        (Route("GET", "/a b", nothing), "segment 'a b' is neither a literal"),
        (Route("GET", "/a/{id", nothing), "segment '{id' is neither"),
        (Route("GET", "/a/{x}/{x}", nothing), "a {name} is used twice"),
        (Route("GET", "/a//b", nothing), "segment '' is neither"),
        (Route("GET", "/a", "not a function"), "the handler is not callable"),  # type: ignore[arg-type]
        (Route("GET", "/" + "/".join("a" * 17), nothing), "1 to 16 segments"),
    ],
)  # fmt: skip
def test_a_malformed_or_clashing_route_is_refused_naming_its_owner(route: Route, why: str) -> None:
    with pytest.raises(RouteError) as info:
        table(route)
    assert str(info.value).startswith("acme: ") and why in str(info.value)


def test_routes_of_other_methods_or_shapes_do_not_clash() -> None:
    found = table(
        Route("POST", "/interactions/{id}", nothing),
        Route("GET", "/interactions/{id}/notes", nothing),
        Route("GET", "/notes/{id}", nothing),
    )
    later = Route("GET", "/notes/{x}", nothing)
    with pytest.raises(RouteError) as info:
        RouteTable.build([], [*found.routes, ("acme", later)])
    assert str(info.value) == "acme: route GET /notes/{x} clashes with GET /notes/{id} of acme"


def test_a_path_finds_its_route_and_decoded_values_else_404_or_405() -> None:
    routes = table(Route("GET", "/notes/{id}/{part}", nothing))
    route, values = routes.find("GET", "/notes/a%2Fb/%C3%BC/")
    assert route.path == "/notes/{id}/{part}" and values == {"id": "a/b", "part": "ü"}
    with pytest.raises(HTTPError) as info:
        routes.find("POST", "/notes/1/2")
    assert info.value.code == 405
    for path in ("/notes/1", "/notes/1/2/3", "/", "/" + "a/" * 100):
        with pytest.raises(HTTPError) as info:
            routes.find("GET", path)
        assert info.value.code == 404


# ------------------------------------------------------------ plugin routes


class Notes:
    """A plugin with routes: JSON values, a Response, refusals, a failure."""

    def __init__(self) -> None:
        self.seen: list[RouteRequest] = []

    @hookimpl
    def postroom_register_routes(self, ctx: Any) -> list[Route]:
        assert ctx.tenant_id == 101  # the site's context
        return [
            Route("GET", "/notes/{id}", self.show),
            Route("POST", "/notes", self.add),
            Route("GET", "/notes-text", self.text),
            Route("GET", "/notes-broken", self.broken),
        ]

    async def show(self, request: RouteRequest) -> dict[str, Any]:
        self.seen.append(request)
        if request.url_vars["id"] == "missing":
            raise HTTPError(404, "no such note")
        return {"id": request.url_vars["id"], "query": dict(request.query)}

    def add(self, request: RouteRequest) -> defer.Deferred[Response]:
        self.seen.append(request)
        data = request.json()
        if not isinstance(data.get("note"), str):
            raise RequestError("note", "must be a string")
        return defer.succeed(Response.json({"stored": data["note"]}, 201))

    def text(self, request: RouteRequest) -> Response:
        return Response(200, "grüße\n".encode(), "text/plain; charset=utf-8")

    def broken(self, request: RouteRequest) -> None:
        raise LookupError("the notes database is down")


@pytest.fixture
def notes() -> Notes:
    return Notes()


@pytest.fixture
def api(
    quickstart: Path, caplog: pytest.LogCaptureFixture, notes: Notes
) -> Iterator[Server]:
    with serving(caplog, quickstart, plugins=[("notes", notes)]) as server:
        yield server


def test_a_plugin_route_answers_with_its_json_values(api: Server, notes: Notes) -> None:
    code, body = api.get("/notes/n%201?x=1&x=2&y=3")
    assert code == 200 and body == {"id": "n 1", "query": {"x": ["1", "2"], "y": ["3"]}}
    [seen] = notes.seen
    assert (seen.method, seen.path, seen.body) == ("GET", "/notes/n%201", b"")
    assert seen.gateway is api.gateway and seen.ctx.tenant_id == 101


def test_a_plugin_route_reads_the_body_strictly_and_refuses_naming_the_field(
    api: Server, notes: Notes
) -> None:
    assert api.send({"note": "call back"}, path="/notes") == (201, {"stored": "call back"})
    # curl -d sends JSON as a form: the body stays the body, never query values
    body = json.dumps({"note": "x"}).encode()
    form = {"Authorization": f"Bearer {TOKEN}",
            "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
    assert api.request("POST", "/notes?a=1", body, form)[0] == 201
    assert notes.seen[-1].query == {"a": ["1"]} and notes.seen[-1].body == body
    code, body = api.send({"note": 3}, path="/notes")
    assert (code, body) == (400, {"error": "note: must be a string", "field": "note"})
    code, body = api.send(b'{"note": "a", "note": "b"}', path="/notes")
    assert code == 400 and "appears twice" in body["error"]


def test_a_plugin_answers_other_content_and_its_own_errors(
    api: Server, caplog: pytest.LogCaptureFixture
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    code, headers, raw = api.request("GET", "/notes-text", headers=auth)
    assert (code, headers["content-type"]) == (200, "text/plain; charset=utf-8")
    assert raw == "grüße\n".encode()
    assert api.get("/notes/missing") == (404, {"error": "no such note"})
    code, body = api.get("/notes-broken")
    assert code == 500 and body == {"error": "LookupError: the notes database is down"}
    assert any("HTTP GET /notes-broken failed" in r.getMessage() for r in caplog.records)
    caplog.clear()  # the failure was logged, as it must be: not a stray traceback


def test_unknown_paths_and_methods_are_404_and_405(api: Server) -> None:
    assert api.get("/nowhere") == (404, {"error": "no such endpoint"})
    assert api.send({}, path="/notes/1") == (405, {"error": "POST is not allowed here"})
    assert api.get("/send") == (405, {"error": "GET is not allowed here"})


def test_plugin_routes_sit_behind_the_token_and_the_body_limit(api: Server, notes: Notes) -> None:
    assert api.get("/notes/1", token="wrong-token-of-twenty") == (
        401, {"error": "a valid bearer token is required"}
    )  # fmt: skip
    answer, _ = api.exchange(
        head_only("/notes", **{"Content-Length": "10000000000", "Authorization": f"Bearer {TOKEN}"})
    )
    code, _, raw = parse_answer(answer)
    assert code == 413 and f"over {LIMIT} bytes" in json.loads(raw)["error"]
    assert notes.seen == []  # no handler ran


def test_a_plugin_route_clashing_with_the_kernels_stops_the_gateway_from_starting(
    quickstart: Path,
) -> None:
    class Greedy:
        @hookimpl
        def postroom_register_routes(self) -> list[Route]:
            return [Route("POST", "/send", nothing)]

    quickstart.write_text(quickstart.read_text() + f"http: {{port: 1, token: {TOKEN}}}\n")
    with pytest.raises(ConfigError) as info:
        Gateway(make_kernel(quickstart, [("greedy", Greedy())]))
    assert "greedy: route POST /send clashes with POST /send of postroom" in str(info.value)


def test_a_plugin_giving_no_list_stops_the_gateway_naming_it(quickstart: Path) -> None:
    class Sloppy:
        @hookimpl
        def postroom_register_routes(self) -> Route:
            return Route("GET", "/x", nothing)

    quickstart.write_text(quickstart.read_text() + f"http: {{port: 1, token: {TOKEN}}}\n")
    with pytest.raises(ConfigError) as info:
        Gateway(make_kernel(quickstart, [("sloppy", Sloppy())]))
    assert "'sloppy' failed in postroom_register_routes: TypeError: returned Route" in str(
        info.value
    )


# ------------------------------------------------------------------ POST /render


def test_post_render_shows_the_message_and_queues_nothing(server_render: Server) -> None:
    code, body = server_render.send(
        {"to": "Anna <a@example.com>", "subject": "Order", "text": "On its way."}, path="/render"
    )
    assert code == 200 and body["sendable"] and body["veto"] is None and body["error"] is None
    headers = dict(body["headers"])
    assert headers["To"] == "Anna <a@example.com>" and headers["Subject"] == "Order"
    assert body["text"] == "On its way." and body["envelope"]["rcpt_to"] == ["a@example.com"]
    assert body["message"].startswith("From: postroom@example.com\r\n")
    assert f"Message-ID: {body['message_id']}\r\n" in body["message"]
    assert server_render.queued() == 0
    assert run(server_render.kernel.store.get_interaction(body["id"])) is None
    assert run(server_render.kernel.store.list_interactions(10, 0, None)) == []


def test_post_render_refuses_as_post_send_does(server_render: Server) -> None:
    for data, field in (
        ({"subject": "no recipient"}, "to"),
        ({"to": "a@example.com", "in_reply_to": "no-such-id"}, "in_reply_to"),
        ({"to": "a@example.com", "headers": {"Bcc": "x@example.com"}}, "headers"),
    ):
        assert server_render.send(data, path="/render")[0] == 400
        assert server_render.send(data, path="/render")[1]["field"] == field
        assert server_render.send(data)[1]["field"] == field  # and /send the same
    assert server_render.queued() == 0


@pytest.fixture
def server_render(quickstart: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Server]:
    with serving(caplog, quickstart) as server:
        yield server
