"""A standard response addressed to a customer in the directory: ``Contact.FirstName``
and ``Contact.LastName`` come from the ldap plugin's field values (the request's
recipient looked up), the request's own values winning."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from postroom.api import OutboundRequest, RequestError
from postroom.testing import TestKernel, result_of
from postroom_ldap.plugin import plugin
from tests.plugins.ldap.conftest import LDAP, site, slapd_stopped

RENDER = EntryPoint(name="render", value="postroom_render.plugin", group="postroom.plugins")


@pytest.fixture
def library(tmp_path: Path) -> Path:
    folder = tmp_path / "responses" / "greeting"
    folder.mkdir(parents=True)
    (folder / "response.yaml").write_text(
        "subject: About your order\nrequired: [Contact.FirstName, Contact.LastName]\n",
        encoding="utf-8",
    )
    (folder / "body.txt").write_text(
        'Dear <$ Contact.FirstName + " " + Contact.LastName $> (<$ Contact.ContactId $>),\n'
        "your order has shipped.\n",
        encoding="utf-8",
    )
    return folder.parent


def kernel_for(ldap_server: dict[str, Any], library: Path) -> TestKernel:
    config = site(ldap_server)
    config["plugins"] = ["render", "ldap"]
    config["standard-responses"] = {"directory": str(library)}
    return TestKernel([RENDER, LDAP], config)


def request(to: str, contact: dict[str, str] | None = None) -> OutboundRequest:
    spec: dict[str, Any] = {"id": "greeting"}
    if contact is not None:
        spec["fields"] = {"Contact": contact}
    return OutboundRequest(to=[to], from_addr="support@centre.example",
                           options={"standard_response": spec})  # fmt: skip


def text_of(kernel: TestKernel) -> str:
    [sent] = kernel.sender.sent
    part = sent.message.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def test_the_recipients_names_come_from_the_directory(
    ldap_server: dict[str, Any], library: Path
) -> None:
    with kernel_for(ldap_server, library) as kernel:
        out = kernel.send(request("Jürgen <juergen.mueller@customer.example>"))
        assert out.status == "Sent", out.attached_data
        assert text_of(kernel).startswith("Dear Jürgen Müller (C-1001),\n")


def test_the_requests_own_values_win(ldap_server: dict[str, Any], library: Path) -> None:
    with kernel_for(ldap_server, library) as kernel:
        kernel.send(request("juergen.mueller@customer.example", {"FirstName": "Juergen"}))
        assert text_of(kernel).startswith("Dear Juergen Müller (C-1001),")


def test_an_unknown_recipient_leaves_required_names_missing(
    ldap_server: dict[str, Any], library: Path
) -> None:
    with kernel_for(ldap_server, library) as kernel:
        with pytest.raises(RequestError) as refused:
            kernel.send(request("stranger@elsewhere.example"))
        assert "requires Contact.FirstName, Contact.LastName" in str(refused.value)


def test_a_stopped_directory_offers_nothing_and_fails_nothing(
    ldap_server: dict[str, Any], library: Path
) -> None:
    with kernel_for(ldap_server, library) as kernel, slapd_stopped(ldap_server):
        offered = result_of(plugin.postroom_field_values(
            request("juergen.mueller@customer.example"), kernel.kernel.ctx))  # fmt: skip
        assert offered is None
        out = kernel.send(request("juergen.mueller@customer.example",
                                  {"FirstName": "J", "LastName": "M"}))  # fmt: skip
        assert out.status == "Sent"
