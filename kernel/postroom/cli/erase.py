"""``postroom erase`` and ``postroom purge``: erasure of a person, and retention by hand.

docs/operations.md, "Retention" and "Erasure", describe both. ``erase`` exits 0
when the erasure was complete, 1 when a plugin failed or the address is still
found somewhere (run it again once the cause is fixed), 2 for a bad address or
a refused confirmation; the output and logs name the address's keyed hash only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from postroom.cli.failures import EXIT_CONFIG, EXIT_FAILED, EXIT_OK

WithKernel = Callable[[argparse.Namespace, Callable[[Any], Coroutine[Any, Any, int]]], int]

#: the commands this module adds
COMMANDS = ("erase", "purge")


def add_commands(sub: Any, with_kernel: WithKernel) -> None:
    """Add ``erase`` and ``purge`` to the command line's sub-parsers."""
    p = sub.add_parser(
        "erase",
        help="remove every trace of an e-mail address from the store",
        description=(
            "Erase a person: their interactions (sent by the address, or sent only to it) "
            "with raw mail, texts, hand-off rows, outbox entries and files; the address in "
            "every other row (replaced by erased@erased.invalid) and every raw message "
            "naming it; their suppression entry and plugins' data (auto-reply exchange "
            "log). Only hashed dedupe tombstones stay, so the same mail still on a server "
            "is not imported again, and an audit row with a keyed hash of the address. "
            "Exit 1 when it was incomplete (a plugin failed, or the address is still "
            "found): run it again."
        ),
    )
    p.add_argument("-c", "--config", required=True, help="site configuration (YAML)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--address", help="the e-mail address to erase (any case)")
    what.add_argument(
        "--check",
        metavar="ADDRESS",
        help="show the audit rows of earlier erasures of ADDRESS (hashed again); exit 1 "
        "when there is none",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would go; change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    p.set_defaults(func=lambda args: cmd_erase(args, with_kernel))

    p = sub.add_parser(
        "purge",
        help="run the retention job once",
        description=(
            "Purge raw messages older than retention: raw-max-age and interactions older "
            "than retention: interactions-max-age, as the gateway's retention job does, "
            "never what is still needed (a pending hand-off, an open quarantine entry, an "
            "unsent outbox entry)."
        ),
    )
    p.add_argument("-c", "--config", required=True, help="site configuration (YAML)")
    p.add_argument("--dry-run", action="store_true", help="count what would go; change nothing")
    p.add_argument("--json", action="store_true", help="the counts as one JSON object")
    p.set_defaults(func=lambda args: cmd_purge(args, with_kernel))


def _confirmed(args: argparse.Namespace) -> bool:
    if args.yes or args.dry_run:
        return True
    if not sys.stdin.isatty():
        print("error: erasure cannot be undone: add --yes (or try --dry-run)", file=sys.stderr)
        return False
    answer = input("Erase every trace of this address? This cannot be undone. Type 'yes': ")
    return answer.strip().lower() == "yes"


def cmd_erase(args: argparse.Namespace, with_kernel: WithKernel) -> int:
    from postroom.addresses import AddressError
    from postroom.erasure import audits, erase, normalize

    try:
        normalize(args.address or args.check)
    except AddressError as exc:
        print(f"error: not an e-mail address: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    # asked at a terminal before anything opens; refused without one only once
    # the store has opened (a broken site is reported as such first)
    if args.address and sys.stdin.isatty() and not _confirmed(args):
        return EXIT_CONFIG

    async def check(kernel: Any) -> int:
        rows = await audits(kernel, args.check)
        if args.json:
            print(json.dumps(rows, indent=2))
        for row in [] if args.json else rows:
            state = "complete" if row["complete"] else "INCOMPLETE"
            print(f"{row['at']}  {state}  address hash {row['address_hash']}")
        if not rows and not args.json:
            print("no erasure of this address is recorded")
        return EXIT_OK if rows else EXIT_FAILED

    async def run(kernel: Any) -> int:
        if not sys.stdin.isatty() and not _confirmed(args):
            return EXIT_CONFIG
        report = await erase(kernel, args.address, dry_run=args.dry_run)
        if args.json:
            print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
        else:
            _print_report(report)
        return EXIT_OK if report.complete else EXIT_FAILED

    return with_kernel(args, check if args.check else run)


def _print_report(report: Any) -> None:
    verb = "would remove or rewrite" if report.dry_run else "removed or rewrote"
    print(f"{verb} (rows per table):")
    for table, rows in sorted(report.counts.items()):
        print(f"  {table}: {rows}")
    if not report.counts:
        print("  nothing in the kernel's tables")
    for plugin, done in sorted(report.plugins.items()):
        print(f"  plugin {plugin}: {done}")
    for place, rows in sorted(report.remaining.items()):
        print(f"still found in {place}: {rows} row(s)")
    if report.dry_run:
        print("dry run: nothing was changed")
    elif report.complete:
        print(f"erasure complete; audit address hash {report.address_hash}")
    else:
        print(
            f"erasure INCOMPLETE (audit address hash {report.address_hash}): fix the cause "
            "and run it again",
            file=sys.stderr,
        )


def cmd_purge(args: argparse.Namespace, with_kernel: WithKernel) -> int:
    from postroom.services.retention import configured, run_purge

    async def run(kernel: Any) -> int:
        if not configured(kernel):
            print("retention: raw-max-age and interactions-max-age are 0: nothing is purged")
            return EXIT_OK
        counts = await run_purge(kernel, dry_run=args.dry_run)
        if args.json:
            print(json.dumps({"dry_run": args.dry_run, "counts": counts}, sort_keys=True))
            return EXIT_OK
        verb = "would purge" if args.dry_run else "purged"
        if not counts:
            print(f"{verb} nothing")
        for table, rows in sorted(counts.items()):
            print(f"{verb} {table}: {rows}")
        return EXIT_OK

    return with_kernel(args, run)
