"""Streaming notifications ([MS-OXWSNTIF]) for the ``ews`` source, on a
thread of the mailbox's own.

A GetStreamingEvents call is one HTTP request that stays open for
``ConnectionTimeout`` minutes and streams notifications as they happen. Run in
the kernel's shared thread pool, one such call per mailbox would hold a pool
thread each and starve the store and every other mailbox; so each mailbox's
stream runs on a daemon thread of its own (:class:`Push`), with an exchangelib
account and protocol of its own (exchangelib's protocol has one session: a
stream on the source's protocol would block its listings).

The thread only reports to the reactor (``reactor.callFromThread``): the
subscription is live, new mail arrived, it was refused or lost. The source
lists with SyncFolderItems as before; notifications only wake the mailbox.

Stopping never waits for the thread: :meth:`Push.stop` sets a flag and shuts
the stream's socket down, which ends the blocked read at once; should that
fail, the read ends within ``CONNECTION_TIMEOUT`` minutes (the server closes
the stream) plus exchangelib's extra minute of read timeout, and the thread is
a daemon, so it never holds up the gateway's exit.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from exchangelib.errors import ResponseMessageError, SOAPError, UnauthorizedError

from postroom_ews.client import EWSClient, safe_reason

log = logging.getLogger(__name__)

#: ConnectionTimeout of each GetStreamingEvents, in minutes (schema: 1 to 30);
#: one minute bounds how long a stream outlives a stop whose socket shutdown failed
CONNECTION_TIMEOUT = 1
#: streams in a row that the server ends within QUICK seconds, without an
#: event, before push gives up on it (a server that would otherwise be asked
#: again and again without pause)
QUICK_ROUNDS = 5
QUICK = 1.0
#: the events that mean a message may have arrived in the folder
EVENT_TYPES = ("NewMailEvent", "CreatedEvent")

# what the thread reports (``report(kind, detail)`` on the reactor thread)
LIVE = "live"  # subscribed: the mailbox is woken once to list after subscribing
NEW = "new"  # new mail (or events possibly missed): list now
REFUSED = "refused"  # the server does not offer streaming: poll
LOST = "lost"  # the stream failed twice in a row (once after resubscribing): poll
AUTH = "auth"  # the credentials were refused (an expired token): start again with fresh ones
RESUBSCRIBED = "resubscribed"


class StreamEnded(Exception):
    """A stream ended without ConnectionStatus Closed (the connection dropped)."""


def subscribe(client: EWSClient) -> str:
    """Subscribe (StreamingSubscriptionRequest) to new mail in the client's folder."""
    from exchangelib.services import SubscribeToStreaming

    assert client.folder is not None
    [result] = list(
        SubscribeToStreaming(account=client.account).call(
            folders=[client.folder], event_types=list(EVENT_TYPES)
        )
    )
    if isinstance(result, Exception):
        raise result
    return str(result)


def unsubscribe(client: EWSClient, subscription_id: str) -> None:
    """Unsubscribe: the server forgets the subscription now rather than when it expires."""
    from exchangelib.services import Unsubscribe

    for result in Unsubscribe(account=client.account).call(subscription_id=subscription_id):
        if isinstance(result, Exception):
            raise result


def _abort(response: Any) -> None:
    """Shut the socket of a (requests) response down: a blocked read ends now.

    The socket is the urllib3 connection's, or (once http.client let go of it,
    as after ``Connection: close``) the one under the response's file.
    """
    raw = getattr(response, "raw", None)
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is None:
        fp = getattr(getattr(raw, "_fp", None), "fp", None)
        sock = getattr(getattr(fp, "raw", None), "_sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class Push:
    """One mailbox's streaming subscription and the thread that reads it.

    *make_client* (run on the thread) builds an :class:`EWSClient` of the
    stream's own with its folder opened; *report* is called on the reactor
    thread with ``(kind, detail)``.
    """

    def __init__(
        self,
        name: str,
        make_client: Callable[[], EWSClient],
        reactor: Any,
        report: Callable[[str, str], None],
        connection_timeout: int = CONNECTION_TIMEOUT,
    ) -> None:
        self.name = name
        self.make_client = make_client
        self.reactor = reactor
        self._report = report
        self.connection_timeout = connection_timeout
        self.subscription_id: str | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        #: the last HTTP response of the stream's client (its headers arrived)
        self._response: Any = None
        self._streaming = False  # a GetStreamingEvents is under way
        self.thread = threading.Thread(
            target=self._run, name=f"postroom-ews-push-{name}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> str | None:
        """Stop the stream without waiting for its thread; the subscription id
        to unsubscribe (None: no subscription)."""
        self._stopping.set()
        with self._lock:
            response, self._response = self._response, None
            identifier = self.subscription_id
        if response is not None:
            _abort(response)
        return identifier

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # ------------------------------------------------------------ the thread

    def report(self, kind: str, detail: str = "") -> None:
        if not self.stopping:
            self.reactor.callFromThread(self._report, kind, detail)

    def _run(self) -> None:
        client: EWSClient | None = None
        try:
            try:
                client = self.make_client()
                self._hook(client)
            except Exception as exc:
                self.report(_failed(exc), _describe(exc))
                return
            try:
                identifier = subscribe(client)
            except Exception as exc:
                # an answer of the server's (an error code, a SOAP fault): no streaming here
                refused = isinstance(exc, ResponseMessageError | SOAPError)
                self.report(REFUSED if refused else _failed(exc), _describe(exc))
                return
            if not self._subscribed(client, identifier):
                return
            self.report(LIVE)
            self._read(client)
        except Exception:  # never let the thread die silently
            log.exception("mailbox %s: streaming notifications failed", self.name)
            self.report(LOST, "unexpected error")
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()

    def _hook(self, client: EWSClient) -> None:
        """Have each HTTP response of *client* noted as it arrives (a requests
        response hook), so that a stop can shut its socket down, even one
        that comes in just after the stop."""
        protocol: Any = client.protocol
        get_session = protocol.get_session

        def hooked() -> Any:
            session = get_session()
            if self._on_response not in session.hooks["response"]:
                session.hooks["response"].append(self._on_response)
            return session

        protocol.get_session = hooked

    def _on_response(self, response: Any, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            if not self._streaming:
                return  # Subscribe, GetFolder: short calls, let them finish
            self._response = response
        if self.stopping:
            _abort(response)

    def _subscribed(self, client: EWSClient, identifier: str) -> bool:
        """Note the new subscription; False (and unsubscribed) when stopped meanwhile."""
        with self._lock:
            self.subscription_id = identifier
        if self.stopping:
            with contextlib.suppress(Exception):
                unsubscribe(client, identifier)
            return False
        return True

    def _read(self, client: EWSClient) -> None:
        """GetStreamingEvents again and again; a failure resubscribes once, a
        second failure in a row ends push for this connection."""
        retried = False
        quick = 0
        while not self.stopping:
            started = time.monotonic()
            try:
                for events in self._stream(client):
                    retried = False
                    quick = -1  # an event: the stream works
                    if any(e in EVENT_TYPES for e in events):
                        self.report(NEW)
                # Closed at ConnectionTimeout: open the next stream
                retried = False
                quick = quick + 1 if time.monotonic() - started < QUICK else 0
                if quick >= QUICK_ROUNDS:
                    self.report(LOST, f"{quick} streams in a row closed at once")
                    return
            except Exception as exc:
                if self.stopping:
                    return
                if retried or isinstance(exc, UnauthorizedError):
                    self.report(_failed(exc), _describe(exc))
                    return
                retried = True
                try:
                    identifier = subscribe(client)
                except Exception as again:
                    self.report(_failed(again), _describe(again))
                    return
                if not self._subscribed(client, identifier):
                    return
                self.report(RESUBSCRIBED, _describe(exc))

    def _stream(self, client: EWSClient) -> Iterator[list[str]]:
        """One GetStreamingEvents: the event names of each notification, until
        ConnectionStatus Closed."""
        from exchangelib.services import GetStreamingEvents

        with self._lock:
            identifier = self.subscription_id
            self._streaming = True
        service = GetStreamingEvents(account=client.account)
        try:
            for notification in service.call(
                subscription_ids=[identifier], connection_timeout=self.connection_timeout
            ):
                if isinstance(notification, Exception):
                    raise notification
                yield [type(e).__name__ for e in notification.events or []]
                if self.stopping:
                    return
            if self.stopping:
                return
            if service.connection_status != service.CLOSED:
                raise StreamEnded("the stream ended without ConnectionStatus Closed")
        finally:
            with self._lock:
                self._streaming = False
                self._response = None
            with contextlib.suppress(Exception):
                service.stop_streaming()


def _failed(exc: BaseException) -> str:
    return AUTH if isinstance(exc, UnauthorizedError) else LOST


def _describe(exc: BaseException) -> str:
    """A reason for the log: the EWS error's class (its response code) and one
    bounded line of text, never quoted XML nor credentials (:func:`safe_reason`)."""
    return safe_reason(exc)
