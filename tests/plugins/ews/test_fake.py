"""The EWS fake refuses what the EWS schema and protocol do not allow, so its
acceptance of the plugin's requests means something."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from tests.fakes.ews.server import SOAP, EWSFake, M, T, raw_request
from tests.pki import TestCA


@pytest.fixture
def strict(ews_tls: TestCA) -> Iterator[EWSFake]:
    with EWSFake(ews_tls) as server:
        yield server


def basic(fake: EWSFake, password: str | None = None) -> str:
    pair = f"{fake.user}:{password or fake.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def envelope(body: str, header: str = '<t:RequestServerVersion Version="Exchange2016"/>') -> bytes:
    return (
        f'<s:Envelope xmlns:s="{SOAP}" xmlns:t="{T}" xmlns:m="{M}">'
        f"<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


SUBSCRIBE = (
    "<m:Subscribe><m:StreamingSubscriptionRequest><t:FolderIds>"
    '<t:DistinguishedFolderId Id="inbox"/></t:FolderIds><t:EventTypes>'
    "<t:EventType>NewMailEvent</t:EventType></t:EventTypes></m:StreamingSubscriptionRequest>"
    "</m:Subscribe>"
)


def streaming(subscription: str, minutes: int = 1) -> str:
    return (
        f"<m:GetStreamingEvents><m:SubscriptionIds><t:SubscriptionId>{subscription}"
        f"</t:SubscriptionId></m:SubscriptionIds><m:ConnectionTimeout>{minutes}"
        "</m:ConnectionTimeout></m:GetStreamingEvents>"
    )


GET_INBOX = (
    "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>"
    '<m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder>'
)


def test_a_well_formed_request_is_answered(strict: EWSFake) -> None:
    status, body = raw_request(strict, envelope(GET_INBOX), basic(strict))
    assert status == 200, body
    assert b'ResponseClass="Success"' in body
    assert strict.protocol_errors == []


@pytest.mark.parametrize(
    ("request_body", "code"),
    [
        (envelope("<m:GetFolders/>"), "ErrorInvalidRequest"),  # unknown operation
        (envelope(GET_INBOX, header=""), "ErrorInvalidServerVersion"),  # no version header
        (envelope(GET_INBOX, header='<t:Unknown Version="x"/>'), "ErrorSchemaValidation"),
        (
            envelope(GET_INBOX.replace("<m:FolderShape>", "<m:ItemShape>").replace(
                "</m:FolderShape>", "</m:ItemShape>")),
            "ErrorSchemaValidation",
        ),  # a wrong element
        (
            envelope("<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>"
                     "</m:GetItem>"),
            "ErrorSchemaValidation",
        ),  # a missing element
        (
            envelope("<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>"
                     '</m:ItemShape><m:SyncFolderId><t:DistinguishedFolderId Id="inbox"/>'
                     "</m:SyncFolderId><m:MaxChangesReturned>1000</m:MaxChangesReturned>"
                     "</m:SyncFolderItems>"),
            "ErrorSchemaValidation",
        ),  # MaxChangesReturned over 512
        (b"<not-xml", "ErrorSchemaValidation"),
        (envelope(SUBSCRIBE.replace("Streaming", "Pull")), "ErrorSchemaValidation"),  # pull
        (envelope(SUBSCRIBE.replace("NewMailEvent", "NewMail")), "ErrorSchemaValidation"),
        (
            envelope(SUBSCRIBE.replace("<t:EventType>NewMailEvent</t:EventType>", "")),
            "ErrorSchemaValidation",
        ),  # no event type
        (
            envelope(SUBSCRIBE.replace("<t:FolderIds>", "<t:Watermark>x</t:Watermark>"
                                       "<t:FolderIds>")),
            "ErrorSchemaValidation",
        ),  # a streaming subscription has no watermark
        (envelope(streaming("c3ViLTE=", minutes=31)), "ErrorSchemaValidation"),  # 1..30
        (envelope(streaming("c3ViLTE=", minutes=0)), "ErrorSchemaValidation"),
        (
            envelope("<m:GetStreamingEvents><m:ConnectionTimeout>1</m:ConnectionTimeout>"
                     "</m:GetStreamingEvents>"),
            "ErrorSchemaValidation",
        ),  # no SubscriptionIds
        (
            envelope(streaming("c3ViLTE=").replace("t:SubscriptionId", "m:SubscriptionId")),
            "ErrorSchemaValidation",
        ),  # SubscriptionIds holds t:SubscriptionId
        (
            envelope("<m:Unsubscribe><m:SubscriptionId>x</m:SubscriptionId><m:Extra/>"
                     "</m:Unsubscribe>"),
            "ErrorSchemaValidation",
        ),
    ],
)  # fmt: skip
def test_a_malformed_request_is_a_soap_fault_and_recorded(
    strict: EWSFake, request_body: bytes, code: str
) -> None:
    status, body = raw_request(strict, request_body, basic(strict))
    assert status == 500
    assert b"<s:Fault>" in body and code.encode() in body
    assert [c for _op, c, _text in strict.protocol_errors] == [code]


def test_a_request_cut_off_by_its_client_is_no_protocol_error(strict: EWSFake) -> None:
    """A client killed mid-request (the SIGKILL tests) sends part of its body: the
    fake answers nothing and records no fault of the client's."""
    import socket
    import ssl

    assert strict.httpd is not None
    context = ssl.create_default_context(cafile=strict.ca_file)
    with socket.create_connection(("127.0.0.1", strict.httpd.server_address[1])) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:  # fmt: skip
        tls.sendall(
            f"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {basic(strict)}\r\nContent-Type: text/xml\r\n"
            "Content-Length: 1000\r\n\r\n<s:Envelope".encode()
        )
    assert strict.wait_until(lambda: strict.counts.get("cut") == 1)
    assert strict.protocol_errors == []


@pytest.mark.parametrize("authorization", [None, "Basic bm9ib2R5Og==", "Bearer forged"])
def test_a_missing_or_wrong_authorization_is_401(
    strict: EWSFake, authorization: str | None
) -> None:
    strict.tokens = {"issued"}
    status, _ = raw_request(strict, envelope(GET_INBOX), authorization)
    assert status == 401
    assert strict.counts == {"401": 1}
    assert raw_request(strict, envelope(GET_INBOX), "Bearer issued")[0] == 200


SEND_ITEM = '<m:SendItem{attrs}><m:ItemIds><t:ItemId Id="{item}"/></m:ItemIds>{extra}</m:SendItem>'


@pytest.mark.parametrize(
    ("attrs", "extra"),
    [
        ("", ""),  # SaveItemToFolder is required
        (' SaveItemToFolder="maybe"', ""),
        (' SaveItemToFolder="true"', "<m:Unknown/>"),
    ],
)
def test_a_malformed_send_item_is_refused(strict: EWSFake, attrs: str, extra: str) -> None:
    item = strict.store.add(b"To: a@example.test\r\n\r\nx\r\n", "drafts")
    body = envelope(SEND_ITEM.format(attrs=attrs, item=item, extra=extra))
    status, _ = raw_request(strict, body, basic(strict))
    assert status == 500
    assert [c for _op, c, _t in strict.protocol_errors] == ["ErrorSchemaValidation"]
    assert strict.sent == []


def test_send_item_with_a_folder_but_no_save_is_refused(strict: EWSFake) -> None:
    item = strict.store.add(b"To: a@example.test\r\n\r\nx\r\n", "drafts")
    folder = '<m:SavedItemFolderId><t:DistinguishedFolderId Id="sentitems"/></m:SavedItemFolderId>'
    body = envelope(SEND_ITEM.format(attrs=' SaveItemToFolder="false"', item=item, extra=folder))
    status, answer = raw_request(strict, body, basic(strict))
    assert status == 200 and b"ErrorInvalidSendItemSaveSettings" in answer
    assert strict.sent == []


def impersonating(address: str) -> str:
    return (
        '<t:RequestServerVersion Version="Exchange2016"/><t:ExchangeImpersonation>'
        f"<t:ConnectingSID><t:PrimarySmtpAddress>{address}</t:PrimarySmtpAddress>"
        "</t:ConnectingSID></t:ExchangeImpersonation>"
    )


def test_impersonation_needs_the_right(strict: EWSFake) -> None:
    strict.mailboxes.add("support@example.com")
    request = envelope(GET_INBOX, header=impersonating("support@example.com"))
    status, body = raw_request(strict, request, basic(strict))
    assert status == 500 and b"ErrorImpersonateUserDenied" in body
    strict.impersonation_rights.add("support@example.com")
    assert raw_request(strict, request, basic(strict))[0] == 200
    status, body = raw_request(
        strict, envelope(GET_INBOX, header=impersonating("nobody@example.com")), basic(strict)
    )
    assert status == 500 and b"ErrorNonExistentMailbox" in body
    assert [c for _op, c, _t in strict.denied] == [
        "ErrorImpersonateUserDenied",
        "ErrorNonExistentMailbox",
    ]
    assert strict.protocol_errors == []


def test_another_mailbox_needs_delegate_rights(strict: EWSFake) -> None:
    strict.mailboxes.add("support@example.com")
    other = GET_INBOX.replace(
        '<t:DistinguishedFolderId Id="inbox"/>',
        '<t:DistinguishedFolderId Id="inbox"><t:Mailbox><t:EmailAddress>support@example.com'
        "</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>",
    )
    status, body = raw_request(strict, envelope(other), basic(strict))
    assert status == 500 and b"ErrorAccessDenied" in body
    strict.delegate_rights.add("support@example.com")
    assert raw_request(strict, envelope(other), basic(strict))[0] == 200


def test_an_ntlm_only_server_refuses_basic(ews_tls: TestCA) -> None:
    with EWSFake(ews_tls, auth="ntlm") as ntlm:
        status, _ = raw_request(ntlm, envelope(GET_INBOX), basic(ntlm))
        assert status == 401
        assert ntlm.denied == [("auth", "401", "Basic to an NTLM-only server")]
        assert ntlm.counts == {"401": 1}


def test_an_unknown_sync_state_is_invalid(strict: EWSFake) -> None:
    sync = (
        "<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>"
        '<m:SyncFolderId><t:DistinguishedFolderId Id="inbox"/></m:SyncFolderId>'
        "<m:SyncState>bm90IGlzc3VlZA==</m:SyncState>"
        "<m:MaxChangesReturned>10</m:MaxChangesReturned></m:SyncFolderItems>"
    )
    status, body = raw_request(strict, envelope(sync), basic(strict))
    assert status == 200
    assert b"ErrorInvalidSyncStateData" in body


def test_a_stream_is_several_envelopes_notifications_then_closed(strict: EWSFake) -> None:
    """[MS-OXWSNTIF] 3.1.4.2: the events of the subscription, then ConnectionStatus
    Closed at the end of ConnectionTimeout (shortened here), in one chunked answer."""
    status, body = raw_request(strict, envelope(SUBSCRIBE), basic(strict))
    assert status == 200, body
    [subscription] = strict.subscriptions
    assert f"<m:SubscriptionId>{subscription}</m:SubscriptionId>".encode() in body
    item = strict.store.add(b"Subject: hi\r\n\r\nhi\r\n")  # queued until a stream opens
    strict.minute = 0.05
    status, body = raw_request(strict, envelope(streaming(subscription)), basic(strict))
    assert status == 200
    documents = body.split(b"<?xml")[1:]
    assert len(documents) == 2
    assert b"<t:NewMailEvent>" in documents[0] and item.encode() in documents[0]
    assert b"<t:CreatedEvent>" not in documents[0]  # not subscribed to
    assert b"<m:ConnectionStatus>Closed</m:ConnectionStatus>" in documents[1]
    # Unsubscribe ends the subscription: a stream on it is refused
    status, body = raw_request(
        strict,
        envelope(f"<m:Unsubscribe><m:SubscriptionId>{subscription}</m:SubscriptionId>"
                 "</m:Unsubscribe>"),
        basic(strict),
    )  # fmt: skip
    assert status == 200 and b'ResponseClass="Success"' in body
    status, body = raw_request(strict, envelope(streaming(subscription)), basic(strict))
    assert status == 200 and b"ErrorSubscriptionNotFound" in body
    assert strict.protocol_errors == []


def test_a_server_without_streaming_refuses_subscribe(strict: EWSFake) -> None:
    strict.refuse_streaming = "ErrorInvalidSubscriptionRequest"
    status, body = raw_request(strict, envelope(SUBSCRIBE), basic(strict))
    assert status == 200
    assert b'ResponseClass="Error"' in body and b"ErrorInvalidSubscriptionRequest" in body
    assert strict.subscriptions == {}
    assert strict.protocol_errors == []
