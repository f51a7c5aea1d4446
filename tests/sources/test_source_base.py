"""SourceBase: credentials through the auth driver, auth events, spool files."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from postroom.api import (
    Credentials,
    DriverContext,
    FetchedMessage,
    RawRef,
    SourceBase,
    SourceError,
    needs_auth,
)
from postroom.drivers.filesender import FileSender
from postroom.drivers.maildir import MaildirSource
from tests.conftest import run
from tests.plugins.fake_auth import proxy_section


class Mailbox:
    name = "support"
    auth = "basic"


class Authenticator:
    def __init__(self) -> None:
        self.asked: list[str] = []
        self.invalidated = 0

    def credentials(self, protocol: str) -> defer.Deferred[Credentials]:
        self.asked.append(protocol)
        return defer.succeed(Credentials("agent", "s3cret", "PLAIN"))

    def invalidate(self) -> None:
        self.invalidated += 1


class Config:
    def __init__(self, max_size: Any) -> None:
        self.max_size = max_size

    def get(self, section: str, name: str) -> Any:
        if section == "proxy":  # a server source asks which proxy it goes through
            return proxy_section(name)
        assert (section, name) == ("email-processing", "maximum-msg-size")
        return self.max_size


class Source(SourceBase):
    protocol = "pop3"


def make(
    tmp_path: Path, authenticator: Any = None, auth_event: Any = None, max_size: Any = 0
) -> Source:
    context = DriverContext(
        reactor=None,
        clock=None,
        runner=None,
        config=Config(max_size),
        spool_dir=str(tmp_path / "spool"),
        authenticator=authenticator,
        auth_event=auth_event,
    )
    return Source(Mailbox(), context)


def test_credentials_come_from_the_auth_driver_for_the_sources_protocol(tmp_path: Path) -> None:
    auth = Authenticator()
    creds = run(make(tmp_path, auth).credentials())
    assert creds == Credentials("agent", "s3cret", "PLAIN")
    assert auth.asked == ["pop3"]


def test_a_synchronous_auth_driver_works_too(tmp_path: Path) -> None:
    class Plain(Authenticator):
        def credentials(self, protocol: str) -> Any:  # type: ignore[override]
            return Credentials("u", "p")

    assert run(make(tmp_path, Plain()).credentials()).username == "u"


def test_without_an_auth_driver_no_credentials(tmp_path: Path) -> None:
    """No fall-back to the mailbox's password: every source fails the same way."""
    with pytest.raises(SourceError) as info:
        run(make(tmp_path).credentials())
    assert str(info.value) == (
        "mailbox support: no auth driver 'basic' was given to the source; it cannot log in"
    )


def test_login_ok_is_reported(tmp_path: Path) -> None:
    events: list[tuple[str, str, str]] = []
    auth = Authenticator()
    make(tmp_path, auth, lambda *e: events.append(e)).login_ok("PLAIN on server x:110")
    assert events == [("support", "login-ok", "PLAIN on server x:110")]
    assert auth.invalidated == 0


def test_a_refused_login_invalidates_the_credentials_and_is_reported(tmp_path: Path) -> None:
    events: list[tuple[str, str, str]] = []
    auth = Authenticator()
    make(tmp_path, auth, lambda *e: events.append(e)).login_refused("[AUTH] bad token")
    assert auth.invalidated == 1
    assert events == [("support", "login-failed", "[AUTH] bad token")]


def test_a_failing_auth_event_hook_never_fails_the_login(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_event: Any) -> defer.Deferred[None]:
        return defer.fail(RuntimeError("hook down"))

    def raising(*_event: Any) -> None:
        raise RuntimeError("hook raised")

    with caplog.at_level(logging.DEBUG, logger="postroom.sources.base"):
        make(tmp_path, Authenticator(), broken).login_ok("x")
        make(tmp_path, Authenticator(), raising).login_refused("y")
    assert "hook down" in caplog.text and "hook raised" in caplog.text


def test_no_hook_no_event(tmp_path: Path) -> None:
    make(tmp_path, Authenticator(), None).login_ok("nobody listens")  # no error


def test_spool_files_are_named_after_protocol_and_mailbox_and_limited(tmp_path: Path) -> None:
    source = make(tmp_path, max_size=4)
    file = source.spool("17")
    file.write(b"12345")
    assert file.over_limit
    assert Path(file.path).parent == tmp_path / "spool"
    assert Path(file.path).name.startswith("pop3-support-17-")
    file.discard()


@pytest.mark.parametrize("value", [None, "", "not a number"])
def test_unreadable_max_size_means_no_limit(tmp_path: Path, value: Any) -> None:
    assert make(tmp_path, max_size=value).max_message_size == 0


def test_oversized_announcement_is_logged_once_per_fetch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = make(tmp_path, max_size=100)
    with caplog.at_level(logging.INFO, logger="postroom.sources.base"):
        source.note_size("uid-1", 100)
        source.note_size("uid-2", None)
        source.note_size("uid-3", 101)
    assert [r.getMessage() for r in caplog.records] == [
        "mailbox support: message uid-3 is 101 bytes, over maximum-msg-size (100): "
        "downloading it to keep its raw bytes"
    ]


def test_drop_spooled_deletes_only_inside_the_spool(tmp_path: Path) -> None:
    source = make(tmp_path)
    inside = source.spool()
    inside.write(b"x")
    outside = tmp_path / "elsewhere.eml"
    outside.write_bytes(b"y")
    for raw in (inside.raw(), RawRef.from_path(outside)):
        source.drop_spooled(FetchedMessage(mailbox="support", source_key="k", raw=raw))
    assert not os.path.exists(inside.path)
    assert outside.exists()


def test_which_drivers_need_an_auth_driver() -> None:
    assert needs_auth(Source)
    assert not needs_auth(MaildirSource)
    assert not needs_auth(FileSender)

    class Undeclared:
        pass

    assert needs_auth(Undeclared)  # a driver that does not say logs in to a server


def test_a_server_source_reads_its_connection_options_once(tmp_path: Path) -> None:
    from postroom.api import OptionSchema, ServerSourceBase

    class Box(ServerSourceBase):
        protocol = "pop3"
        types = ("box",)
        ports = {"ssl": 995, "starttls": 110, "none": 110}

    schema = OptionSchema()
    Box.add_server_options(schema)
    declared = {option.name: option for option in schema}
    assert {"server", "port", "pop-connection-security", "connect-timeout"} <= set(declared)
    assert declared["server"].types == ("box",)

    class BoxMailbox(Mailbox):
        values = {
            "server": "mail.test",
            "port": None,
            "pop-connection-security": "starttls",
            "ca-file": None,
            "connect-timeout": 5.0,
            "protocol-timeout": 50.0,
            "enable-debug": True,
        }

        def get(self, name: str) -> Any:
            return self.values[name]

    context = make(tmp_path, Authenticator()).context
    box = Box(BoxMailbox(), context)
    assert (box.settings.port, box.settings.connect_timeout) == (110, 5.0)
    assert box.where == "server mail.test:110"
    assert box.tracer.enabled and box.tracer.mailbox == "support"
