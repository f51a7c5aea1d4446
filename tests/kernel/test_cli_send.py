"""``postroom send`` checks a request as ``POST /send`` does: exit status 2 naming the
option, nothing queued or written; an address list is several recipients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kernel.test_cli import postroom


def outbox(quickstart: Path) -> list[Path]:
    folder = quickstart.parent / "outbox"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_an_address_list_is_several_recipients_in_header_and_envelope(quickstart: Path) -> None:
    result = postroom(
        "send", "-c", str(quickstart), "--to", "a@x.example, Anna <b@y.example>",
        "--to", "c@z.example", "--header", "X-Ticket : 4711", "--text", "Hi", "--now",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    eml = next(p for p in outbox(quickstart) if p.suffix == ".eml").read_bytes()
    assert b"To: a@x.example, Anna <b@y.example>, c@z.example\r\n" in eml
    assert b"X-Ticket: 4711\r\n" in eml
    envelope = json.loads(next(p for p in outbox(quickstart) if p.suffix == ".json").read_text())
    assert envelope["rcpt_to"] == ["a@x.example", "b@y.example", "c@z.example"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--to", ""], "--to: [0]: empty"),
        (["--to", "not an address"], "--to: [0]: 'not an address' is not an address"),
        (["--to", "a@x.example,"], "--to: [0]: an empty address after the last comma"),
        (["--cc", "nobody"], "--cc: [0]: 'nobody' is not an address"),
        (["--from", "42"], "--from: '42' is not an address"),
        (["--header", "nocolon"], "--header: 'nocolon': expected 'Name: value'"),
        (["--header", "Bcc : evil@x.com"], "--header: the header 'Bcc' is postroom's"),
        (["--header", "Bcc\t: evil@x.com"], "--header: the header 'Bcc' is postroom's"),
        (["--header", "Message-ID : <x@y>"], "--header: the header 'Message-ID' is written"),
        (["--header", "Received : x"], "--header: the header 'Received' is never sent"),
        (["--header", "Subject: x"], "--header: the header 'Subject' is postroom's"),
        (["--header", "X A: 1"], "--header: 'X A' is not a header name"),
        (["--header", "X-A: a\x0bb"], "--header: ['X-A']: contains a control character"),
        (["--header", "X-A: 1", "--header", "x-a: 2"], "--header: the header 'x-a' is given twice"),
        (["--subject", "a\u2028b"], "--subject: contains a control character"),
        (["--subject", "=?utf-8?q?a=0D=0Ab?="], "--subject: holds an encoded word hiding"),
        (["--in-reply-to", "no-such-id"], "--in-reply-to: no interaction 'no-such-id'"),
        (["--text", "@/no/such/file"], "--text: cannot read '/no/such/file'"),
        (["--option", "dsn={"], "--option: 'dsn={': not valid JSON"),
    ],
)
def test_a_refused_request_exits_2_naming_the_option(
    quickstart: Path, options: list[str], message: str
) -> None:
    args = ["send", "-c", str(quickstart), *options]
    if "--to" not in options:
        args += ["--to", "a@x.example"]
    result = postroom(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert outbox(quickstart) == []
    listed = postroom("interactions", "list", "-c", str(quickstart), "--json")
    assert listed.returncode == 0 and listed.stdout == ""


def test_no_to_without_in_reply_to_exits_2_naming_to(quickstart: Path) -> None:
    result = postroom("send", "-c", str(quickstart), "--text", "Hi")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: --to: is required unless in_reply_to"), result.stderr
    assert outbox(quickstart) == []


def test_in_reply_to_alone_answers_the_parent(quickstart: Path) -> None:
    first = postroom(
        "send", "-c", str(quickstart), "--to", "a@x.example", "--subject", "Order",
        "--text", "1", "--now",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    parent_id, parent_mid, _status = first.stdout.split()
    result = postroom(
        "send", "-c", str(quickstart), "--in-reply-to", parent_id, "--text", "2", "--now"
    )
    assert result.returncode == 0, result.stderr
    emls = [p.read_bytes() for p in outbox(quickstart) if p.suffix == ".eml"]
    [reply] = [eml for eml in emls if b"In-Reply-To:" in eml]
    assert b"To: a@x.example\r\n" in reply and b"Subject: Re: Order\r\n" in reply
    assert f"References: {parent_mid}\r\n".encode() in reply
