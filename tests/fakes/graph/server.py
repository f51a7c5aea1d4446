"""A strict contract fake of the Microsoft Graph v1.0 mail endpoints postroom uses.

No Graph service can run in a test, so this HTTPS server on 127.0.0.1 (a
certificate from a throw-away test CA, :func:`tests.pki.make_tls_files`)
answers what ``plugins/graph`` sends, and nothing more. Each behaviour cites
the Graph v1.0 reference page it follows (``REF`` + the page name, e.g.
``REF + "message-delta"`` is https://learn.microsoft.com/graph/api/message-delta).

It is **strict**, so that its acceptance means something: an unknown query
parameter, a missing or refused ``Authorization: Bearer`` token, a missing
``Prefer: IdType="ImmutableId"`` on a request naming or listing items, a
wrong method or content type, a malformed ``$batch`` is answered as Graph
answers an error (an HTTP 4xx with an ``{"error": {"code", "message"}}`` body)
*and* recorded in :attr:`GraphFake.problems`, which tests assert empty.
(A refused token is not a protocol error: it is counted in ``refused``.)

It runs on its own thread (the standard library's ``ThreadingHTTPServer``),
so the test process's global reactor stays out of it. Test controls:
:meth:`~GraphFake.throttle`, :meth:`~GraphFake.expire_deltas`,
:meth:`~GraphFake.delete_on_fetch`, :meth:`~GraphFake.cut_next_download`,
:meth:`~GraphFake.fail_next_upload`, :attr:`~GraphFake.rewrite_message_ids`,
:attr:`~GraphFake.omit_created_message_id`, :meth:`~GraphFake.cut_downloads_of`,
:meth:`~GraphFake.throttle_pages`; counters in :attr:`~GraphFake.counts`.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import ssl
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from tests.pki import make_tls_files

#: the Graph v1.0 REST reference; each behaviour below names its page
REF = "https://learn.microsoft.com/graph/api/"
#: "Get immutable identifiers for Outlook resources"
IMMUTABLE_REF = "https://learn.microsoft.com/graph/outlook-immutable-id"
#: "Microsoft Graph throttling guidance"
THROTTLING_REF = "https://learn.microsoft.com/graph/throttling"
#: "Combine multiple HTTP requests using JSON batching"
BATCH_REF = "https://learn.microsoft.com/graph/json-batching"

#: PidTagMessageSize as Graph names the single-value extended property
#: (MS-OXPROPS 2.796; "singleValueLegacyExtendedProperty" reference page):
#: Graph answers the id in its own normalised form, ``Integer 0xe08``
SIZE_PROPERTY = "Integer 0x0E08"
SIZE_PROPERTY_ANSWERED = "Integer 0xe08"
SIZE_EXPAND = f"singleValueExtendedProperties($filter=id eq '{SIZE_PROPERTY}')"
#: the message properties the fake can $select
MESSAGE_PROPERTIES = frozenset({"id", "internetMessageId", "subject", "parentFolderId"})
#: well-known folder names ("mailFolder resource type")
WELL_KNOWN = ("msgfolderroot", "inbox", "sentitems", "deleteditems", "drafts", "junkemail",
              "archive")
#: the page size of message delta when odata.maxpagesize is not given
DEFAULT_PAGE = 10
#: "JSON batching": at most 20 requests in one batch
MAX_BATCH = 20
IMMUTABLE = 'idtype="immutableid"'
#: "Attach large files to Outlook messages as attachments"
LARGE_REF = "https://learn.microsoft.com/graph/outlook-large-attachments"
#: "Microsoft Graph service limits": a request (MIME in base64 included) up to 4 MB
MAX_REQUEST = 4 * 1024 * 1024
#: LARGE_REF: upload sessions are for files of 3 MB to 150 MB, each PUT up to 4 MB
MIN_UPLOAD = 3 * 1024 * 1024
MAX_UPLOAD = 150 * 1024 * 1024
MAX_RANGE = 4 * 1024 * 1024
#: "Outlook extended properties overview" (REF + "resources/extended-properties-overview"):
#: a single-value extended property id is "{type} {proptag}" (a property MAPI
#: defines, identifier 0x0001-0x7FFF: "Do not try to define a custom property
#: using the proptag format"), "{type} {guid} Name {name}" or "{type} {guid} Id {id}"
EXTENDED_REF = REF + "resources/extended-properties-overview"
EXTENDED_TYPES = ("Binary", "Boolean", "CLSID", "Currency", "Double", "Float", "Integer",
                  "Long", "Short", "String", "SystemTime")
_TYPE = "(" + "|".join(EXTENDED_TYPES) + ")"
_GUID = r"\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}"
PROPTAG_ID = re.compile(_TYPE + r" 0x([0-9A-Fa-f]{4})")
NAMED_ID = re.compile(_TYPE + " " + _GUID + r" (?:Name \S.*|Id 0x[0-9A-Fa-f]{1,4})")
#: MAPI properties whose type the fake knows ([MS-OXPROPS]): the proptag's
#: type must match. 0x0E01 PidTagDeleteAfterSubmit (2.669, PtypBoolean),
#: 0x0E08 PidTagMessageSize (2.796, PtypInteger32)
KNOWN_TAGS = {0x0E01: "Boolean", 0x0E08: "Integer"}
#: PidTagDeleteAfterSubmit ([MS-OXPROPS] 2.669; [MS-OXOMSG] 2.2.3.8: "Indicates
#: that the original message is to be deleted after it is sent")
DELETE_AFTER_SUBMIT = (0x0E01, "Boolean")
#: REF + "attachment-createuploadsession": the attachmentItem properties
ATTACHMENT_ITEM = frozenset({"attachmentType", "name", "size", "contentType", "isInline",
                             "contentId"})


class GraphError(Exception):
    """An error answer: HTTP *status*, Graph error *code* and *message*."""

    def __init__(self, status: int, code: str, message: str, *, protocol: bool = False,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.protocol = protocol  # a client's protocol error: recorded in problems
        self.headers = headers or {}

    def body(self) -> bytes:
        return json.dumps({"error": {"code": self.code, "message": self.message,
                                     "innerError": {"request-id": str(uuid.uuid4())}}}).encode()


def bad(message: str, code: str = "BadRequest", status: int = 400) -> GraphError:
    """A protocol error of the client (recorded in ``problems``)."""
    return GraphError(status, code, message, protocol=True)


@dataclass
class StoredMessage:
    """One message of the fake mailbox store, addressed by its immutable id."""

    id: str
    mime: bytes
    folder: str
    internet_message_id: str | None
    #: single-value extended properties set on it, by (MAPI tag, type)
    extended: dict[tuple[int, str], str] = field(default_factory=dict)


@dataclass
class Folder:
    id: str
    name: str
    parent: str | None
    well_known: str | None = None
    #: (sequence number, message id, added?) in order: the delta state
    changes: list[tuple[int, str, bool]] = field(default_factory=list)


@dataclass
class Mailbox:
    name: str
    folders: dict[str, Folder] = field(default_factory=dict)
    messages: dict[str, StoredMessage] = field(default_factory=dict)
    sent: list[bytes] = field(default_factory=list)


@dataclass
class Upload:
    """An upload session (LARGE_REF) for one attachment of a draft."""

    mailbox: str
    message_id: str
    item: dict[str, Any]
    data: bytearray = field(default_factory=bytearray)
    done: bool = False


class GraphFake:
    """The fake Graph service: ``with GraphFake(tmp_path) as graph: graph.url``.

    *tokens*: the bearer tokens it accepts (``accept_token`` adds more);
    *validate*: a callable deciding instead (e.g. the IdP's introspection).
    """

    def __init__(
        self,
        directory: Path,
        *,
        tokens: Iterable[str] = (),
        validate: Callable[[str], bool] | None = None,
    ) -> None:
        tls = _tls_files(directory)
        self.ca_file = str(tls.ca_file)
        self._tls = tls
        self.tokens: set[str] = set(tokens)
        self.validate = validate or (lambda token: token in self.tokens)
        self.lock = threading.RLock()
        self.mailboxes: dict[str, Mailbox] = {}
        #: client protocol errors (a test of a correct client asserts it empty)
        self.problems: list[str] = []
        #: requests by operation: folder, childFolders, delta, value, batch, move,
        #: delete, sendMail, createDraft, getMessage, updateMessage,
        #: createUploadSession, uploadRange, sendDraft, listMessages; plus
        #: throttled, refused, gone, cut, uploadFailed
        self.counts: Counter[str] = Counter()
        self._seq = itertools.count(1)
        self._generation = 1
        self._pages: dict[str, tuple[list[dict[str, Any]], str]] = {}
        self._delta_queries: dict[str, tuple[set[str], bool]] = {}
        self._throttle: list[tuple[int, int]] = []  # (status, retry-after) per next request
        self._throttle_pages: list[int] = []  # retry-after per next @odata.nextLink request
        self._delete_on_fetch: set[str] = set()
        self._cut = False
        #: item id -> how many more of its downloads are cut
        self._cut_items: Counter[str] = Counter()
        self._uploads: dict[str, Upload] = {}
        #: finished attachments by draft id (added to the MIME when it is sent)
        self._attached: dict[str, list[Upload]] = {}
        #: Exchange gives each message it takes in (a draft, a sendMail) a
        #: Message-ID of its own (a test control): PidTagInternetMessageId
        #: ([MS-OXPROPS] 2.749, "Corresponds to the message-id field") is where
        #: Exchange keeps a MIME Message-ID, and a MIME writer writes the header
        #: from it, so the new one is in the MIME that goes out too
        self.rewrite_message_ids = False
        #: the create-message answer leaves out internetMessageId (a test control)
        self.omit_created_message_id = False
        self._fail_upload: tuple[int, int | None] | None = None
        self._refuse_delete = False
        self._drop_send = False
        self._expire_after: int | None = None
        self._seen_tokens: set[str] = set()
        #: tokens refused from now on, whatever the validator says (expired)
        self.expired: set[str] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> GraphFake:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        fake = self

        class Handler(_Handler):
            graph = fake

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._tls.cert_file, self._tls.key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="graph-fake", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    # ------------------------------------------------------------ the store

    def mailbox(self, name: str) -> Mailbox:
        """The mailbox *name* (a UPN), created with the well-known folders."""
        with self.lock:
            key = name.lower()
            if key not in self.mailboxes:
                box = Mailbox(name)
                for well_known in WELL_KNOWN:
                    parent = None if well_known == "msgfolderroot" else "root-" + key
                    folder_id = ("root-" + key) if parent is None else _new_id()
                    box.folders[folder_id] = Folder(
                        folder_id, well_known.capitalize(), parent, well_known
                    )
                self.mailboxes[key] = box
            return self.mailboxes[key]

    def folder(self, mailbox: str, path: str) -> Folder:
        """The folder at *path* (``inbox``, ``Inbox/Support``), created when missing."""
        with self.lock:
            box = self.mailbox(mailbox)
            parts = [p for p in path.split("/") if p]
            current = self._well_known(box, parts[0]) or self._child(
                box, self._well_known(box, "msgfolderroot"), parts[0], create=True
            )
            for part in parts[1:]:
                current = self._child(box, current, part, create=True)
            assert current is not None
            return current

    def add_message(self, mailbox: str, folder: str, mime: bytes) -> str:
        """Store *mime* in *folder* of *mailbox*; its immutable id."""
        with self.lock:
            target = self.folder(mailbox, folder)
            headers = BytesHeaderParser().parsebytes(mime)
            message_id = headers.get("Message-ID")
            item = StoredMessage(_new_id(), mime, target.id,
                                 str(message_id).strip() if message_id else None)
            self.mailbox(mailbox).messages[item.id] = item
            target.changes.append((next(self._seq), item.id, True))
            return item.id

    def messages_in(self, mailbox: str, folder: str) -> list[StoredMessage]:
        with self.lock:
            target = self.folder(mailbox, folder)
            return [m for m in self.mailbox(mailbox).messages.values() if m.folder == target.id]

    def remove(self, mailbox: str, item_id: str) -> None:
        """Delete an item (as another client would)."""
        with self.lock:
            box = self.mailbox(mailbox)
            item = box.messages.pop(item_id)
            box.folders[item.folder].changes.append((next(self._seq), item_id, False))

    def sent(self, mailbox: str) -> list[bytes]:
        return list(self.mailbox(mailbox).sent)

    # ------------------------------------------------------------ controls

    def accept_token(self, token: str) -> None:
        self.tokens.add(token)

    def throttle(self, count: int = 1, retry_after: int = 2, status: int = 429) -> None:
        """The next *count* requests are throttled (429 or 503 with Retry-After)."""
        with self.lock:
            self._throttle.extend([(status, retry_after)] * count)

    def throttle_pages(self, count: int, retry_after: int) -> None:
        """The next *count* requests of a delta ``@odata.nextLink`` (a page after
        the first) are throttled (429 with Retry-After): a slow listing."""
        with self.lock:
            self._throttle_pages.extend([retry_after] * count)

    def expire_deltas(self) -> None:
        """Every delta link handed out so far answers 410 Gone from now on."""
        with self.lock:
            self._generation += 1

    def delete_on_fetch(self, item_id: str) -> None:
        """The item is deleted (by someone else) just before its ``$value`` is asked."""
        with self.lock:
            self._delete_on_fetch.add(item_id)

    def expire_tokens_after(self, count: int) -> None:
        """After *count* more authorised requests, every token used so far is
        refused (401: an access token expiring mid-run)."""
        with self.lock:
            self._expire_after = count

    def check_token(self, token: str) -> bool:
        with self.lock:
            if token in self.expired:
                return False
        if not self.validate(token):
            return False
        with self.lock:
            self._seen_tokens.add(token)
            if self._expire_after is not None:
                self._expire_after -= 1
                if self._expire_after <= 0:
                    self._expire_after = None
                    self.expired |= self._seen_tokens
                    self.counts["expired"] += 1
        return True

    def fail_next_upload(self, status: int, retry_after: int | None = None) -> None:
        """The next upload range ``PUT`` answers *status* (with ``Retry-After``
        when given), as an upload session may ("Microsoft Graph error
        responses", https://learn.microsoft.com/graph/errors: 408, 409 Conflict,
        429 Too Many Requests with Retry-After, 4xx)."""
        with self.lock:
            self._fail_upload = (status, retry_after)

    def drop_next_send(self) -> None:
        """The next message-send is carried out, then the connection is closed
        without an answer (the client cannot tell whether it was sent)."""
        with self.lock:
            self._drop_send = True

    def refuse_next_delete(self) -> None:
        """The next ``DELETE`` of a message answers 403 ErrorAccessDenied
        ("Microsoft Graph error responses": 403, access denied)."""
        with self.lock:
            self._refuse_delete = True

    def cut_next_download(self) -> None:
        """The next ``$value`` answer stops half-way and the connection is closed."""
        with self.lock:
            self._cut = True

    def cut_downloads_of(self, item_id: str, count: int) -> None:
        """The next *count* ``$value`` answers of *item_id* are cut so (a message
        whose download keeps failing)."""
        with self.lock:
            self._cut_items[item_id] = count

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _well_known(box: Mailbox, name: str) -> Folder | None:
        for folder in box.folders.values():
            if folder.well_known == name.lower():
                return folder
        return None

    @staticmethod
    def _child(box: Mailbox, parent: Folder | None, name: str, *, create: bool) -> Folder | None:
        assert parent is not None
        for folder in box.folders.values():
            if folder.parent == parent.id and folder.name.lower() == name.lower():
                return folder
        if not create:
            return None
        folder = Folder(_new_id(), name, parent.id)
        box.folders[folder.id] = folder
        return folder

    def _take_throttle(self, path: str) -> tuple[int, int] | None:
        with self.lock:
            if self._throttle:
                return self._throttle.pop(0)
            if self._throttle_pages and "$skiptoken=" in unquote(urlsplit(path).query):
                return 429, self._throttle_pages.pop(0)
            return None

    def _box(self, user: str) -> Mailbox:
        box = self.mailboxes.get(unquote(user).lower())
        if box is None:
            # "Get user": an unknown user is 404 ResourceNotFound
            raise GraphError(404, "ErrorInvalidUser",
                             f"The requested user '{unquote(user)}' is invalid.")
        return box

    def _resolve_folder(self, box: Mailbox, ref: str) -> Folder:
        # "Get mailFolder" (mailfolder-get): an id or a well-known name
        folder = box.folders.get(ref) or self._well_known(box, ref)
        if folder is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found "
                             "in the store.")
        return folder

    # ------------------------------------------------------------ operations

    def get_folder(self, box: Mailbox, ref: str, query: dict[str, str]) -> dict[str, Any]:
        """REF + "mailfolder-get": ``$select`` only."""
        _allow(query, {"$select"})
        self.counts["folder"] += 1
        return _folder_json(self._resolve_folder(box, ref))

    def child_folders(self, box: Mailbox, ref: str, query: dict[str, str]) -> dict[str, Any]:
        """REF + "mailfolder-list-childfolders": ``$filter=displayName eq '...'``
        (the only filter postroom sends), ``$select``, ``$top``."""
        _allow(query, {"$filter", "$select", "$top"})
        self.counts["childFolders"] += 1
        parent = self._resolve_folder(box, ref)
        children = [f for f in box.folders.values() if f.parent == parent.id]
        wanted = query.get("$filter")
        if wanted is not None:
            match = re.fullmatch(r"displayName eq '((?:[^']|'')*)'", wanted)
            if match is None:
                raise bad(f"Invalid filter clause: {wanted}")
            name = match.group(1).replace("''", "'")
            children = [f for f in children if f.name == name]
        return {"value": [_folder_json(f) for f in children]}

    def delta(self, box: Mailbox, ref: str, query: dict[str, str], prefer: dict[str, str]
              ) -> dict[str, Any]:
        """REF + "message-delta": the first request may carry ``$select`` and
        ``$expand`` (and ``$filter``/``$orderby`` are limited: refused here);
        the nextLink and deltaLink are opaque and used as they come, with no
        other parameter added ("Use delta query to track changes in Microsoft
        Graph data": "you don't need to specify any query parameters ... other
        than the state token"). ``Prefer: odata.maxpagesize`` sets the page size."""
        self.counts["delta"] += 1
        folder = self._resolve_folder(box, ref)
        if "$skiptoken" in query:
            _allow(query, {"$skiptoken"})
            page = self._pages.pop(query["$skiptoken"], None)
            if page is None:
                raise bad("The skip token is unknown or was used already.")
            return self._page(box, folder, *page, prefer)
        if "$deltatoken" in query:
            _allow(query, {"$deltatoken"})
            token = query["$deltatoken"]
            generation, _, since = token.partition(".")
            remembered = self._delta_queries.get(token)
            if generation != str(self._generation) or remembered is None:
                self.counts["gone"] += 1
                # "message: delta" and "Use delta query": an expired or unknown
                # state answers 410 Gone; the client starts again without a token
                raise GraphError(410, "syncStateNotFound",
                                 "The sync state generation is no longer valid.")
            after = int(since)
            select, expand = remembered  # the state token carries the first query
        else:
            _allow(query, {"$select", "$expand"})
            select, expand = self._first_query(query)
            after = 0
        entries: list[dict[str, Any]] = []
        present: dict[str, bool] = {}
        for seq, item_id, added in folder.changes:
            if seq > after:
                present[item_id] = added
        for item_id, added in present.items():
            item = box.messages.get(item_id)
            if added and item is not None and item.folder == folder.id:
                entries.append(self._message_json(item, select, expand))
            elif after:
                entries.append({"id": item_id, "@removed": {"reason": "deleted"}})
        snapshot = f"{self._generation}.{next(self._seq)}"
        self._delta_queries[snapshot] = (select, expand)
        return self._page(box, folder, entries, snapshot, prefer)

    def _first_query(self, query: dict[str, str]) -> tuple[set[str], bool]:
        select = set(filter(None, query.get("$select", "id").split(",")))
        unknown = select - MESSAGE_PROPERTIES
        if unknown:
            raise bad(f"Could not find a property named '{sorted(unknown)[0]}' on type "
                      "'microsoft.graph.message'.")
        expand = query.get("$expand")
        if expand is not None and expand != SIZE_EXPAND:
            raise bad(f"Parsing OData Select and Expand failed: {expand}")
        return select, expand is not None

    def _page(self, box: Mailbox, folder: Folder, entries: list[dict[str, Any]],
              snapshot: str, prefer: dict[str, str]) -> dict[str, Any]:
        size = int(prefer.get("odata.maxpagesize", DEFAULT_PAGE))
        base = f"{self.url}/v1.0/users/{quote(box.name)}/mailFolders/{folder.id}/messages/delta"
        page, rest = entries[:size], entries[size:]
        answer: dict[str, Any] = {"value": page}
        if rest:
            token = uuid.uuid4().hex
            self._pages[token] = (rest, snapshot)
            answer["@odata.nextLink"] = f"{base}?$skiptoken={token}"
        else:
            answer["@odata.deltaLink"] = f"{base}?$deltatoken={snapshot}"
        return answer

    @staticmethod
    def _message_json(item: StoredMessage, select: set[str], expand: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"@odata.type": "#microsoft.graph.message", "id": item.id}
        if "internetMessageId" in select:
            out["internetMessageId"] = item.internet_message_id
        if "parentFolderId" in select:
            out["parentFolderId"] = item.folder
        if expand:
            out["singleValueExtendedProperties"] = [
                {"id": SIZE_PROPERTY_ANSWERED, "value": str(len(item.mime))}
            ]
        return out

    def item(self, box: Mailbox, item_id: str) -> StoredMessage:
        with self.lock:
            if item_id in self._delete_on_fetch:
                self._delete_on_fetch.discard(item_id)
                if item_id in box.messages:
                    self.remove(box.name, item_id)
        item = box.messages.get(item_id)
        if item is None:
            # "Get message": a deleted item is 404 ErrorItemNotFound
            raise GraphError(404, "ErrorItemNotFound",
                             "The specified object was not found in the store.")
        return item

    def move(self, box: Mailbox, item_id: str, body: Any) -> dict[str, Any]:
        """REF + "message-move": JSON ``{"destinationId": id or well-known name}``;
        201 with the message. With immutable ids the id does not change
        (IMMUTABLE_REF: "the ID doesn't change when the item is moved")."""
        if not isinstance(body, dict) or set(body) != {"destinationId"}:
            raise bad("message: move takes exactly {\"destinationId\": ...}")
        self.counts["move"] += 1
        item = self.item(box, item_id)
        target = self._resolve_folder(box, str(body["destinationId"]))
        with self.lock:
            source = box.folders[item.folder]
            source.changes.append((next(self._seq), item.id, False))
            item.folder = target.id
            target.changes.append((next(self._seq), item.id, True))
        return {"@odata.type": "#microsoft.graph.message", "id": item.id,
                "parentFolderId": target.id}

    def delete(self, box: Mailbox, item_id: str) -> None:
        """REF + "message-delete": 204 No Content."""
        self.counts["delete"] += 1
        self.item(box, item_id)
        self.remove(box.name, item_id)

    def send_mail(self, box: Mailbox, body: bytes, content_type: str) -> None:
        """REF + "user-sendmail": with MIME, the body is the base64 MIME text and
        the content type ``text/plain``; 202 Accepted."""
        self.counts["sendMail"] += 1
        mime = self._taken_in(self._mime_of(body, content_type, "sendMail"))
        box.sent.append(mime)
        # the MIME form always saves to Sent Items (saveToSentItems is a property
        # of the JSON body only, and defaults to true)
        self.add_message(box.name, "sentitems", mime)

    def _taken_in(self, mime: bytes) -> bytes:
        """*mime* as Exchange keeps it: with ``rewrite_message_ids``, under a
        Message-ID of Exchange's own (see the attribute)."""
        if not self.rewrite_message_ids:
            return mime
        new = f"<{uuid.uuid4().hex}@exchange.fake>".encode()
        eol = b"\r\n" if b"\r\n" in mime[:2000] else b"\n"
        head, sep, rest = mime.partition(eol + eol)
        lines = [line for line in head.split(eol)
                 if not line.lower().startswith(b"message-id:")]
        return eol.join([*lines, b"Message-ID: " + new]) + sep + rest

    def _mime_of(self, body: bytes, content_type: str, operation: str) -> bytes:
        """A base64 MIME request body (REF + "user-sendmail", REF + "user-post-messages")."""
        if len(body) > MAX_REQUEST:
            # "Microsoft Graph service limits": 4 MB per request
            raise bad(f"The request is {len(body)} bytes; the limit is {MAX_REQUEST}.",
                      "ErrorRequestEntityTooLarge", 413)
        if content_type.split(";")[0].strip().lower() != "text/plain":
            raise bad(f"{operation} with MIME content takes Content-Type: text/plain",
                      "ErrorMimeContentInvalid")
        try:
            return base64.b64decode(body, validate=True)
        except ValueError:
            raise bad("The MIME content is not valid base64.",
                      "ErrorMimeContentInvalidBase64String") from None

    def create_draft(self, box: Mailbox, body: bytes, content_type: str) -> dict[str, Any]:
        """REF + "user-post-messages" ("Create message in MIME format"): base64
        MIME as text/plain; 201 Created with the message, saved in Drafts."""
        self.counts["createDraft"] += 1
        mime = self._taken_in(self._mime_of(body, content_type, "Create message"))
        item_id = self.add_message(box.name, "drafts", mime)
        answer: dict[str, Any] = {"@odata.type": "#microsoft.graph.message", "id": item_id,
                                  "isDraft": True}
        if not self.omit_created_message_id:
            answer["internetMessageId"] = box.messages[item_id].internet_message_id
        return answer

    def get_message(self, box: Mailbox, item_id: str, query: dict[str, str]) -> dict[str, Any]:
        """REF + "message-get": ``$select`` only (of the properties the fake has)."""
        _allow(query, {"$select"})
        self.counts["getMessage"] += 1
        select, _ = self._first_query({"$select": query.get("$select", "id")})
        return self._message_json(self.item(box, item_id), select, False)

    def update_message(self, box: Mailbox, item_id: str, body: Any) -> dict[str, Any]:
        """REF + "singlevaluelegacyextendedproperty-post-singlevalueextendedproperties":
        ``PATCH .../messages/{id}`` with ``{"singleValueExtendedProperties": [{id,
        value}]}`` creates them on an existing message; 200 with the message (not
        the properties). Ids follow EXTENDED_REF; other message properties are
        refused (postroom sets none)."""
        self.counts["updateMessage"] += 1
        if not isinstance(body, dict) or set(body) != {"singleValueExtendedProperties"}:
            raise bad("postroom only PATCHes singleValueExtendedProperties of a message.")
        properties = body["singleValueExtendedProperties"]
        if not isinstance(properties, list) or not properties:
            raise bad("singleValueExtendedProperties is a non-empty array.")
        item = self.item(box, item_id)
        for prop in properties:
            if not isinstance(prop, dict) or set(prop) != {"id", "value"} or not all(
                    isinstance(prop[k], str) for k in ("id", "value")):
                raise bad(f"An extended property is {{\"id\", \"value\"}} strings: {prop!r}")
            key = _extended_key(prop["id"])
            if key[1] == "Boolean" and prop["value"].lower() not in ("true", "false"):
                raise bad(f"A Boolean extended property is 'true' or 'false', not "
                          f"{prop['value']!r}.")
            if key[0] >= 0:
                item.extended[key] = prop["value"]
        return {"@odata.type": "#microsoft.graph.message", "id": item.id}

    def create_upload_session(self, box: Mailbox, item_id: str, body: Any) -> dict[str, Any]:
        """REF + "attachment-createuploadsession": ``{"AttachmentItem": {...}}``
        with attachmentType ``file``, name and size (LARGE_REF: 3 MB to 150 MB);
        201 with ``uploadUrl`` and ``nextExpectedRanges``."""
        self.counts["createUploadSession"] += 1
        item = self.item(box, item_id)
        drafts = self._well_known(box, "drafts")
        if drafts is None or item.folder != drafts.id:
            raise bad("Attachments are added to a draft.", "ErrorInvalidRequest")
        if not isinstance(body, dict) or set(body) != {"AttachmentItem"}:
            raise bad('The body is {"AttachmentItem": {...}}.')
        attachment = body["AttachmentItem"]
        if not isinstance(attachment, dict) or set(attachment) - ATTACHMENT_ITEM:
            raise bad(f"Unknown attachmentItem property in {attachment!r}.")
        if attachment.get("attachmentType") != "file" or not isinstance(
                attachment.get("name"), str):
            raise bad("attachmentItem needs attachmentType 'file' and a name.")
        size = attachment.get("size")
        if not isinstance(size, int) or not MIN_UPLOAD <= size <= MAX_UPLOAD:
            raise bad(f"An upload session takes {MIN_UPLOAD} to {MAX_UPLOAD} bytes, "
                      f"not {size!r}.")
        token = uuid.uuid4().hex
        self._uploads[token] = Upload(box.name, item_id, attachment)
        return {"uploadUrl": f"{self.url}/upload/{token}",
                "expirationDateTime": "2099-01-01T00:00:00Z", "nextExpectedRanges": ["0-"]}

    def upload(self, token: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """LARGE_REF step 2: ``PUT {uploadUrl}`` with ``Content-Range: bytes
        a-b/total`` and ``Content-Length``, ranges in order, each up to 4 MB,
        no Authorization header (the URL carries its own token); 200 with
        ``nextExpectedRanges`` until the last range, which answers 201."""
        upload = self._uploads.get(token)
        if upload is None or upload.done:
            raise GraphError(404, "ErrorItemNotFound", "The upload session is not known.")
        self.counts["uploadRange"] += 1
        failing, self._fail_upload = self._fail_upload, None
        if failing is not None:
            status, after = failing
            self.counts["uploadFailed"] += 1
            raise GraphError(status, {408: "RequestTimeout", 409: "Conflict",
                                      429: "TooManyRequests"}.get(status, "BadRequest"),
                             "The upload range failed (a test control).",
                             headers={"Retry-After": str(after)} if after is not None else {})
        if headers.get("Authorization"):
            raise bad("The uploadUrl carries its own token: no Authorization header.")
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", headers.get("Content-Range") or "")
        if match is None:
            raise bad(f"Bad Content-Range {headers.get('Content-Range')!r}.")
        first, last, total = (int(g) for g in match.groups())
        if total != upload.item["size"]:
            raise bad(f"Content-Range total {total} is not the session's size "
                      f"{upload.item['size']}.")
        if first != len(upload.data):
            raise bad(f"Range starts at {first}; the next expected is {len(upload.data)}-.")
        if last < first or last >= total or last - first + 1 != len(body):
            raise bad(f"Content-Range {first}-{last} does not match {len(body)} bytes.")
        if len(body) > MAX_RANGE:
            # REF + "attachment-createuploadsession": "up to 4 MB each time"
            raise bad(f"A range of {len(body)} bytes; each is up to {MAX_RANGE}.")
        upload.data.extend(body)
        if len(upload.data) < total:
            return 200, {"Content-Type": "application/json"}, _dumps(
                {"expirationDateTime": "2099-01-01T00:00:00Z",
                 "nextExpectedRanges": [f"{len(upload.data)}-"]})
        upload.done = True
        self._attached.setdefault(upload.message_id, []).append(upload)
        return 201, {"Location": f"{self.url}/v1.0/attachments/{token}"}, b""

    def send_draft(self, box: Mailbox, item_id: str, body: bytes) -> None:
        """REF + "message-send": ``POST .../messages/{id}/send``, no body; 202.
        The message (with its uploaded attachments) goes to Sent Items."""
        self.counts["sendDraft"] += 1
        if body:
            raise bad("Send message takes no request body.")
        item = self.item(box, item_id)
        drafts = self._well_known(box, "drafts")
        if drafts is None or item.folder != drafts.id:
            raise bad("Only a draft can be sent.", "ErrorInvalidRequest")
        item.mime = _with_attachments(item.mime, self._attached.pop(item_id, []))
        box.sent.append(item.mime)
        # [MS-OXOMSG] 2.2.3.8 PidTagDeleteAfterSubmit: a message marked so is
        # deleted once sent, not kept in Sent Items; otherwise message-send
        # saves it there (REF + "message-send"), and the Sent Items copy has
        # the draft's immutable id (IMMUTABLE_REF, "Immutable ID with sending
        # mail": create the draft, send it, get the message by the same id)
        if item.extended.get(DELETE_AFTER_SUBMIT, "").lower() == "true":
            self.remove(box.name, item_id)
        else:
            sent_items = self._well_known(box, "sentitems")
            assert sent_items is not None
            box.folders[item.folder].changes.append((next(self._seq), item.id, False))
            item.folder = sent_items.id
            sent_items.changes.append((next(self._seq), item.id, True))

    def list_messages(self, box: Mailbox, ref: str, query: dict[str, str]) -> dict[str, Any]:
        """REF + "mailfolder-list-messages": ``$filter=internetMessageId eq '<...>'``
        (the only filter postroom sends), ``$select``, ``$top``."""
        _allow(query, {"$filter", "$select", "$top"})
        self.counts["listMessages"] += 1
        folder = self._resolve_folder(box, ref)
        select, _ = self._first_query({"$select": query.get("$select", "id")})
        items = [m for m in box.messages.values() if m.folder == folder.id]
        wanted = query.get("$filter")
        if wanted is not None:
            match = re.fullmatch(r"internetMessageId eq '((?:[^']|'')*)'", wanted)
            if match is None:
                raise bad(f"Invalid filter clause: {wanted}")
            value = match.group(1).replace("''", "'")
            items = [m for m in items if m.internet_message_id == value]
        top = int(query.get("$top", "10"))
        return {"value": [self._message_json(m, select, False) for m in items[:top]]}

    def record(self, problem: str) -> None:
        with self.lock:
            self.problems.append(problem)


_TLS: dict[str, Any] = {}


def _tls_files(directory: Path) -> Any:
    """One test CA and certificate per process (RSA keys are slow to make);
    copied into *directory* so each fake's files are its own."""
    if "files" not in _TLS:
        _TLS["files"] = make_tls_files(Path(tempfile.mkdtemp(prefix="graph-fake-tls-")))
    shared = _TLS["files"]
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("ca_file", "cert_file", "key_file"):
        shutil.copy(getattr(shared, name), directory / getattr(shared, name).name)
    return type(shared)(*(directory / getattr(shared, n).name
                          for n in ("ca_file", "cert_file", "key_file")))


def _new_id() -> str:
    """An id shaped like Graph's (base64url of opaque bytes)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes * 3).decode().rstrip("=") + "AAA="


def _with_attachments(mime: bytes, uploads: list[Upload]) -> bytes:
    """The draft's MIME with the uploaded files as attachment parts."""
    if not uploads:
        return mime
    from email import message_from_bytes, policy
    from email.message import EmailMessage

    message = message_from_bytes(mime, policy=policy.SMTP)
    assert isinstance(message, EmailMessage)
    for upload in uploads:
        main, _, sub = str(upload.item.get("contentType") or
                           "application/octet-stream").partition("/")
        message.add_attachment(bytes(upload.data), maintype=main, subtype=sub,
                               filename=upload.item["name"])
    return message.as_bytes()


def _extended_key(value: str) -> tuple[int, str]:
    """(MAPI tag, type) of a single-value extended property id (EXTENDED_REF);
    a named property is (-1, type). A malformed id is a protocol error."""
    match = PROPTAG_ID.fullmatch(value)
    if match is not None:
        tag = int(match.group(2), 16)
        if not 0x0001 <= tag <= 0x7FFF:
            raise bad(f"The proptag form is for properties MAPI defines (0x0001-0x7FFF): "
                      f"{value!r}.")
        known = KNOWN_TAGS.get(tag)
        if known is not None and known != match.group(1):
            raise bad(f"Property 0x{tag:04X} is a {known}, not a {match.group(1)}.")
        return tag, match.group(1)
    match = NAMED_ID.fullmatch(value)
    if match is not None:
        return -1, match.group(1)
    raise bad(f"The extended property id {value!r} has none of the formats of "
              f"{EXTENDED_REF}.")


def _folder_json(folder: Folder) -> dict[str, Any]:
    return {"id": folder.id, "displayName": folder.name, "parentFolderId": folder.parent}


def _allow(query: dict[str, str], allowed: set[str]) -> None:
    unknown = set(query) - allowed
    if unknown:
        raise bad(f"Query option '{sorted(unknown)[0]}' is not allowed here.")


def _prefer(header: str | None) -> dict[str, str]:
    """The ``Prefer`` header's preferences, names lower-cased (RFC 7240)."""
    out: dict[str, str] = {}
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            out[name.strip().lower()] = value.strip()
    return out


def _immutable(prefer: dict[str, str]) -> bool:
    # IMMUTABLE_REF: ``Prefer: IdType="ImmutableId"``
    return prefer.get("idtype", "").strip('"').lower() == "immutableid"


class _Handler(BaseHTTPRequestHandler):
    graph: GraphFake
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _serve(self, method: str) -> None:
        graph = self.graph
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            if method == "PUT" and self.path.startswith("/upload/"):
                with graph.lock:
                    status, headers, payload = graph.upload(self.path[len("/upload/"):],
                                                            self.headers, body)
                self._answer(status, headers, payload)
                return
            throttled = graph._take_throttle(self.path)
            if throttled is not None:
                status, after = throttled
                graph.counts["throttled"] += 1
                # THROTTLING_REF: 429 Too Many Requests (or 503) with Retry-After
                raise GraphError(status, "TooManyRequests" if status == 429 else
                                 "ServiceUnavailable", "Application is over its request quota.",
                                 headers={"Retry-After": str(after)})
            self._authorize()
            status, headers, payload = self._dispatch(method, self.path, self.headers, body)
        except GraphError as error:
            if error.protocol:
                graph.record(f"{method} {self.path}: {error.message}")
            self._answer(error.status, {"Content-Type": "application/json", **error.headers},
                         error.body())
            return
        if isinstance(payload, _Cut):
            self._cut(payload.data)
            return
        if isinstance(payload, _Drop):
            self.close_connection = True
            self.connection.close()
            return
        self._answer(status, headers, payload)

    def _authorize(self) -> None:
        # Every Graph request carries "Authorization: Bearer {token}"
        # ("Use the Microsoft Graph API": headers); a missing or invalid one is
        # 401 InvalidAuthenticationToken
        auth = self.headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme != "Bearer" or not token:
            raise GraphError(401, "InvalidAuthenticationToken",
                             "Access token is empty.", protocol=True)
        if not self.graph.check_token(token.strip()):
            self.graph.counts["refused"] += 1
            raise GraphError(401, "InvalidAuthenticationToken",
                             "Lifetime validation failed, the token is expired.")

    def _dispatch(self, method: str, target: str, headers: Any, body: bytes
                  ) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(target)
        path = parts.path
        if not path.startswith("/v1.0/"):
            raise bad(f"Unsupported API version or path: {path}", "BadRequest")
        path = path[len("/v1.0"):]
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if len(query) != len(parse_qsl(parts.query, keep_blank_values=True)):
            raise bad("A query option was given twice.")
        if path == "/$batch":
            return self._batch(method, headers, body)
        return self._single(method, path, query, headers, body)

    def _single(self, method: str, path: str, query: dict[str, str], headers: Any,
                body: bytes) -> tuple[int, dict[str, str], Any]:
        graph = self.graph
        prefer = _prefer(headers.get("Prefer"))
        match = re.fullmatch(r"/users/([^/]+)(/.*)", path)
        if match is None:
            raise bad(f"Resource not found for the segment '{path}'.", "BadRequest")
        with graph.lock:
            box = graph._box(match.group(1))
        rest = match.group(2)
        json_type = {"Content-Type": "application/json"}
        if m := re.fullmatch(r"/mailFolders/([^/]+)", rest):
            _method(method, "GET")
            with graph.lock:
                return 200, json_type, _dumps(graph.get_folder(box, unquote(m.group(1)), query))
        if m := re.fullmatch(r"/mailFolders/([^/]+)/childFolders", rest):
            _method(method, "GET")
            with graph.lock:
                return 200, json_type, _dumps(graph.child_folders(box, unquote(m.group(1)), query))
        if m := re.fullmatch(r"/mailFolders/([^/]+)/messages", rest):
            _method(method, "GET")
            _need_immutable(prefer)
            with graph.lock:
                return 200, json_type, _dumps(graph.list_messages(box, unquote(m.group(1)),
                                                                  query))
        if m := re.fullmatch(r"/mailFolders/([^/]+)/messages/delta", rest):
            _method(method, "GET")
            _need_immutable(prefer)
            with graph.lock:
                return 200, json_type, _dumps(graph.delta(box, unquote(m.group(1)), query, prefer))
        if m := re.fullmatch(r"/messages/([^/]+)/\$value", rest):
            # "Get MIME content of a message" (https://learn.microsoft.com/graph/
            # outlook-get-mime-message): GET .../messages/{id}/$value, the MIME as it is
            _method(method, "GET")
            _need_immutable(prefer)
            _allow(query, set())
            graph.counts["value"] += 1
            with graph.lock:
                item = graph.item(box, unquote(m.group(1)))
                cut, graph._cut = graph._cut, False
                if graph._cut_items[item.id] > 0:
                    graph._cut_items[item.id] -= 1
                    cut = True
            if cut:
                graph.counts["cut"] += 1
                return 200, {}, _Cut(item.mime)
            return 200, {"Content-Type": "text/plain"}, item.mime
        if m := re.fullmatch(r"/messages/([^/$]+)", rest):
            _need_immutable(prefer)
            item_id = unquote(m.group(1))
            if method == "GET":
                with graph.lock:
                    return 200, json_type, _dumps(graph.get_message(box, item_id, query))
            if method == "PATCH":
                _allow(query, set())
                _json_type(headers.get("Content-Type"))
                try:
                    document = json.loads(body)
                except ValueError:
                    raise bad("The body is not JSON.") from None
                with graph.lock:
                    return 200, json_type, _dumps(graph.update_message(box, item_id, document))
            _method(method, "DELETE")
            _allow(query, set())
            if body:
                raise bad("Delete message takes no body.")
            with graph.lock:
                refused, graph._refuse_delete = graph._refuse_delete, False
                if refused:
                    raise GraphError(403, "ErrorAccessDenied",
                                     "Access is denied (a test control).")
                # REF + "message-delete": 204 No Content
                graph.delete(box, item_id)
            return 204, {}, b""
        if rest == "/messages":
            _method(method, "POST")
            _allow(query, set())
            with graph.lock:
                answer = graph.create_draft(box, body, headers.get("Content-Type") or "")
            return 201, json_type, _dumps(answer)
        if m := re.fullmatch(r"/messages/([^/]+)/attachments/createUploadSession", rest):
            _method(method, "POST")
            _allow(query, set())
            _json_type(headers.get("Content-Type"))
            try:
                document = json.loads(body)
            except ValueError:
                raise bad("The body is not JSON.") from None
            with graph.lock:
                answer = graph.create_upload_session(box, unquote(m.group(1)), document)
            return 201, json_type, _dumps(answer)
        if m := re.fullmatch(r"/messages/([^/]+)/send", rest):
            _method(method, "POST")
            _allow(query, set())
            with graph.lock:
                graph.send_draft(box, unquote(m.group(1)), body)
                dropped, graph._drop_send = graph._drop_send, False
            return 202, {}, _Drop() if dropped else b""
        if rest == "/sendMail":
            _method(method, "POST")
            _allow(query, set())
            with graph.lock:
                graph.send_mail(box, body, headers.get("Content-Type") or "")
            return 202, {}, b""
        raise bad(f"Resource not found for the segment '{rest}'.", "BadRequest")

    def _batch(self, method: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], Any]:
        """BATCH_REF: POST /$batch, JSON ``{"requests": [{id, method, url,
        headers?, body?}]}``, at most 20; each answered in ``responses`` with its
        own status (one failing does not fail the others)."""
        graph = self.graph
        _method(method, "POST")
        _json_type(headers.get("Content-Type"))
        graph.counts["batch"] += 1
        try:
            document = json.loads(body)
        except ValueError:
            raise bad("The batch body is not JSON.") from None
        if not isinstance(document, dict) or set(document) != {"requests"}:
            raise bad("A batch is {\"requests\": [...]}.")
        requests = document["requests"]
        if not isinstance(requests, list) or not 1 <= len(requests) <= MAX_BATCH:
            raise bad(f"A batch holds 1 to {MAX_BATCH} requests.")
        ids = [r.get("id") if isinstance(r, dict) else None for r in requests]
        if None in ids or len(set(ids)) != len(ids):
            raise bad("Each batch request needs a unique id.")
        responses = []
        for request in requests:
            responses.append(self._batch_one(request))
        return 200, {"Content-Type": "application/json"}, _dumps({"responses": responses})

    def _batch_one(self, request: dict[str, Any]) -> dict[str, Any]:
        graph = self.graph
        known = {"id", "method", "url", "headers", "body", "dependsOn"}
        try:
            if set(request) - known:
                raise bad(f"Unknown batch request property {sorted(set(request) - known)[0]}")
            method = str(request.get("method", ""))
            url = str(request.get("url", ""))
            sub_headers = {k.lower(): v for k, v in (request.get("headers") or {}).items()}
            if not url.startswith("/users/"):
                # BATCH_REF: the url is relative to the version, e.g. "/me/messages"
                raise bad(f"Batch request url must be relative: {url}")
            prefer = _prefer(sub_headers.get("prefer"))
            _need_immutable(prefer)
            parts = urlsplit(url)
            if parts.query:
                raise bad(f"Query option not allowed on {url}")
            match = re.fullmatch(r"/users/([^/]+)/messages/([^/]+)(/move)?", parts.path)
            if match is None:
                raise bad(f"Resource not found for the segment '{parts.path}'.")
            with graph.lock:
                box = graph._box(match.group(1))
                if match.group(3):
                    _method(method, "POST")
                    # BATCH_REF: a body needs a Content-Type header in the request
                    _json_type(sub_headers.get("content-type"))
                    answer = graph.move(box, unquote(match.group(2)), request.get("body"))
                    return {"id": request["id"], "status": 201, "body": answer}
                _method(method, "DELETE")
                if "body" in request:
                    raise bad("Delete message takes no body.")
                graph.delete(box, unquote(match.group(2)))
                return {"id": request["id"], "status": 204}
        except GraphError as error:
            if error.protocol:
                graph.record(f"$batch {request.get('method')} {request.get('url')}: "
                             f"{error.message}")
            return {"id": request.get("id"), "status": error.status,
                    "body": json.loads(error.body())}

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _cut(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True
        self.connection.close()


@dataclass
class _Cut:
    data: bytes


@dataclass
class _Drop:
    """No answer at all: the connection is closed."""


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _method(method: str, wanted: str) -> None:
    if method != wanted:
        raise bad(f"The {method} method is not allowed here ({wanted} is).",
                  "UnsupportedMethod", 405)


def _need_immutable(prefer: dict[str, str]) -> None:
    if not _immutable(prefer):
        # postroom's contract (IMMUTABLE_REF): items are addressed by immutable ids,
        # so every request that lists or names items asks for them
        raise bad('Prefer: IdType="ImmutableId" is missing (postroom addresses items by '
                  "immutable ids).", "MissingImmutableIdPreference")


def _json_type(value: str | None) -> None:
    if (value or "").split(";")[0].strip().lower() != "application/json":
        raise bad(f"Content-Type must be application/json, not {value!r}",
                  "UnsupportedMediaType", 415)


def introspecting(idp_url: str, ca_file: str, scope: str = "graph.microsoft.com") -> Callable[
    [str], bool
]:
    """A token validator asking the test IdP (tests/idp) whether a token is
    active: RFC 7662 introspection in its "auth" mode (the token as the bearer
    of ``GET /introspect``), and the token's scopes must name Graph."""
    import urllib.error
    import urllib.request

    context = ssl.create_default_context(cafile=ca_file)

    def validate(token: str) -> bool:
        request = urllib.request.Request(
            idp_url.rstrip("/") + "/introspect", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as answer:
                claims = json.loads(answer.read())
        except (urllib.error.URLError, ValueError):
            return False
        return bool(claims.get("active")) and scope in str(claims.get("scope", ""))

    return validate
