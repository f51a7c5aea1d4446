"""A webhook receiver over HTTPS on 127.0.0.1, and the private reactor both ends run on.

The receiver is Twisted web with a certificate of the test CA
(:mod:`tests.pki`). It verifies each request with the ``standardwebhooks``
library (Standard Webhooks' own Python implementation, as a receiver would),
records what came, and answers as the test scripted: a status and body, an
endless body, or nothing at all.

:class:`Net` is a ``SelectReactor`` of its own (never the global one), which
the kernel under test gets as its reactor (``TestKernel(reactor=...)``):
the plugin's HTTPS client and the receiver talk over real sockets and TLS,
while time (deadlines, back-off, signatures' timestamps) stays the test's
``task.Clock``. :meth:`Net.until` turns the reactor until something has
happened, up to a bound: nothing is slept for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from twisted.internet import selectreactor, ssl
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web import resource, server
from twisted.web.server import NOT_DONE_YET

from tests.pki import TestCA

#: the most a test waits for the network, in wall time (a bound, never a pause)
PATIENCE = 20.0


class Net:
    """A private reactor turned by the test."""

    def __init__(self) -> None:
        self.reactor = selectreactor.SelectReactor()
        # name resolution (even of 127.0.0.1) runs in the reactor's threads,
        # which start only with a running reactor: start them here
        self.reactor.getThreadPool().start()

    def until(self, done: Callable[[], bool], what: str, patience: float = PATIENCE) -> None:
        deadline = time.monotonic() + patience
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {patience:g} s: {what}")
            self.reactor.iterate(0.01)

    def settle(self, rounds: int = 20) -> None:
        """Let pending network events (a closed connection) be handled."""
        for _ in range(rounds):
            self.reactor.iterate(0.005)

    def close(self) -> None:
        self.settle()
        self.reactor.disconnectAll()
        self.settle(5)
        self.reactor.getThreadPool().stop()


@dataclass
class Answer:
    """What the receiver answers one request with."""

    status: int = 204
    body: bytes = b""
    #: answer nothing, ever (the request hangs until the client gives up)
    hang: bool = False
    #: after the headers, this many bytes of body, written as the client reads
    stream: int = 0
    #: the body is the request's headers, as a careless receiver might answer
    echo: bool = False


@dataclass
class Received:
    """One request as the receiver saw it."""

    body: bytes
    headers: dict[str, str]
    #: what ``standardwebhooks`` said: None when verified, else its error
    refusal: str | None
    payload: Any = None
    #: the address the request came from (a proxy connects from its own)
    peer: str = ""

    @property
    def verified(self) -> bool:
        return self.refusal is None


class _Stream:
    """A very long body, one piece a reactor turn while the client keeps up
    (a push producer: the transport pauses it when its buffer is full)."""

    CHUNK = b"x" * 65536

    def __init__(self, request: server.Request, size: int, reactor: Any) -> None:
        self.request = request
        self.reactor = reactor
        self.left = size
        self.written = 0
        self.paused = False
        self.done = False
        request.notifyFinish().addBoth(self._finished)

    def _finished(self, _: object) -> None:
        self.done = True

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.reactor.callLater(0, self._write)

    def _write(self) -> None:
        if self.done or self.paused:
            return
        if self.left <= 0:
            self.done = True
            self.request.unregisterProducer()
            self.request.finish()
            return
        piece = self.CHUNK[: self.left]
        self.left -= len(piece)
        self.written += len(piece)
        self.request.write(piece)
        self.reactor.callLater(0, self._write)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self.reactor.callLater(0, self._write)

    def stopProducing(self) -> None:
        self.done = True


class Receiver(resource.Resource):
    """The resource at every path: verify, record, answer."""

    isLeaf = True

    def __init__(self, secret: str, reactor: Any) -> None:
        super().__init__()
        self.webhook = Webhook(secret)
        self.reactor = reactor
        #: scripted answers, one per request; then 204
        self.answers: list[Answer] = []
        self.received: list[Received] = []
        self.hanging: list[server.Request] = []
        self.streams: list[_Stream] = []

    def render_POST(self, request: server.Request) -> Any:
        assert request.content is not None
        body = request.content.read()
        headers = {
            name.decode("latin-1").lower(): values[-1].decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        try:
            payload, refusal = self.webhook.verify(body, headers), None
        except WebhookVerificationError as exc:
            payload, refusal = None, str(exc)
        peer = getattr(request.getClientAddress(), "host", "")
        self.received.append(Received(body, headers, refusal, payload, peer))
        answer = self.answers.pop(0) if self.answers else Answer()
        if answer.hang:
            self.hanging.append(request)
            return NOT_DONE_YET
        request.setResponseCode(answer.status)
        if answer.stream:
            stream = _Stream(request, answer.stream, self.reactor)
            self.streams.append(stream)
            stream.start()
            return NOT_DONE_YET
        if answer.echo:
            return "\n".join(f"{k}: {v}" for k, v in headers.items()).encode("latin-1")
        return answer.body


class Listening:
    """A :class:`Receiver` listening with TLS on 127.0.0.1 of *net*."""

    def __init__(self, net: Net, tls: TestCA, secret: str) -> None:
        self.receiver = Receiver(secret, net.reactor)
        site = server.Site(self.receiver, reactor=net.reactor)
        site.log = lambda request: None  # type: ignore[method-assign]
        options = ssl.DefaultOpenSSLContextFactory(str(tls.key_file), str(tls.cert_file))
        # TLS on this reactor's timers (listenSSL would use the global reactor's)
        tls_site = TLSMemoryBIOFactory(options, False, site, clock=net.reactor)
        self.port = net.reactor.listenTCP(0, tls_site, interface="127.0.0.1")
        self.url = f"https://127.0.0.1:{self.port.getHost().port}/hooks/postroom"

    def close(self) -> None:
        self.port.stopListening()
