"""Confirm bookkeeping: each hand-off settled by the broker's answer about its own message.

The broker's side is a fake channel under pika's real ``TwistedChannel``
(the frames a broker sends in an order a real one cannot be made to choose:
a ``multiple`` ack covering a returned message, a nack in the middle, a
confirm that never comes); the clock is a ``task.Clock``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika
import pytest
from pika import spec
from pika.adapters.twisted_connection import TwistedChannel
from pika.exceptions import ChannelClosedByBroker, UnroutableError
from twisted.internet import defer, task

from postroom.api import HandoffError, Secret
from postroom_amqp.confirms import Returns
from postroom_amqp.options import Settings
from postroom_amqp.publisher import Publisher
from tests.conftest import run


class FakeWire:
    """The pika ``Channel`` under a ``TwistedChannel``: what it was asked to
    send, and the broker's frames played back by the test."""

    channel_number = 1

    def __init__(self) -> None:
        self.published: list[tuple[str, str, bytes, Any, bool]] = []
        self.is_open = True
        self.is_closing = False
        self.is_closed = False
        self._confirm: Callable[[Any], None] | None = None
        self._returns: list[Callable[..., None]] = []
        self._on_close: list[Callable[..., None]] = []

    # what TwistedChannel calls
    def add_callback(self, callback: Any, replies: Any, one_shot: bool = True) -> None:
        pass  # Basic.GetEmpty: never sent here

    def add_on_close_callback(self, callback: Callable[..., None]) -> None:
        self._on_close.append(callback)

    def add_on_cancel_callback(self, callback: Any) -> None:
        pass

    def add_on_return_callback(self, callback: Callable[..., None]) -> None:
        self._returns.append(callback)

    def confirm_delivery(self, ack_nack_callback: Any, callback: Any) -> None:
        self._confirm = ack_nack_callback
        callback(pika.frame.Method(1, spec.Confirm.SelectOk()))

    def basic_publish(
        self, exchange: str, routing_key: str, body: bytes, properties: Any, mandatory: bool
    ) -> None:
        assert self.is_open, "published on a closed channel"
        self.published.append((exchange, routing_key, body, properties, mandatory))

    # the broker
    def ack(self, tag: int, multiple: bool = False) -> None:
        assert self._confirm is not None
        self._confirm(pika.frame.Method(1, spec.Basic.Ack(delivery_tag=tag, multiple=multiple)))

    def nack(self, tag: int) -> None:
        assert self._confirm is not None
        self._confirm(pika.frame.Method(1, spec.Basic.Nack(delivery_tag=tag)))

    def give_back(self, tag: int) -> None:
        """basic.return of the *tag*-th published message (NO_ROUTE)."""
        exchange, key, body, properties, _ = self.published[tag - 1]
        method = spec.Basic.Return(312, "NO_ROUTE", exchange, key)
        for callback in self._returns:
            callback(self, method, properties, body)

    def close(self, code: int = 404, text: str = "NOT_FOUND") -> None:
        self.is_open, self.is_closed = False, True
        for callback in self._on_close:
            callback(self, ChannelClosedByBroker(code, text))


class FakeConnection:
    """A connection that finished its handshake, with one fake channel."""

    def __init__(self, wire: FakeWire) -> None:
        self.wire = wire
        self.closed: defer.Deferred[Any] = defer.Deferred()
        self.is_open = True
        self.transport = None

    def channel(self) -> defer.Deferred[TwistedChannel]:
        return defer.succeed(TwistedChannel(self.wire))  # type: ignore[arg-type]

    def close(self) -> defer.Deferred[Any]:
        """As pika does: the channels close first, then the connection."""
        self.is_open = False
        if self.wire.is_open:
            self.wire.close(200, "Normal shutdown")
        closed, self.closed = self.closed, defer.Deferred()
        closed.callback(None)
        return defer.succeed(None)


def settings(**changes: Any) -> Settings:
    values: dict[str, Any] = {
        "host": "mq.example", "port": 5672, "tls": False, "vhost": "/", "username": "u",
        "password": Secret("p"), "exchange": "", "routing_key": "interactions",
        "queue": "interactions", "declare": False, "ca_file": None, "confirm_timeout": 30.0,
        "connect_timeout": 10.0, "heartbeat": 60,
    }  # fmt: skip
    values.update(changes)
    return Settings(**values)


class Harness:
    def __init__(self, **changes: Any) -> None:
        self.clock = task.Clock()
        self.wires: list[FakeWire] = []

        async def connect() -> FakeConnection:
            self.wires.append(FakeWire())
            return FakeConnection(self.wires[-1])

        self.publisher = Publisher(settings(**changes), self.clock, self.clock, connect=connect)

    @property
    def wire(self) -> FakeWire:
        return self.wires[-1]

    def publish(self, message_id: str) -> defer.Deferred[None]:
        properties = pika.BasicProperties(message_id=message_id)
        d = defer.ensureDeferred(self.publisher.publish(message_id, b"{}", properties))
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        d.outcome = outcome  # type: ignore[attr-defined]
        return d


def outcome(d: defer.Deferred[None]) -> str:
    results = d.outcome  # type: ignore[attr-defined]
    if not results:
        return "waiting"
    if results[0] is None:
        return "ok"
    results[0].trap(HandoffError)
    return str(results[0].value)


def test_many_in_flight_each_settled_by_its_own_confirm() -> None:
    harness = Harness()
    a, b, c, d = (harness.publish(name) for name in "abcd")
    assert len(harness.wires) == 1  # one connection for all four
    assert [p[3].message_id for p in harness.wire.published] == ["a", "b", "c", "d"]
    assert all(p[4] for p in harness.wire.published)  # mandatory

    harness.wire.ack(2)  # b alone
    assert [outcome(x) for x in (a, b, c, d)] == ["waiting", "ok", "waiting", "waiting"]
    harness.wire.nack(1)
    harness.wire.ack(4, multiple=True)  # c and d
    assert outcome(a) == "the broker refused the message (basic.nack)"
    assert [outcome(x) for x in (b, c, d)] == ["ok", "ok", "ok"]
    assert harness.publisher.confirmed == 3


def test_a_returned_message_fails_even_when_a_multiple_ack_pins_the_return_elsewhere() -> None:
    harness = Harness()
    a, b, x = (harness.publish(name) for name in "abx")
    harness.wire.give_back(3)  # x is unroutable ...
    harness.wire.ack(3, multiple=True)  # ... and one ack confirms all three

    assert outcome(a) == "ok"  # pika failed a's Deferred with x's return: it was acked
    assert outcome(b) == "ok"
    assert outcome(x).startswith("unroutable: no queue is bound for")


def test_pika_alone_would_blame_the_wrong_message() -> None:
    """Why :class:`Returns` exists: the same frames without it."""
    wire = FakeWire()
    channel = TwistedChannel(wire)  # type: ignore[arg-type]
    run(channel.confirm_delivery())
    d_a = channel.basic_publish("", "q", b"", pika.BasicProperties(message_id="a"), True)
    d_x = channel.basic_publish("", "q", b"", pika.BasicProperties(message_id="x"), True)
    wire.give_back(2)
    wire.ack(2, multiple=True)
    with pytest.raises(UnroutableError):
        run(d_a)
    assert run(d_x).delivery_tag == 2  # x "succeeded": it would have been lost


def test_a_lost_channel_fails_every_publish_waiting_and_the_next_reconnects() -> None:
    harness = Harness()
    a, b = harness.publish("a"), harness.publish("b")
    harness.wire.ack(1)
    harness.wire.close(404, "NOT_FOUND - no exchange 'x'")

    assert outcome(a) == "ok"
    assert "no confirm from the broker" in outcome(b) and "NOT_FOUND" in outcome(b)
    c = harness.publish("c")
    assert len(harness.wires) == 2  # a new connection
    harness.wire.ack(1)
    assert outcome(c) == "ok"


def test_a_confirm_that_does_not_come_in_time_fails_the_hand_off_and_the_connection() -> None:
    harness = Harness(confirm_timeout=5.0)
    a = harness.publish("a")
    harness.clock.advance(3)
    b = harness.publish("b")
    harness.clock.advance(1.9)
    assert outcome(a) == "waiting"
    harness.clock.advance(0.2)
    assert outcome(a) == "no confirm from amqp://mq.example:5672// within 5s"
    # a broker that confirms nothing (e.g. blocking publishers) is given up: the
    # other publishes fail now, and the next one starts on a new connection
    assert outcome(b).startswith("no confirm from the broker:")
    first = harness.wire
    c = harness.publish("c")
    assert len(harness.wires) == 2
    first.ack(2, multiple=True)  # too late: changes nothing, raises nothing
    assert outcome(a).startswith("no confirm")
    harness.wire.ack(1)
    assert outcome(c) == "ok"
    assert harness.publisher.confirmed == 1


def test_returns_settle_rules() -> None:
    returns = Returns()
    returns.settle("a", None, "here")  # acked, never returned

    returns.returned(type("M", (), {"properties": pika.BasicProperties(message_id="r")})())
    assert len(returns) == 1
    with pytest.raises(HandoffError, match="unroutable") as caught:
        returns.settle("r", None, "exchange e, routing key 'k'")
    assert not caught.value.permanent  # the kernel retries it
    assert len(returns) == 0
    with pytest.raises(HandoffError, match="no confirm from the broker: connection closed"):
        from twisted.internet.error import ConnectionLost

        returns.settle("b", ConnectionLost(), "here")


def test_closing_fails_nothing_silently_and_refuses_new_publishes() -> None:
    harness = Harness()
    a = harness.publish("a")
    run(harness.publisher.close())
    assert outcome(a).startswith("no confirm from the broker:")  # retried, not lost
    b = harness.publish("b")
    assert outcome(b) == "the amqp plugin is shutting down"
