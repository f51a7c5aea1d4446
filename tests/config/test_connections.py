"""The `proxy` section, JavaMail proxy properties, and the product's way of switching OAuth on."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import task

from postroom.config.document import implied_auth, parse_document
from postroom.config.options import OptionSchema
from postroom.config.site import SiteConfig
from postroom.config.validator import validate
from postroom.errors import ConfigError
from postroom.kernel import Kernel
from postroom.net.proxyconfig import check_proxies, proxy_for
from postroom.runner import InlineRunner

IMAP_MAILBOX = """\
pop-client:
  - name: support
    type: imap
    server: imap.example.test
"""


def site(schema: OptionSchema, text: str) -> SiteConfig:
    return validate(parse_document(text, file="site.yaml"), schema, environ={})


def test_no_proxy_by_default(schema: OptionSchema) -> None:
    config = site(schema, IMAP_MAILBOX)
    assert proxy_for(config, config.mailboxes[0], "imap") is None


def test_use_proxy_must_say_true(schema: OptionSchema) -> None:
    config = site(schema, IMAP_MAILBOX + "proxy: {useProxy: false, host: p.test, port: 1080}\n")
    assert proxy_for(config, config.mailboxes[0], "imap") is None


def test_the_section_applies_to_every_connection(schema: OptionSchema) -> None:
    text = IMAP_MAILBOX + (
        "proxy:\n  useProxy: true\n  host: proxy.test\n  port: 3128\n  type: http\n"
        "  user: alice\n  password: proxy-secret-1\n"
    )
    config = site(schema, text)
    proxy = proxy_for(config, config.mailboxes[0], "imap")
    assert proxy is not None
    assert (proxy.kind, proxy.host, proxy.port, proxy.user) == ("http", "proxy.test", 3128, "alice")
    assert proxy.password == "proxy-secret-1"
    assert "proxy-secret-1" not in repr(proxy)
    assert proxy_for(config, None, "token") == proxy


def test_socks5_is_the_default_kind(schema: OptionSchema) -> None:
    config = site(schema, IMAP_MAILBOX + "proxy: {useProxy: true, host: p.test, port: 1080}\n")
    proxy = proxy_for(config, config.mailboxes[0], "imap")
    assert proxy is not None and proxy.kind == "socks5" and proxy.resolve_at_proxy


def test_a_mailbox_property_wins_over_the_section(schema: OptionSchema) -> None:
    text = IMAP_MAILBOX + (
        "    mail.imap.socks.host: socks.test\n"
        "proxy: {useProxy: true, host: section.test, port: 3128, type: http}\n"
    )
    config = site(schema, text)
    proxy = proxy_for(config, config.mailboxes[0], "imap")
    assert proxy is not None
    assert (proxy.kind, proxy.host, proxy.port) == ("socks5", "socks.test", 1080)


def test_javamail_http_proxy_property(schema: OptionSchema) -> None:
    text = IMAP_MAILBOX + (
        "    mail.imap.proxy.host: web.test\n    mail.imap.proxy.port: 8080\n"
        "    mail.imap.proxy.user: u\n    mail.imap.proxy.password: pw-1\n"
    )
    config = site(schema, text)
    proxy = proxy_for(config, config.mailboxes[0], "imap")
    assert proxy is not None
    assert (proxy.kind, proxy.host, proxy.port, proxy.user) == ("http", "web.test", 8080, "u")


@pytest.mark.parametrize(
    ("proxy", "option", "words"),
    [
        ("{useProxy: true, port: 1080}", "proxy.host", "no proxy host"),
        ("{useProxy: true, host: p.test}", "proxy.port", "no proxy port"),
        ("{useProxy: true, host: p.test, port: 1080, user: bob}", "proxy.user", "no password"),
        ("{useProxy: true, host: p.test, port: 1080, password: x}", "proxy.password",
         "without a user"),
    ],
)
def test_a_proxy_that_cannot_work_fails_at_start_up(
    schema: OptionSchema, proxy: str, option: str, words: str
) -> None:
    config = site(schema, IMAP_MAILBOX + f"proxy: {proxy}\n")
    with pytest.raises(ConfigError) as caught:
        check_proxies(config)
    assert caught.value.option == option
    assert caught.value.file == "site.yaml" and caught.value.line is not None
    assert words in caught.value.message


def test_a_bad_port_is_refused_by_its_type(schema: OptionSchema) -> None:
    with pytest.raises(Exception) as caught:
        site(schema, IMAP_MAILBOX + "proxy: {useProxy: true, host: p.test, port: 70000}\n")
    assert "proxy.port" in str(caught.value)


@pytest.mark.parametrize(
    ("keys", "driver"),
    [
        ({}, "basic"),
        ({"auth": "google-service-account"}, "google-service-account"),
        ({"mail.imap.auth.mechanisms": "XOAUTH2", "client-id": "c", "directory-id": "t"},
         "azure-ropc"),
        ({"mail.pop3.auth.mechanisms": "xoauth2", "client-id": "c"}, "azure-ropc"),
        ({"mail.smtp.auth.mechanisms": "XOAUTH2", "client-id": "c",
          "tenant-authority": "https://accounts.google.com"}, "google-refresh"),
        ({"mail.imap.auth.mechanisms": "PLAIN", "client-id": "c"}, "basic"),
        ({"mail.imap.auth.mechanisms": "XOAUTH2"}, "basic"),
        ({"auth": "basic", "mail.imap.auth.mechanisms": "XOAUTH2", "client-id": "c"}, "basic"),
    ],
)
def test_the_commercial_way_of_switching_oauth_on(keys: dict[str, str], driver: str) -> None:
    assert implied_auth(keys) == driver


def test_implied_auth_reaches_the_validated_mailbox(schema: OptionSchema) -> None:
    text = IMAP_MAILBOX + (
        "    mail.imap.auth.mechanisms: XOAUTH2\n"
        "    directory-id: contoso.test\n    client-id: app-1\n"
    )
    document = parse_document(text, file="site.yaml")
    assert ("postroom.sources", "imap", "azure-ropc") in document.driver_names({}).auth
    assert validate(document, schema, environ={}).mailboxes[0].auth == "azure-ropc"


def test_a_short_token_encryption_secret_is_a_config_error(tmp_path: Path) -> None:
    site_file = tmp_path / "site.yaml"
    site_file.write_text(
        "store: {driver: memory}\ngateway:\n  token-encryption-secret: sh0rt\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError) as caught:
        Kernel(site_file, clock=task.Clock(), runner=InlineRunner())
    assert caught.value.option == "gateway.token-encryption-secret"
    assert caught.value.line == 3 and "16 bytes" in caught.value.message
    assert "sh0rt" not in str(caught.value)
