"""The ``graph`` source: one folder of an Exchange Online mailbox, read through
Microsoft Graph v1.0 (https://learn.microsoft.com/graph/api/resources/mail-api-overview).

How it meets the kernel's contract (:class:`postroom.api.ISource`):

- **connect**: resolves ``folder-path`` (a well-known name such as ``inbox``,
  then child folders by display name: ``Inbox/Support``) and ``move-to-folder``
  with authenticated requests; that first request is the login (``login-ok``,
  or a refused token refreshed once, then :class:`AuthenticationFailed`).
- **list_new**: the folder's delta query ("message: delta",
  https://learn.microsoft.com/graph/api/message-delta) with
  ``Prefer: IdType="ImmutableId"`` (ids survive moves) and
  ``odata.maxpagesize``, selecting the id, ``internetMessageId`` and the
  MAPI property ``Integer 0x0E08`` (PidTagMessageSize: Graph v1.0 has no size
  property). The source key is the immutable id. The delta link is the
  cursor: only the *last* listed item carries it, the others carry none, so
  the kernel stores it (in the transaction of that last message) only once
  every message before it is committed; a crash in between lists them again
  from the previous link. A delta link Graph no longer knows (410 Gone) starts
  a full resynchronisation; ids the store already holds are not listed again
  but acknowledged (moved or deleted) at once, so nothing is imported twice.
  The first listing of each connection lists the folder whole the same way
  (as the EWS source does): the folder holds only what is not processed yet,
  and this finds what the delta link has passed: messages a killed run stored
  but did not move or delete, and a quarantined message (left on the server
  because its download kept failing) released since; a release during the
  connection (``quarantine_released``, from the kernel) has the next listing
  list the folder whole too.
  Each page counts towards the listing's progress display.
- **fetch**: ``GET /messages/{id}/$value`` streamed into a spool file, stored
  byte for byte; ``maximum-msg-size`` is checked against the listed size
  before the download (logged; the message is still downloaded and stored
  wrapped, as for IMAP). An item deleted since the listing (404) is skipped
  and logged.
- **acknowledge**: after the commit, ``move`` to ``move-to-folder`` or
  ``delete``, in ``$batch`` requests of up to 20 ("JSON batching",
  https://learn.microsoft.com/graph/json-batching), sent before the next
  listing, wait or disconnect.
- **wait_for_new**: polling (change notifications need a public endpoint):
  the mailbox's ``poll-interval`` on the injected clock.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote, unquote

from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred

from postroom.api import (
    ConnectionDown,
    DriverContext,
    FetchedMessage,
    HTTPClient,
    OptionSchema,
    Scope,
    SourceBase,
    SourceError,
    SourceItem,
    proxy_for,
    sleep,
)
from postroom_graph.session import (
    IMMUTABLE_ID,
    MAX_THROTTLED,
    GraphError,
    GraphSession,
    header,
)

log = logging.getLogger(__name__)

TYPES = ("graph",)
DEFAULT_SERVER = "https://graph.microsoft.com"
#: PidTagMessageSize ([MS-OXPROPS] 2.796) as a Graph single-value extended property
SIZE_PROPERTY = "Integer 0x0E08"
#: the delta query's $select and $expand ("message: delta": $select and $expand
#: are supported on the first request; the links carry them afterwards)
DELTA_QUERY = (
    "$select=id,internetMessageId"
    "&$expand=singleValueExtendedProperties($filter=id%20eq%20'Integer%200x0E08')"
)
#: items per delta page (odata.maxpagesize)
PAGE_SIZE = 100
#: "JSON batching": at most 20 requests in one $batch
BATCH_SIZE = 20
#: ids asked of the store's known_source_keys at once
KNOWN_CHUNK = 500
#: Graph's well-known folder names ("mailFolder resource type")
WELL_KNOWN_FOLDERS = frozenset(
    {
        "archive",
        "clutter",
        "conflicts",
        "conversationhistory",
        "deleteditems",
        "drafts",
        "inbox",
        "junkemail",
        "localfailures",
        "msgfolderroot",
        "outbox",
        "recoverableitemsdeletions",
        "scheduled",
        "searchfolders",
        "sentitems",
        "serverfailures",
        "syncissues",
    }
)


class DeltaGone(Exception):
    """The delta link is no longer valid (410 Gone): resynchronise."""


class GraphSource(SourceBase):
    """A folder of a mailbox, through Microsoft Graph."""

    protocol = "graph"
    types = TYPES
    supports_push = False

    @classmethod
    def postroom_add_options(cls, schema: OptionSchema) -> None:
        add = schema.add
        add(
            "server",
            scope=Scope.MAILBOX,
            types=TYPES,
            default=DEFAULT_SERVER,
            description="The Graph service (`https://graph.microsoft.com`; a national "
            "cloud's endpoint such as `https://graph.microsoft.us`). https only.",
        )
        add(
            "mailbox",
            scope=Scope.MAILBOX,
            types=TYPES,
            required=True,
            description="The mailbox read: a user or shared mailbox's address (UPN) or id.",
        )
        add(
            "folder-path",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="inbox",
            description="The folder read: a well-known name (`inbox`) or a path of display "
            "names from it or from the top of the mailbox (`Inbox/Support`, `Support`).",
        )
        add(
            "after-processing",
            "choice",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="delete",
            choices=("delete", "move"),
            description="What is done to a message once stored: `delete` it (Graph's "
            "delete moves it to Deleted Items) or `move` it to `move-to-folder`.",
        )
        add(
            "move-to-folder",
            scope=Scope.MAILBOX,
            types=TYPES,
            description="Folder processed messages are moved to with `after-processing: "
            "move` (a path as for `folder-path`; it must exist).",
        )
        add(
            "ca-file",
            "path",
            scope=Scope.MAILBOX,
            types=TYPES,
            description="PEM file of the certificate authorities to trust instead of the "
            "system's (a private CA, or a TLS-inspecting proxy).",
        )
        add(
            "protocol-timeout",
            "duration",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="00:02:00",
            minimum=1,
            maximum=3600,
            description="Time allowed for one Graph request, connection included.",
        )
        add(
            "enable-debug",
            "bool",
            scope=Scope.MAILBOX,
            types=TYPES,
            default="false",
            description="Log each Graph request and its status (never the token).",
        )

    def __init__(self, mailbox: Any, context: DriverContext) -> None:
        super().__init__(mailbox, context)
        self.server = str(mailbox.get("server") or DEFAULT_SERVER).rstrip("/")
        self.user = str(mailbox.get("mailbox"))
        self.folder_path = str(mailbox.get("folder-path"))
        self.after = str(mailbox.get("after-processing"))
        self.move_to: str | None = mailbox.get("move-to-folder")
        if self.after == "move" and not self.move_to:
            raise mailbox.error(
                "after-processing is 'move' but no move-to-folder is set", "move-to-folder"
            )
        ca_file = mailbox.get("ca-file")
        self.ca_file: str | None = str(ca_file) if ca_file else None
        self.timeout = float(mailbox.get("protocol-timeout"))
        self.debug = bool(mailbox.get("enable-debug"))
        self.where = f"server {self.server}"
        self.who = f"mailbox {self.name}"
        self.session = GraphSession(self, self.make_http(), self.server)
        self.folder_id: str | None = None
        self.move_to_id: str | None = None
        self._pending: list[str] = []
        #: (cursor listed from, delta link) of a listing that found nothing new
        self._idle_link: tuple[str | None, str] | None = None
        #: the next listing lists the folder whole (the first of a connection)
        self._whole = True

    def make_http(self) -> Any:
        """The kernel's HTTP client: verified TLS (``ca-file``), the site's
        ``proxy`` section, ``protocol-timeout`` on the injected clock."""
        return HTTPClient(
            self.context.reactor,
            self.context.clock,
            proxy=proxy_for(self.context.config, None, "graph"),
            ca_file=self.ca_file,
            timeout=self.timeout,
            persistent=True,
        )

    @property
    def capabilities(self) -> list[str]:
        """What ``postroom check --connect`` shows."""
        if self.folder_id is None:
            return []
        return [f"folder={self.folder_path}", "delta", "immutable-ids", f"after={self.after}"]

    def _user_path(self) -> str:
        return "/users/" + quote(self.user, safe="@")

    # ------------------------------------------------------------ connection

    def connect(self) -> Deferred[None]:
        return ensureDeferred(self._connect())

    async def _connect(self) -> None:
        self._whole = True
        self.folder_id = await self._resolve(self.folder_path, "folder-path")
        if self.after == "move":
            assert self.move_to is not None
            self.move_to_id = await self._resolve(self.move_to, "move-to-folder")
        self.login_ok(f"bearer token on {self.where}")
        # DEBUG: the kernel logs the connection (docs/operations.md); this says more
        log.debug(
            "mailbox %s: reading %s of %s on %s",
            self.name,
            self.folder_path,
            self.user,
            self.where,
            extra={"mailbox": self.name},
        )

    async def _resolve(self, path: str, option: str) -> str:
        """The id of the folder at *path*: a well-known name first, else from the
        top of the mailbox; then each part by display name
        ("List childFolders", https://learn.microsoft.com/graph/api/mailfolder-list-childfolders)."""
        parts = [p for p in path.strip("/").split("/") if p]
        if not parts:
            raise SourceError(f"mailbox {self.name}: {option} is empty")
        first = parts[0]
        if first.lower() in WELL_KNOWN_FOLDERS:
            current = await self._folder_id(first.lower(), path)
            rest = parts[1:]
        else:
            current = await self._folder_id("msgfolderroot", path)
            rest = parts
        for part in rest:
            name = part.replace("'", "''")  # OData quotes a quote by doubling it
            wanted = quote(f"displayName eq '{name}'", safe="")
            answer = await self._json(
                "GET",
                f"{self._user_path()}/mailFolders/{quote(current, safe='')}/childFolders"
                f"?$filter={wanted}",
            )
            found = [f for f in answer.get("value", []) if isinstance(f, dict)]
            if not found:
                raise SourceError(
                    f"mailbox {self.name}: no folder {part!r} in {path!r} ({option}) of "
                    f"{self.user} on {self.where}"
                )
            current = str(found[0]["id"])
        return current

    async def _folder_id(self, ref: str, path: str) -> str:
        try:
            answer = await self._json(
                "GET", f"{self._user_path()}/mailFolders/{quote(ref, safe='')}?$select=id"
            )
        except GraphError as exc:
            if exc.status == 404:
                missing = (
                    f"no mailbox {self.user}"
                    if exc.code == "ErrorInvalidUser"
                    else f"{self.user} has no folder {path!r}"
                )
                raise SourceError(
                    f"mailbox {self.name}: {missing} on {self.where} ({exc.code})"
                ) from None
            raise
        return str(answer["id"])

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response, _ = await self.session.request(method, path, **kwargs)
        try:
            return json.loads(response.body)
        except ValueError:
            raise SourceError(
                f"mailbox {self.name}: {self.where} answered {method} with unreadable JSON"
            ) from None

    # --------------------------------------------------------------- listing

    def list_new(self, cursor: Any) -> Deferred[list[SourceItem]]:
        return ensureDeferred(self._list_new(cursor))

    async def _list_new(self, cursor: Any) -> list[SourceItem]:
        await self._flush()
        start: str | None = getattr(cursor, "value", cursor) or None
        if self._whole:
            # The folder holds only what is not processed yet (every stored
            # message is moved or deleted), plus messages whose download kept
            # failing (quarantined without bytes, left on the server). Listing
            # it whole is as long as the backlog, and finds what the delta link
            # has passed: messages a killed run stored but did not move or
            # delete yet, and quarantined ones released since.
            link = None
        else:
            link = self._usable(start)
            idle = self._idle_link
            if idle is not None and idle[0] == start:
                link = idle[1]  # nothing new was listed since: carry on from there
        try:
            listed, delta_link = await self._delta(link)
        except DeltaGone:
            log.info(
                "mailbox %s: the delta link of %s is no longer valid (410 Gone): listing the "
                "whole folder again; messages already stored are not imported twice",
                self.name,
                self.folder_path,
                extra={"mailbox": self.name},
            )
            listed, delta_link = await self._delta(None)
        self._whole = False
        items = await self._not_yet_stored(listed)
        if not items:
            self._idle_link = (start, delta_link)
            return []
        self._idle_link = None
        last = items[-1]
        items[-1] = SourceItem(source_key=last.source_key, size=last.size, cursor=delta_link)
        return items

    def quarantine_released(self, keys: set[str]) -> None:
        """Released messages left on the server are behind the delta link: the
        next listing lists the folder whole (what the store holds is skipped)."""
        self._whole = True

    def _usable(self, link: str | None) -> str | None:
        """The stored delta link, when it is one of this server and folder; a
        link of another server or folder (the site file changed) is ignored
        and the folder listed whole (stored messages are not imported twice)."""
        if link is None:
            return None
        assert self.folder_id is not None
        try:
            self.session.url(link)
        except SourceError:
            ours = False
        else:
            # Graph writes the folder as /mailFolders/{id} or /mailFolders('{id}')
            ours = self.folder_id in unquote(link)
        if not ours:
            log.info(
                "mailbox %s: the stored cursor is not a delta link of %s on %s (the site "
                "file changed?): listing the whole folder",
                self.name,
                self.folder_path,
                self.where,
                extra={"mailbox": self.name},
            )
            return None
        return link

    async def _delta(self, link: str | None) -> tuple[dict[str, int | None], str]:
        """Every item added since *link* (None: the whole folder), in order,
        with its size; and the new delta link."""
        assert self.folder_id is not None
        url = link or (
            f"{self._user_path()}/mailFolders/{quote(self.folder_id, safe='')}/messages/delta?"
            + DELTA_QUERY
        )
        headers = {"Prefer": f"{IMMUTABLE_ID}, odata.maxpagesize={PAGE_SIZE}"}
        found: dict[str, int | None] = {}
        with self.listing_progress() as progress:
            while True:
                try:
                    page = await self._json("GET", url, headers=headers)
                except GraphError as exc:
                    if exc.status == 410 and link is not None:
                        raise DeltaGone() from None
                    raise
                before = len(found)
                for entry in page.get("value", []):
                    if not isinstance(entry, dict) or "id" not in entry:
                        continue
                    if "@removed" in entry:
                        found.pop(str(entry["id"]), None)
                        continue
                    found[str(entry["id"])] = _size_of(entry)
                progress.add(len(found) - before)
                next_link = page.get("@odata.nextLink")
                if isinstance(next_link, str):
                    url = next_link
                    continue
                delta_link = page.get("@odata.deltaLink")
                if not isinstance(delta_link, str):
                    raise SourceError(
                        f"mailbox {self.name}: {self.where} answered a delta page with neither "
                        "@odata.nextLink nor @odata.deltaLink"
                    )
                self.session.url(delta_link)  # same origin, or refused now
                return found, delta_link

    async def _not_yet_stored(self, listed: dict[str, int | None]) -> list[SourceItem]:
        """The listed items the store does not hold; those it holds (stored by
        an earlier run that could not move or delete them) are acknowledged."""
        ids = list(listed)
        known: set[str] = set()
        lookup = self.context.known_source_keys
        if lookup is not None:
            for i in range(0, len(ids), KNOWN_CHUNK):
                known.update(await lookup(self.name, ids[i : i + KNOWN_CHUNK]))
        if known:
            log.info(
                "mailbox %s: %d listed message(s) are stored already: %s them without "
                "importing them again",
                self.name,
                len(known),
                "moving" if self.after == "move" else "deleting",
                extra={"mailbox": self.name},
            )
            self._pending.extend(i for i in ids if i in known)
            await self._flush()
        return [
            SourceItem(source_key=i, size=listed[i], cursor=None) for i in ids if i not in known
        ]

    # -------------------------------------------------------------- fetching

    def fetch(self, item: SourceItem) -> Deferred[FetchedMessage]:
        return ensureDeferred(self._fetch(item))

    async def _fetch(self, item: SourceItem) -> FetchedMessage:
        self.note_size(item.source_key, item.size)
        try:
            _response, writer = await self.session.request(
                "GET",
                f"{self._user_path()}/messages/{quote(item.source_key, safe='')}/$value",
                headers={"Prefer": IMMUTABLE_ID, "Accept": "*/*"},
                sink=lambda: self.spool(item.source_key[-12:].strip("=") or "item"),
                max_body=1 << 62,
            )
        except GraphError as exc:
            if exc.status == 404:
                log.warning(
                    "mailbox %s: message %s was deleted from %s after it was listed: skipped",
                    self.name,
                    item.source_key,
                    self.folder_path,
                    extra={"mailbox": self.name},
                )
                raise SourceError(
                    f"mailbox {self.name}: message {item.source_key} is no longer in "
                    f"{self.folder_path} on {self.where}"
                ) from None
            raise
        return FetchedMessage(
            mailbox=self.name,
            source_key=item.source_key,
            raw=writer.raw(),
            server_size=item.size,
        )

    def release(self, message: FetchedMessage) -> Deferred[None]:
        self.drop_spooled(message)
        return defer.succeed(None)

    # -------------------------------------------------------- acknowledging

    def acknowledge(self, message: FetchedMessage) -> Deferred[None]:
        """Queue the message for its move or delete (sent in ``$batch``es of 20,
        and before the next listing, wait or disconnect)."""
        self.drop_spooled(message)
        self._pending.append(message.source_key)
        if len(self._pending) >= BATCH_SIZE:
            return ensureDeferred(self._flush())
        return defer.succeed(None)

    async def _flush(self) -> None:
        throttled = 0
        while self._pending:
            batch, self._pending = self._pending[:BATCH_SIZE], self._pending[BATCH_SIZE:]
            try:
                retry = await self._send_batch(batch)
            except Exception:
                self._pending[:0] = batch  # kept for the next try
                raise
            if retry:
                self._pending[:0] = retry
                throttled += 1
                if throttled > MAX_THROTTLED:
                    raise ConnectionDown(
                        f"mailbox {self.name}: {self.where} keeps throttling the moves and "
                        f"deletes of {len(self._pending)} processed message(s)"
                    )

    async def _send_batch(self, ids: list[str]) -> list[str]:
        """One ``$batch`` of moves or deletes; the ids to send again (throttled)."""
        requests = []
        for n, item_id in enumerate(ids):
            url = f"{self._user_path()}/messages/{quote(item_id, safe='')}"
            request: dict[str, Any] = {"id": str(n), "headers": {"Prefer": IMMUTABLE_ID}}
            if self.after == "move":
                request.update(
                    method="POST", url=url + "/move", body={"destinationId": self.move_to_id}
                )
                request["headers"]["Content-Type"] = "application/json"
            else:
                request.update(method="DELETE", url=url)
            requests.append(request)
        answer = await self._json("POST", "/$batch", json_body={"requests": requests})
        again: list[str] = []
        failed: list[str] = []
        wait = 0.0
        for response in answer.get("responses", []):
            try:
                n = int(response["id"])
                status = int(response["status"])
            except (KeyError, TypeError, ValueError):
                continue
            if not 0 <= n < len(ids):
                continue
            if status in (429, 503):
                again.append(ids[n])
                wait = max(wait, _retry_after_of(response))
            elif status == 404:
                pass  # gone already (moved or deleted by someone, or by us before a crash)
            elif not 200 <= status < 300:
                failed.append(f"{ids[n]}: {status}")
        if failed:
            raise SourceError(
                f"mailbox {self.name}: {self.after} of {len(failed)} processed message(s) "
                f"refused by {self.where} ({'; '.join(failed[:3])})"
            )
        if again:
            clock = self.context.clock
            self.session.throttled_until = max(self.session.throttled_until, clock.seconds() + wait)
        return again

    # --------------------------------------------------------------- waiting

    def wait_for_new(self, timeout: float) -> Deferred[None]:
        """Polling: fires after *timeout* seconds (the mailbox's poll interval)."""
        return ensureDeferred(self._wait(float(timeout)))

    async def _wait(self, timeout: float) -> None:
        await self._flush()
        await sleep(self.context.clock, timeout)

    def disconnect(self) -> Deferred[None]:
        return ensureDeferred(self._disconnect())

    async def _disconnect(self) -> None:
        try:
            await self._flush()
        except Exception as exc:
            log.warning(
                "mailbox %s: processed messages not moved or deleted before disconnecting "
                "(they are listed again, recognised as stored and acknowledged then): %s",
                self.name,
                exc,
                extra={"mailbox": self.name},
            )
        self._pending = []
        await self.session.http.close()  # the connections kept open between requests


def _size_of(entry: dict[str, Any]) -> int | None:
    """PidTagMessageSize from the expanded extended property (Graph answers its
    id normalised, ``Integer 0xe08``)."""
    for prop in entry.get("singleValueExtendedProperties") or ():
        if not isinstance(prop, dict):
            continue
        kind, _, tag = str(prop.get("id", "")).partition(" ")
        try:
            if kind.lower() == "integer" and int(tag, 16) == 0x0E08:
                return int(prop.get("value"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
    return None


def _retry_after_of(response: dict[str, Any]) -> float:
    """Retry-After of one $batch response (its ``headers``), in seconds."""
    headers = response.get("headers")
    value = header(_Headers(headers if isinstance(headers, dict) else {}), "Retry-After")
    try:
        return float(value) if value is not None else 10.0
    except ValueError:
        return 10.0


class _Headers:
    """A $batch response's ``headers`` object, read like an HTTP response's."""

    def __init__(self, headers: dict[str, Any]) -> None:
        self.headers = headers
