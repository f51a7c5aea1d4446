"""IMAP and POP3 behave the same where the issue asked them to: one SourceBase.

Without an auth driver neither source logs in with the mailbox's own password
(POP3 once did, IMAP raised): both fail to connect with the same SourceError
before opening a connection. A refused login is reported and invalidates the
credentials the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

from postroom.api import DriverContext, SourceBase, SourceError
from postroom_imap.source import IMAPSource
from postroom_pop3.source import POP3Source
from tests.conftest import run
from tests.plugins.imap.conftest import FakeConfig, mailbox_config
from tests.plugins.pop3.fakes import FakeMailbox


def context_without_auth(tmp_path: Path, reactor: MemoryReactorClock) -> DriverContext:
    return DriverContext(
        reactor=reactor,
        clock=reactor,
        runner=None,
        config=FakeConfig(),
        spool_dir=str(tmp_path),
        authenticator=None,
    )


def pop3_mailbox() -> Any:
    mailbox = FakeMailbox(name="support")
    mailbox.auth = "basic"  # type: ignore[attr-defined]
    return mailbox


EACH_SOURCE = pytest.mark.parametrize(
    ("source_class", "mailbox"),
    [(IMAPSource, lambda: mailbox_config("support")), (POP3Source, pop3_mailbox)],
    ids=["imap", "pop3"],
)


@EACH_SOURCE
def test_no_auth_driver_fails_the_same_way_before_connecting(
    tmp_path: Path, source_class: type[SourceBase], mailbox: Any
) -> None:
    reactor = MemoryReactorClock()
    source = source_class(mailbox(), context_without_auth(tmp_path, reactor))
    assert source.needs_auth
    with pytest.raises(SourceError) as info:
        run(source.connect())
    assert str(info.value) == (
        "mailbox support: no auth driver 'basic' was given to the source; it cannot log in"
    )
    assert reactor.tcpClients == [] and reactor.sslClients == []  # nothing was dialled


def test_both_are_source_bases_sharing_the_blocks() -> None:
    for cls in (IMAPSource, POP3Source):
        assert issubclass(cls, SourceBase)
        for shared in ("credentials", "login_ok", "login_refused", "spool", "drop_spooled"):
            assert shared not in vars(cls), f"{cls.__name__} overrides {shared}"
    assert (IMAPSource.protocol, POP3Source.protocol) == ("imap", "pop3")


@EACH_SOURCE
def test_an_unreadable_ca_file_is_the_same_error(
    tmp_path: Path, source_class: type[SourceBase], mailbox: Any
) -> None:
    config = mailbox()
    missing = tmp_path / "missing.pem"
    if hasattr(config, "values"):
        config.values["ca-file"] = missing
    else:
        config.options["ca-file"] = missing
    source = source_class(config, context_without_auth(tmp_path, MemoryReactorClock()))
    with pytest.raises(SourceError, match=f"mailbox support: cannot read ca-file {missing}: "):
        source.tls()  # type: ignore[attr-defined]
