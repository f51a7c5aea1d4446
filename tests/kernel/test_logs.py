"""Logging: the formats, the site's ``logging:`` section, and the failures of single
messages, hand-offs and sends, each logged once with its reason and what it concerns."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail

from postroom import hookimpl
from postroom.kernel import Kernel
from postroom.logs import JsonFormatter, TextFormatter, setup_logging, site_logging
from postroom.model import Interaction
from postroom.services.gateway import Gateway
from tests.conftest import run
from tests.kernel.test_gateway import make_kernel, once

MAILBOX_LOGGER = "postroom.services.mailbox"
#: the quickstart's fourth message (its maildir file name starts so)
FOURTH = "1762092000"


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Tests that call setup_logging leave the root logger as pytest had it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def record(message: str = "hello %s", *args: Any, **extra: Any) -> logging.LogRecord:
    made = logging.getLogger("postroom.test").makeRecord(
        "postroom.test", logging.WARNING, __file__, 1, message, args or ("world",), None,
        extra=extra,
    )  # fmt: skip
    return made


def test_a_json_line_has_time_level_logger_message_and_the_fields() -> None:
    line = JsonFormatter().format(
        record(mailbox="support", interaction_id="abc", source_key="17", custom=[1])
    )
    data = json.loads(line)
    assert list(data)[:4] == ["time", "level", "logger", "message"]
    assert data["time"].endswith("+00:00") and data["level"] == "warning"
    assert data["logger"] == "postroom.test" and data["message"] == "hello world"
    assert (data["mailbox"], data["interaction_id"], data["source_key"]) == ("support", "abc", "17")
    assert data["custom"] == [1] and "\n" not in line


def test_a_json_line_keeps_a_traceback_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = record()
        made.exc_info = sys.exc_info()
    line = JsonFormatter().format(made)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exception"]


def test_a_text_line_shows_the_fields_after_the_message() -> None:
    line = TextFormatter().format(record(interaction_id="abc", mailbox="support"))
    assert line.endswith("WARNING postroom.test: hello world [mailbox=support interaction_id=abc]")


def site(quickstart: Path, text: str) -> Kernel:
    quickstart.write_text(quickstart.read_text() + text)
    return make_kernel(quickstart)


@pytest.mark.usefixtures("restored_logging")
def test_the_site_decides_level_and_format_unless_the_command_line_does(
    quickstart: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = site(quickstart, "logging: {level: warning, format: json}\n")
    site_logging(kernel.config)
    logging.getLogger("postroom.x").info("not written")
    logging.getLogger("postroom.x").warning("written")
    [line] = capsys.readouterr().err.splitlines()
    assert json.loads(line)["message"] == "written"
    site_logging(kernel.config, logging.DEBUG, "text")  # --log-level debug --log-format text
    logging.getLogger("postroom.x").debug("now written")
    assert capsys.readouterr().err.rstrip().endswith("DEBUG postroom.x: now written")


@pytest.mark.usefixtures("restored_logging")
def test_twisted_events_reach_the_same_handler_in_the_same_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from twisted.logger import Logger

    setup_logging(logging.INFO, "json")
    Logger(namespace="twisted.test").warn("from {who}", who="twisted")
    Logger(namespace="twisted.test").info("an informational twisted line")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    # Twisted's INFO lines (factories, the access log) are for debug only
    assert [(d["logger"], d["level"], d["message"]) for d in lines] == [
        ("twisted", "warning", "from twisted")
    ]


def maildir_fetch_failing(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    from postroom.drivers.maildir import MaildirSource

    original = MaildirSource.fetch

    def failing(self: MaildirSource, item: Any) -> Deferred[Any]:
        if item.source_key.startswith(FOURTH):
            return fail(error)
        return original(self, item)

    monkeypatch.setattr(MaildirSource, "fetch", failing)


def about(caplog: pytest.LogCaptureFixture, key: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "source_key", "").startswith(key)]


def test_a_failed_fetch_is_logged_once_per_attempt_with_its_reason(
    quickstart: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    maildir_fetch_failing(monkeypatch, OSError("line too long"))
    caplog.set_level(logging.INFO)
    for _ in range(4):  # below quarantine (max-attempts 5)
        once(make_kernel(quickstart))
    failed = about(caplog, FOURTH)
    assert [(r.levelname, r.name) for r in failed] == [("WARNING", MAILBOX_LOGGER)] * 4
    assert [f"attempt {n} of 5" in r.getMessage() for n, r in enumerate(failed, 1)] == [True] * 4
    assert all("fetch failed: line too long" in r.getMessage() for r in failed)
    assert {r.mailbox for r in failed} == {"support"}  # type: ignore[attr-defined]
    caplog.clear()
    once(make_kernel(quickstart))  # the fifth: quarantined, an ERROR
    [last] = about(caplog, FOURTH)
    assert last.levelname == "ERROR" and "quarantined after 5 attempts" in last.getMessage()
    assert "line too long" in last.getMessage()


def test_a_message_that_breaks_a_plugin_is_logged_once_with_the_traceback(
    quickstart: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Poison:
        @hookimpl
        def postroom_expand(self, interaction: Interaction) -> None:
            if "large" in interaction.subject:
                raise ValueError("boom")

    caplog.set_level(logging.INFO)
    once(make_kernel(quickstart, plugins=[("poison", Poison())]))
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING and "boom" in r.message]
    [failed] = failures
    assert failed.name == MAILBOX_LOGGER and failed.exc_info is not None
    assert "ValueError: boom" in failed.getMessage() and "attempt 1 of 5" in failed.getMessage()
    assert failed.source_key and failed.mailbox == "support"  # type: ignore[attr-defined]


def test_a_failed_hand_off_names_the_interaction(
    quickstart: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Routing:
        @hookimpl
        def postroom_submit(self, interaction: Interaction, ctx: Any) -> None:
            raise ConnectionRefusedError("routing is down")

    caplog.set_level(logging.INFO)
    gateway = Gateway(make_kernel(quickstart, plugins=[("routing", Routing())]))
    gateway.startService()  # the first pass runs at start: each hand-off fails once
    run(gateway.stopService())
    failed = [r for r in caplog.records if "routing is down" in r.getMessage()]
    assert len(failed) == 4 and all(r.levelno == logging.WARNING for r in failed)
    committed = {getattr(r, "interaction_id", None) for r in caplog.records
                 if r.getMessage().startswith("committed interaction")}  # fmt: skip
    assert {r.interaction_id for r in failed} <= committed  # type: ignore[attr-defined]
    assert {r.mailbox for r in failed} == {"support"}  # type: ignore[attr-defined]


def test_the_start_up_lines(quickstart: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    once(make_kernel(quickstart))
    messages = [r.getMessage() for r in caplog.records]
    store = quickstart.parent / "postroom.db"
    assert f"store: SQLite database {store}" in messages
    assert any(m.startswith("plugins loaded: core-options, ") for m in messages)
    maildir = quickstart.parent / "maildir"
    assert messages.count(f"mailbox support: connected (maildir, folder {maildir})") == 1
