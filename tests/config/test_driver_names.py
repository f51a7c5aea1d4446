"""A driver name no installed distribution provides is a configuration error.

It is reported like every other mistake in the file: file, line, option path,
the installed drivers of that group and a "did you mean". The installed names
are the real entry points of the first-party drivers (imap, pop3, maildir;
smtp, file; sqlite, memory, postgresql; basic), loaded as the kernel loads them.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from twisted.internet import task

from postroom.config.core import kernel_schema
from postroom.config.document import parse_document
from postroom.config.options import OptionSchema
from postroom.config.validator import InstalledDrivers, validate
from postroom.drivers import installed_drivers, load_driver, needs_auth
from postroom.errors import ConfigError, ConfigErrors
from postroom.interfaces import AUTH_GROUP, SENDERS_GROUP, SOURCES_GROUP, STORES_GROUP
from postroom.kernel import Kernel
from postroom.runner import InlineRunner

INSTALLED = installed_drivers()
FIRST_PARTY = InstalledDrivers(
    sources=frozenset({"imap", "maildir", "pop3"}),
    senders=frozenset({"file", "smtp"}),
    stores=frozenset({"memory", "postgresql", "sqlite"}),
    auth=frozenset({"basic"}),
)


def installed(names: frozenset[str]) -> str:
    return ", ".join(sorted(names))


def full_schema() -> OptionSchema:
    """The kernel's declarations plus every installed driver's, as the kernel makes them."""
    schema = kernel_schema()
    for group, names in (
        (SOURCES_GROUP, INSTALLED.sources),
        (SENDERS_GROUP, INSTALLED.senders),
        (STORES_GROUP, INSTALLED.stores),
        (AUTH_GROUP, INSTALLED.auth),
    ):
        for name in sorted(names):
            declare = getattr(load_driver(group, name), "postroom_add_options", None)
            if declare is not None:
                with schema.declaring(f"{group}:{name}"):
                    declare(schema)
    return schema


def errors_of(text: str, drivers: InstalledDrivers | None = INSTALLED) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        validate(parse_document(text, file="site.yaml"), full_schema(), drivers=drivers)
    return info.value.errors


def test_the_first_party_drivers_are_installed_entry_points() -> None:
    assert FIRST_PARTY.sources <= INSTALLED.sources
    assert FIRST_PARTY.senders <= INSTALLED.senders
    assert FIRST_PARTY.stores <= INSTALLED.stores
    assert FIRST_PARTY.auth <= INSTALLED.auth


@pytest.mark.parametrize(
    ("text", "line", "option", "message"),
    [
        pytest.param(
            "pop-client:\n  - name: support\n    type: imapp\n    server: imap.example\n",
            3,
            "pop-client[support].type",
            f"no source driver 'imapp' (installed: {installed(INSTALLED.sources)}); "
            "did you mean 'imap'?",
            id="source",
        ),
        pytest.param(
            "smtp-client:\n  server-type: smtpp\n  server: smtp.example\n",
            2,
            "smtp-client.server-type",
            f"no sender driver 'smtpp' (installed: {installed(INSTALLED.senders)}); "
            "did you mean 'smtp'?",
            id="sender",
        ),
        pytest.param(
            "store:\n  driver: sqlit\n  path: site.db\n",
            2,
            "store.driver",
            f"no store driver 'sqlit' (installed: {installed(INSTALLED.stores)}); "
            "did you mean 'sqlite'?",
            id="store",
        ),
        pytest.param(
            "pop-client:\n  - name: support\n    type: imap\n    server: imap.example\n"
            "    auth: basik\n",
            5,
            "pop-client[support].auth",
            f"no auth driver 'basik' (installed: {installed(INSTALLED.auth)}); "
            "did you mean 'basic'?",
            id="mailbox-auth",
        ),
        pytest.param(
            "smtp-client:\n  server-type: smtp\n  server: smtp.example\n"
            "  enable-authentication: true\n  auth: kerberos\n",
            5,
            "smtp-client.auth",
            f"no auth driver 'kerberos' (installed: {installed(INSTALLED.auth)})",
            id="smtp-auth-no-close-match",
        ),
    ],
)
def test_an_unknown_driver_name_is_one_error_with_its_place(
    text: str, line: int, option: str, message: str
) -> None:
    # the unknown driver's options (server...) were never declared: not reported as well
    [error] = errors_of(text)
    assert (error.file, error.line, error.option, error.message) == (
        "site.yaml",
        line,
        option,
        message,
    )


def test_the_default_auth_driver_is_checked_at_the_mailbox_line() -> None:
    text = "tenant-id: 1\npop-client:\n  - name: support\n    type: pop3\n    server: pop.example\n"
    [error] = errors_of(text, InstalledDrivers(sources=INSTALLED.sources, stores=INSTALLED.stores))
    assert (error.line, error.option, error.message) == (
        3,
        "pop-client[support].auth",
        "no auth driver 'basic' (installed: none)",
    )


def test_mailboxes_without_a_server_and_smtp_without_authentication_need_no_auth_driver() -> None:
    text = (
        "pop-client:\n  - name: drop\n    type: maildir\n    folder-path: md\n    auth: nothing\n"
        "smtp-client:\n  server-type: file\n  folder-path: out\n  auth: nothing\n"
    )
    # what the kernel tells the validator: the loaded drivers that declare needs_auth = False
    without_auth = frozenset(
        name
        for group, name in [(SOURCES_GROUP, "maildir"), (SENDERS_GROUP, "file")]
        if not needs_auth(load_driver(group, name))
    )
    assert without_auth == {"maildir", "file"}
    drivers = attrs.evolve(INSTALLED, without_auth=without_auth)
    config = validate(parse_document(text), full_schema(), drivers=drivers)
    assert [m.type for m in config.mailboxes] == ["maildir"]
    # a driver that logs in has its auth name checked
    with pytest.raises(ConfigErrors, match="no auth driver 'nothing'"):
        validate(parse_document(text.replace("maildir", "imap")), full_schema(), drivers=drivers)


def test_every_installed_first_party_driver_name_is_accepted() -> None:
    text = """\
store: {driver: postgresql, dsn: "postgresql://localhost/postroom"}
pop-client:
  - {name: a, type: imap, server: imap.example, auth: basic}
  - {name: b, type: pop3, server: pop.example}
  - {name: c, type: maildir, folder-path: md}
smtp-client: {server-type: smtp, server: smtp.example, enable-authentication: true}
"""
    config = validate(parse_document(text), full_schema(), drivers=INSTALLED)
    assert config.store_driver == "postgresql"
    assert [(m.type, m.auth) for m in config.mailboxes] == [
        ("imap", "basic"),
        ("pop3", "basic"),
        ("maildir", "basic"),
    ]
    assert config.smtp is not None and config.smtp.server_type == "smtp"


def test_every_unknown_name_is_reported_with_the_files_other_mistakes() -> None:
    text = (
        "tenant-id: x\n"
        "store: {driver: sqlite3}\n"
        "pop-client:\n  - {name: a, type: pop33, server: pop.example}\n"
        "smtp-client: {server-type: fil, folder-path: out}\n"
    )
    assert [(e.line, e.option) for e in errors_of(text)] == [
        (1, "tenant-id"),
        (2, "store.driver"),
        (4, "pop-client[a].type"),
        (5, "smtp-client.server-type"),
    ]


def test_without_installed_drivers_the_names_are_not_checked() -> None:
    """A hand-built schema for a test has drivers of its own, not entry points."""
    config = validate(parse_document("pop-client: {name: a, type: fake}\n"), kernel_schema())
    assert config.mailboxes[0].type == "fake"


def test_the_kernel_reports_an_unknown_driver_as_a_configuration_error(tmp_path: Path) -> None:
    """Not a load failure: the installed drivers load, validation names the line."""
    site = tmp_path / "site.yaml"
    site.write_text(
        "pop-client:\n"
        "  - {name: good, type: maildir, folder-path: md}\n"
        "  - {name: bad, type: imapp, server: imap.example}\n"
        "smtp-client: {server-type: file, folder-path: out}\n"
    )
    with pytest.raises(ConfigErrors) as info:
        Kernel(site, reactor=task.Clock(), runner=InlineRunner())
    assert [str(e) for e in info.value.errors] == [
        f"{site}:3: option 'pop-client[bad].type': no source driver 'imapp' "
        f"(installed: {installed(INSTALLED.sources)}); did you mean 'imap'?"
    ]
