"""``postroom render``: what a send request would become, nothing queued or sent; and
plugins' commands (``postroom_register_commands``) on the command line."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from postroom.api import hookimpl
from postroom.cli.commands import PluginCommands
from postroom.cli.main import KERNEL_COMMANDS, _command_of, build_parser
from tests.hooks.support import hooks_with
from tests.kernel.test_cli import postroom
from tests.kernel.test_cli_send import outbox


def rows(quickstart: Path) -> dict[str, int]:
    """How many rows each of the store's tables holds (made first, when it is not yet)."""
    database = quickstart.parent / "postroom.db"
    if not database.exists():
        assert postroom("interactions", "list", "-c", str(quickstart)).returncode == 0
    with sqlite3.connect(database) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def request_file(tmp_path: Path, data: Any) -> str:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


@pytest.fixture
def parent(quickstart: Path) -> tuple[str, str]:
    """An outbound mail sent from the site (id, Message-ID): a parent to answer."""
    first = postroom(
        "send", "-c", str(quickstart), "--to", "Anna <a@x.example>", "--subject", "Order",
        "--text", "1", "--now",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    interaction_id, message_id, _ = first.stdout.split()
    return interaction_id, message_id


def test_render_prints_the_reply_and_stores_nothing(
    quickstart: Path, parent: tuple[str, str], tmp_path: Path
) -> None:
    parent_id, parent_mid = parent
    before, sent_before = rows(quickstart), outbox(quickstart)
    request = request_file(tmp_path, {"in_reply_to": parent_id, "text": "Shipped.", "quote": True})
    result = postroom("render", "-c", str(quickstart), request)
    assert result.returncode == 0, result.stderr
    message = result.stdout
    assert "To: a@x.example\n" in message and "Subject: Re: Order\n" in message
    assert f"In-Reply-To: {parent_mid}\n" in message and f"References: {parent_mid}\n" in message
    assert "Shipped.\n" in message and "> 1\n" in message  # the quote of the parent
    assert rows(quickstart) == before and outbox(quickstart) == sent_before


def test_render_reads_standard_input_and_json_shows_the_parts(quickstart: Path) -> None:
    before = rows(quickstart)
    data = {"to": "a@x.example", "subject": "Hi", "html": "<p>Hello</p>", "bcc": ["b@y.example"]}
    result = postroom("render", "-c", str(quickstart), "--json", stdin=json.dumps(data))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["sendable"] is True and shown["veto"] is None and shown["error"] is None
    assert shown["html"] == "<p>Hello</p>" and shown["text"] is None
    assert shown["envelope"]["rcpt_to"] == ["a@x.example", "b@y.example"]
    assert "Bcc" not in dict(shown["headers"]) and dict(shown["headers"])["Subject"] == "Hi"
    assert shown["message"].startswith("From: postroom@example.com\r\n")
    assert rows(quickstart) == before


def test_a_veto_is_shown_and_exits_1(quickstart: Path, tmp_path: Path) -> None:
    """The transcript plugin vetoes a chat it cannot read (error 30002): shown, not a crash."""
    data = {"to": "a@x.example", "text": "x", "options": {"transcript": {"xml": "<chat"}}}
    request = request_file(tmp_path, data)
    result = postroom("render", "-c", str(quickstart), request, "--json")
    assert result.returncode == 1, result.stderr
    shown = json.loads(result.stdout)
    assert shown["sendable"] is False and shown["message"] is None
    assert shown["veto"].startswith("vetoed by transcript: 30002|STANDARD|CHAT_UNMARSHALL_ERROR")
    assert result.stderr.splitlines()[-1].startswith(
        "error: would not be sent: vetoed by transcript: 30002"
    )
    plain = postroom("render", "-c", str(quickstart), request)
    assert plain.returncode == 1 and plain.stdout == "" and "Traceback" not in plain.stderr


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"subject": "x"}, "error: to: is required unless in_reply_to"),
        ({"to": "a@x.example", "in_reply_to": "nope"}, "error: in_reply_to: no interaction 'nope'"),
        ({"to": "a@x.example", "colour": "red"}, "error: colour: unknown key 'colour'"),
        ({"to": "a@x.example", "options": {"standard_response": {"id": "x"}}},
         "error: options: standard_response: no standard-responses.directory is configured"),
        ({"to": "a@x.example", "options": {"transcript": "x"}},
         "error: options: transcript must be an object"),
        ("not an object", "error: must be an object, not a string"),
    ],
)  # fmt: skip
def test_a_refused_request_exits_2_naming_the_field(
    quickstart: Path, tmp_path: Path, data: Any, error: str
) -> None:
    before = rows(quickstart)
    result = postroom("render", "-c", str(quickstart), request_file(tmp_path, data))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(error) or error in result.stderr, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert rows(quickstart) == before


def test_an_unreadable_request_file_exits_2(quickstart: Path, tmp_path: Path) -> None:
    result = postroom("render", "-c", str(quickstart), str(tmp_path / "missing.json"))
    assert result.returncode == 2 and "cannot read" in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"to": "a@x.example", "to": "b@x.example"}')
    result = postroom("render", "-c", str(quickstart), str(bad))
    assert result.returncode == 2 and "appears twice" in result.stderr


# ------------------------------------------------------------ plugin commands


class Acme:
    """A plugin adding ``postroom acme-count``."""

    @hookimpl
    def postroom_register_commands(self, commands: PluginCommands) -> None:
        parser = commands.add("acme-count", help="count")
        parser.add_argument("--limit", type=int, default=3)
        commands.site_command(parser, self.count)

    async def count(self, args: argparse.Namespace, kernel: Any) -> int:
        return args.limit


class Clumsy:
    @hookimpl
    def postroom_register_commands(self, commands: PluginCommands) -> None:
        commands.add("send", help="a second send")


def test_plugin_commands_are_added_and_a_failing_plugin_is_only_a_warning() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("send")
    ran: list[Any] = []
    commands = PluginCommands(sub, {"send"}, lambda args, body: ran.append(args) or 0)
    warnings = hooks_with(("clumsy", Clumsy()), ("acme", Acme())).register_commands(commands)
    assert warnings == [
        "plugin 'clumsy' failed in postroom_register_commands: ValueError: command 'send' "
        "exists already (of postroom); its commands are missing"
    ]
    assert commands.added == {"acme-count": "acme"} and commands.plugin is None
    args = parser.parse_args(["acme-count", "-c", "site.yaml", "--limit", "7"])
    assert args.func(args) == 0 and ran == [args] and args.config == "site.yaml"


@pytest.mark.parametrize("name", ["", "-x", "a b", "1st", "two/words"])
def test_a_command_name_must_be_a_word(name: str) -> None:
    parser = argparse.ArgumentParser()
    commands = PluginCommands(parser.add_subparsers(), set(), lambda args, body: 0)
    with pytest.raises(ValueError, match="letters, digits and '-'"):
        commands.add(name, help="x")


def test_the_command_line_has_the_installed_plugins_commands() -> None:
    """The render plugin's ``responses``; the kernel's own commands load no plugin."""
    choices = next(
        a.choices for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    kernel_only = next(
        a.choices
        for a in build_parser(plugin_commands=False)._actions
        if isinstance(a, argparse._SubParsersAction)
    )
    assert set(kernel_only) == KERNEL_COMMANDS
    assert "responses" in choices and "responses" not in kernel_only
    assert _command_of(["--log-format", "json", "-v", "send", "-c", "x"]) == "send"
    assert _command_of(["-v"]) is None and _command_of([]) is None


def test_help_lists_plugin_commands(quickstart: Path) -> None:
    result = postroom("--help")
    assert result.returncode == 0 and "responses" in result.stdout
    assert "preview what a send request would send" in result.stdout


def test_a_site_that_does_not_enable_the_plugin_refuses_its_command(quickstart: Path) -> None:
    quickstart.write_text(quickstart.read_text() + "plugins: [dsn]\n")
    result = postroom("responses", "list", "-c", str(quickstart))
    assert result.returncode == 2
    assert result.stderr.startswith("error: plugin 'render' is not enabled in "), result.stderr
