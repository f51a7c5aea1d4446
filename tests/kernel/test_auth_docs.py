"""docs/auth.md's site examples are valid configurations for the installed drivers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from twisted.internet import task

from postroom.config.document import parse_document
from postroom.config.validator import validate
from postroom.drivers import installed_drivers
from postroom.kernel import Kernel
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "auth.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC, flags=re.S)
ENVIRON = {
    "CONTOSO_CLIENT_SECRET": "contoso-client-secret",
    "SALES_PASSWORD": "sales-password",
    "GOOGLE_REFRESH_TOKEN": "1//google-refresh-token",
    "GOOGLE_CLIENT_SECRET": "google-client-secret",
    "PROXY_PASSWORD": "proxy-password",
}


def test_the_site_example_validates_and_selects_the_drivers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    assert len(BLOCKS) == 2, "the site example and the proxy section"
    key = tmp_path / "token.key"
    key.write_text("0123456789abcdef0123456789abcdef\n", encoding="utf-8")
    text = BLOCKS[0].replace("/etc/postroom/token.key", str(key))
    text = "store: {driver: memory}\n" + text
    document = parse_document(text, file="auth.md")
    kernel = Kernel(document, clock=task.Clock())
    for mailbox in kernel.config.mailboxes:  # each driver builds: its options are complete
        kernel.build_source(mailbox)
    kernel.build_sender()
    config = kernel.config
    auths = {m.name: m.auth for m in config.mailboxes}
    assert auths == {
        "support": "azure-client-credentials",
        "sales": "azure-ropc",
        "gmail": "google-refresh",
    }
    assert config.smtp is not None and config.smtp.get("auth") == "azure-client-credentials"


def test_the_proxy_example_validates() -> None:
    text = "store: {driver: memory}\n" + BLOCKS[1]
    config = validate(
        parse_document(text, file="auth.md"),
        Kernel(None, clock=task.Clock()).schema,
        environ=ENVIRON,
        drivers=installed_drivers(),
    )
    assert config.get("proxy", "useProxy") is True
    assert config.get("proxy", "password").reveal() == "proxy-password"
