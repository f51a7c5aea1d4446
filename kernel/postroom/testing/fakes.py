"""A fake sender and a fake source: drivers that record instead of talking to servers.

Both implement their zope interface exactly (``verifyClass`` passes, as the
kernel requires of a real driver) and are strict: they refuse what a real
driver would refuse, so a test that passes with them does not hide a call a
server would have rejected.
"""

from __future__ import annotations

import email
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import attrs
from twisted.internet import defer, task
from zope.interface import implementer

from postroom.drivers import SendResult, SourceItem
from postroom.errors import SendError, SourceError
from postroom.interfaces import ISender, ISource
from postroom.model import Envelope, FetchedMessage, RawRef
from postroom.parsing.headers import normalize_message_id

#: what may not appear in an envelope address: it would end the SMTP command
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: an ESMTP parameter (RFC 5321 4.1.2): KEYWORD or KEYWORD=VALUE, no blanks
_ESMTP_PARAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*(=[\x21-\x3c\x3e-\x7e]+)?")
_ADDR_SPEC = re.compile(r"[^\s<>()@,;:\"]+@[^\s<>()@,;:\"]+")


@attrs.frozen
class SentMessage:
    """One message a :class:`FakeSender` took: exactly what went on the wire."""

    #: the message as handed to the sender
    data: bytes
    #: a copy of the envelope (MAIL FROM, RCPT TO, parameters)
    envelope: Envelope
    message_id: str

    @property
    def message(self) -> EmailMessage:
        """The bytes parsed by the standard library: ``sent.message["Subject"]``."""
        return cast(EmailMessage, email.message_from_bytes(self.data, policy=policy.default))

    @property
    def text(self) -> str | None:
        """The plain-text body, if there is one, decoded, with ``\n`` line ends."""
        body = self.message.get_body(("plain",))
        if body is None:
            return None
        return str(cast(EmailMessage, body).get_content()).replace("\r\n", "\n")


@implementer(ISender)
class FakeSender:
    """An ``ISender`` that keeps what it is given in :attr:`sent`.

    Built like any sender (``FakeSender(options, context)``, both optional).
    It refuses, with a permanent :class:`~postroom.errors.SendError` as an SMTP
    sender does, an envelope without recipients, an empty or control-character
    address, an address that is not a plain ``local@domain``, a malformed ESMTP
    parameter, and a message whose Message-ID header is not *message_id*; a
    message that is not bytes is a ``TypeError``, a send after :meth:`close` a
    ``RuntimeError``. *refuse* maps recipients to the server's reply for them:
    they land in :attr:`SendResult.refused`, and a message refused for every
    recipient fails (permanently for a 5xx reply). :meth:`fail_next` makes the
    next send fail with a given error (a temporary failure, say).
    """

    #: logs in to nothing: the kernel gives it no auth driver
    needs_auth = False

    def __init__(
        self,
        options: Any = None,
        context: Any = None,
        *,
        refuse: Mapping[str, str] | None = None,
    ) -> None:
        self.options = options
        self.context = context
        self.refuse = dict(refuse or {})
        #: every message accepted, in order
        self.sent: list[SentMessage] = []
        self.closed = False
        self._failures: list[BaseException] = []

    def fail_next(self, error: BaseException) -> None:
        """The next :meth:`send` fails with *error* (queued: call again for more)."""
        self._failures.append(error)

    def send(
        self, message: bytes, envelope: Envelope, message_id: str
    ) -> defer.Deferred[SendResult]:
        try:
            result = self._send(message, envelope, message_id)
        except BaseException as exc:
            return defer.fail(exc)
        return defer.succeed(result)

    def _send(self, message: bytes, envelope: Envelope, message_id: str) -> SendResult:
        if self.closed:
            raise RuntimeError("send() after close()")
        if not isinstance(message, bytes):
            raise TypeError(f"the message must be bytes, not {type(message).__name__}")
        problem = envelope_problem(envelope) or _message_id_problem(message, message_id)
        if problem is not None:
            raise SendError(problem, permanent=True)
        if self._failures:
            raise self._failures.pop(0)
        refused = {r: self.refuse[r] for r in envelope.rcpt_to if r in self.refuse}
        if len(refused) == len(envelope.rcpt_to):
            replies = "; ".join(f"{r}: {why}" for r, why in refused.items())
            permanent = all(why.lstrip().startswith("5") for why in refused.values())
            raise SendError(f"every recipient was refused: {replies}", permanent=permanent)
        self.sent.append(SentMessage(data=message, envelope=_copy(envelope), message_id=message_id))
        accepted = [r for r in envelope.rcpt_to if r not in refused]
        return SendResult(message_id=message_id, accepted=accepted, refused=refused)

    def close(self) -> defer.Deferred[None]:
        self.closed = True
        return defer.succeed(None)


def envelope_problem(envelope: Envelope) -> str | None:
    """Why no SMTP server would take *envelope*, or None."""
    if not envelope.rcpt_to:
        return "the envelope has no recipient"
    for what, address in [("sender", envelope.mail_from)] + [
        ("recipient", r) for r in envelope.rcpt_to
    ]:
        if not isinstance(address, str):
            return f"the {what} address {address!r} is not text"
        if _CONTROL.search(address):
            return f"the {what} address {address!r} contains a control character"
        if what == "sender" and address == "":
            continue  # the null reverse-path
        if not _ADDR_SPEC.fullmatch(address):
            return f"the {what} address {address!r} is not a plain local@domain"
    for option in [*envelope.mail_options, *envelope.rcpt_options]:
        if not isinstance(option, str) or not _ESMTP_PARAM.fullmatch(option):
            return f"{option!r} is not an ESMTP parameter (KEYWORD or KEYWORD=VALUE)"
    return None


def _message_id_problem(message: bytes, message_id: str) -> str | None:
    parsed = email.message_from_bytes(message, policy=policy.compat32)
    written = parsed.get_all("Message-ID") or []
    if len(written) != 1:
        return f"the message has {len(written)} Message-ID headers, not one"
    if normalize_message_id(str(written[0])) != normalize_message_id(message_id):
        return f"the message's Message-ID {written[0]!r} is not {message_id!r}"
    return None


def _copy(envelope: Envelope) -> Envelope:
    return Envelope(
        mail_from=envelope.mail_from,
        rcpt_to=list(envelope.rcpt_to),
        mail_options=list(envelope.mail_options),
        rcpt_options=list(envelope.rcpt_options),
        extra_headers=dict(envelope.extra_headers),
        message_id=envelope.message_id,
    )


@implementer(ISource)
class FakeSource:
    """An ``ISource`` serving given ``.eml`` bytes, for :meth:`TestKernel.poll`.

    *messages*: bytes (keyed ``1``, ``2``, ... in order) or a mapping of source
    key to bytes; :meth:`add` adds more. The mailbox holds a message until it
    is acknowledged (deleted, as POP3 does): :attr:`acknowledged`,
    :attr:`released` and :attr:`fetched` record the calls, :attr:`remaining`
    what is left. It is strict: fetching a key it did not list, or
    acknowledging or releasing a message it did not serve (or twice), raises
    :class:`~postroom.errors.SourceError` and is recorded in :attr:`problems`,
    which :meth:`TestKernel.poll` checks is empty.
    """

    #: logs in to nothing: the kernel gives it no auth driver
    needs_auth = False

    supports_push = False

    def __init__(
        self,
        messages: Mapping[str, bytes] | Iterable[bytes] = (),
        *,
        mailbox: str = "test",
        clock: Any = None,
    ) -> None:
        self.mailbox = mailbox
        self.clock = clock if clock is not None else task.Clock()
        self._messages: dict[str, bytes] = {}
        self._listed: set[str] = set()
        self._served: dict[str, str] = {}  # source key -> spool file
        self._spool = tempfile.mkdtemp(prefix="postroom-fakesource-")
        self.connected = False
        self.connects = 0
        self.fetched: list[str] = []
        self.acknowledged: list[str] = []
        self.released: list[str] = []
        self.problems: list[str] = []
        items = (
            messages.items()
            if isinstance(messages, Mapping)
            else ((None, data) for data in messages)
        )
        for key, data in items:
            self.add(data, key)

    def add(self, data: bytes, key: str | None = None) -> str:
        """Put a message in the mailbox; returns its source key."""
        key = key if key is not None else str(len(self._messages) + len(self.acknowledged) + 1)
        if key in self._messages:
            raise ValueError(f"the mailbox already holds a message {key!r}")
        self._messages[key] = bytes(data)
        return key

    @property
    def remaining(self) -> list[str]:
        """Source keys still in the mailbox (not acknowledged)."""
        return list(self._messages)

    def _refuse(self, problem: str) -> defer.Deferred[Any]:
        self.problems.append(problem)
        return defer.fail(SourceError(problem))

    def connect(self) -> defer.Deferred[None]:
        self.connected = True
        self.connects += 1
        return defer.succeed(None)

    def list_new(self, cursor: Any) -> defer.Deferred[list[SourceItem]]:
        if not self.connected:
            return self._refuse("list_new() before connect()")
        self._listed.update(self._messages)
        return defer.succeed(
            [SourceItem(source_key=k, size=len(v)) for k, v in self._messages.items()]
        )

    def fetch(self, item: SourceItem) -> defer.Deferred[FetchedMessage]:
        key = item.source_key
        if key not in self._listed or key not in self._messages:
            return self._refuse(f"fetch of {key!r}, which list_new() did not list")
        path = Path(self._spool) / f"{len(self.fetched)}.eml"
        path.write_bytes(self._messages[key])
        self._served[key] = str(path)
        self.fetched.append(key)
        return defer.succeed(
            FetchedMessage(
                mailbox=self.mailbox,
                source_key=key,
                raw=RawRef.from_path(path),
                server_size=item.size,
            )
        )

    def _forget(self, message: FetchedMessage, what: str) -> defer.Deferred[Any] | None:
        key = message.source_key
        if self._served.get(key) != message.raw.path:
            return self._refuse(f"{what} of {key!r}, which is not a message it served")
        os.unlink(self._served.pop(key))
        return None

    def acknowledge(self, message: FetchedMessage) -> defer.Deferred[None]:
        refused = self._forget(message, "acknowledge")
        if refused is not None:
            return refused
        del self._messages[message.source_key]
        self.acknowledged.append(message.source_key)
        return defer.succeed(None)

    def release(self, message: FetchedMessage) -> defer.Deferred[None]:
        refused = self._forget(message, "release")
        if refused is not None:
            return refused
        self.released.append(message.source_key)
        return defer.succeed(None)

    def wait_for_new(self, timeout: float) -> defer.Deferred[None]:
        return task.deferLater(self.clock, timeout, lambda: None)

    def disconnect(self) -> defer.Deferred[None]:
        self.connected = False
        return defer.succeed(None)

    def close(self) -> None:
        """Remove the spool folder (messages served and never released)."""
        for path in self._served.values():
            Path(path).unlink(missing_ok=True)
        self._served.clear()
        if os.path.isdir(self._spool):
            os.rmdir(self._spool)
