"""One connection and one confirming channel to the broker, shared by every hand-off.

The kernel hands many interactions off at once: each publish goes out on the
same channel at once and waits for its own confirm (:mod:`postroom_amqp.confirms`),
at most ``confirm-timeout``. The connection is opened on the first publish
(commands that open a kernel for a moment never touch the broker) and, when it
is lost, again on the next one: every publish waiting then fails with
:class:`~postroom.api.HandoffError` and the kernel retries it with its
back-off, so a broker outage costs retries, never a message. Concurrent
publishes share one connection attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pika
from pika.adapters.twisted_connection import TwistedChannel, TwistedProtocolConnection
from pika.exceptions import AMQPConnectionError
from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.python.failure import Failure

from postroom.api import HandoffError, twisted_client_tls
from postroom_amqp.confirms import Returns, describe
from postroom_amqp.options import Settings

log = logging.getLogger(__name__)

#: how long closing the connection at shutdown may take
CLOSE_TIMEOUT = 5.0


class _Connection(TwistedProtocolConnection):
    """pika's protocol, remembering why a connection attempt failed: pika fails
    ``ready`` with ``AMQPConnectionError(attempts)`` and drops the cause (a
    refused login, a certificate that does not verify)."""

    cause: BaseException | None = None

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.cause is None and not isinstance(reason.value, error.ConnectionDone):
            self.cause = reason.value
        super().connectionLost(reason)

    def _on_connection_failed(self, connection: Any, cause: Any = None) -> None:
        # pika's callback for a failed handshake (a private name, kept since pika 1.0)
        if isinstance(cause, BaseException):
            self.cause = cause  # pika's words for it beat the socket's
        super()._on_connection_failed(connection, cause)


class Publisher:
    """Publishes to the broker of *settings*; one per kernel."""

    def __init__(
        self,
        settings: Settings,
        reactor: Any,
        clock: Any,
        connect: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        """*connect*: makes a connection that finished its handshake (default:
        TCP or TLS to the settings' broker; tests give one over a fake wire)."""
        self.settings = settings
        self._connect_to = connect or self._connect
        self.reactor = reactor
        self.clock = clock
        self._connection: _Connection | None = None
        self._channel: TwistedChannel | None = None
        self._returns = Returns()
        self._opening: defer.Deferred[None] | None = None
        self._waiters: list[defer.Deferred[None]] = []
        self._closed = False
        #: messages the broker confirmed, and connections opened (for logs and tests)
        self.confirmed = 0
        self.connections = 0

    # -- publishing

    async def publish(self, message_id: str, body: bytes, properties: pika.BasicProperties) -> None:
        """Return once the broker confirmed the message; HandoffError otherwise."""
        channel, returns = await self._ready()
        settings = self.settings
        d = channel.basic_publish(
            settings.exchange, settings.routing_key, body, properties, mandatory=True
        )
        d.addTimeout(settings.confirm_timeout, self.clock)
        refused: BaseException | None = None
        try:
            await d
        except defer.TimeoutError:
            self._give_up(channel)
            raise HandoffError(
                f"no confirm from {settings.address} within {settings.confirm_timeout:g}s"
            ) from None
        except Exception as exc:
            refused = exc
        returns.settle(message_id, refused, settings.destination)
        self.confirmed += 1

    async def check(self) -> None:
        """Open the connection and channel (declaring what the options say) as the
        first hand-off would; HandoffError with the reason when that fails."""
        await self._ready()

    async def _ready(self) -> tuple[TwistedChannel, Returns]:
        channel = self._channel
        if channel is not None and channel.is_open:
            return channel, self._returns
        if self._closed:
            raise HandoffError("the amqp plugin is shutting down")
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(waiter)
        if self._opening is None:
            self._opening = defer.ensureDeferred(self._open())
            self._opening.addBoth(self._opened)
        await waiter
        channel = self._channel
        if channel is None:  # lost again before this publish got its turn
            raise HandoffError(f"the connection to {self.settings.address} was lost")
        return channel, self._returns

    def _opened(self, result: Any) -> None:
        self._opening = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)

    # -- the connection

    def _parameters(self) -> pika.ConnectionParameters:
        settings = self.settings
        return pika.ConnectionParameters(
            virtual_host=settings.vhost,
            credentials=pika.PlainCredentials(
                settings.username, settings.password.reveal(), erase_on_connect=True
            ),
            heartbeat=settings.heartbeat,
            client_properties={"connection_name": "postroom hand-off"},
        )

    async def _connect(self) -> _Connection:
        """A TCP (or TLS) connection that finished the AMQP handshake."""
        settings = self.settings
        endpoint: Any = HostnameEndpoint(
            self.reactor, settings.host, settings.port, timeout=settings.connect_timeout
        )
        if settings.tls:
            endpoint = wrapClientTLS(twisted_client_tls(settings.host, settings.ca_file), endpoint)
        connection = _Connection(self._parameters(), custom_reactor=self.reactor)
        handshake = False
        try:
            await self._timed(connectProtocol(endpoint, connection))
            ready = connection.ready
            assert ready is not None
            handshake = True
            await self._timed(ready)
        except Exception as exc:
            _abort(connection)
            cause = connection.cause if isinstance(exc, AMQPConnectionError) else None
            reason = _why(cause or exc)
            if handshake and isinstance(cause or exc, error.ConnectionClosed | AMQPConnectionError):
                # RabbitMQ closes the connection on a refused login or vhost
                reason = (
                    "the broker closed the connection during the AMQP handshake (wrong "
                    "username or password, unknown vhost, or no permission on it?)"
                )
            raise HandoffError(f"cannot publish to {settings.address}: {reason}") from None
        return connection

    async def _open(self) -> None:
        """Connect, open the channel in confirm mode, declare what the options say."""
        settings = self.settings
        connection = await self._connect_to()
        try:
            channel: TwistedChannel = await self._timed(connection.channel())
            await self._timed(channel.confirm_delivery())
            returns = Returns()
            channel.add_on_return_callback(returns.returned)
            if settings.declare:
                await self._declare(channel)
        except Exception as exc:
            _abort(connection)
            raise HandoffError(f"cannot publish to {settings.address}: {_why(exc)}") from None
        self._connection, self._channel, self._returns = connection, channel, returns
        self.connections += 1
        closed = connection.closed
        assert closed is not None
        closed.addBoth(self._connection_lost, connection)
        channel.on_closed.addBoth(self._channel_closed, channel)
        log.info("amqp: connected to %s, publishing to %s", settings.address, settings.destination)

    def _timed(self, d: Any) -> Any:
        d.addTimeout(self.settings.connect_timeout, self.clock)
        return d

    async def _declare(self, channel: TwistedChannel) -> None:
        settings = self.settings
        if settings.exchange:
            await self._timed(channel.exchange_declare(exchange=settings.exchange, passive=True))
        if settings.queue:
            await self._timed(channel.queue_declare(queue=settings.queue, durable=True))
            if settings.exchange:
                await self._timed(
                    channel.queue_bind(
                        queue=settings.queue,
                        exchange=settings.exchange,
                        routing_key=settings.routing_key,
                    )
                )

    def _connection_lost(self, reason: Any, connection: _Connection) -> None:
        if connection is not self._connection:
            return
        self._connection = self._channel = None
        if not self._closed:
            log.warning(
                "amqp: connection to %s lost (%s); the next hand-off reconnects",
                self.settings.address,
                _why(reason),
            )

    def _channel_closed(self, reason: Any, channel: TwistedChannel) -> None:
        """The broker closed the channel (e.g. 404, no such exchange): start
        afresh on a new connection at the next hand-off."""
        if channel is not self._channel:
            return
        self._channel = None
        connection, self._connection = self._connection, None
        if not self._closed:
            log.warning("amqp: channel to %s closed (%s)", self.settings.address, _why(reason))
        if connection is not None and connection.is_open:
            connection.close()

    def _give_up(self, channel: TwistedChannel) -> None:
        """A confirm did not come in time: treat the connection as lost. A broker
        that blocks publishers (a resource alarm) reads nothing more, and every
        retry would add its message to the connection's send buffer; a new
        connection starts empty."""
        if channel is not self._channel:
            return
        connection = self._connection
        self._channel = self._connection = None
        log.warning(
            "amqp: no confirm from %s within %gs; reconnecting at the next hand-off",
            self.settings.address,
            self.settings.confirm_timeout,
        )
        if connection is not None and connection.is_open:
            connection.close()

    async def close(self) -> None:
        """Close the connection (shutdown); publishes still waiting fail."""
        self._closed = True
        connection, self._connection, self._channel = self._connection, None, None
        if connection is None or not connection.is_open:
            return
        closed = connection.close()
        if closed is None:
            return
        closed.addTimeout(CLOSE_TIMEOUT, self.clock)
        try:
            await closed
        except Exception as exc:
            log.warning("amqp: closing the connection to %s: %s", self.settings.address, _why(exc))


def _abort(connection: Any) -> None:
    transport = connection.transport
    if transport is not None:
        transport.abortConnection()


def _why(reason: Any) -> str:
    if isinstance(reason, Failure):
        reason = reason.value
    if isinstance(reason, defer.TimeoutError | defer.CancelledError):
        return "no answer in time (connect-timeout)"
    if isinstance(reason, BaseException):
        return describe(reason)
    return str(reason)
