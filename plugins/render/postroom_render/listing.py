"""The library, listed: ``postroom responses list|show`` and ``GET /responses[/{id}]``.

Both read the site's folder (``standard-responses.directory``) as it is now, in
the kernel's thread pool: an edited template shows at once. A response that
cannot be read is reported beside the others, never hiding them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from postroom.api import Context, HTTPError, PluginCommands, Route, RouteRequest
from postroom_render.library import (
    ResponseSummary,
    StandardResponse,
    TemplateError,
    UnknownResponse,
    load_response,
    read_listing,
)
from postroom_render.options import NoLibrary, library_directory, max_template_size


async def _run(ctx: Context, fn: Any, *args: Any) -> Any:
    """Blocking file reads off the reactor thread (inline without a runner)."""
    if ctx.runner is None:
        return fn(*args)
    return await ctx.runner.run(fn, *args)


async def read_library(ctx: Context) -> tuple[list[ResponseSummary], list[str]]:
    """The site's responses and the problems of those that cannot be read;
    :class:`NoLibrary` when the site configures none."""
    listing: tuple[list[ResponseSummary], list[str]] = await _run(
        ctx, read_listing, library_directory(ctx), max_template_size(ctx)
    )
    return listing


async def read_response(ctx: Context, response_id: str) -> StandardResponse:
    """One response; :class:`UnknownResponse`, :class:`TemplateError`, :class:`NoLibrary`."""
    response: StandardResponse = await _run(
        ctx, load_response, library_directory(ctx), response_id, max_template_size(ctx)
    )
    return response


def response_json(response: StandardResponse) -> dict[str, Any]:
    """``GET /responses/{id}``: the listing's fields and the template texts."""
    return {**ResponseSummary.of(response).as_json(), "text": response.text, "html": response.html}


# ------------------------------------------------------------------- HTTP


async def list_route(request: RouteRequest) -> dict[str, Any]:
    try:
        responses, problems = await read_library(request.ctx)
    except NoLibrary as exc:
        raise HTTPError(404, str(exc)) from None
    return {"responses": [r.as_json() for r in responses], "problems": problems}


async def show_route(request: RouteRequest) -> dict[str, Any]:
    try:
        response = await read_response(request.ctx, request.url_vars["id"])
    except (NoLibrary, UnknownResponse) as exc:
        raise HTTPError(404, str(exc)) from None
    except TemplateError as exc:  # the site's file is broken, not the request
        raise HTTPError(500, str(exc)) from None
    return response_json(response)


def routes() -> list[Route]:
    return [
        Route("GET", "/responses", list_route),
        Route("GET", "/responses/{id}", show_route),
    ]


# -------------------------------------------------------------------- CLI


def _error(text: str) -> None:
    print(f"error: {text}", file=sys.stderr)


async def list_command(args: argparse.Namespace, kernel: Any) -> int:
    """Exit 0; 1 when a response cannot be read (the others are listed); 2 without a library."""
    try:
        responses, problems = await read_library(kernel.ctx)
    except NoLibrary as exc:
        _error(f"{exc} in {args.config}")
        return 2
    if args.json:
        for summary in responses:
            print(json.dumps(summary.as_json(), ensure_ascii=False))
    elif responses:
        rows = [("ID", "PARTS", "ATTACHMENTS", "SUBJECT")]
        rows += [
            (r.id, ",".join(r.parts), str(len(r.attachments)), r.subject.replace("\n", " "))
            for r in responses
        ]
        widths = [max(len(row[c]) for row in rows) for c in range(3)]
        for row in rows:
            print("  ".join(row[c].ljust(widths[c]) for c in range(3)) + "  " + row[3])
    else:
        print("the library is empty")
    for problem in problems:
        _error(problem)
    return 1 if problems else 0


async def show_command(args: argparse.Namespace, kernel: Any) -> int:
    """Exit 0; 1 for an unknown or unreadable response; 2 without a library."""
    try:
        response = await read_response(kernel.ctx, args.id)
    except NoLibrary as exc:
        _error(f"{exc} in {args.config}")
        return 2
    except TemplateError as exc:
        _error(str(exc))
        return 1
    data = response_json(response)
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
        return 0
    for key in ("id", "subject", "description"):
        print(f"{key}: {data[key]}")
    for key in ("parts", "fields", "required"):
        print(f"{key}: {', '.join(data[key]) or '-'}")
    files = [f"{a['name']} ({a['size']} bytes)" for a in data["attachments"]]
    print(f"attachments: {', '.join(files) or '-'}")
    for name, body in (("body.txt", response.text), ("body.html", response.html)):
        if body is not None:
            print(f"\n--- {name}\n{body}", end="" if body.endswith("\n") else "\n")
    return 0


def add_commands(commands: PluginCommands) -> None:
    """``postroom responses list|show``."""
    parser = commands.add(
        "responses",
        help="list or show the site's standard responses",
        description="The standard-response library of a site (standard-responses.directory), "
        "read as it is now: id, subject, parts, the field codes each reads, the fields it "
        "requires, its attachments.",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = sub.add_parser(
        "list",
        help="list the responses",
        description="One line per response (--json: one JSON object per line); exit 1 when "
        "one cannot be read (the others are listed), 2 when the site has no library.",
    )
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    commands.site_command(q, list_command)
    q = sub.add_parser(
        "show",
        help="show one response",
        description="One response with its template texts; exit 1 when it is unknown or "
        "cannot be read, 2 when the site has no library.",
    )
    q.add_argument("id", help="the response's id (its folder's name)")
    q.add_argument("--json", action="store_true", help="one JSON object")
    commands.site_command(q, show_command)
