"""Message content and credentials never reach postroom's logs nor its
errors: exchangelib logs request XML and headers (DEBUG always, ERROR on an
unexpected exception) and quotes a malformed answer in its exceptions."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from postroom.errors import SendError, SourceError
from tests.conftest import run
from tests.fakes.ews.server import EWSFake
from tests.plugins.ews.conftest import Harness
from tests.plugins.ews.test_sender import build, envelope

SECRET = b"SECRET-CUSTOMER-BODY account 4711 balance"
MAIL = (
    b"From: Agent <agent@example.com>\r\nTo: ann@example.test\r\nSubject: private\r\n"
    b"Message-ID: <h1@example.com>\r\n\r\n" + SECRET + b"\r\n"
)


def leaks(fake: EWSFake, text: str) -> list[str]:
    """What of the message or the credentials *text* holds."""
    basic = base64.b64encode(f"{fake.user}:{fake.password}".encode()).decode()
    needles = {
        "body": "SECRET-CUSTOMER-BODY",
        "body (base64)": base64.b64encode(MAIL).decode()[:40],
        "password": fake.password,
        "Authorization header": "Authorization",
        "Basic credentials": basic,
        "XML": "<m:",
    }
    return [name for name, needle in needles.items() if needle in text]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything logged, DEBUG included (a site with ``log-level: debug``)."""
    caplog.set_level(logging.DEBUG)
    return caplog


def test_an_unexpected_exception_during_a_send_logs_one_line(
    fake: EWSFake, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    sender = build(tmp_path, fake)
    run(sender.send(MAIL, envelope("ann@example.test"), "<h0@example.com>"))  # DEBUG traffic
    fake.undecodable["CreateItem"] = 1  # requests fails reading the answer
    with pytest.raises(SendError) as info:
        run(sender.send(MAIL, envelope("ann@example.test"), "<h1@example.com>"))
    assert not info.value.permanent  # the outbox tries again
    assert "ContentDecodingError" in str(info.value)
    # exchangelib's ERROR record (request XML and headers) kept its first line only
    [record] = [r for r in logs.records if r.name == "exchangelib.util"]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("ContentDecodingError")
    assert record.exc_info is None
    assert leaks(fake, logs.text) == []
    assert leaks(fake, str(info.value)) == []
    assert fake.store.folders["drafts"].items == []


def test_a_malformed_answer_to_a_send_is_not_quoted(
    fake: EWSFake, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    sender = build(tmp_path, fake)
    fake.malformed["SendItem"] = 1
    fake.garbage = b"<<" + SECRET  # an answer quoting the message, cut
    with pytest.raises(SendError) as info:
        run(sender.send(MAIL, envelope("ann@example.test"), "<h1@example.com>"))
    assert "not well-formed XML" in str(info.value)
    assert leaks(fake, str(info.value)) == []
    assert leaks(fake, logs.text) == []


@pytest.mark.parametrize("fault", ["malformed", "undecodable"])
def test_a_broken_answer_to_a_fetch_leaks_nothing(
    fake: EWSFake, tmp_path: Path, logs: pytest.LogCaptureFixture, fault: str
) -> None:
    fake.store.add(MAIL)
    h = Harness(fake, tmp_path / "spool")
    h.settle(h.source.connect())
    [item] = h.settle(h.source.list_new(None))
    getattr(fake, fault)["GetItem"] = 1
    fake.garbage = b"<<" + SECRET
    with pytest.raises(SourceError) as info:
        h.settle(h.source.fetch(item))
    reason = "not well-formed XML" if fault == "malformed" else "ContentDecodingError"
    assert reason in str(info.value)
    assert leaks(fake, str(info.value)) == []
    assert leaks(fake, logs.text) == []
    assert fake.store.mime  # not acknowledged: the message stays on the server


def test_safe_reason_keeps_one_line_without_credentials() -> None:
    from postroom_ews.client import safe_reason

    token = base64.b64encode(b"agent@example.com:s3cret").decode()
    text = safe_reason(ValueError(f"sent Authorization: Basic {token}\nRequest XML: <m:x/>"))
    assert text == "ValueError: sent Authorization: Basic <redacted>"
    assert safe_reason(ValueError("Basic authentication is off")).endswith(
        "Basic authentication is off"
    )
    assert len(safe_reason(ValueError("x" * 5000))) < 400
