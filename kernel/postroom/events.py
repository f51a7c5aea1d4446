"""The event stream for dashboards: ``GET /events``, server-sent events.

Events (:class:`~postroom.model.EventType`) tell that an interaction was
created, handed off to a target (or failed, or refused), sent or failed to
send; never its content. They are recorded in the store (``events``, in the
transaction of the change where the store makes it, else by :meth:`EventHub.emit`
right after), so a client that reconnects with ``Last-Event-ID`` (or
``?after=ID``) gets what it missed, as long as the store keeps it
(``events: keep-count``, ``keep-days``).

:class:`EventHub` tails the table for its subscribers: a :meth:`~EventHub.poke`
after a change (and a poll on every heartbeat, for changes other processes
made) reads the events after the lowest subscriber's cursor, a page at a time,
and gives each subscriber those after its own. A subscriber whose client reads
too slowly is paused by its connection (the web layer's producer): while it
catches up on old events, nothing more is read for it (what it holds is at most
the rest of one page); while it is live, what it is given is held, up to
``events: client-buffer`` bytes, past which it is dropped (it resumes with
``Last-Event-ID``). Twisted's web stays out of here
(:mod:`postroom.web` serves the stream).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred

from postroom.model import Event, EventType
from postroom.routes import HTTPError, RouteRequest, Stream

if TYPE_CHECKING:
    from postroom.kernel import Kernel

log = logging.getLogger(__name__)

#: events read from the store at a time
PAGE = 500
#: seconds between two prunings of the event table
PRUNE_INTERVAL = 3600.0
#: what a heartbeat writes (an SSE comment: clients ignore it)
HEARTBEAT = b": keep-alive\n\n"
#: the most event types a ``?types=`` filter names
MAX_TYPES = len(EventType)


def sse(event: Event) -> bytes:
    """One event as server-sent event lines: its seq as ``id:``, itself as JSON ``data:``."""
    data = {
        "id": event.seq,
        "type": event.type,
        "time": event.time.isoformat(),
        "interaction_id": event.interaction_id,
        "target": event.target,
        "reason": event.reason,
    }
    return f"id: {event.seq}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class Sink(Protocol):
    """Where a subscriber's bytes go (the HTTP response)."""

    def write(self, data: bytes) -> None: ...

    def drop(self) -> None:
        """End the response now (the client is too slow)."""


class Subscriber:
    """One client of the stream: its cursor (the last event it was given), its
    filter, and what it was given while its connection was paused."""

    def __init__(self, hub: EventHub, sink: Sink, cursor: int, types: frozenset[str] | None):
        self.hub = hub
        self.sink = sink
        self.cursor = cursor
        self.types = types
        #: paused until its connection is ready (its first resume)
        self.paused = True
        self.closed = False
        self._held: list[bytes] = []
        self._held_bytes = 0

    def give(self, event: Event, catching_up: bool = False) -> None:
        """*event*, unless filtered out; *catching_up*: an old one (read from the
        store for this subscriber, a page at a time: never a reason to drop it)."""
        self.cursor = event.seq
        if self.types is not None and event.type not in self.types:
            return
        self._send(sse(event), catching_up)

    def heartbeat(self) -> None:
        if not self.paused:
            self._send(HEARTBEAT)

    def _send(self, data: bytes, catching_up: bool = False) -> None:
        if self.closed:
            return
        if not self.paused:
            self.sink.write(data)
            return
        self._held.append(data)
        self._held_bytes += len(data)
        if not catching_up and self._held_bytes > self.hub.client_buffer:
            log.warning(
                "event stream client dropped: over %d bytes behind", self.hub.client_buffer
            )
            self.hub.metrics_dropped()
            self.close()
            self.sink.drop()

    # -- flow control, from the connection

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        held, self._held, self._held_bytes = self._held, [], 0
        for data in held:
            if self.closed:
                return
            self.sink.write(data)
        self.hub.poke()  # it may have been left behind while catching up

    def close(self) -> None:
        """The client went away (or was dropped): forget it."""
        if not self.closed:
            self.closed = True
            self._held = []
            self.hub.unsubscribe(self)


class EventHub:
    """Records events and hands them to the stream's subscribers."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.subscribers: list[Subscriber] = []
        #: the highest seq read from the store for subscribers so far
        self.head = 0
        self._fetching = False
        self._again = False

    @property
    def client_buffer(self) -> int:
        return int(self.kernel.config.get("events", "client-buffer"))

    @property
    def max_subscribers(self) -> int:
        return int(self.kernel.config.get("events", "max-subscribers"))

    def metrics_dropped(self) -> None:
        self.kernel.metrics.event_clients_dropped.inc()

    # -- recording

    def emit(
        self,
        kind: EventType,
        interaction_id: str | None,
        target: str | None = None,
        reason: str | None = None,
    ) -> Deferred[None]:
        """Record an event for a change made elsewhere, then tell the subscribers.
        Never fails: an event that cannot be recorded is logged (the change
        itself is kept; the stream misses it)."""

        async def go() -> None:
            try:
                await self.kernel.store.add_events([(kind.value, interaction_id, target, reason)])
            except Exception as exc:
                log.error("event %s of %s not recorded: %s", kind.value, interaction_id, exc)
                return
            self.poke()

        return ensureDeferred(go())

    # -- subscribing

    async def subscribe(
        self, sink: Sink, after: int | None, types: frozenset[str] | None
    ) -> Subscriber:
        """A new subscriber given the events after *after* (None: only new ones);
        HTTPError 503 past ``events: max-subscribers``."""
        if len(self.subscribers) >= self.max_subscribers:
            raise HTTPError(503, "too many event stream clients; try again later")
        newest = int(await self.kernel.store.last_event_seq())
        self.head = max(self.head, newest)  # so a resuming subscriber is seen catching up
        subscriber = Subscriber(self, sink, newest if after is None else after, types)
        self.subscribers.append(subscriber)
        self.kernel.metrics.event_clients.set(len(self.subscribers))
        return subscriber  # given events from its first resume

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)
            self.kernel.metrics.event_clients.set(len(self.subscribers))

    # -- handing out

    def poke(self) -> None:
        """Events were recorded: read them for the subscribers (one read at a time;
        a poke during a read makes it read again)."""
        if not self.subscribers:
            return
        if self._fetching:
            self._again = True
            return
        self._fetching = True
        d = ensureDeferred(self._fetch())
        d.addErrback(lambda f: log.error("reading events failed: %s", f.getErrorMessage()))
        d.addBoth(self._fetched)

    def _fetched(self, _: Any) -> None:
        self._fetching = False
        if self._again:
            self._again = False
            self.poke()

    async def _fetch(self) -> None:
        while True:
            head = self.head
            # paused subscribers still catching up wait: their events stay in the store
            taking = [
                (s, s.cursor < head) for s in self.subscribers if not s.paused or s.cursor >= head
            ]
            if not taking:
                return
            start = min(s.cursor for s, _catching_up in taking)
            page = await self.kernel.store.events_after(start, PAGE)
            for event in page:
                for subscriber, catching_up in taking:
                    if subscriber.cursor < event.seq and not subscriber.closed:
                        subscriber.give(event, catching_up)
            if page:
                self.head = max(self.head, page[-1].seq)
            if len(page) < PAGE:
                return

    def heartbeat(self) -> None:
        """A comment to every subscriber, and a look for events other processes recorded."""
        for subscriber in list(self.subscribers):
            subscriber.heartbeat()
        self.poke()

    async def prune(self) -> None:
        config = self.kernel.config
        keep = int(config.get("events", "keep-count"))
        days = int(config.get("events", "keep-days"))
        deleted = await self.kernel.store.prune_events(keep, days)
        if deleted:
            log.info("%d old events deleted", deleted)


class EventService(service.Service):
    """The hub's timers while the gateway runs: heartbeats and pruning, on the
    kernel's clock."""

    name = "events"

    def __init__(self, kernel: Kernel) -> None:
        self.hub = kernel.events
        self.kernel = kernel
        self._loops: list[task.LoopingCall] = []

    def startService(self) -> None:
        super().startService()
        heartbeat = float(self.kernel.config.get("events", "heartbeat"))
        for call, interval, now in (
            (self.hub.heartbeat, heartbeat, False),
            (self._prune, PRUNE_INTERVAL, True),
        ):
            loop = task.LoopingCall(call)
            loop.clock = self.kernel.clock
            loop.start(interval, now=now)
            self._loops.append(loop)

    def stopService(self) -> None:
        super().stopService()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        for subscriber in list(self.hub.subscribers):
            subscriber.close()
            subscriber.sink.drop()

    def _prune(self) -> Deferred[None]:
        d = ensureDeferred(self.hub.prune())
        d.addErrback(lambda f: log.error("pruning events failed: %s", f.getErrorMessage()))
        return d


# -- the route


def _after(request: RouteRequest) -> int | None:
    """Where the client resumes: ``Last-Event-ID`` (a reconnecting EventSource),
    else ``?after=``; None: from now on."""
    given = request.headers.get("last-event-id")
    if given is None:
        values = request.query.get("after")
        given = values[-1] if values else None
    if given is None or not given.strip():
        return None
    text = given.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise HTTPError(400, "Last-Event-ID / after must be an event id (a whole number)")
    return int(text)


def _types(request: RouteRequest) -> frozenset[str] | None:
    values = request.query.get("types")
    if not values:
        return None
    names = {name.strip() for value in values for name in value.split(",") if name.strip()}
    known = {kind.value for kind in EventType}
    unknown = sorted(names - known)[:MAX_TYPES]
    if unknown:
        raise HTTPError(
            400, f"unknown event type(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return frozenset(names) or None


def events_route(request: RouteRequest) -> Stream:
    """``GET /events``: the stream, resumed after ``Last-Event-ID`` or ``?after=``,
    filtered by ``?types=`` (comma-separated)."""
    after = _after(request)
    types = _types(request)
    hub: EventHub = request.gateway.kernel.events

    async def start(sink: Sink) -> Subscriber:
        return await hub.subscribe(sink, after, types)

    return Stream("text/event-stream", start)
