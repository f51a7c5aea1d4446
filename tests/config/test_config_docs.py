"""The configuration reference is rendered from the declarations."""

from __future__ import annotations

from collections.abc import Callable

from postroom.config.core import kernel_schema
from postroom.config.docs import render_markdown
from postroom.config.options import OptionSchema, Scope


def test_docs_are_deterministic_and_mention_every_option(
    make_schema: Callable[[], OptionSchema],
) -> None:
    schema = make_schema()
    text = render_markdown(schema)
    assert text == render_markdown(make_schema())
    assert text.endswith("\n") and not text.endswith("\n\n")
    for option in schema:
        assert f"`{option.name}`" in text, option.name
        if option.description:
            assert option.description in text
    for alias in ("default_domain",):
        assert f"`{alias}`" in text
    for heading in ("## Top level", "## `store`", "### Driver `sqlite`", "### Driver `postgresql`",
                    "## `pop-client`", "### Mailboxes of type `maildir`",
                    "### Mailboxes of type `imap`, `pop3`", "## `smtp-client`",
                    "### Server-type `file`", "## Section `email-processing`",
                    "## Section `gateway`", "## `secret-<name>`"):
        assert heading + "\n" in text, heading
    assert "1024-based" in text and "HH:MM:SS" in text and "${file:path}" in text
    honoured = text.split("Honoured: ", 1)[1].split(".\n", 1)[0]
    assert "`mail.pop3.disabletop`" in honoured and "`mail.imap.socks.host`" in honoured
    assert "- declared by: maildir" in text


def test_docs_never_show_secret_defaults() -> None:
    schema = OptionSchema()
    schema.add("token", "secret", section="s", default="do-not-show")
    schema.add("key", section="s", secret=True, default="nor-this")
    text = render_markdown(schema)
    assert "do-not-show" not in text and "nor-this" not in text
    assert text.count("set (not shown)") == 2


def test_docs_order_does_not_depend_on_plugin_registration_order() -> None:
    def build(order: list[str]) -> OptionSchema:
        schema = kernel_schema()
        for plugin in order:
            with schema.declaring(plugin):
                schema.add(f"{plugin}-option", scope=Scope.MAILBOX, description=plugin)
        return schema

    assert render_markdown(build(["alpha", "beta"])) == render_markdown(build(["beta", "alpha"]))


def test_bounds_are_written_as_values_are() -> None:
    schema = OptionSchema()
    schema.add("wait", "duration", section="s", minimum=1, maximum=86400)
    schema.add("chunk", "size", section="s", minimum=1, maximum=64 * 1024**2)
    schema.add("count", "int", section="s", minimum=-1, maximum=256)
    text = render_markdown(schema)
    assert "- type: `duration` (minimum `00:00:01`, maximum `24:00:00`)" in text
    assert "- type: `size` (minimum 1 byte, maximum `64MB`)" in text
    assert "- type: `int` (minimum -1, maximum 256)" in text
