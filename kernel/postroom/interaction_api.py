"""Reading interactions, the same for the CLI and the HTTP API.

- :func:`resolve_id`: an id or a unique prefix of one (at least
  :data:`MIN_PREFIX` characters) to the full id; :class:`AmbiguousId` lists the
  candidates, :class:`UnknownId` says there is none;
- :func:`list_query`: a listing's filters, limit and cursor from option
  values (``status``, ``since``, ``after`` ...), each refusal naming its
  option (:class:`QueryError`);
- :func:`detail_json`: what ``show`` and ``GET /interactions/{id}`` answer;
- :func:`attachment_of` and :func:`spool_raw`: a file of an interaction, and
  its raw message on disk, both read through the store's checked paths.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, time
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from postroom import ids
from postroom.errors import PostroomError
from postroom.handoffs import handoff_detail
from postroom.ids import UnknownId
from postroom.model import Attachment, Interaction, InteractionType
from postroom.outboxview import outbox_json
from postroom.store.errors import RawPurgedError
from postroom.store.sql.listing import MAX_PAGE, ListFilter
from postroom.views import interaction_json, source_of

if TYPE_CHECKING:
    from postroom.config.site import SiteConfig
    from postroom.kernel import Kernel

#: a listing's default size
DEFAULT_LIMIT = 100


class QueryError(PostroomError):
    """A listing option that cannot be used; *option* names it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


async def resolve_id(kernel: Kernel, given: str) -> str:
    """The full id of the interaction *given* names (:func:`postroom.ids.resolve_id`)."""
    return await ids.resolve_id(kernel.store, given)


# ------------------------------------------------------------------ listing


def encode_cursor(after: tuple[datetime, int]) -> str:
    """A page's ``next`` as an opaque token (``--after``, ``?after=``)."""
    stamp, seq = after
    text = f"{stamp.astimezone(UTC).isoformat()}|{seq}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[datetime, int]:
    """The ``(created_at, seq)`` of a token from :func:`encode_cursor`; ValueError."""
    if len(token) > 200:
        raise ValueError("too long")
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        stamp, _, seq = text.partition("|")
        when = datetime.fromisoformat(stamp)
        number = int(seq)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor this gateway gave") from None
    if when.tzinfo is None or number < 0:
        raise ValueError("not a cursor this gateway gave")
    return when, number


def parse_when(option: str, text: str) -> datetime:
    """``2026-12-01`` (midnight UTC) or an ISO 8601 date and time (UTC when it
    names no offset)."""
    try:
        if len(text) == 10:
            return datetime.combine(datetime.fromisoformat(text).date(), time(), UTC)
        when = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(
            option, f"expected a date (2026-12-01) or an ISO 8601 time, got {text[:60]!r}"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


#: the listing options, as the HTTP query names them (the CLI: ``--name``)
LIST_OPTIONS = (
    "status", "type", "subtype", "mailbox", "since", "until", "sender", "text", "limit", "after",
)  # fmt: skip
_MAX_VALUE = 1000


def list_query(
    values: Mapping[str, str | None], max_limit: int = MAX_PAGE
) -> tuple[ListFilter, int, tuple[datetime, int] | None]:
    """Filters, limit and cursor from option values (None: not given). Each
    refusal is a :class:`QueryError` naming the option."""
    for name, value in values.items():
        if value is not None and len(value) > _MAX_VALUE:
            raise QueryError(name, f"longer than {_MAX_VALUE} characters")
    since = parse_when("since", v) if (v := values.get("since")) else None
    until = parse_when("until", v) if (v := values.get("until")) else None
    if since is not None and until is not None and until <= since:
        raise QueryError("until", "must be later than since")
    limit = DEFAULT_LIMIT
    if (text := values.get("limit")) is not None:
        try:
            limit = int(text)
        except ValueError:
            raise QueryError("limit", f"expected a whole number, got {text[:60]!r}") from None
        if not 1 <= limit <= max_limit:
            raise QueryError("limit", f"must be from 1 to {max_limit}, got {limit}")
    after = None
    if token := values.get("after"):
        try:
            after = decode_cursor(token)
        except ValueError as exc:
            raise QueryError("after", str(exc)) from None
    filters = ListFilter(
        status=values.get("status") or None,
        type=values.get("type") or None,
        subtype=values.get("subtype") or None,
        mailbox=values.get("mailbox") or None,
        since=since,
        until=until,
        sender=(values.get("sender") or "").strip() or None,
        text=values.get("text") or None,
    )
    return filters, limit, after


# ------------------------------------------------------------------ one interaction


def detail_json(interaction: Interaction, config: SiteConfig | None) -> dict[str, Any]:
    """The interaction's JSON with its bodies (``text``, ``html`` sanitised)."""
    source = source_of(interaction, config) if config is not None else None
    return interaction_json(interaction, source, bodies=True)


async def show(kernel: Kernel, given: str) -> dict[str, Any]:
    """``interactions show`` and ``GET /interactions/{id}``: the interaction's
    detail with its hand-off (overall and per target) and, for outbound mail,
    its outbox entry and history (the delivery status is in the JSON itself)."""
    interaction_id = await resolve_id(kernel, given)
    store = kernel.store
    # The outbox entry first: a send changes it and the interaction's status
    # together, so the status read after it is never older than its state.
    entry = await store.get_outbox(interaction_id)
    interaction = await store.get_interaction(interaction_id)
    if interaction is None:  # erased meanwhile
        raise UnknownId(f"no interaction {given!r}")
    status = await store.handoff_status(interaction_id)
    if status is not None:
        interaction.handoff_state = status[0]
    data = detail_json(interaction, kernel.config)
    if interaction.type == InteractionType.INBOUND.value:
        data["handoff"] = await handoff_detail(store, interaction_id, status)
    if entry is not None:
        data["outbox"] = outbox_json(entry, await store.outbox_history(entry.id))
    return data


class RawGone(PostroomError):
    """The interaction is kept, but its raw message was purged (retention, erasure)."""


class NoSuchFile(PostroomError):
    """The interaction has no file at that index, or it cannot be read."""


async def attachment_of(kernel: Kernel, given: str, index: str | int) -> tuple[Attachment, bytes]:
    """File *index* (0 first, as listed) of the interaction *given* names, and
    its bytes: its part of the raw message, parsed again in a worker exactly as
    when it was taken in (:func:`postroom.pipeline.files.stored_part`)."""
    from postroom.outbound_files import FileError
    from postroom.pipeline.files import stored_part

    interaction_id = await resolve_id(kernel, given)
    interaction = await kernel.store.get_interaction(interaction_id)
    if interaction is None:
        raise UnknownId(f"no interaction {given!r}")
    count = len(interaction.attachments)
    try:
        n = int(index)
    except ValueError:
        n = -1
    if not 0 <= n < count:
        raise NoSuchFile(
            f"interaction {interaction_id} has {count} file{'s' * (count != 1)}; "
            f"there is no index {str(index)[:20]!r}"
        )
    listed = interaction.attachments[n]
    try:
        data = await stored_part(kernel, interaction, listed.part_path)
    except FileError as exc:
        raise NoSuchFile(exc.message) from None
    return listed, data


async def spool_raw(kernel: Kernel, given: str) -> tuple[str, IO[bytes]]:
    """The full id and the raw message of the interaction *given* names, in a
    temporary file (at its start) checked whole against its SHA-256 by the
    store: a corrupt store raises and gives no bytes. The caller closes it."""
    interaction_id = await resolve_id(kernel, given)
    spool = tempfile.TemporaryFile(prefix="postroom-raw-", dir=kernel.spool_dir)  # noqa: SIM115  # returned open
    try:
        try:
            await kernel.store.read_raw(interaction_id, spool)
        except RawPurgedError as exc:  # kept, its raw message purged: say by what, when
            raise RawGone(str(exc)) from None
        except KeyError:
            raise UnknownId(
                f"interaction {interaction_id} has no raw message (outbound ones have none)"
            ) from None
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return interaction_id, spool


def content_disposition(attachment: Attachment) -> str:
    """``attachment`` with the sender's name (RFC 6266: ``filename*`` in UTF-8)
    and the safe name as the plain ``filename`` fallback (ASCII)."""
    safe = attachment.safe_filename.encode("ascii", "replace").decode().replace('"', "_")
    name = attachment.filename or attachment.safe_filename
    return f"attachment; filename=\"{safe}\"; filename*=UTF-8''{quote(name, safe='')}"


def download_type(attachment: Attachment) -> str:
    """The part's type for ``Content-Type``, when it is a well-formed
    ``type/subtype`` token pair, else ``application/octet-stream``."""
    value = attachment.content_type.split(";", 1)[0].strip().lower()
    kind, slash, sub = value.partition("/")
    token = set("abcdefghijklmnopqrstuvwxyz0123456789!#$&-^_.+")
    if slash and kind and sub and set(kind) <= token and set(sub) <= token:
        return value
    return "application/octet-stream"


def is_terminal(stream: Any) -> bool:
    try:
        return bool(os.isatty(stream.fileno()))
    except (AttributeError, OSError, ValueError):
        return False
