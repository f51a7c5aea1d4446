"""The signature scheme, the ``webhook`` options and the reading of answers, without a network."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from postroom.api import ConfigError, HTTPResponse
from postroom.testing import TestKernel
from postroom_webhook.answer import EXCERPT, excerpt, outcome
from postroom_webhook.plugin import plugin
from postroom_webhook.signing import new_secret, secret_key, signature, signed_headers
from tests.plugins.webhook.conftest import message

BODY = '{"id":"0b6f4a52-3c3e-4f7e-9a52-5b1e7f0c9d11","subject":"été"}'.encode()
MSG_ID = "0b6f4a52-3c3e-4f7e-9a52-5b1e7f0c9d11"


def test_the_signature_is_the_one_the_standard_webhooks_library_makes() -> None:
    secret = new_secret()
    key = secret_key(secret)
    at = 1_765_000_000
    ours = signature(key, MSG_ID, at, BODY)
    theirs = Webhook(secret).sign(MSG_ID, datetime.fromtimestamp(at, UTC), BODY)
    assert ours == theirs and ours.startswith("v1,")


def test_the_specifications_example_secret_signs_as_published() -> None:
    # the Standard Webhooks libraries' shared test secret and message
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    signed = signature(secret_key(secret), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signed == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_one_signature_per_key_in_the_header() -> None:
    keys = [secret_key(new_secret()), secret_key(new_secret())]
    headers = signed_headers(keys, MSG_ID, 7, BODY)
    assert headers["webhook-id"] == MSG_ID and headers["webhook-timestamp"] == "7"
    assert headers["webhook-signature"].split(" ") == [signature(k, MSG_ID, 7, BODY) for k in keys]


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "expected whsec_"),
        ("whsec_not base64!", "not valid base64"),
        ("whsec_" + base64.b64encode(b"k" * 16).decode(), "the key is 16 bytes"),
        ("whsec_" + base64.b64encode(b"k" * 65).decode(), "the key is 65 bytes"),
    ],
)
def test_a_secret_not_in_the_whsec_form_is_refused_without_quoting_it(
    secret: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem) as raised:
        secret_key(secret)
    assert secret not in str(raised.value)


def site(**webhook: Any) -> dict[str, Any]:
    return {"webhook": {k.replace("_", "-"): v for k, v in webhook.items()}}


@pytest.mark.parametrize(
    ("options", "option", "problem"),
    [
        ({"url": "http://receiver.example/hook"}, "url", "must be https://"),
        ({"url": "https://user:pw@receiver.example/"}, "url", "no credentials in the URL"),
        ({"url": "https://receiver.example/"}, "secret", "needs a signing secret"),
        ({"url": "https://r.example/", "secret": "whsec_c2hvcnQ="}, "secret", "key is 5 bytes"),
        ({"secret": "SECRET"}, "url", "webhook.secret is set but webhook.url is not"),
        ({"url": "https://r.example/", "secret": "GOOD", "headers": {"Webhook-Id": "x"}},
         "headers", "sets Webhook-Id itself"),
        ({"url": "https://r.example/", "secret": "GOOD", "headers": {"X-Key": "a\nb"}},
         "headers", "line break"),
        ({"url": "https://r.example/", "secret": "GOOD", "headers": {"X Key": "a"}},
         "headers", "not an HTTP header name"),
    ],
)  # fmt: skip
def test_options_that_cannot_work_stop_the_kernel_at_their_line(
    options: dict[str, Any], option: str, problem: str
) -> None:
    good = new_secret()
    options = {k: (good if v == "GOOD" else v) for k, v in options.items()}
    with pytest.raises(ConfigError, match=problem) as raised:
        TestKernel(["webhook"], site(**options))
    assert raised.value.option == f"webhook.{option}"
    assert good not in str(raised.value)


def test_without_a_url_the_plugin_hands_nothing_off_and_fails_nothing() -> None:
    with TestKernel(["webhook"]) as kernel:
        assert "postroom_submit" in kernel.hooks_of("webhook")
        [interaction] = kernel.ingest(message())
        assert interaction.handoff_state == "done"
        assert plugin.targets == {}


def test_each_kernel_has_its_own_receiver_until_it_closes() -> None:
    one = TestKernel(["webhook"], site(url="https://one.example/hook", secret=new_secret()))
    two = TestKernel(["webhook"], site(url="https://two.example:8443/h", secret=new_secret()))
    assert plugin.targets[id(one.config)].settings.where == "https://one.example"
    assert plugin.targets[id(two.config)].settings.where == "https://two.example:8443"
    one.close()
    two.close()
    assert plugin.targets == {}


def answer(status: int, body: bytes = b"", truncated: bool = False) -> HTTPResponse:
    return HTTPResponse(status, {}, body, len(body), truncated)


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (401, True), (403, True), (404, True), (410, True), (422, True),
     (408, False), (429, False), (500, False), (502, False), (503, False), (504, False),
     (301, False), (302, False), (199, False), (600, False)],
)  # fmt: skip
def test_what_each_status_means(status: int, permanent: bool) -> None:
    error = outcome(answer(status), "https://r.example")
    assert error is not None and error.permanent is permanent
    assert str(error).startswith(f"webhook https://r.example: HTTP {status} ")


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_a_2xx_is_done(status: int) -> None:
    assert outcome(answer(status, b"whatever"), "https://r.example") is None


def test_the_excerpt_is_one_short_clean_line() -> None:
    body = "line one\r\n\tline\x00two \u202eevil\u202c " + "y" * 500
    said = excerpt(answer(500, body.encode()))
    assert said.startswith("line one line two evil ") and said.endswith("...")
    assert len(said) == EXCERPT + 3
    assert excerpt(answer(500, b"short", truncated=True)) == "short..."
    assert excerpt(answer(500, b"\xff\xfe not utf-8")) == "\ufffd\ufffd not utf-8"


def test_secrets_are_blanked_out_of_the_excerpt() -> None:
    said = excerpt(answer(400, b"got key=gateway-key-1234 sig=abcdefgh123"),
                   hidden=["gateway-key-1234", "abcdefgh123", "short"])  # fmt: skip
    assert said == "got key=*** sig=***"
