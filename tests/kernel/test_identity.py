"""Mailbox identity (issue 12, item 3): a mailbox's address, display name, signature
and own SMTP login; the From a reply gets from the mailbox its parent came in on;
the ``mailbox`` field of a send request; ``postroom check``'s warning about an
unanswerable From."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from postroom.errors import ConfigError, ConfigErrors
from postroom.identity import (
    MAX_SIGNATURE_BYTES,
    MailboxIdentity,
    account_section,
    is_local_domain,
    sign,
)
from postroom.ingest import ingest_files
from postroom.kernel import Kernel
from postroom.model import Interaction, OutboundRequest
from postroom.sendrequest import RequestError, request_from_json, validate_request
from postroom.services.gateway import Gateway
from tests.conftest import run
from tests.kernel.test_cli import postroom
from tests.kernel.test_gateway import make_kernel
from tests.kernel.test_replies import sent, started
from tests.kernel.test_send_request import outbox_files
from tests.kernel.test_web import Server, server  # noqa: F401

#: the quickstart site with two mailboxes; {support} and {sales} are more keys of each
SITE = """\
tenant-id: 101
store: {{driver: sqlite, path: postroom.db}}
email-processing:
  default-domain: centre.example
{processing}
pop-client:
  - name: support
    type: maildir
    folder-path: maildir
{support}
  - name: sales
    type: maildir
    folder-path: maildir
{sales}
smtp-client:
  server-type: file
  folder-path: outbox
"""

CUSTOMER = (
    b"From: Anna Kowalski <anna@customer.example>\r\n"
    b"To: support@centre.example\r\n"
    b"Subject: order 4711 arrived damaged\r\n"
    b"Date: Fri, 13 Feb 2026 22:38:16 +0100\r\n"
    b"Message-ID: <7da78721a8a2@customer.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"The parcel was crushed.\r\n"
)

Site = Callable[..., Path]


def keys(**options: str) -> str:
    """Mailbox keys as YAML lines of a ``pop-client`` entry (``_`` stands for ``-``)."""
    return "\n".join(f"    {k.replace('_', '-')}: {v}" for k, v in options.items())


@pytest.fixture
def site(quickstart: Path) -> Site:
    """Writes the quickstart's site file from :data:`SITE`; returns its path."""

    def write(
        support: dict[str, str] | None = None,
        sales: dict[str, str] | None = None,
        processing: str = "",
        text: str | None = None,
    ) -> Path:
        quickstart.write_text(
            text
            if text is not None
            else SITE.format(
                support=keys(**(support or {})),
                sales=keys(**(sales or {})),
                processing=processing,
            ),
            encoding="utf-8",
        )
        return quickstart

    return write


@pytest.fixture
def gateway_of() -> Callable[[Path], Gateway]:
    made: list[Gateway] = []

    def start(config: Path) -> Gateway:
        made.append(started(config))
        return made[-1]

    yield start  # type: ignore[misc]
    for gateway in made:
        run(gateway.stopService())


def came_in_on(kernel: Kernel, tmp_path: Path, mailbox: str, raw: bytes = CUSTOMER) -> Interaction:
    """*raw* as an inbound interaction of *mailbox*."""
    path = tmp_path / f"in-{mailbox}.eml"
    path.write_bytes(raw)

    async def go() -> Interaction:
        async for _file, result in ingest_files(kernel, [path], kernel.config.mailbox(mailbox)):
            assert not isinstance(result, BaseException), result
            [made] = result
            return made
        raise AssertionError("nothing ingested")

    made = run(go())
    assert made.mailbox == mailbox
    return made


def config_errors(config: Path) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        make_kernel(config)
    return info.value.errors


# ------------------------------------------------------------- configuration


def test_identity_options_are_read_per_mailbox(site: Site, quickstart: Path) -> None:
    (quickstart.parent / "sig.txt").write_bytes(b"\xef\xbb\xbfAnna\r\nCustomer Care\r\n\r\n")
    config = site(
        support={
            "address": "support@centre.example",
            "display-name": '"Customer Care, Centre"',
            "signature-text-file": "sig.txt",
        }
    )
    kernel = make_kernel(config)
    support, sales = kernel.identities["support"], kernel.identities["sales"]
    assert support == MailboxIdentity(
        "support",
        "support@centre.example",
        "Customer Care, Centre",
        "Anna\nCustomer Care",  # BOM, CRLF and trailing blank lines gone
        None,
        False,
    )
    assert support.from_header == '"Customer Care, Centre" <support@centre.example>'
    assert sales == MailboxIdentity("sales")
    assert sales.from_header is None and not sales.signed


@pytest.mark.parametrize(
    ("options", "option", "message"),
    [
        ({"address": "Care <support@centre.example>"}, "address", "write the address alone"),
        ({"address": "not-an-address"}, "address", "expected an e-mail address"),
        ({"display-name": "Care"}, "display-name", "needs 'address'"),
        (
            {"address": "s@centre.example", "display-name": '"a\\tb"'},
            "display-name",
            "holds a control character",
        ),
        (
            {"address": "s@centre.example", "display-name": "x" * 201},
            "display-name",
            "longer than 200 characters",
        ),
        ({"smtp-user": "sales"}, "smtp-user", "given without 'smtp-password': give both"),
        ({"smtp-password": "x"}, "smtp-password", "given without 'smtp-user': give both"),
        ({"signature-text-file": "nowhere.txt"}, "signature-text-file", "nowhere.txt: not a file"),
    ],
)
def test_a_bad_identity_option_is_a_config_error_naming_file_line_and_option(
    site: Site, options: dict[str, str], option: str, message: str
) -> None:
    config = site(sales=options)
    [error] = config_errors(config)
    assert error.option == f"pop-client[sales].{option}", str(error)
    assert message in error.message, str(error)
    assert error.file == str(config)
    written = next(
        n for n, line in enumerate(config.read_text().splitlines(), 1) if f"{option}:" in line
    )
    assert error.line == written


def test_signature_files_are_bounded_utf8_text(site: Site, quickstart: Path) -> None:
    folder = quickstart.parent
    (folder / "big.html").write_bytes(b"<p>" + b"x" * MAX_SIGNATURE_BYTES + b"</p>")
    (folder / "latin1.txt").write_bytes(b"Gr\xfc\xdfe\nline two\n\xff")
    (folder / "nul.txt").write_bytes(b"one\ntwo\x00\n")
    errors = config_errors(
        site(
            support={"signature-html-file": "big.html", "signature-text-file": "latin1.txt"},
            sales={"signature-text-file": "nul.txt"},
        )
    )
    shown = {e.option: e.message for e in errors}
    assert shown == {
        "pop-client[support].signature-html-file": f"{folder / 'big.html'}: larger than 64 KB "
        "(a signature, not a document)",
        "pop-client[support].signature-text-file": f"{folder / 'latin1.txt'}:1: not UTF-8 text",
        "pop-client[sales].signature-text-file": f"{folder / 'nul.txt'}:2: holds a NUL character",
    }


def test_own_smtp_login_needs_an_smtp_client(site: Site) -> None:
    text = SITE.format(
        support="", processing="", sales=keys(smtp_user="sales", smtp_password="pw")
    )
    config = site(text=text.split("smtp-client:")[0])
    [error] = config_errors(config)
    assert error.option == "pop-client[sales].smtp-user"
    assert "no smtp-client is configured" in error.message


def test_an_own_smtp_login_is_a_copy_of_smtp_client_that_never_shows_its_password(
    site: Site,
) -> None:
    config = site(sales={"smtp-user": "sales", "smtp-password": "very-secret-pw"})
    kernel = make_kernel(config)
    assert kernel.identities["sales"].own_account
    assert not kernel.identities["support"].own_account
    smtp = kernel.config.smtp
    assert smtp is not None
    section = account_section(smtp, kernel.config.mailbox("sales"))
    assert section.name == "smtp-client[sales]"
    assert section.get("user") == "sales" and section.get("enable-authentication") is True
    assert section.get("password").reveal() == "very-secret-pw"
    assert section.get("folder-path") == smtp.get("folder-path")  # the same server
    assert smtp.get("enable-authentication") is False  # the original is untouched
    everything = f"{section!r} {section.options} {kernel.config.mailbox('sales')!r}"
    assert "very-secret-pw" not in everything
    # the file sender logs in to nothing: said at start, nothing built for it
    [warning] = [w for w in kernel.config.warnings if "smtp-user" in (w.option or "")]
    assert warning.option == "pop-client[sales].smtp-user"
    assert "ignored: the smtp-client's server-type 'file' does not log in" in warning.message
    assert kernel.build_mailbox_senders() == {}


@pytest.mark.parametrize(
    ("domain", "local"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("mail", True),
        ("box.localhost", True),
        ("host.local", True),
        ("localdomain", True),
        ("centre.example", False),
        ("localhost.example.com", False),
    ],
)
def test_local_domains(domain: str, local: bool) -> None:
    assert is_local_domain(domain) is local


# ---------------------------------------------------------- postroom check


def test_check_warns_when_outbound_mail_would_come_from_localhost(site: Site) -> None:
    config = site(text=SITE.replace("default-domain: centre.example", "").format(
        support=keys(address="support@centre.example"), sales="", processing=""
    ))  # fmt: skip
    result = postroom("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {config}: option 'email-processing.default-domain': outbound mail whose "
        "request names no From and no mailbox goes out from postroom@localhost, which "
        "recipients cannot answer; so do replies to mail of the mailbox(es) without an "
        "'address': sales; set email-processing: default-from-address (or default-domain) "
        "and each mailbox's 'address'"
    ], result.stderr


def test_check_warns_about_a_local_address_and_a_local_default_from(site: Site) -> None:
    config = site(
        processing="  default-from-address: noreply@mail",
        support={"address": "support@centre.example"},
        sales={"address": "sales@localhost"},
    )
    result = postroom("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    lines = config.read_text().splitlines()
    line_of = {key: n for n, line in enumerate(lines, 1) for key in [line.split(":")[0].strip()]}
    assert f"{config}:{line_of['default-from-address']}: option " in result.stderr
    assert "goes out from noreply@mail, which recipients cannot answer" in result.stderr
    assert "mailbox(es) without an" not in result.stderr  # every mailbox has one
    sales_line = next(n for n, line in enumerate(lines, 1) if "sales@localhost" in line)
    assert (
        f"warning: {config}:{sales_line}: option 'pop-client[sales].address': mail from this "
        "mailbox goes out from sales@localhost, which recipients cannot answer"
    ) in result.stderr


def test_check_is_quiet_when_every_from_can_be_answered(site: Site) -> None:
    config = site(support={"address": "support@centre.example"})  # sales: default From
    result = postroom("check", "-c", str(config))
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr


# ---------------------------------------------------------------- the From


def test_a_reply_goes_out_from_the_identity_of_the_parents_mailbox(
    site: Site, gateway_of: Callable[[Path], Gateway], tmp_path: Path
) -> None:
    config = site(
        support={"address": "support@centre.example", "display-name": "Customer Care"},
        sales={"address": "sales@centre.example"},
        processing="  default-from-address: noreply@centre.example",
    )
    gateway = gateway_of(config)
    parent = came_in_on(gateway.kernel, tmp_path, "support")
    reply = run(gateway.send(OutboundRequest(text="We are sorry.", in_reply_to=parent.id)))
    assert reply.mailbox == "support" and reply.from_addr == "support@centre.example"
    stored = run(gateway.kernel.store.get_interaction(reply.id))
    assert stored.status == "Sent" and stored.mailbox == "support"
    message = sent(config, reply.message_id)
    assert str(message["From"]) == "Customer Care <support@centre.example>"
    [entry] = [e for e in run(gateway.kernel.store.list_outbox()) if e.id == reply.id]
    assert entry.request.mailbox == "support"
    assert entry.request.from_addr == "Customer Care <support@centre.example>"


def test_a_forward_goes_out_from_the_identity_of_the_originals_mailbox(
    site: Site, gateway_of: Callable[[Path], Gateway], tmp_path: Path
) -> None:
    config = site(sales={"address": "sales@centre.example", "display-name": "Sales"})
    gateway = gateway_of(config)
    original = came_in_on(gateway.kernel, tmp_path, "sales")
    out = run(gateway.send(OutboundRequest(to=["boss@centre.example"], forward_of=original.id)))
    assert out.mailbox == "sales" and out.from_addr == "sales@centre.example"
    assert str(sent(config, out.message_id)["From"]) == "Sales <sales@centre.example>"


def test_from_precedence_request_then_mailbox_then_site_default(
    site: Site, gateway_of: Callable[[Path], Gateway], tmp_path: Path
) -> None:
    config = site(
        support={"address": "support@centre.example", "display-name": "Customer Care"},
        processing="  default-from-address: Centre <noreply@centre.example>",
    )
    gateway = gateway_of(config)
    parent = came_in_on(gateway.kernel, tmp_path, "support")
    send = lambda **fields: run(gateway.send(OutboundRequest(text="x", **fields)))  # noqa: E731

    explicit = send(in_reply_to=parent.id, from_addr="Bob <bob@centre.example>")
    assert str(sent(config, explicit.message_id)["From"]) == "Bob <bob@centre.example>"
    assert explicit.mailbox == "support"  # still its mailbox: its account, its record

    named = send(to=["a@x.example"], subject="new", mailbox="support")
    assert str(sent(config, named.message_id)["From"]) == "Customer Care <support@centre.example>"
    assert named.mailbox == "support" and named.subtype == "OutboundNew"

    # a mailbox without an address: the site's default; so is a new mail naming none
    other = send(to=["a@x.example"], subject="new", mailbox="sales")
    assert str(sent(config, other.message_id)["From"]) == "Centre <noreply@centre.example>"
    assert other.mailbox == "sales"
    plain = send(to=["a@x.example"], subject="new")
    assert str(sent(config, plain.message_id)["From"]) == "Centre <noreply@centre.example>"
    assert plain.mailbox is None

    # the request names the mailbox: it wins over the parent's
    crossed = send(in_reply_to=parent.id, mailbox="sales")
    assert crossed.mailbox == "sales"
    assert str(sent(config, crossed.message_id)["From"]) == "Centre <noreply@centre.example>"


def test_a_parent_from_a_mailbox_no_longer_configured_gets_the_default_from(
    site: Site, gateway_of: Callable[[Path], Gateway], tmp_path: Path
) -> None:
    config = site(support={"address": "support@centre.example"})
    gateway = gateway_of(config)
    parent = came_in_on(gateway.kernel, tmp_path, "sales")
    run(gateway.stopService())
    config.write_text(config.read_text().replace("name: sales", "name: orders"))
    gateway = gateway_of(config)
    reply = run(gateway.send(OutboundRequest(text="x", in_reply_to=parent.id)))
    assert reply.mailbox is None
    assert str(sent(config, reply.message_id)["From"]) == "postroom@centre.example"


def test_an_unknown_mailbox_is_refused_naming_the_field_and_nothing_is_queued(
    site: Site, gateway_of: Callable[[Path], Gateway]
) -> None:
    gateway = gateway_of(site())
    with pytest.raises(RequestError) as refused:
        run(gateway.send(OutboundRequest(to=["a@x.example"], text="x", mailbox="nope")))
    assert refused.value.field == "mailbox"
    assert refused.value.message == (
        "no mailbox 'nope' is configured (the names of the site's pop-client entries)"
    )
    assert run(gateway.kernel.store.list_outbox()) == []


# ------------------------------------------------------------ the request field


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "mailbox: empty"),
        ("x" * 256, "mailbox: longer than 255 characters"),
        ("sup\nport", "mailbox: holds a control character"),
        ("sup\u2028port", "mailbox: holds a control character"),
        (7, "mailbox: must be a string or null, not a number"),
        (["support"], "mailbox: must be a string or null, not an array"),
    ],
)
def test_the_mailbox_field_is_bounded(value: object, message: str) -> None:
    with pytest.raises(RequestError) as refused:
        request_from_json({"to": "a@x.example", "mailbox": value})
    assert refused.value.field == "mailbox"
    assert str(refused.value) == message


def test_the_mailbox_field_survives_validation() -> None:
    assert request_from_json({"to": "a@x.example", "mailbox": "support"}).mailbox == "support"
    assert request_from_json({"to": "a@x.example", "mailbox": None}).mailbox is None
    request = OutboundRequest(to=["a@x.example"], mailbox="x" * 255)
    assert validate_request(request).mailbox == "x" * 255


def test_post_send_refuses_an_unknown_mailbox_with_a_400_and_queues_nothing(
    server: Server,  # noqa: F811
) -> None:
    for value, error in [
        ("nope", "mailbox: no mailbox 'nope' is configured"),
        (7, "mailbox: must be a string or null, not a number"),
    ]:
        code, body = server.send({"to": ["a@example.com"], "text": "x", "mailbox": value})
        assert code == 400 and body["field"] == "mailbox", body
        assert body["error"].startswith(error), body
    assert server.queued() == 0
    code, body = server.send({"to": ["a@example.com"], "text": "x", "mailbox": "support"})
    assert code == 202 and body["mailbox"] == "support", body


def test_postroom_send_refuses_an_unknown_mailbox_with_status_2(site: Site) -> None:
    config = site()
    result = postroom(
        "send", "-c", str(config), "--to", "a@x.example", "--text", "x", "--mailbox", "nope"
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: --mailbox: no mailbox 'nope' is configured")
    assert outbox_files(config) == []
    listed = postroom("interactions", "list", "-c", str(config), "--json")
    assert listed.returncode == 0 and listed.stdout == ""


def test_postroom_send_goes_out_from_the_named_mailbox(site: Site) -> None:
    config = site(sales={"address": "sales@centre.example", "display-name": "Sales Team"})
    result = postroom(
        "send", "-c", str(config), "--to", "a@x.example", "--subject", "offer", "--text", "x",
        "--mailbox", "sales", "--now",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    _id, message_id, status = result.stdout.split()
    assert status == "Sent"
    assert str(sent(config, message_id)["From"]) == "Sales Team <sales@centre.example>"


# ---------------------------------------------------------------- signatures

TEXT_SIGNATURE = "Anna Weber\nCustomer Care <care@centre.example> & Co"
HTML_SIGNATURE = "<p><b>Anna Weber</b><br>Customer Care</p>"


def signed(request: OutboundRequest, text: str | None, html: str | None) -> OutboundRequest:
    sign(request, MailboxIdentity("support", signature_text=text, signature_html=html))
    return request


def test_a_text_signature_goes_below_the_text() -> None:
    request = signed(OutboundRequest(text="We are sorry.\n\n\n"), TEXT_SIGNATURE, None)
    assert request.text == f"We are sorry.\n\n{TEXT_SIGNATURE}\n"
    assert request.html is None


def test_a_text_signature_goes_into_the_html_escaped() -> None:
    request = signed(
        OutboundRequest(text="Hi", html="<html><body><p>Hi</p></body></html>"), TEXT_SIGNATURE, None
    )
    assert request.text == f"Hi\n\n{TEXT_SIGNATURE}\n"
    assert request.html == (
        '<html><body><p>Hi</p><div class="postroom-signature">\n'
        "Anna Weber<br>\nCustomer Care &lt;care@centre.example&gt; &amp; Co\n</div>\n"
        "</body></html>"
    )


def test_an_html_signature_goes_into_the_html_as_written_and_its_text_into_the_text() -> None:
    request = signed(OutboundRequest(text="Hi", html="<p>Hi</p>"), None, HTML_SIGNATURE)
    block = f'<div class="postroom-signature">\n{HTML_SIGNATURE}\n</div>\n'
    assert request.html == f"<p>Hi</p>\n{block}"
    assert request.text == "Hi\n\nAnna Weber\nCustomer Care\n"


def test_each_part_gets_its_own_signature() -> None:
    request = signed(OutboundRequest(text="Hi", html="<p>Hi</p>"), TEXT_SIGNATURE, HTML_SIGNATURE)
    assert request.text == f"Hi\n\n{TEXT_SIGNATURE}\n"
    assert HTML_SIGNATURE in (request.html or "") and "&amp; Co" not in (request.html or "")


def test_a_request_without_a_body_gets_the_signature_as_its_text() -> None:
    request = signed(OutboundRequest(), TEXT_SIGNATURE, HTML_SIGNATURE)
    assert request.text == TEXT_SIGNATURE + "\n" and request.html is None
    html_only = signed(OutboundRequest(html="<p>Hi</p>"), TEXT_SIGNATURE, None)
    assert html_only.text is None  # only the parts the request has


def test_a_reply_is_signed_above_its_quote_in_both_parts(
    site: Site, gateway_of: Callable[[Path], Gateway], quickstart: Path, tmp_path: Path
) -> None:
    folder = quickstart.parent
    (folder / "sig.txt").write_text(TEXT_SIGNATURE + "\n", encoding="utf-8")
    (folder / "sig.html").write_text(HTML_SIGNATURE + "\n", encoding="utf-8")
    config = site(
        support={
            "address": "support@centre.example",
            "signature-text-file": "sig.txt",
            "signature-html-file": "sig.html",
        }
    )
    gateway = gateway_of(config)
    parent = came_in_on(gateway.kernel, tmp_path, "support")
    reply = run(
        gateway.send(
            OutboundRequest(
                text="We are sorry.",
                html="<html><body><p>We are sorry.</p></body></html>",
                in_reply_to=parent.id,
                quote=True,
            )
        )
    )
    text = reply.text or ""
    assert text.startswith(f"We are sorry.\n\n{TEXT_SIGNATURE}\n\n-----Original Message-----\n")
    assert text.endswith("> The parcel was crushed.\n")
    html = reply.html or ""
    assert html.index(HTML_SIGNATURE) < html.index('<div class="postroom-quote">')
    message = sent(config, reply.message_id)
    body = message.get_body(("plain",))
    assert body is not None
    assert TEXT_SIGNATURE in body.get_content().replace("\r\n", "\n")


def test_a_signature_that_takes_the_body_over_its_limit_is_refused(
    site: Site, gateway_of: Callable[[Path], Gateway], quickstart: Path
) -> None:
    (quickstart.parent / "sig.txt").write_text("Anna", encoding="utf-8")
    gateway = gateway_of(site(sales={"signature-text-file": "sig.txt"}))
    full = "x" * 26_214_400  # the schema's most
    validate_request(OutboundRequest(to=["a@x.example"], text=full))
    with pytest.raises(RequestError) as refused:
        run(gateway.send(OutboundRequest(to=["a@x.example"], text=full, mailbox="sales")))
    assert refused.value.field == "text"
    assert refused.value.message.startswith("with the signature of mailbox 'sales': longer than")
    assert run(gateway.kernel.store.list_outbox()) == []
