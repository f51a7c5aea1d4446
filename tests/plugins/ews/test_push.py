"""Streaming notifications: new mail wakes a waiting mailbox before its poll
interval, on threads of the mailboxes' own (never the kernel's pool); a
server without streaming, or an expired subscription, falls back without a
crash; disconnect returns at once and unsubscribes.

The clock is a task.Clock and never advanced past the poll interval, so a
wait that returns was woken by a notification; the stream threads' reports
are waited for with a bound (``Harness.reactor.run(wait=...)``), never slept for.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from postroom.api import Credentials
from postroom.runner import InlineRunner
from postroom_ews import push
from tests.fakes.ews.server import EWSFake
from tests.plugins.ews.conftest import Harness, message

POLL = 3600.0  # the poll interval: never reached in these tests
BOUND = 10.0  # the longest a test waits for a stream thread, in seconds


class RecordingRunner(InlineRunner):
    """The kernel's pool stand-in: runs inline, records the threads it ran on
    and what it ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.threads: set[str] = set()

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        self.ran.append(getattr(fn, "__qualname__", repr(fn)))
        self.threads.add(threading.current_thread().name)
        return super().run(fn, *args, **kwargs)


def harness(fake: EWSFake, tmp_path: Path, name: str = "spool", **options: Any) -> Harness:
    return Harness(fake, tmp_path / name, runner=RecordingRunner(), **options)


def wake_until(h: Harness, d: defer.Deferred[Any], what: str) -> None:
    """Run the stream thread's reports until *d* fired (bounded)."""
    for _ in range(20):
        if d.called:
            return
        h.reactor.run(wait=BOUND)
    assert d.called, f"not woken: {what}"


def live(h: Harness) -> None:
    """Connect, list, and wait until the subscription is live (its first wake)."""
    h.settle(h.source.connect())
    assert h.settle(h.source.list_new(None)) == []
    first = h.source.wait_for_new(POLL)
    wake_until(h, first, "the subscription")
    assert h.source.supports_push
    assert h.settle(h.source.list_new(None)) == []


def test_new_mail_wakes_the_wait_before_the_poll_interval(fake: EWSFake, tmp_path: Path) -> None:
    fake.minute = 60.0  # the stream stays open for the whole test
    h = harness(fake, tmp_path)
    live(h)
    waiting = h.source.wait_for_new(POLL)
    assert fake.wait_until(lambda: fake.open_streams == 1)
    h.reactor.run()
    assert not waiting.called  # nothing new yet, and the clock has not moved
    item = fake.store.add(message(1))
    wake_until(h, waiting, "new mail")
    assert h.clock.seconds() == 0  # woken by the notification, not by the clock
    assert [i.source_key for i in h.settle(h.source.list_new(None))] == [item]
    # the same stream serves the next waits
    again = h.source.wait_for_new(POLL)
    second = fake.store.add(message(2))
    wake_until(h, again, "more new mail")
    assert fake.counts["Subscribe"] == 1
    assert fake.counts["GetStreamingEvents"] == 1
    assert second in [i.source_key for i in h.settle(h.source.list_new(None))]
    h.settle(h.source.disconnect())


def test_the_stream_never_runs_on_the_kernels_runner(fake: EWSFake, tmp_path: Path) -> None:
    fake.minute = 60.0
    h = harness(fake, tmp_path)
    live(h)
    runner = h.context.runner
    assert isinstance(runner, RecordingRunner)
    # every call that reached the runner was the source's own short calls
    assert runner.threads == {threading.current_thread().name}
    assert not any("Push" in name or "stream" in name.lower() for name in runner.ran)
    # the reports came from the mailbox's own stream thread
    assert h.reactor.threads == {"postroom-ews-push-support"}
    h.settle(h.source.disconnect())


def test_many_open_streams_leave_the_store_and_other_mailboxes_working(
    fake: EWSFake, tmp_path: Path
) -> None:
    fake.minute = 60.0
    mailboxes = [harness(fake, tmp_path, f"spool{n}") for n in range(4)]
    for h in mailboxes:
        live(h)
    waits = [h.source.wait_for_new(POLL) for h in mailboxes]
    assert fake.wait_until(lambda: fake.open_streams == 4)
    # with four streams open, a mailbox lists, fetches and acknowledges as usual
    busy = harness(fake, tmp_path, "busy", ews_push="off")
    busy.settle(busy.source.connect())
    item = fake.store.add(message(7))
    [listed] = busy.settle(busy.source.list_new(None))
    assert listed.source_key == item
    fetched = busy.settle(busy.source.fetch(listed))
    assert Path(fetched.raw.path).read_bytes() == message(7)
    busy.stored.add(item)
    busy.settle(busy.source.acknowledge(fetched))
    busy.settle(busy.source.disconnect())
    # ... and the delivery woke every waiting mailbox
    for h, waiting in zip(mailboxes, waits, strict=True):
        wake_until(h, waiting, "the delivery")
    for h in mailboxes:
        h.settle(h.source.disconnect())
    assert len(fake.unsubscribed) == 4


@pytest.mark.parametrize(
    "code", ["ErrorInvalidSubscriptionRequest", "ErrorInvalidRequest", "ErrorAccessDenied"]
)
def test_a_server_without_streaming_is_polled(
    fake: EWSFake, tmp_path: Path, caplog: pytest.LogCaptureFixture, code: str
) -> None:
    fake.refuse_streaming = code
    h = harness(fake, tmp_path)
    h.settle(h.source.connect())
    with caplog.at_level(logging.INFO, logger="postroom_ews"):
        first = h.source.wait_for_new(POLL)
        wake_until(h, first, "the refusal")
    assert not h.source.supports_push
    assert "does not offer streaming notifications" in caplog.text
    assert code in caplog.text
    # polling now: the wait ends at the poll interval, on the clock
    item = fake.store.add(message(1))
    waiting = h.source.wait_for_new(60)
    h.clock.advance(59)
    assert not waiting.called
    h.clock.advance(1)
    assert waiting.called
    assert [i.source_key for i in h.settle(h.source.list_new(None))] == [item]
    # not asked again, not logged again
    caplog.clear()
    h.settle(h.source.wait_for_new(60), advance=60)
    h.settle(h.source.disconnect())
    h.settle(h.source.connect())
    h.settle(h.source.wait_for_new(60), advance=60)
    assert fake.counts["Subscribe"] == 1
    assert "streaming" not in caplog.text
    assert "GetStreamingEvents" not in fake.counts


def test_an_expired_subscription_is_renewed_once(
    fake: EWSFake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake.minute = 60.0
    h = harness(fake, tmp_path)
    live(h)
    waiting = h.source.wait_for_new(POLL)
    assert fake.wait_until(lambda: fake.open_streams == 1)
    with caplog.at_level(logging.INFO, logger="postroom_ews"):
        fake.expire_subscriptions()
        # the stream ends Closed; GetStreamingEvents again: ErrorSubscriptionNotFound;
        # Subscribe again, and a listing for what may have been missed
        wake_until(h, waiting, "the renewal")
    assert "streaming subscription renewed" in caplog.text
    assert "ErrorSubscriptionNotFound" in caplog.text
    assert fake.counts["Subscribe"] == 2
    assert h.source.supports_push
    # the renewed subscription delivers
    again = h.source.wait_for_new(POLL)
    assert fake.wait_until(lambda: fake.open_streams == 1)
    h.reactor.run()
    item = fake.store.add(message(1))
    wake_until(h, again, "new mail on the renewed subscription")
    assert [i.source_key for i in h.settle(h.source.list_new(None))] == [item]
    h.settle(h.source.disconnect())


def test_a_subscription_lost_twice_in_a_row_falls_back_to_polling(
    fake: EWSFake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake.minute = 60.0
    h = harness(fake, tmp_path)
    live(h)
    waiting = h.source.wait_for_new(POLL)
    assert fake.wait_until(lambda: fake.open_streams == 1)
    fake.refuse_streaming = "ErrorInvalidSubscriptionRequest"  # the renewal is refused
    with caplog.at_level(logging.WARNING, logger="postroom_ews"):
        fake.expire_subscriptions()
        wake_until(h, waiting, "the loss")
    assert not h.source.supports_push
    assert "streaming notifications lost" in caplog.text
    polled = h.source.wait_for_new(60)
    h.clock.advance(60)
    assert polled.called
    h.settle(h.source.disconnect())


def test_credentials_refused_under_a_stream_start_it_again_with_fresh_ones(
    fake: EWSFake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An access token that expires under an open stream: the next
    GetStreamingEvents gets a 401; the next wait subscribes again with the
    auth driver's credentials of then."""
    fake.minute = 60.0
    h = harness(fake, tmp_path)
    live(h)
    waiting = h.source.wait_for_new(POLL)
    assert fake.wait_until(lambda: fake.open_streams == 1)
    fake.password = "rotated"
    with caplog.at_level(logging.INFO, logger="postroom_ews"):
        fake.end_streams()
        wake_until(h, waiting, "the refusal")
    assert "credentials were refused" in caplog.text
    assert "rotated" not in caplog.text
    assert not h.source.supports_push
    assert fake.counts["401"] >= 1
    h.auth.creds = Credentials(fake.user, "rotated", "PLAIN")  # the auth driver's new secret
    again = h.source.wait_for_new(POLL)
    wake_until(h, again, "the new subscription")
    assert h.source.supports_push
    assert fake.counts["Subscribe"] == 2
    h.settle(h.source.disconnect())


def test_the_end_of_a_connection_timeout_opens_the_next_stream(
    fake: EWSFake, tmp_path: Path
) -> None:
    fake.minute = 60.0
    h = harness(fake, tmp_path)
    live(h)
    waiting = h.source.wait_for_new(POLL)
    assert fake.wait_until(lambda: fake.open_streams == 1)
    fake.end_streams()  # ConnectionStatus Closed, as at ConnectionTimeout
    assert fake.wait_until(lambda: fake.counts.get("GetStreamingEvents") == 2)
    assert fake.wait_until(lambda: fake.open_streams == 1)
    h.reactor.run()
    assert not waiting.called  # a Closed stream is no new mail
    fake.store.add(message(1))
    wake_until(h, waiting, "new mail on the next stream")
    assert fake.counts["Subscribe"] == 1
    h.settle(h.source.disconnect())


def test_disconnect_returns_at_once_with_a_stream_open_and_unsubscribes(
    fake: EWSFake, tmp_path: Path
) -> None:
    fake.minute = 60.0  # the stream would stay open a whole minute
    h = harness(fake, tmp_path)
    live(h)
    stream = h.source._push
    assert stream is not None
    waiting = h.source.wait_for_new(POLL)
    assert fake.wait_until(lambda: fake.open_streams == 1)
    cancelled: list[Any] = []
    waiting.addErrback(lambda f: cancelled.append(f.trap(defer.CancelledError)))
    waiting.cancel()  # what the kernel does when it stops
    assert cancelled == [defer.CancelledError]
    done = h.source.disconnect()
    assert done.called  # no wait for the stream's thread
    h.settle(done)
    assert len(fake.unsubscribed) == 1
    assert fake.subscriptions == {}
    # the socket was shut down: the thread ends long before the stream would have
    stream.thread.join(BOUND)
    assert not stream.thread.is_alive()
    assert not h.source.supports_push


def test_push_off_never_subscribes(fake: EWSFake, tmp_path: Path) -> None:
    h = harness(fake, tmp_path, ews_push="off")
    h.settle(h.source.connect())
    waiting = h.source.wait_for_new(30)
    h.clock.advance(30)
    assert waiting.called
    assert h.source._push is None
    assert "Subscribe" not in fake.counts
    h.settle(h.source.disconnect())


def test_the_thread_stops_quietly_when_stopped_while_subscribing(
    fake: EWSFake, tmp_path: Path
) -> None:
    """A stop before the subscription exists: the thread unsubscribes it itself."""
    h = harness(fake, tmp_path)
    h.settle(h.source.connect())
    gate = threading.Event()
    reports: list[str] = []

    def make_client() -> Any:
        gate.wait(BOUND)
        from postroom_ews.client import EWSClient

        creds = h.source._credentials
        assert creds is not None
        client = EWSClient(h.source.ews, creds.username, creds.secret, creds.bearer)
        client.open_folder("inbox")
        return client

    stream = push.Push("support", make_client, h.reactor, lambda k, d: reports.append(k))
    stream.start()
    assert stream.stop() is None
    gate.set()
    stream.thread.join(BOUND)
    assert not stream.thread.is_alive()
    h.reactor.run()
    assert reports == []
    # subscribed after the stop, so unsubscribed by the thread; never streamed
    assert fake.counts["Subscribe"] == len(fake.unsubscribed) == 1
    assert "GetStreamingEvents" not in fake.counts
    h.settle(h.source.disconnect())


def test_a_server_that_closes_every_stream_at_once_is_polled(
    fake: EWSFake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No endless GetStreamingEvents loop against a server that ends each stream at once."""
    fake.minute = 60.0
    h = harness(fake, tmp_path)
    live(h)
    waiting = h.source.wait_for_new(POLL)
    assert fake.wait_until(lambda: fake.open_streams == 1)
    fake.minute = 0.0  # from now on, each stream ends as it opens
    with caplog.at_level(logging.WARNING, logger="postroom_ews"):
        fake.end_streams()
        wake_until(h, waiting, "giving up")
    assert "closed at once" in caplog.text
    assert not h.source.supports_push
    # the first stream counts when it too ended within a second of opening
    assert push.QUICK_ROUNDS <= fake.counts["GetStreamingEvents"] <= push.QUICK_ROUNDS + 1
    h.settle(h.source.disconnect())
