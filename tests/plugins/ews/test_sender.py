"""EWSSender against the contract fake: CreateItem with MimeContent and
SendAndSaveCopy, Bcc carried, suppressed recipients removed, DSN refused."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import pytest
import yaml
from exchangelib.errors import ErrorNonExistentMailbox
from twisted.internet import task

from postroom.drivers import SendResult
from postroom.errors import SenderAuthenticationFailed, SendError
from postroom.kernel import Kernel
from postroom.model import Envelope
from postroom.runner import InlineRunner
from postroom_ews import client as ews_client
from postroom_ews.sender import EWSSender, with_recipients
from tests.conftest import run
from tests.fakes.ews.server import EWSFake
from tests.plugins.fake_auth import FakeAuthenticator

MESSAGE = (
    b"From: Agent <agent@example.com>\r\nTo: Ann <ann@example.test>, bob@example.test\r\n"
    b"Cc: carol@example.test\r\nSubject: hello\r\nMessage-ID: <m1@example.com>\r\n"
    b"\r\nbody line\r\n"
)


def build(tmp_path: Path, fake: EWSFake, **options: object) -> EWSSender:
    smtp = {
        "server-type": "ews",
        "server": fake.url,
        "user": fake.user,
        "password": fake.password,
        "ca-file": fake.ca_file,
        "enable-authentication": True,
    } | {k.replace("_", "-"): v for k, v in options.items()}
    path = tmp_path / "postroom.yaml"
    document = {"tenant-id": 1, "store": {"driver": "memory"}, "smtp-client": smtp}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    kernel = Kernel(path, clock=task.Clock(), runner=InlineRunner())
    sender = kernel.build_sender()
    assert isinstance(sender, EWSSender)
    return sender


def envelope(*rcpt: str, **kw: object) -> Envelope:
    return Envelope(mail_from="agent@example.com", rcpt_to=list(rcpt), **kw)  # type: ignore[arg-type]


def test_sends_a_draft_whose_message_id_is_read_back_and_keeps_a_copy(
    fake: EWSFake, tmp_path: Path
) -> None:
    sender = build(tmp_path, fake)
    rcpt = ["ann@example.test", "bob@example.test", "carol@example.test"]
    result = run(sender.send(MESSAGE, envelope(*rcpt), "<m1@example.com>"))
    assert isinstance(result, SendResult)
    assert result.accepted == rcpt
    assert result.message_id == "<m1@example.com>"
    assert "Message-ID kept" in result.detail
    [(mime, how, recipients)] = fake.sent
    assert mime == MESSAGE  # nothing to change: byte for byte
    assert how == "SendItem"
    assert sorted(recipients) == sorted(rcpt)
    assert fake.senders == [("agent@example.com", "agent@example.com")]
    assert [fake.store.mime[i] for i in fake.store.folders["sentitems"].items] == [MESSAGE]
    assert fake.store.folders["drafts"].items == []  # the draft was sent, not left
    assert {op: fake.counts[op] for op in ("CreateItem", "GetItem", "SendItem")} == {
        "CreateItem": 1, "GetItem": 1, "SendItem": 1,
    }  # fmt: skip


def test_no_copy_when_none_is_wanted(fake: EWSFake, tmp_path: Path) -> None:
    sender = build(tmp_path, fake, save_to_sent_items=False)
    run(sender.send(MESSAGE, envelope("ann@example.test"), "<m1@example.com>"))
    assert [how for _m, how, _r in fake.sent] == ["SendItem"]
    assert fake.store.folders["sentitems"].items == []
    assert fake.store.folders["drafts"].items == []


@pytest.mark.parametrize(("save", "disposition"), [(True, "SendAndSaveCopy"), (False, "SendOnly")])
def test_without_verification_one_create_item_sends(
    fake: EWSFake, tmp_path: Path, save: bool, disposition: str
) -> None:
    sender = build(tmp_path, fake, save_to_sent_items=save, verify_message_id=False)
    result = run(sender.send(MESSAGE, envelope("ann@example.test"), "<m1@example.com>"))
    assert result.message_id == "<m1@example.com>"
    assert [how for _m, how, _r in fake.sent] == [disposition]
    assert "GetItem" not in fake.counts and "SendItem" not in fake.counts
    assert len(fake.store.folders["sentitems"].items) == int(save)


def test_a_message_id_exchange_replaced_is_the_one_reported(
    fake: EWSFake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake.replace_message_id = "<AM0PR01MB1234.5678@exchange.example.com>"
    sender = build(tmp_path, fake)
    with caplog.at_level(logging.INFO):
        result = run(sender.send(MESSAGE, envelope("ann@example.test"), "<m1@example.com>"))
    assert result.message_id == "<AM0PR01MB1234.5678@exchange.example.com>"
    assert "replaced" in result.detail
    [(mime, _how, _r)] = fake.sent
    assert b"Message-ID: <AM0PR01MB1234.5678@exchange.example.com>" in mime
    assert "<m1@example.com>" in caplog.text and "AM0PR01MB1234" in caplog.text


def test_sends_as_the_from_mailbox_as_a_delegate(fake: EWSFake, tmp_path: Path) -> None:
    fake.mailboxes.add("support@example.com")
    fake.delegate_rights.add("support@example.com")
    fake.send_as_rights.add("support@example.com")
    sender = build(tmp_path, fake)
    message = MESSAGE.replace(b"From: Agent <agent@example.com>", b"From: support@example.com")
    env = Envelope(mail_from="support@example.com", rcpt_to=["ann@example.test"])
    result = run(sender.send(message, env, "<m1@example.com>"))
    assert fake.senders == [("agent@example.com", "support@example.com")]
    assert fake.impersonated == []
    assert "as support@example.com" in result.detail


def test_send_as_denied_is_a_permanent_failure_of_that_message(
    fake: EWSFake, tmp_path: Path
) -> None:
    fake.mailboxes.add("support@example.com")
    fake.delegate_rights.add("support@example.com")  # may open it, not send as it
    sender = build(tmp_path, fake)
    message = MESSAGE.replace(b"From: Agent <agent@example.com>", b"From: support@example.com")
    env = Envelope(mail_from="support@example.com", rcpt_to=["ann@example.test"])
    with pytest.raises(SendError, match="ErrorSendAsDenied") as info:
        run(sender.send(message, env, "<m1@example.com>"))
    assert info.value.permanent
    assert "support@example.com" in str(info.value)
    assert fake.sent == [] and fake.store.folders["drafts"].items == []  # draft deleted
    assert [code for _op, code, _t in fake.denied] == ["ErrorSendAsDenied"]
    # the sender is not broken: its own mailbox still sends
    run(sender.send(MESSAGE, envelope("ann@example.test"), "<m2@example.com>"))
    assert len(fake.sent) == 1


def test_a_mailbox_it_may_not_open_is_a_permanent_failure(fake: EWSFake, tmp_path: Path) -> None:
    fake.mailboxes.add("support@example.com")
    sender = build(tmp_path, fake)
    env = Envelope(mail_from="support@example.com", rcpt_to=["ann@example.test"])
    with pytest.raises(SendError, match="ErrorAccessDenied") as info:
        run(sender.send(MESSAGE, env, "<m1@example.com>"))
    assert info.value.permanent
    assert fake.sent == []


def test_impersonation_sends_as_each_from_mailbox(fake: EWSFake, tmp_path: Path) -> None:
    fake.mailboxes |= {"support@example.com", "sales@example.com"}
    fake.impersonation_rights |= {"support@example.com", "sales@example.com"}
    sender = build(tmp_path, fake, impersonation=True)
    for box in ("support@example.com", "sales@example.com", "support@example.com"):
        message = MESSAGE.replace(b"From: Agent <agent@example.com>", f"From: {box}".encode())
        run(sender.send(message, Envelope(mail_from=box, rcpt_to=["ann@example.test"]), "<m@x>"))
    assert fake.senders == [
        ("support@example.com", "support@example.com"),
        ("sales@example.com", "sales@example.com"),
        ("support@example.com", "support@example.com"),
    ]
    assert set(fake.impersonated) == {"support@example.com", "sales@example.com"}
    assert sender.client is not None and len(sender.client._accounts) == 2  # one per address


@pytest.mark.parametrize(
    ("address", "code"),
    [
        ("support@example.com", "ErrorImpersonateUserDenied"),  # exists, no right
        ("nobody@example.com", "ErrorNonExistentMailbox"),
    ],
)
def test_impersonation_refused_is_a_permanent_failure(
    fake: EWSFake, tmp_path: Path, address: str, code: str
) -> None:
    fake.mailboxes.add("support@example.com")
    sender = build(tmp_path, fake, impersonation=True)
    env = Envelope(mail_from=address, rcpt_to=["ann@example.test"])
    with pytest.raises(SendError, match=code) as info:
        run(sender.send(MESSAGE, env, "<m1@example.com>"))
    assert info.value.permanent
    assert f"impersonating {address}" in str(info.value)
    assert fake.sent == []
    assert [c for _op, c, _t in fake.denied] == [code]


def test_the_accounts_kept_are_bounded(
    fake: EWSFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ews_client, "MAX_ACCOUNTS", 2)
    boxes = [f"box{n}@example.com" for n in range(4)]
    fake.mailboxes |= set(boxes)
    fake.impersonation_rights |= set(boxes)
    sender = build(tmp_path, fake, impersonation=True)
    for box in boxes:
        message = MESSAGE.replace(b"From: Agent <agent@example.com>", f"From: {box}".encode())
        run(sender.send(message, Envelope(mail_from=box, rcpt_to=["ann@example.test"]), "<m@x>"))
    assert sender.client is not None
    assert [k[0] for k in sender.client._accounts] == boxes[2:]
    assert len(fake.sent) == 4


def test_bcc_is_carried_and_suppressed_recipients_are_removed(
    fake: EWSFake, tmp_path: Path
) -> None:
    sender = build(tmp_path, fake)
    # bob is suppressed (not in RCPT TO); dave is a Bcc no header shows
    rcpt = ["ann@example.test", "carol@example.test", "dave@example.test"]
    run(sender.send(MESSAGE, envelope(*rcpt), "<m1@example.com>"))
    [(mime, _d, recipients)] = fake.sent
    assert sorted(recipients) == sorted(rcpt)
    assert b"bob@example.test" not in mime
    assert b"\r\nBcc: dave@example.test\r\n" in mime
    assert mime.endswith(b"\r\n\r\nbody line\r\n")


def test_dsn_parameters_are_refused_permanently(fake: EWSFake, tmp_path: Path) -> None:
    sender = build(tmp_path, fake)
    env = envelope("ann@example.test", rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
    with pytest.raises(SendError, match="DSN") as info:
        run(sender.send(MESSAGE, env, "<m1@example.com>"))
    assert info.value.permanent
    assert fake.sent == [] and fake.counts == {}


def test_refused_credentials_pause_the_outbox(fake: EWSFake, tmp_path: Path) -> None:
    sender = build(tmp_path, fake, password="wrong")
    with pytest.raises(SenderAuthenticationFailed):
        run(sender.send(MESSAGE, envelope("ann@example.test"), "<m1@example.com>"))
    assert fake.sent == []
    assert "wrong" not in repr(sender.__dict__)
    assert fake.counts["401"] == 1  # the same password is not tried twice


def test_an_expired_token_is_refreshed_and_the_send_tried_once_more(
    fake: EWSFake, tmp_path: Path
) -> None:
    fake.tokens = {"fresh-token"}
    sender = build(tmp_path, fake)
    auth = FakeAuthenticator(fake.user, "expired-token", "BEARER", refreshed=("fresh-token",))
    sender.context = attrs.evolve(sender.context, authenticator=auth)
    result = run(sender.send(MESSAGE, envelope("ann@example.test"), "<m1@example.com>"))
    assert result.message_id == "<m1@example.com>"
    assert auth.invalidated == 1
    assert fake.counts["401"] == 1
    assert len(fake.sent) == 1


def test_check_connection_reads_sent_items(fake: EWSFake, tmp_path: Path) -> None:
    sender = build(tmp_path, fake)
    assert fake.user in run(sender.check_connection())
    assert fake.counts["GetFolder"] >= 1


def test_check_connection_of_a_service_account_without_a_mailbox(
    fake: EWSFake, tmp_path: Path
) -> None:
    fake.mailboxes.discard(fake.user)
    assert "no mailbox of its own" in run(
        build(tmp_path, fake, impersonation=True).check_connection()
    )
    with pytest.raises(ErrorNonExistentMailbox):  # without impersonation it cannot send at all
        run(build(tmp_path, fake).check_connection())
    assert [code for _op, code, _t in fake.denied] == ["ErrorNonExistentMailbox"] * 2


def test_recipient_headers_follow_the_envelope() -> None:
    folded = b"To: a@x.test,\r\n b@x.test\r\nBcc: old@x.test\r\nSubject: s\r\n\r\nTo: body\r\n"
    out = with_recipients(folded, ["b@x.test", "new@x.test"])
    assert out == b"To: b@x.test\r\nSubject: s\r\nBcc: new@x.test\r\n\r\nTo: body\r\n"
    assert (
        with_recipients(MESSAGE, ["ann@example.test", "bob@example.test", "carol@example.test"])
        == MESSAGE
    )


def test_a_10_mb_message_is_sent_byte_for_byte(fake: EWSFake, tmp_path: Path) -> None:
    sender = build(tmp_path, fake)
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
    big = MESSAGE + line * (10 * 1024 * 1024 // len(line))
    rcpt = ["ann@example.test", "bob@example.test", "carol@example.test"]
    run(sender.send(big, envelope(*rcpt), "<m1@example.com>"))
    [(mime, _d, _r)] = fake.sent
    assert mime == big
