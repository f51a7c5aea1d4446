"""The gateway itself through the real proxies: configured the way a site does it.

``postroom run --once`` with the site's ``proxy`` section (HTTP CONNECT with
credentials) for an IMAPS mailbox, and a POP3S mailbox with its own JavaMail
property ``mail.pop3.socks.host`` (which wins over the section); then the SMTP
sender the kernel builds from such a site. Dovecot's ``rip=`` and Postfix's
``client=`` prove each went through the proxy it was configured with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from postroom.kernel import Kernel
from postroom.model import Envelope
from postroom.runner import InlineRunner
from postroom_smtp.sender import SMTPSender
from tests.conftest import run
from tests.integration.servers import MailServers, make_message, wait_for
from tests.integration.sites import Site, explain
from tests.net.proxies import source

pytestmark = pytest.mark.servers


def proxy_section(state: dict[str, Any], name: str) -> dict[str, Any]:
    proxy = state["proxies"][name]
    section = {"useProxy": True, "host": proxy["host"], "port": proxy["port"]}
    section["type"] = proxy["kind"]
    if proxy["user"]:
        section |= {"user": proxy["user"], "password": proxy["password"]}
    return section


def count(path: Path, needle: str) -> int:
    return path.read_text(errors="replace").count(needle)


def test_mailboxes_go_through_the_sites_proxy_or_their_own(
    proxy_servers: dict[str, Any], mail_servers: MailServers, tmp_path: Path
) -> None:
    ms = mail_servers
    ms.clear("agent3", "agent4")
    ms.deliver("agent3", make_message(subject="via http", to=ms.address("agent3")))
    ms.deliver("agent4", make_message(subject="via socks", to=ms.address("agent4")))
    site = Site(tmp_path, ms)
    site.sections["proxy"] = proxy_section(proxy_servers, "http_auth")
    site.mailbox("imap-box", "agent3", port="imaps", security="ssl")
    socks = proxy_servers["proxies"]["socks"]
    site.mailbox(
        "pop-box",
        "agent4",
        kind="pop3",
        port="pop3s",
        security="ssl",
        **{"mail.pop3.socks.host": socks["host"], "mail.pop3.socks.port": socks["port"]},
    )
    log = ms.logs["dovecot-main"]
    login = "-login: Info: Login: user=<{}>, method=PLAIN, rip={},"
    via_http = "imap" + login.format("agent3", source(proxy_servers, "http_auth"))
    via_socks = "pop3" + login.format("agent4", source(proxy_servers, "socks"))
    before = (count(log, via_http), count(log, via_socks))
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    assert site.count("imap-box") == 1 and site.count("pop-box") == 1
    wait_for(
        lambda: (count(log, via_http), count(log, via_socks)) >= (before[0] + 1, before[1] + 1),
        what="Dovecot's login lines from both proxies",
    )
    assert proxy_servers["proxies"]["http_auth"]["password"] not in done.stderr


def test_the_smtp_sender_goes_through_the_sites_proxy(
    proxy_servers: dict[str, Any], mail_servers: MailServers, tmp_path: Path
) -> None:
    ms = mail_servers
    site = Site(tmp_path, ms)
    site.smtp_client("agent2")
    site.sections["proxy"] = proxy_section(proxy_servers, "dante")
    kernel = Kernel(site.write(), clock=task.Clock(), runner=InlineRunner())
    sender = kernel.build_sender()
    assert isinstance(sender, SMTPSender)
    line = (
        f"client=unknown[{source(proxy_servers, 'dante')}], sasl_method=PLAIN, sasl_username=agent2"
    )
    before = count(ms.logs["postfix"], line)
    envelope = Envelope(mail_from=ms.address("agent2"), rcpt_to=[ms.address("agent1")])
    message = make_message(subject="through dante", to=ms.address("agent1"))
    try:
        result = run(sender.send(message, envelope, "<dante@example.test>"))
    finally:
        run(sender.close())
    assert result.accepted == [ms.address("agent1")]
    wait_for(lambda: count(ms.logs["postfix"], line) == before + 1, what=f"Postfix's {line!r}")
