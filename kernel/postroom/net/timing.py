"""Time limits of line-protocol connections, on the injected clock.

Two kinds, shared by the IMAP and POP3 clients (and any Twisted line protocol):

* :class:`Deadline`: one limit over a phase of several steps, the
  ``connect-timeout`` over TCP, TLS handshake, greeting and STARTTLS;
* :class:`ResponseTimer`: the ``protocol-timeout`` for each answer, running
  only while a command waits for the server (a client resting between
  commands, or idling in IMAP IDLE, is not the server's fault).

Both take the clock the kernel gives drivers (``DriverContext.clock``), so
tests drive them with ``twisted.internet.task.Clock`` and never sleep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Deadline:
    """Calls *on_expire* once if not cancelled within *seconds*.

    Use it around the steps it limits; afterwards :attr:`expired` tells a
    failure caused by the deadline (the step was cancelled or aborted) from
    one the server caused, so the message can name the right option::

        with Deadline(clock, settings.connect_timeout, abort) as deadline:
            try:
                await connecting
            except Exception:
                if deadline.expired: ...
    """

    def __init__(self, clock: Any, seconds: float, on_expire: Callable[[], object]) -> None:
        self.seconds = seconds
        self.expired = False
        self._on_expire = on_expire
        self._call = clock.callLater(seconds, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self._on_expire()

    def cancel(self) -> None:
        """The phase is over (either way): the deadline no longer applies."""
        if self._call.active():
            self._call.cancel()

    def __enter__(self) -> Deadline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()


class ResponseTimer:
    """The time the server has for each answer.

    Call :meth:`touch` whenever something is sent or received, with whether a
    command now waits for the server: the timer restarts then, and stops
    while nothing is outstanding. *on_timeout* runs when the server stayed
    silent for *seconds* with a command waiting. ``seconds <= 0``: no limit.
    """

    def __init__(self, clock: Any, seconds: float, on_timeout: Callable[[], object]) -> None:
        self.clock = clock
        self.seconds = seconds
        self._on_timeout = on_timeout
        self._call: Any = None

    @property
    def running(self) -> bool:
        return self._call is not None and self._call.active()

    def touch(self, waiting: bool) -> None:
        """Restart the timer when a command waits (*waiting*), else stop it."""
        if self.seconds <= 0 or not waiting:
            self.stop()
        elif self.running:
            self._call.reset(self.seconds)
        else:
            self._call = self.clock.callLater(self.seconds, self._fire)

    def stop(self) -> None:
        if self.running:
            self._call.cancel()
        self._call = None

    def _fire(self) -> None:
        self._call = None
        self._on_timeout()
