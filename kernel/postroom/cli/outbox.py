"""``postroom outbox list|show|retry|cancel``: the outbox from the store, with or
without a running gateway.

A gateway running on the same store notices a retry at its outbox worker's next
poll (about a second); a cancel is a conditional update it cannot race (an entry
it is sending is refused). Exit status: 0 done, 1 an entry unknown, ambiguous or
in a state that does not allow it (the error says which), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from postroom.cli.failures import EXIT_FAILED, EXIT_OK, NotFound
from postroom.ids import AmbiguousId

#: the states ``--state`` takes
STATES = ("queued", "sending", "sent", "failed", "cancelled")


def _limit(text: str) -> int:
    from postroom.store.sql.outboxops import MAX_PAGE

    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"a whole number from 1 to {MAX_PAGE}, got {text!r}")
    return int(text)


def add_outbox_command(sub: Any, with_kernel: Any) -> None:
    """``postroom outbox`` and its actions, on the command line's sub-parsers."""

    def site(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-c", "--config", required=True, help="site configuration (YAML)")

    def run(args: argparse.Namespace) -> int:
        return int(with_kernel(args, lambda kernel: _ACTIONS[args.action](args, kernel)))

    p = sub.add_parser(
        "outbox",
        help="list, show, retry or cancel queued outbound mail",
        description="The outbox of a site's store: what is queued, being sent, sent, failed "
        "or cancelled, with attempts, the last error and each attempt's history. Works "
        "from the store, with or without a running gateway; a running gateway sends a "
        "retried entry at its next poll.",
    )
    osub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = osub.add_parser(
        "list",
        help="list outbox entries",
        description="Entries in the order they were queued: ID (first 8 characters), "
        "STATE, ATTEMPTS, NEXT attempt, SUBJECT, LAST ERROR. A listing cut at --limit "
        "says so on stderr, with the --after value of the next page.",
    )
    site(q)
    q.add_argument("--state", choices=STATES, help="only entries in this state")
    q.add_argument("--limit", type=_limit, default=100, help="at most this many (1-1000, 100)")
    q.add_argument("--after", metavar="CURSOR", help="the page after this cursor")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.set_defaults(func=run)
    q = osub.add_parser(
        "show",
        help="show one entry with its history and delivery status",
        description="One entry: state, attempts, last error, next attempt, its history "
        "(each attempt's time, result, error, the server's reply, refused recipients; "
        "retries and cancels) and each recipient's delivery status. ID is the entry's "
        "(its outbound interaction's) id or the start of exactly one.",
    )
    site(q)
    q.add_argument("id", help="outbox entry id (or an unambiguous prefix)")
    q.add_argument("--json", action="store_true", help="one JSON object")
    q.set_defaults(func=run)
    q = osub.add_parser(
        "retry",
        help="make queued or failed entries due now",
        description="A queued entry waiting for its back-off, or a failed one, becomes due "
        "now; a failed one gets a new round of gateway.max-attempts attempts ('attempts' "
        "goes on counting). An entry being sent, sent or cancelled is refused (exit 1).",
    )
    site(q)
    q.add_argument("id", nargs="+", help="outbox entry id(s) (or unambiguous prefixes)")
    q.add_argument("--json", action="store_true", help="one JSON object per entry")
    q.set_defaults(func=run)
    q = osub.add_parser(
        "cancel",
        help="cancel queued or failed entries",
        description="A queued or failed entry is cancelled: never sent, its outbound "
        "interaction's status 'Cancelled'. An entry being sent right now cannot be "
        "cancelled (exit 1: try again when the attempt is over), nor a sent one.",
    )
    site(q)
    q.add_argument("id", nargs="+", help="outbox entry id(s) (or unambiguous prefixes)")
    q.add_argument("--json", action="store_true", help="one JSON object per entry")
    q.set_defaults(func=run)


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)


def _cut(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


async def _list(args: argparse.Namespace, kernel: Any) -> int:
    from postroom.outboxview import outbox_json

    entries, cursor = await kernel.store.list_outbox_page(args.state, args.limit, args.after)
    if args.json:
        for entry in entries:
            print(_dumps(outbox_json(entry)))
    elif entries:
        rows = [("ID", "STATE", "ATTEMPTS", "NEXT", "SUBJECT", "LAST ERROR")]
        for e in entries:
            nxt = e.next_attempt_at.strftime("%Y-%m-%d %H:%M:%S") if e.next_attempt_at else "-"
            rows.append(
                (e.id[:8], e.state, str(e.attempts), nxt,
                 _cut(e.request.subject, 40) or "(no subject)", _cut(e.last_error, 80) or "-")
            )  # fmt: skip
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        for r in rows:
            print("  ".join(r[c].ljust(widths[c]) for c in range(5)) + "  " + r[5])
    else:
        print("the outbox has no entries" + (f" in state {args.state}" if args.state else ""))
    if cursor is not None:
        print(
            f"note: {len(entries)} entries shown (--limit); the next page: --after {cursor}",
            file=sys.stderr,
        )
    return EXIT_OK


async def _show(args: argparse.Namespace, kernel: Any) -> int:
    from postroom import outboxops

    try:
        entry_id = await outboxops.resolve_entry_id(kernel.store, args.id)
    except outboxops.UnknownEntry as exc:
        raise NotFound(str(exc)) from None
    data = await outboxops.entry_details(kernel.store, entry_id)
    if args.json:
        print(_dumps(data))
        return EXIT_OK
    print(f"id:           {data['id']}")
    print(f"message-id:   {data['message_id']}")
    print(f"state:        {data['state']}  (interaction status {data['status']})")
    print(f"attempts:     {data['attempts']}")
    print(f"next attempt: {data['next_attempt_at'] or '-'}")
    print(f"last error:   {data['last_error'] or '-'}")
    print(f"queued:       {data['created_at']}")
    print(f"subject:      {data['subject'] or '(no subject)'}")
    for key in ("to", "cc", "bcc"):
        if data[key]:
            print(f"{key + ':':<14}{', '.join(data[key])}")
    print("history:" if data["history"] else "history:      (no attempt yet)")
    for line in data["history"]:
        text = f"  {line['at']}  {line['result']}"
        if line["error"]:
            text += f"  {line['error']}"
        if line["reply"]:
            text += f"  reply: {line['reply']}"
        for rcpt, why in line["refused"].items():
            text += f"  refused {rcpt}: {why}"
        print(text)
    if data["delivery"]:
        print("delivery:")
    for row in data["delivery"]:
        text = f"  {row['recipient']}  {row['status']}  {row['time']}"
        if row["action"]:
            text += f"  ({row['action']})"
        if row["report_id"]:
            text += f"  report {row['report_id']}"
        if row["diagnostic"]:
            text += f"  {row['diagnostic']}"
        print(text)
    return EXIT_OK


async def _change(args: argparse.Namespace, kernel: Any) -> int:
    from postroom import outboxops
    from postroom.errors import OutboxConflict

    act = outboxops.retry if args.action == "retry" else outboxops.cancel
    status = EXIT_OK
    for text in args.id:
        try:
            data = await act(kernel.store, text)
        except (outboxops.UnknownEntry, AmbiguousId, OutboxConflict) as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        if args.json:
            print(_dumps(data))
        elif args.action == "retry":
            print(f"{data['id']} queued, due now (attempts so far: {data['attempts']})")
        else:
            print(f"{data['id']} cancelled")
    return status


_ACTIONS = {"list": _list, "show": _show, "retry": _change, "cancel": _change}
