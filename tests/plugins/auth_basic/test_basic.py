"""The ``basic`` auth driver: the configured user name and password, never printed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from zope.interface.verify import verifyClass

from postroom.config.site import MailboxConfig, OptionValues, SectionConfig
from postroom.config.types import Secret
from postroom.drivers import Credentials, load_driver
from postroom.errors import ConfigError
from postroom.interfaces import IAuthenticator
from postroom_auth_basic import BasicAuthenticator
from tests.conftest import run


def mailbox(**values: object) -> MailboxConfig:
    options = OptionValues({"name": "support", "mailbox": None, "password": None}, {"password"})
    options.update(values)
    return MailboxConfig(
        name="support", type="imap", auth="basic", options=options, file="site.yaml",
        line=3, lines={"mailbox": 5},
    )  # fmt: skip


def smtp(**values: object) -> SectionConfig:
    options = OptionValues({"user": None, "password": None}, {"password"})
    options.update(values)
    return SectionConfig(name="smtp-client", options=options, driver="smtp", file="site.yaml")


def test_entry_point_and_interface() -> None:
    assert load_driver("postroom.auth", "basic") is BasicAuthenticator
    verifyClass(IAuthenticator, BasicAuthenticator)


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_mailbox_credentials(protocol: str) -> None:
    auth = BasicAuthenticator(mailbox(mailbox="agent1", password=Secret("s3cret")), None)
    creds = run(auth.credentials(protocol))
    assert creds == Credentials("agent1", "s3cret", "PLAIN")
    assert "s3cret" not in repr(creds)


def test_smtp_client_uses_user() -> None:
    auth = BasicAuthenticator(smtp(user="gateway@example.org", password=Secret("pw")), None)
    assert run(auth.credentials("smtp")) == Credentials("gateway@example.org", "pw", "PLAIN")


def test_missing_password_names_the_mailbox_not_a_secret() -> None:
    auth = BasicAuthenticator(mailbox(mailbox="agent1", password=None), None)
    with pytest.raises(ConfigError) as info:
        run(auth.credentials("imap"))
    text = str(info.value)
    assert "mailbox 'support'" in text and "password" in text
    assert text.startswith("site.yaml:3: ")


def test_empty_password_is_missing() -> None:
    auth = BasicAuthenticator(mailbox(mailbox="agent1", password=Secret("")), None)
    with pytest.raises(ConfigError, match="no password configured"):
        run(auth.credentials("imap"))


def test_missing_user_names_the_option_and_line() -> None:
    auth = BasicAuthenticator(mailbox(mailbox=" ", password=Secret("s3cret")), None)
    with pytest.raises(ConfigError) as info:
        run(auth.credentials("pop3"))
    text = str(info.value)
    assert "no user name configured (option 'mailbox')" in text
    assert "site.yaml:5" in text
    assert "s3cret" not in text


def test_missing_smtp_user() -> None:
    auth = BasicAuthenticator(smtp(password=Secret("pw")), None)
    with pytest.raises(
        ConfigError, match=r"smtp-client: no user name configured \(option 'user'\)"
    ):
        run(auth.credentials("smtp"))


def test_invalidate_is_harmless() -> None:
    auth = BasicAuthenticator(mailbox(mailbox="a", password=Secret("b")), None)
    auth.invalidate()
    assert run(auth.credentials("imap")).secret == "b"


def test_built_by_the_kernel_from_a_site_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from postroom.kernel import Kernel

    site = tmp_path / "site.yaml"
    site.write_text(
        f"store: {{driver: sqlite, path: {tmp_path / 'db.sqlite'}}}\n"
        "pop-client:\n"
        "  - name: support\n"
        "    type: imap\n"
        "    server: imap.example.org\n"
        "    mailbox: agent1\n"
        "    password: ${POSTROOM_TEST_BASIC_PW}\n"
    )
    monkeypatch.setenv("POSTROOM_TEST_BASIC_PW", "from-env")
    kernel = Kernel(site)
    try:
        source = kernel.build_source(kernel.config.mailboxes[0])
        creds = run(source.context.authenticator.credentials("imap"))
    finally:
        shutil.rmtree(kernel.spool_dir, ignore_errors=True)
    assert creds == Credentials("agent1", "from-env", "PLAIN")
