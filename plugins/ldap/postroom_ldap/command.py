"""``postroom ldap-lookup -c SITE ADDRESS``: the connection check of the directory.

The kernel's ``postroom check --connect`` knows mailboxes and senders only (no
hook lets a plugin add a check), so the plugin brings its own command: it
connects, (StartTLS), binds and searches exactly as the gateway does, and
prints what would be attached. Exit 0 with an answer (found or not), 1 when
the directory did not answer (the reason, never the password), 2 when the
site configures no directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from postroom.api import PluginCommands
from postroom_ldap.contacts import normalise
from postroom_ldap.directory import DirectoryUnavailable

EXIT_UNAVAILABLE = 1
EXIT_CONFIG = 2


def add_command(commands: PluginCommands, directory_of: Any) -> None:
    parser = commands.add(
        "ldap-lookup",
        help="look an address up in the site's directory (ldap-contacts)",
        description="Connect, bind and search as the gateway does, and print the attached "
        "data the address would get (JSON). Exit 1 when the directory does not answer, "
        "2 when the site has no ldap-contacts.url.",
    )
    parser.add_argument("address", help="the e-mail address to look up")

    async def run(args: argparse.Namespace, kernel: Any) -> int:
        directory = directory_of(kernel.ctx)
        if directory is None:
            print("error: the site sets no ldap-contacts.url", file=sys.stderr)
            return EXIT_CONFIG
        settings = directory.settings
        try:
            contact = await directory.lookup(args.address)
        except DirectoryUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        found = {
            "directory": settings.shown_url,
            "address": normalise(args.address),
            "dn": contact.dn if contact is not None else None,
            "attached": contact.attached() if contact is not None else {},
        }
        print(json.dumps(found, ensure_ascii=False, indent=2))
        return 0

    commands.site_command(parser, run)
