"""EWSSender against the contract fake: CreateItem with MimeContent and
SendAndSaveCopy, Bcc carried, suppressed recipients removed, DSN refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from twisted.internet import task

from postroom.drivers import SendResult
from postroom.errors import SenderAuthenticationFailed, SendError
from postroom.kernel import Kernel
from postroom.model import Envelope
from postroom.runner import InlineRunner
from postroom_ews.sender import EWSSender, with_recipients
from tests.conftest import run
from tests.fakes.ews.server import EWSFake

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


def test_sends_with_create_item_and_keeps_a_copy(fake: EWSFake, tmp_path: Path) -> None:
    sender = build(tmp_path, fake)
    rcpt = ["ann@example.test", "bob@example.test", "carol@example.test"]
    result = run(sender.send(MESSAGE, envelope(*rcpt), "<m1@example.com>"))
    assert isinstance(result, SendResult)
    assert result.accepted == rcpt
    [(mime, disposition, recipients)] = fake.sent
    assert mime == MESSAGE  # nothing to change: byte for byte
    assert disposition == "SendAndSaveCopy"
    assert sorted(recipients) == sorted(rcpt)
    assert [fake.store.mime[i] for i in fake.store.folders["sentitems"].items] == [MESSAGE]


def test_send_only_when_no_copy_is_wanted(fake: EWSFake, tmp_path: Path) -> None:
    sender = build(tmp_path, fake, save_to_sent_items=False)
    run(sender.send(MESSAGE, envelope("ann@example.test"), "<m1@example.com>"))
    assert [d for _m, d, _r in fake.sent] == ["SendOnly"]
    assert fake.store.folders["sentitems"].items == []


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


def test_check_connection_reads_sent_items(fake: EWSFake, tmp_path: Path) -> None:
    sender = build(tmp_path, fake)
    assert fake.user in run(sender.check_connection())
    assert fake.counts["GetFolder"] >= 1


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
