"""The chat transcript XML as the contact-centre stack stores it, read safely.

``chatTranscript`` (``startAt`` UTC, ``sessionId``), then its events in order,
each with ``userId``, ``timeShift`` (seconds since ``startAt``), ``visibility``
(``INT``: internal, never shown to the customer) and ``eventId``: ``newParty``
(``userInfo`` with ``userNick``, ``userType``, ``timeZoneOffset`` in minutes
east of UTC; optional ``userData`` items), ``message`` (``msgText``),
``notice`` (``noticeText``, optional ``userData``: a transferred file is a
notice whose items ``file-name`` and ``file-size`` name it) and ``partyLeft``.
Other event elements are skipped. Anyone who can write into a chat can write
into this XML, so it is parsed with defusedxml (no DTD, no entities).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from xml.etree.ElementTree import Element, ParseError, tostring

import attrs
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

ROOT = "chatTranscript"
EVENTS = frozenset({"newParty", "message", "notice", "partyLeft"})
INTERNAL = "INT"
FILE_NAME = "file-name"
FILE_SIZE = "file-size"
SUBJECT = "Subject"


class TranscriptError(ValueError):
    """The XML cannot be read as a transcript (30002 CHAT_UNMARSHALL_ERROR)."""


@attrs.frozen
class Party:
    user_id: str
    nick: str
    type: str  # CLIENT, AGENT, EXTERNAL
    offset_minutes: int | None
    user_data: dict[str, str]


@attrs.frozen
class TransferredFile:
    name: str
    size: int | None


@attrs.frozen
class Event:
    kind: str
    user_id: str
    time_shift: int
    internal: bool
    text: str  # msgText, noticeText or the partyLeft reason
    file: TransferredFile | None = None


@attrs.frozen
class Transcript:
    start_at: datetime  # aware, UTC
    session_id: str
    parties: dict[str, Party]
    events: list[Event]

    @property
    def customer(self) -> Party | None:
        return next((p for p in self.parties.values() if p.type == "CLIENT"), None)

    @property
    def offset_minutes(self) -> int:
        """The customer's offset from UTC (0 when no CLIENT party gives one)."""
        customer = self.customer
        return customer.offset_minutes or 0 if customer is not None else 0

    def local(self, time_shift: int) -> datetime:
        """The moment *time_shift* seconds after the start, in the customer's zone."""
        zone = _zone(self.offset_minutes)
        return (self.start_at + timedelta(seconds=time_shift)).astimezone(zone)

    @property
    def duration(self) -> int:
        """Seconds from the start to the last event."""
        return max((e.time_shift for e in self.events), default=0)

    @property
    def subject(self) -> str | None:
        """The ``Subject`` item of the customer's user data, else of any party's."""
        ordered = sorted(self.parties.values(), key=lambda p: p.type != "CLIENT")
        return next((p.user_data[SUBJECT] for p in ordered if p.user_data.get(SUBJECT)), None)

    @property
    def files(self) -> list[TransferredFile]:
        """Files transferred in the chat and shown to the customer, in order."""
        return [e.file for e in self.events if e.file is not None and not e.internal]

    @property
    def visible(self) -> list[Event]:
        return [e for e in self.events if not e.internal]


def _zone(minutes: int) -> timezone:
    return timezone(timedelta(minutes=minutes))


def _inner(element: Element | None) -> str:
    """An element's content as written: markup inside a message (``<b>``) is the
    customer's or agent's text, shown as typed, never dropped or interpreted."""
    if element is None:
        return ""
    children = "".join(tostring(child, encoding="unicode") for child in element)
    return (element.text or "") + children


def _required(element: Element, name: str) -> str:
    value = element.get(name)
    if value is None:
        raise TranscriptError(f"<{element.tag}> has no {name} attribute")
    return value


def _int(element: Element, name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise TranscriptError(f"<{element.tag}> {name} is not an integer") from None


def _user_data(element: Element) -> dict[str, str]:
    found = element.find("userData")
    if found is None:
        return {}
    return {
        item.get("key", ""): (item.text or "") for item in found.findall("item") if item.get("key")
    }


def _start(root: Element) -> datetime:
    text = _required(root, "startAt")
    try:
        start = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TranscriptError("<chatTranscript> startAt is not an ISO 8601 time") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return start.astimezone(UTC)


def _file(data: dict[str, str]) -> TransferredFile | None:
    name = data.get(FILE_NAME)
    if not name:
        return None
    size = data.get(FILE_SIZE, "")
    return TransferredFile(name, int(size) if size.isdigit() else None)


def parse(xml: str | bytes) -> Transcript:
    """The transcript in *xml*, or :class:`TranscriptError` saying why not (never
    quoting the content: it is the customer's)."""
    try:
        root = fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise TranscriptError(f"forbidden XML construct ({type(exc).__name__})") from None
    except ParseError as exc:
        raise TranscriptError(f"not well-formed XML (line {exc.position[0]})") from None
    if root.tag != ROOT:
        raise TranscriptError(f"the root element is not <{ROOT}>")
    start = _start(root)
    parties: dict[str, Party] = {}
    events: list[Event] = []
    for element in root:
        if element.tag not in EVENTS:
            continue
        user_id = _required(element, "userId")
        shift = _int(element, "timeShift", _required(element, "timeShift"))
        internal = element.get("visibility", "ALL") == INTERNAL
        text = ""
        file = None
        if element.tag == "newParty":
            info = element.find("userInfo")
            if info is None:
                raise TranscriptError("<newParty> has no <userInfo>")
            offset = info.get("timeZoneOffset")
            parties[user_id] = Party(
                user_id=user_id,
                nick=info.get("userNick") or "",
                type=_required(info, "userType"),
                offset_minutes=_int(info, "timeZoneOffset", offset) if offset else None,
                user_data=_user_data(element),
            )
        elif element.tag == "message":
            text = _inner(element.find("msgText"))
        elif element.tag == "notice":
            text = _inner(element.find("noticeText"))
            file = _file(_user_data(element))
        else:
            text = element.findtext("reason") or ""
        events.append(Event(element.tag, user_id, shift, internal, text, file))
    return Transcript(start, root.get("sessionId", ""), parties, events)
