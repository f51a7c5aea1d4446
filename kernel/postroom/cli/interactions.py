"""``postroom interactions list|show|attachment|raw``: the interaction API on the command line.

The same reads as ``GET /interactions...`` (:mod:`postroom.interaction_api`):
ids may be unique prefixes (at least 6 characters; an ambiguous one exits 2
listing the candidates, an unknown one exits 1); a listing takes the same
filters and cursor, and says on standard error when it was cut at its limit
(its ``--json`` lines stay one interaction each).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from postroom.cli.failures import EXIT_OK, NotFound, UsageError

#: the most interactions one ``list`` shows (they are held in memory)
MAX_LIST = 1_000_000

WithKernel = Callable[[argparse.Namespace, Callable[[Any], Coroutine[Any, Any, int]]], int]


def _usage(exc: Exception) -> UsageError:
    return UsageError(str(exc))


async def _guarded(coro: Coroutine[Any, Any, Any]) -> Any:
    """*coro*'s result; an unknown id is NotFound (exit 1), an ambiguous one or a
    bad option a UsageError (exit 2)."""
    from postroom.ids import AmbiguousId, UnknownId
    from postroom.interaction_api import NoSuchFile, QueryError, RawGone

    try:
        return await coro
    except (UnknownId, NoSuchFile, RawGone) as exc:
        raise NotFound(str(exc)) from None
    except (AmbiguousId, QueryError) as exc:
        raise _usage(exc) from None


async def resolved(kernel: Any, given: str) -> str:
    """The full id *given* (an id or a unique prefix) names: for commands of
    other modules that take an interaction id."""
    from postroom.interaction_api import resolve_id

    found: str = await _guarded(resolve_id(kernel, given))
    return found


async def _list(args: argparse.Namespace, kernel: Any) -> int:
    from postroom.cli.output import dumps, table
    from postroom.interaction_api import QueryError, encode_cursor, list_query
    from postroom.store.sql.listing import MAX_PAGE
    from postroom.views import interaction_json, source_of

    values = {name: getattr(args, name) for name in _FILTERS}
    values["after"] = args.after
    try:
        filters, _, after = list_query(values)
    except QueryError as exc:
        raise _usage(exc) from None
    wanted = args.limit
    found: list[Any] = []
    cursor: tuple[datetime, int] | None = after
    while True:
        page = await kernel.store.find_interactions(
            filters, min(MAX_PAGE, wanted - len(found)), cursor
        )
        found.extend(page.interactions)
        cursor = page.next
        if cursor is None or len(found) >= wanted:
            break
    for interaction in found:
        status = await kernel.store.handoff_status(interaction.id)
        if status is not None:
            interaction.handoff_state = status[0]
    found.reverse()  # oldest first reads like a story
    if args.json:
        for interaction in found:
            print(dumps(interaction_json(interaction, source_of(interaction, kernel.config))))
    else:
        print(table(found))
    sys.stdout.flush()
    if cursor is not None:
        print(
            f"note: the newest {len(found)} shown (--limit {wanted}); "
            f"older ones: --after {encode_cursor(cursor)}",
            file=sys.stderr,
        )
    return EXIT_OK


async def _show(args: argparse.Namespace, kernel: Any) -> int:
    from postroom.cli.output import dumps
    from postroom.interaction_api import show

    if args.raw:  # kept: `interactions raw ID` is the same
        return await _raw(args, kernel)
    data = await _guarded(show(kernel, args.id))
    if args.json:
        print(dumps(data))
        return EXIT_OK
    text = data.pop("text")
    data.pop("html")
    print(json.dumps(data, indent=2, ensure_ascii=False))
    if text:
        if data["text_from_html"]:
            print("\n(text of the HTML body)")
        print("\n" + text)
    return EXIT_OK


def _write(args: argparse.Namespace, spool: Any, what: str) -> None:
    """*spool* (a file at its start) to ``-o FILE``, else to standard output,
    which must not be a terminal."""
    from postroom.interaction_api import is_terminal

    if args.output:
        with open(args.output, "wb") as out:
            shutil.copyfileobj(spool, out)
        return
    if is_terminal(sys.stdout):
        raise UsageError(f"{what} is binary: give -o FILE, or redirect standard output")
    sys.stdout.flush()
    shutil.copyfileobj(spool, sys.stdout.buffer)
    sys.stdout.buffer.flush()


async def _attachment(args: argparse.Namespace, kernel: Any) -> int:
    import io

    from postroom.interaction_api import attachment_of

    listed, data = await _guarded(attachment_of(kernel, args.id, args.index))
    _write(args, io.BytesIO(data), f"file {args.index} ({listed.safe_filename})")
    if args.output:
        print(f"{args.output}: {len(data)} bytes, {listed.content_type}", file=sys.stderr)
    return EXIT_OK


async def _raw(args: argparse.Namespace, kernel: Any) -> int:
    from postroom.interaction_api import spool_raw

    _, spool = await _guarded(spool_raw(kernel, args.id))
    with spool:
        output = getattr(args, "output", None)
        if output:
            with open(output, "wb") as out:
                shutil.copyfileobj(spool, out)
        else:  # text, as received: a terminal may show it
            sys.stdout.flush()
            shutil.copyfileobj(spool, sys.stdout.buffer)
            sys.stdout.buffer.flush()
    return EXIT_OK


_FILTERS = ("status", "type", "subtype", "mailbox", "since", "until", "sender", "text")


def _count(text: str) -> int:
    """``--limit``: a whole number from 1 to :data:`MAX_LIST`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_LIST:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_LIST:,}, got {text}")
    return value


def add_commands(sub: Any, with_kernel: WithKernel, site_argument: Callable[[Any], None]) -> Any:
    """``postroom interactions ...`` on the command line's sub-parsers *sub*;
    returns its own sub-parsers, for the actions other modules add."""

    def command(run: Callable[[argparse.Namespace, Any], Coroutine[Any, Any, int]]) -> Any:
        return lambda args: with_kernel(args, lambda kernel: run(args, kernel))

    p = sub.add_parser(
        "interactions",
        help="list, show and download stored interactions",
        description="The interactions in a site's store. An ID may be a unique prefix of "
        "at least 6 characters (the table's 8 are); an ambiguous one exits 2 listing the "
        "candidates, an unknown one exits 1.",
    )
    isub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    q = isub.add_parser(
        "list",
        help="list interactions, newest first, filtered",
        description="The newest interactions (at most --limit, printed oldest first) that "
        "pass every filter given. When more match, a note on standard error says so and "
        "gives the --after cursor for the next older ones; --json lines stay clean.",
    )
    site_argument(q)
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.add_argument("--limit", type=_count, default=100, help="at most this many (default 100)")
    q.add_argument("--after", metavar="CURSOR", help="older than the listing that gave CURSOR")
    q.add_argument("--status", help="only this status (New, Sent, ...)")
    q.add_argument("--type", choices=("Inbound", "Outbound"), help="only this type")
    q.add_argument("--subtype", help="only this subtype (InboundNew, InboundNDR, ...)")
    q.add_argument("--mailbox", help="only this mailbox")
    q.add_argument(
        "--since", metavar="WHEN", help="stored at or after (2026-12-01, or ISO 8601; UTC)"
    )
    q.add_argument("--until", metavar="WHEN", help="stored before (as --since)")
    q.add_argument("--sender", metavar="ADDRESS", help="only from this address (any case)")
    q.add_argument(
        "--text", help="only with this text in the subject or body (any case; a substring)"
    )
    q.set_defaults(func=command(_list))

    q = isub.add_parser(
        "show",
        help="show one interaction",
        description="The interaction: its JSON (addresses with display names, Reply-To, "
        "Date, files with their index, hand-off and outbox state), then its text (from "
        "the HTML when it has no text part). --json: one line with the sanitised HTML too.",
    )
    site_argument(q)
    q.add_argument("--json", action="store_true", help="one JSON object (with text and html)")
    q.add_argument("id", help="interaction id or unique prefix")
    q.add_argument(
        "--raw",
        action="store_true",
        help="write the message's raw bytes instead (as 'interactions raw')",
    )
    q.set_defaults(func=command(_show), output=None)

    q = isub.add_parser(
        "attachment",
        help="download a file of an interaction",
        description="File INDEX (0 first, as 'show' lists them) of the interaction, its "
        "bytes as the sender sent them (transfer encoding undone). Written to -o FILE, or "
        "to standard output when that is not a terminal.",
    )
    site_argument(q)
    q.add_argument("id", help="interaction id or unique prefix")
    q.add_argument("index", help="the file's index")
    q.add_argument("-o", "--output", metavar="FILE", help="write it to FILE")
    q.set_defaults(func=command(_attachment))

    q = isub.add_parser(
        "raw",
        help="the raw message of an interaction",
        description="The message exactly as received, checked against its SHA-256 before "
        "any byte is written (a corrupt store prints its error and nothing else).",
    )
    site_argument(q)
    q.add_argument("id", help="interaction id or unique prefix")
    q.add_argument("-o", "--output", metavar="FILE", help="write it to FILE")
    q.set_defaults(func=command(_raw))
    return isub


__all__ = ["MAX_LIST", "add_commands", "resolved"]
