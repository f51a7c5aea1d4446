"""Plugins' ``postroom`` commands: what ``postroom_register_commands(commands)`` receives.

The command line is ``argparse``; a plugin gets a parser for its command and
adds arguments and sub-commands to it as the kernel's commands do. A *site
command* takes ``-c SITE`` and runs with the site's kernel, its store open,
under the same failure rules as every command (one ``error:`` line and a
documented exit status, :mod:`postroom.cli.failures`). The site decides which
plugins are enabled: a command of a plugin it does not enable exits 2 saying so.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any

from postroom.cli.failures import EXIT_CONFIG

#: ``run(args, kernel)``: a plugin's site command; its exit status (or an awaitable of it)
SiteRun = Callable[[argparse.Namespace, Any], "int | Awaitable[int]"]
WithKernel = Callable[[argparse.Namespace, Callable[[Any], Coroutine[Any, Any, int]]], int]


class PluginCommands:
    """Where plugins add their ``postroom`` commands."""

    def __init__(
        self,
        subparsers: Any,
        taken: Collection[str],
        with_kernel: WithKernel,
    ) -> None:
        """*subparsers* is the command line's (``add_subparsers``); *taken* the
        kernel's command names; *with_kernel* how a site command gets its kernel."""
        self._subparsers = subparsers
        self._taken = set(taken)
        self._with_kernel = with_kernel
        #: the plugin whose ``postroom_register_commands`` is running (set by the kernel)
        self.plugin: str | None = None
        #: command name -> the plugin that added it
        self.added: dict[str, str] = {}

    def add(
        self, name: str, *, help: str, description: str | None = None
    ) -> argparse.ArgumentParser:
        """A new top-level command ``postroom NAME``: its parser. A name the kernel
        or another plugin has is refused (ValueError)."""
        if not name or not name.replace("-", "").isalnum() or not name[0].isalpha():
            raise ValueError(f"command name {name!r}: letters, digits and '-', a letter first")
        if name in self._taken:
            owner = self.added.get(name, "postroom")
            raise ValueError(f"command {name!r} exists already (of {owner})")
        parser: argparse.ArgumentParser = self._subparsers.add_parser(
            name, help=help, description=description or help
        )
        self._taken.add(name)
        self.added[name] = self.plugin or "?"
        return parser

    def site_command(self, parser: argparse.ArgumentParser, run: SiteRun) -> None:
        """Make *parser* (a command's, or one of its sub-commands') take ``-c SITE``
        and run ``run(args, kernel)`` with that site's kernel, its store open."""
        plugin = self.plugin
        parser.add_argument("-c", "--config", required=True, help="site configuration (YAML)")

        def command(args: argparse.Namespace) -> int:
            async def body(kernel: Any) -> int:
                if plugin is not None and plugin not in kernel.plugins.order:
                    print(
                        f"error: plugin {plugin!r} is not enabled in {args.config} "
                        f"(plugins: {', '.join(kernel.plugins.order)})",
                        file=sys.stderr,
                    )
                    return EXIT_CONFIG
                status = run(args, kernel)
                if inspect.isawaitable(status):
                    status = await status
                return int(status)

            return self._with_kernel(args, body)

        parser.set_defaults(func=command)
