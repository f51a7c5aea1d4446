"""The webhook plugin against a real HTTPS receiver on 127.0.0.1, through the kernel.

The receiver verifies every request with the ``standardwebhooks`` library
(interoperability, not only our own reading of the scheme). The kernel is a
TestKernel on the test's private reactor: real sockets and TLS, with time
on the kernel's ``task.Clock`` (deadlines, back-off, timestamps).
"""

from __future__ import annotations

import base64
import json

from twisted.internet.defer import Deferred, ensureDeferred

from postroom.api import Backoff, HandoffError, Interaction
from postroom.services.handoff import HandoffService
from postroom.testing import TestKernel, result_of
from postroom_webhook.plugin import MAX_ANSWER, plugin
from postroom_webhook.signing import new_secret
from tests.pki import TestCA
from tests.plugins.webhook.conftest import MakeKernel, message
from tests.plugins.webhook.receiver import Answer, Listening, Net


def ingested(net: Net, kernel: TestKernel, data: bytes) -> Interaction:
    """Ingest *data*; the new interaction once its one hand-off attempt ended."""
    d = kernel.ingest_deferred(data)
    net.until(lambda: d.called, "the hand-off attempt")
    [interaction] = result_of(d)
    assert isinstance(interaction, Interaction)
    return interaction


def status(kernel: TestKernel, interaction_id: str) -> tuple[str, int, str | None]:
    found = result_of(kernel.store.handoff_status(interaction_id))
    assert found is not None
    return found


def submitted(net: Net, kernel: TestKernel, interaction: Interaction) -> BaseException | None:
    """The plugin's own hand-off of *interaction*: None, or what it raised."""
    d: Deferred[None] = ensureDeferred(plugin.postroom_submit(interaction, kernel.kernel.ctx))
    outcome: list[object] = []
    d.addBoth(outcome.append)
    net.until(lambda: bool(outcome), "the plugin's hand-off")
    failure = outcome[0]
    return getattr(failure, "value", None)


def test_a_signed_webhook_is_verified_by_a_standard_webhooks_receiver(
    net: Net, receiver: Listening, make_kernel: MakeKernel
) -> None:
    kernel = make_kernel(receiver.url, headers={"X-Api-Key": "gateway-key-1234"})
    interaction = ingested(net, kernel, message())
    assert interaction.handoff_state == "done"
    [got] = receiver.receiver.received
    assert got.verified, got.refusal
    iid = interaction.id
    assert got.headers["webhook-id"] == iid
    assert int(got.headers["webhook-timestamp"]) == int(kernel.clock.seconds())
    version, _, mac = got.headers["webhook-signature"].partition(",")
    assert version == "v1" and len(base64.b64decode(mac, validate=True)) == 32
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-api-key"] == "gateway-key-1234"
    # the body is the hand-off JSON, compact UTF-8, exactly the bytes signed
    assert got.payload == json.loads(got.body)
    assert got.payload["id"] == iid and got.payload["subject"] == "webhook 1 été"
    assert got.payload["message_id"] == "<hook-1@customer.example>"
    assert "raw_url" in got.payload
    assert "été".encode() in got.body and b": " not in got.body


def test_the_receiver_refuses_a_webhook_signed_with_another_secret(
    net: Net, receiver: Listening, make_kernel: MakeKernel
) -> None:
    kernel = make_kernel(receiver.url, secret=new_secret())
    receiver.receiver.answers = [Answer(401, b"bad signature")]
    interaction = ingested(net, kernel, message())
    [got] = receiver.receiver.received
    assert got.refusal == "No matching signature found"
    state, _, error = status(kernel, interaction.id)
    assert state == "refused" and error is not None
    assert "HTTP 401 Unauthorized (refused for good): bad signature" in error


def test_while_the_secret_changes_both_signatures_are_sent(
    net: Net, receiver: Listening, make_kernel: MakeKernel, secret: str
) -> None:
    # the receiver still knows only the old secret
    kernel = make_kernel(receiver.url, secret=new_secret(), previous_secret=secret)
    ingested(net, kernel, message())
    [got] = receiver.receiver.received
    assert got.verified and len(got.headers["webhook-signature"].split(" ")) == 2


def test_a_500_is_retried_with_the_kernels_back_off_then_delivered(
    net: Net, receiver: Listening, make_kernel: MakeKernel
) -> None:
    answers = receiver.receiver
    answers.answers = [Answer(500, b"database down"), Answer(503, b"busy"), Answer(200, b"ok")]
    kernel = make_kernel(receiver.url)
    interaction = ingested(net, kernel, message())
    iid = interaction.id
    state, attempts, error = status(kernel, iid)
    assert (state, attempts) == ("failed", 1)
    assert error is not None
    assert "HTTP 500 Internal Server Error (will retry): database down" in error
    # the gateway's hand-off service, as it starts: it picks up the failed
    # hand-off, then retries with back-off on the kernel's clock
    service = HandoffService(kernel.kernel, backoff=Backoff(initial=5.0, maximum=5.0, jitter=0.0))
    service.startService()
    try:
        net.until(lambda: status(kernel, iid)[1] == 2, "the second attempt (503)")
        assert len(answers.received) == 2
        kernel.clock.advance(4.9)
        net.settle()
        assert len(answers.received) == 2  # not before the back-off
        kernel.clock.advance(0.1)
        idle = service.wait_idle()
        net.until(lambda: idle.called, "the third attempt (200)")
    finally:
        result_of(service.stopService())
    assert status(kernel, iid) == ("done", 3, None)
    assert kernel.handoff_state(iid) == "done"
    first, second, third = answers.received
    assert all(r.verified for r in answers.received)
    # one id for every attempt (the receiver's idempotency key), each attempt signed anew
    assert {r.headers["webhook-id"] for r in answers.received} == {iid}
    # the same body each time (the hand-off's own state is not in it)
    assert "handoff_state" not in first.payload
    assert first.body == second.body == third.body
    assert int(third.headers["webhook-timestamp"]) - int(first.headers["webhook-timestamp"]) == 5


def test_a_410_is_a_permanent_failure(
    net: Net, receiver: Listening, make_kernel: MakeKernel
) -> None:
    receiver.receiver.answers = [Answer(410, b'{"error": "this endpoint was removed"}')] * 2
    kernel = make_kernel(receiver.url)
    interaction = ingested(net, kernel, message())
    iid = interaction.id
    # the kernel records the webhook target as refused, with the reason
    state, attempts, error = status(kernel, iid)
    assert (state, attempts) == ("refused", 1)
    assert error is not None
    assert 'HTTP 410 Gone (refused for good): {"error": "this endpoint was removed"}' in error
    target = kernel.handoff_targets(iid)["webhook"]
    assert (target.state, target.attempts) == ("refused", 1)
    # and never retries it: the gateway's hand-off service, started, lets time pass
    service = HandoffService(kernel.kernel, backoff=Backoff(initial=5.0, maximum=5.0, jitter=0.0))
    service.startService()
    try:
        kernel.clock.advance(3600)
        idle = service.wait_idle()
        net.until(lambda: idle.called, "the hand-off service idle")
    finally:
        result_of(service.stopService())
    assert len(receiver.receiver.received) == 1
    assert status(kernel, iid)[:2] == ("refused", 1)
    # and what the plugin raises: a permanent HandoffError
    raised = submitted(net, kernel, interaction)
    assert isinstance(raised, HandoffError) and raised.permanent
    assert str(raised).startswith("webhook https://127.0.0.1:")


def test_408_and_429_are_retried_other_4xx_are_not(
    net: Net, receiver: Listening, make_kernel: MakeKernel
) -> None:
    kernel = make_kernel(receiver.url)
    interaction = ingested(net, kernel, message())
    for code, permanent in [(408, False), (429, False), (400, True), (404, True), (502, False),
                            (301, False)]:  # fmt: skip
        receiver.receiver.answers = [Answer(code)]
        raised = submitted(net, kernel, interaction)
        assert isinstance(raised, HandoffError), code
        assert raised.permanent is permanent, code


def test_a_receiver_that_never_answers_times_out_on_the_clock(
    net: Net, receiver: Listening, make_kernel: MakeKernel
) -> None:
    receiver.receiver.answers = [Answer(hang=True)]
    kernel = make_kernel(receiver.url, timeout="00:00:10")
    d = kernel.ingest_deferred(message())
    net.until(lambda: len(receiver.receiver.received) == 1, "the request")
    net.settle()
    assert not d.called  # waiting for the answer
    kernel.clock.advance(9.9)
    net.settle()
    assert not d.called
    kernel.clock.advance(0.1)
    net.until(lambda: d.called, "the deadline")
    [interaction] = result_of(d)
    state, _, error = status(kernel, interaction.id)
    assert state == "failed" and error is not None
    where = f"127.0.0.1:{receiver.port.getHost().port}"
    assert f"webhook: {where}: no complete answer within 10 s (will retry)" in error


def test_a_certificate_of_another_ca_is_refused(
    net: Net, receiver: Listening, make_kernel: MakeKernel, other_ca: TestCA
) -> None:
    kernel = make_kernel(receiver.url, ca_file=str(other_ca.ca_file))
    interaction = ingested(net, kernel, message())
    assert receiver.receiver.received == []  # nothing was sent
    state, _, error = status(kernel, interaction.id)
    assert state == "failed" and error is not None
    assert "certificate" in error and "(will retry)" in error
    raised = submitted(net, kernel, interaction)
    assert isinstance(raised, HandoffError) and not raised.permanent


def test_without_a_ca_file_the_systems_cas_are_trusted_and_not_a_test_ca(
    net: Net, receiver: Listening, make_kernel: MakeKernel
) -> None:
    kernel = make_kernel(receiver.url, ca_file=None)
    interaction = ingested(net, kernel, message())
    assert receiver.receiver.received == []
    _, _, error = status(kernel, interaction.id)
    assert error is not None and "certificate" in error


def test_a_huge_answer_is_read_only_up_to_the_cap(
    net: Net, receiver: Listening, make_kernel: MakeKernel
) -> None:
    gib = 1 << 30
    receiver.receiver.answers = [Answer(200, stream=gib), Answer(500, stream=gib)]
    kernel = make_kernel(receiver.url)
    interaction = ingested(net, kernel, message())
    # a 2xx took it, whatever followed
    assert interaction.handoff_state == "done"
    raised = submitted(net, kernel, interaction)
    assert isinstance(raised, HandoffError) and not raised.permanent
    message_text = str(raised)
    assert "HTTP 500" in message_text and message_text.endswith("x" * 200 + "...")
    assert len(message_text) < 400
    # the client stopped reading: the receiver wrote little more than the
    # cap (socket buffers), nowhere near the gigabyte
    net.until(lambda: all(s.done for s in receiver.receiver.streams), "the dropped connections")
    for stream in receiver.receiver.streams:
        assert MAX_ANSWER <= stream.written < 16 * 1024 * 1024


def test_an_echoing_receiver_does_not_get_secrets_into_the_message(
    net: Net, receiver: Listening, make_kernel: MakeKernel, secret: str
) -> None:
    receiver.receiver.answers = [Answer(400, echo=True)]
    kernel = make_kernel(receiver.url, headers={"X-Api-Key": "gateway-key-1234"})
    interaction = ingested(net, kernel, message())
    [got] = receiver.receiver.received
    _, _, error = status(kernel, interaction.id)
    assert error is not None and "webhook-id" in error  # the echo is there...
    mac = got.headers["webhook-signature"].partition(",")[2]
    for hidden in (mac, "gateway-key-1234", secret):
        assert hidden not in error  # ...without the secrets


def test_at_most_max_connections_requests_are_in_flight(
    net: Net, receiver: Listening, make_kernel: MakeKernel
) -> None:
    receiver.receiver.answers = [Answer(204)] + [Answer(hang=True)] * 3
    kernel = make_kernel(receiver.url, max_connections=2, timeout="00:00:10")
    interaction = ingested(net, kernel, message())
    receiver.receiver.received.clear()
    outcomes: list[object] = []
    for _ in range(3):
        d = ensureDeferred(plugin.postroom_submit(interaction, kernel.kernel.ctx))
        d.addBoth(outcomes.append)
    net.until(lambda: len(receiver.receiver.received) == 2, "two requests")
    net.settle()
    assert len(receiver.receiver.received) == 2 and outcomes == []
    kernel.clock.advance(10)  # the two time out: the third goes
    net.until(lambda: len(receiver.receiver.received) == 3, "the third request")
    assert len(outcomes) == 2
