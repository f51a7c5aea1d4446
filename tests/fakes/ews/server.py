"""A strict contract fake of Exchange Web Services (SOAP over HTTPS, on loopback).

It implements exactly the operations the ``ews`` source sends, following the
EWS reference (Microsoft Learn, "EWS reference for Exchange") and [MS-OXWSCORE],
[MS-OXWSFOLD], [MS-OXWSSYNC], [MS-OXWSMSG], and streaming notifications of
[MS-OXWSNTIF] (Subscribe, GetStreamingEvents, Unsubscribe). Anything else is refused: an
unknown operation, an element the schema does not allow where it stands, a
missing ``RequestServerVersion`` SOAP header or a missing or wrong
``Authorization`` header is answered with a SOAP fault (HTTP 500) and recorded
in :attr:`EWSFake.protocol_errors`, so a test can assert that the client made
no protocol error. Tests seed the in-memory :class:`Mailbox` and steer the
fake with its controls (server busy, invalid sync state, a vanishing item,
no streaming, an expired subscription, the end of an open stream).
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import email.utils
import itertools
import os
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import spnego
from lxml import etree
from spnego.exceptions import SpnegoError

from tests.pki import TestCA, make_tls_files

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
PATH = "/EWS/Exchange.asmx"

#: RequestServerVersion Version values of the EWS schema (ExchangeVersionType)
VERSIONS = {
    "Exchange2007",
    "Exchange2007_SP1",
    "Exchange2010",
    "Exchange2010_SP1",
    "Exchange2010_SP2",
    "Exchange2013",
    "Exchange2013_SP1",
    "Exchange2015",
    "Exchange2016",
}
#: the SOAP header elements of the EWS schema the fake accepts
HEADERS = {"RequestServerVersion", "ExchangeImpersonation", "TimeZoneContext", "MailboxCulture"}
#: DistinguishedFolderIdNameType values the fake holds
WELL_KNOWN = ("root", "msgfolderroot", "sentitems", "inbox", "deleteditems", "drafts")
#: what an error SyncFolderItemsResponseMessage still holds (the schema's
#: SyncFolderItemsResponseMessageType: SyncState and IncludesLastItemInRange;
#: exchangelib 5.6 reads both before it looks at ResponseClass)
SYNC_ERROR = (
    "<m:SyncState></m:SyncState><m:IncludesLastItemInRange>true</m:IncludesLastItemInRange>"
)
#: NotificationEventTypeType values of the EWS schema (Subscribe's t:EventType)
EVENT_TYPES = {
    "CopiedEvent",
    "CreatedEvent",
    "DeletedEvent",
    "ModifiedEvent",
    "MovedEvent",
    "NewMailEvent",
    "FreeBusyChangedEvent",
}
#: XML parser that never resolves entities nor reads the network (long text
#: nodes allowed: MimeContent of a large message is one)
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


class Refused(Exception):
    """A request the EWS schema or protocol does not allow: a SOAP fault."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class Denied(Refused):
    """A well-formed request for something the account has no right to (a
    mailbox it may not impersonate or open): a SOAP fault, recorded in
    :attr:`EWSFake.denied`, not among the client's protocol errors."""


@dataclass
class Folder:
    id: str
    name: str
    parent: str | None
    items: list[str] = field(default_factory=list)


@dataclass
class Subscription:
    """A streaming subscription ([MS-OXWSNTIF] 3.1.4.3 Subscribe): the folders
    and event types it watches, and the events not yet streamed (the server
    keeps them for the next GetStreamingEvents while no stream is open)."""

    id: str
    folders: set[str]
    events: set[str]
    pending: list[str] = field(default_factory=list)
    #: open GetStreamingEvents connections on it
    streams: int = 0


@dataclass
class Mailbox:
    """The in-memory store: folders of items (their MIME bytes), and the
    creation order SyncFolderItems walks (its sync state is a position in it)."""

    folders: dict[str, Folder] = field(default_factory=dict)
    mime: dict[str, bytes] = field(default_factory=dict)
    #: per folder: every item id ever created in it, in order (the sync log)
    log: dict[str, list[str]] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    #: called with (folder id, item id) for each message delivered (the fake's
    #: subscriptions listen)
    listeners: list[Callable[[str, str], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        top = self.add_folder("root", None, "")
        root = self.add_folder("msgfolderroot", top.id, "Top of Information Store")
        self.add_folder("inbox", root.id, "Inbox")
        self.add_folder("deleteditems", root.id, "Deleted Items")
        self.add_folder("sentitems", root.id, "Sent Items")
        self.add_folder("drafts", root.id, "Drafts")

    def new_id(self, prefix: str) -> str:
        # Real ids are long base64 strings; these keep the same character set.
        return base64.b64encode(f"{prefix}-{next(self._ids):08d}".encode()).decode()

    def add_folder(self, well_known: str | None, parent: str | None, name: str) -> Folder:
        folder = Folder(id=self.new_id("folder"), name=name, parent=parent)
        self.folders[folder.id] = folder
        self.log[folder.id] = []
        if well_known:
            self.folders[well_known] = folder
        return folder

    def add(self, mime: bytes, folder: str = "inbox") -> str:
        """Deliver a message into *folder*; its item id."""
        item = self.new_id("item")
        self.mime[item] = mime
        target = self.folders[folder]
        target.items.append(item)
        self.log[target.id].append(item)
        for listener in list(self.listeners):
            listener(target.id, item)
        return item

    def remove(self, item: str) -> None:
        for folder in {f.id: f for f in self.folders.values()}.values():
            if item in folder.items:
                folder.items.remove(item)
        self.mime.pop(item, None)

    def child(self, parent: str, name: str) -> Folder | None:
        for folder in {f.id: f for f in self.folders.values()}.values():
            if folder.parent == parent and folder.name.lower() == name.lower():
                return folder
        return None


class EWSFake:
    """The HTTPS server, its store and its controls. Use as a context manager."""

    def __init__(
        self,
        tls: Path | TestCA,
        user: str = "agent@example.com",
        password: str = "s3cret",
        auth: str = "basic",
    ) -> None:
        """*tls*: the test CA's files, or a folder to make new ones in; *auth*:
        ``basic`` (Basic or Bearer) or ``ntlm`` (NTLM only, as an on-premises
        server with Basic switched off)."""
        self.tls = tls if isinstance(tls, TestCA) else make_tls_files(tls)
        assert auth in ("basic", "ntlm")
        self.auth = auth
        self._ntlm_file: str | None = None
        self._saved_ntlm_env: str | None = None
        self.user = user
        self.password = password
        #: bearer tokens the fake accepts (tests add and revoke them)
        self.tokens: set[str] = set()
        self.store = Mailbox()
        #: the SMTP addresses this store answers for (the user's; tests add shared ones)
        self.mailboxes = {user.lower()}
        self.lock = threading.Lock()
        #: every refused request: (operation, code, text)
        self.protocol_errors: list[tuple[str, str, str]] = []
        #: the addresses requests came from (a proxy connects from its own)
        self.clients: set[str] = set()
        #: requests per operation
        self.counts: dict[str, int] = {}
        #: answer the next N requests with ErrorServerBusy (BackOffMilliseconds below)
        self.busy = 0
        self.busy_back_off_ms = 3000
        #: the next SyncFolderItems with a SyncState answers ErrorInvalidSyncStateData
        self.invalid_sync_state = False
        #: operation -> how many of its next answers are cut off halfway
        self.cut: dict[str, int] = {}
        #: item ids deleted just before a GetItem asks for them
        self.vanish: set[str] = set()
        #: item id -> the ResponseCode the next GetItem of it answers with
        #: ([MS-OXWSCDATA] ResponseCodeType), e.g. ErrorAccessDenied
        self.item_errors: dict[str, str] = {}
        #: per message sent: (the account acting, the From address it was sent as)
        self.senders: list[tuple[str, str]] = []
        #: rights of the logged-in account (``user``), all denied unless granted:
        #: mailboxes it may impersonate (the ApplicationImpersonation role's scope)
        self.impersonation_rights: set[str] = set()
        #: mailboxes whose folders it may open as a delegate (Full Access)
        self.delegate_rights: set[str] = set()
        #: addresses it may send as (Send As / Send on Behalf)
        self.send_as_rights: set[str] = set()
        #: well-formed requests refused for want of a right: (operation, code, text)
        self.denied: list[tuple[str, str, str]] = []
        #: the InternetMessageId Exchange gives the next message it creates,
        #: instead of the one in its MIME (None: it keeps the MIME's)
        self.replace_message_id: str | None = None
        #: InternetMessageId of each item created by CreateItem
        self.message_ids: dict[str, str] = {}
        #: operation -> how many of its next answers are not XML (``garbage`` follows)
        self.malformed: dict[str, int] = {}
        self.garbage = b"<<not xml"
        #: operation -> how many of its next answers say Content-Encoding gzip
        #: and are not (the HTTP client fails while reading them)
        self.undecodable: dict[str, int] = {}
        #: per request thread: the mailbox the request acts as
        self._request = threading.local()
        #: states this server issued (an unknown one is invalid)
        self._states: dict[str, tuple[str, int]] = {}
        #: impersonated mailboxes seen
        self.impersonated: list[str] = []
        self.max_changes_seen: list[int] = []
        #: messages CreateItem sent: (MIME as received, MessageDisposition, recipients)
        self.sent: list[tuple[bytes, str, list[str]]] = []
        #: streaming notifications: subscriptions by id, guarded by :attr:`streams`
        self.subscriptions: dict[str, Subscription] = {}
        self.streams = threading.Condition()
        #: Subscribe answers this ResponseCode when set (a server without
        #: streaming notifications, e.g. Exchange 2007 or streaming turned off)
        self.refuse_streaming: str | None = None
        #: seconds per minute of GetStreamingEvents' ConnectionTimeout (tests shorten it)
        self.minute = 60.0
        #: subscription ids Unsubscribe ended
        self.unsubscribed: list[str] = []
        #: GetStreamingEvents connections open now
        self.open_streams = 0
        self._end_streams = 0  # bumped to end every open stream now
        self._closing = False
        self._subscription_ids = itertools.count(1)
        self.store.listeners.append(self._delivered)
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # --- lifecycle

    def __enter__(self) -> EWSFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake.handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        if self.auth == "ntlm":
            # NTLM authenticates a connection (the handshake's three legs and
            # what follows go over one): keep-alive needs HTTP/1.1
            Handler.protocol_version = "HTTP/1.1"
            self._start_ntlm()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.httpd is not None and self.thread is not None
        with self.streams:
            self._closing = True
            self.streams.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
        if self._ntlm_file is not None:
            if self._saved_ntlm_env is None:
                os.environ.pop("NTLM_USER_FILE", None)
            else:
                os.environ["NTLM_USER_FILE"] = self._saved_ntlm_env
            os.unlink(self._ntlm_file)
            self._ntlm_file = None

    def _start_ntlm(self) -> None:
        """pyspnego's NTLM acceptor checks the client's answer against the
        passwords of the file ``NTLM_USER_FILE`` names (``DOMAIN:USER:PASSWORD``
        lines; an empty domain for a UPN such as ``agent@example.com``). The
        variable is the process's: one NTLM fake at a time."""
        handle, path = tempfile.mkstemp(prefix="ews-ntlm-", suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(f":{self.user}:{self.password}\n")
        self._ntlm_file = path
        self._saved_ntlm_env = os.environ.get("NTLM_USER_FILE")
        os.environ["NTLM_USER_FILE"] = path

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"https://127.0.0.1:{self.httpd.server_address[1]}{PATH}"

    @property
    def ca_file(self) -> str:
        return str(self.tls.ca_file)

    # --- HTTP

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.clients.add(request.client_address[0])
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length)
        if len(body) < length:
            # the client went away mid-request (a SIGKILL test): nothing to answer,
            # and no protocol error of the client's (a whole empty body still is)
            with self.lock:
                self.counts["cut"] = self.counts.get("cut", 0) + 1
            with self.streams:
                self.streams.notify_all()  # for wait_until
            request.close_connection = True
            return
        operation = "?"
        try:
            if request.path != PATH:
                raise Refused("ErrorInvalidRequest", f"no EWS endpoint at {request.path}")
            if self.auth == "ntlm":
                if not self._ntlm(request):
                    return
            elif not self._authorised(request.headers.get("Authorization")):
                # [MS-OXWSCORE] relies on HTTP authentication: 401 before any SOAP
                with self.lock:
                    self.counts["401"] = self.counts.get("401", 0) + 1
                self._send(request, 401, b"", {"WWW-Authenticate": 'Basic realm="ews"'})
                return
            envelope = etree.fromstring(body, PARSER)
            operation, op = self._operation(envelope)
            if operation == "GetStreamingEvents":
                with self.lock:
                    self.counts[operation] = self.counts.get(operation, 0) + 1
                self._stream(request, op)
                return
            with self.lock:
                self.counts[operation] = self.counts.get(operation, 0) + 1
                if self.busy > 0:
                    self.busy -= 1
                    self._send(request, 500, self._busy_fault())
                    return
                if self.malformed.get(operation, 0):
                    self.malformed[operation] -= 1
                    self._send(request, 200, b'<?xml version="1.0"?>\n' + self.garbage)
                    return
                if self.undecodable.get(operation, 0):
                    self.undecodable[operation] -= 1
                    self._send(request, 200, b"not gzip", {"Content-Encoding": "gzip"})
                    return
                answer = getattr(self, f"op_{operation}")(op)
                cut = self.cut.get(operation, 0)
                if cut:
                    self.cut[operation] = cut - 1
            reply = self._envelope(answer)
            if cut:  # announce the whole answer, send half, drop the connection
                request.send_response(200)
                request.send_header("Content-Type", "text/xml; charset=utf-8")
                request.send_header("Content-Length", str(len(reply)))
                request.end_headers()
                request.wfile.write(reply[: len(reply) // 2])
                request.wfile.flush()
                request.close_connection = True
                request.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send(request, 200, reply)
            with self.streams:
                self.streams.notify_all()  # wait_until conditions may hold now
        except (Refused, etree.XMLSyntaxError) as exc:
            code = exc.code if isinstance(exc, Refused) else "ErrorSchemaValidation"
            text = exc.text if isinstance(exc, Refused) else str(exc)
            with self.lock:
                errors = self.denied if isinstance(exc, Denied) else self.protocol_errors
                errors.append((operation, code, text))
            self._send(request, 500, self._fault(code, text))

    def _authorised(self, header: str | None) -> bool:
        """Basic with the fake's user and password, or Bearer with a token it accepts."""
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                return False
            return user == self.user and password == self.password
        if scheme.lower() == "bearer":
            return value.strip() in self.tokens
        return False

    def _ntlm(self, request: Any) -> bool:
        """NTLM over HTTP ([MS-NTHT] 2: ``Authorization: NTLM <base64>``, the
        server's challenge in ``WWW-Authenticate``); pyspnego's acceptor checks
        the answer, no crypto here. A connection that completed the handshake
        stays authenticated (IIS's Windows authentication is per connection).
        Anything but NTLM is answered 401 offering NTLM only."""
        header = request.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if not header and getattr(request, "ntlm_user", None):
            return True
        answer: bytes | None = None
        if scheme.lower() == "ntlm" and token:
            try:
                data = base64.b64decode(token, validate=True)
                context = getattr(request, "ntlm_context", None)
                if context is None or data[8:12] == b"\x01\x00\x00\x00":  # NEGOTIATE
                    context = spnego.server(protocol="ntlm")
                    request.ntlm_context = context
                answer = context.step(data)
                if context.complete:
                    request.ntlm_user = context.client_principal
                    request.ntlm_context = None
                    return True
            except (ValueError, SpnegoError) as exc:
                request.ntlm_context = None
                answer = None
                with self.lock:
                    self.denied.append(("auth", "401", f"NTLM refused: {type(exc).__name__}"))
        elif header:
            with self.lock:
                self.denied.append(("auth", "401", f"{scheme} to an NTLM-only server"))
        with self.lock:
            self.counts["401"] = self.counts.get("401", 0) + 1
        offer = "NTLM " + base64.b64encode(answer).decode() if answer else "NTLM"
        self._send(request, 401, b"", {"WWW-Authenticate": offer})
        return False

    @staticmethod
    def _send(
        request: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        request.send_response(status)
        request.send_header("Content-Type", "text/xml; charset=utf-8")
        request.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)

    # --- SOAP

    def _operation(self, envelope: Any) -> tuple[str, Any]:
        if envelope.tag != f"{{{SOAP}}}Envelope":
            raise Refused(
                "ErrorSchemaValidation", f"root element {envelope.tag}, not soap:Envelope"
            )
        header = envelope.find(f"{{{SOAP}}}Header")
        body = envelope.find(f"{{{SOAP}}}Body")
        if header is None or body is None:
            raise Refused("ErrorSchemaValidation", "soap:Header and soap:Body are required")
        version = None
        impersonated = None
        for child in header:
            local = etree.QName(child).localname
            if etree.QName(child).namespace != T or local not in HEADERS:
                raise Refused("ErrorSchemaValidation", f"unknown SOAP header {child.tag}")
            if local == "RequestServerVersion":
                version = child.get("Version")
            if local == "ExchangeImpersonation":
                address = child.findtext(f"{{{T}}}ConnectingSID/{{{T}}}PrimarySmtpAddress")
                if not address:
                    raise Refused("ErrorSchemaValidation", "ExchangeImpersonation without SID")
                impersonated = address.lower()
                self.impersonated.append(address)
        # [MS-OXWSCDATA] 2.2.3.9: RequestServerVersion is required by every operation
        if version not in VERSIONS:
            raise Refused("ErrorInvalidServerVersion", f"RequestServerVersion {version!r}")
        ops = list(body)
        if len(ops) != 1 or etree.QName(ops[0]).namespace != M:
            raise Refused("ErrorSchemaValidation", "soap:Body must hold one EWS operation")
        name = etree.QName(ops[0]).localname
        if not hasattr(self, f"op_{name}") and name != "GetStreamingEvents":
            raise Refused("ErrorInvalidRequest", f"operation {name} is not implemented")
        self._request.impersonating = impersonated is not None
        self._request.acting = impersonated or self.user.lower()
        if impersonated is not None:
            # "ExchangeImpersonation" (EWS reference): the caller needs the
            # impersonation right on the mailbox, else the request fails with
            # ErrorImpersonateUserDenied; an address without a mailbox is
            # ErrorNonExistentMailbox ("The SMTP address has no mailbox
            # associated with it.")
            if impersonated not in self.mailboxes:
                raise Denied(
                    "ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it."
                )
            if impersonated not in self.impersonation_rights:
                raise Denied(
                    "ErrorImpersonateUserDenied",
                    "The account does not have permission to impersonate the requested user.",
                )
        return name, ops[0]

    def _may_open(self, mailbox: str) -> None:
        """Folders of *mailbox*: the acting account's own, or, without
        impersonation, one it is a delegate of ("Delegate access and EWS in
        Exchange": folder permissions granted to the delegate); else
        ErrorAccessDenied, or ErrorNonExistentMailbox for no such mailbox."""
        mailbox = mailbox.lower()
        if mailbox not in self.mailboxes:
            raise Denied(
                "ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it."
            )
        if mailbox == self._request.acting:
            return
        if self._request.impersonating or mailbox not in self.delegate_rights:
            raise Denied("ErrorAccessDenied", "Access is denied. Check credentials and try again.")

    def _may_send_as(self, address: str) -> bool:
        """Whether the acting account may send with *address* in From: its own,
        or one it has Send As / Send on Behalf rights on (without impersonation;
        "Delegate access and EWS in Exchange"); Exchange answers
        ErrorSendAsDenied otherwise."""
        address = address.lower()
        if address == self._request.acting:
            return True
        return not self._request.impersonating and address in self.send_as_rights

    @staticmethod
    def _envelope(inner: str) -> bytes:
        return (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<s:Envelope xmlns:s="{SOAP}"><s:Header>'
            f'<h:ServerVersionInfo xmlns:h="{T}" MajorVersion="15" MinorVersion="1" '
            'MajorBuildNumber="2507" MinorBuildNumber="6" Version="V2017_07_11"/>'
            f'</s:Header><s:Body xmlns:m="{M}" xmlns:t="{T}">{inner}</s:Body></s:Envelope>'
        ).encode()

    def _fault(self, code: str, text: str, detail: str = "") -> bytes:
        # "EWS SOAP fault": faultcode a:<ResponseCode>, detail with ResponseCode/Message
        return (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<s:Envelope xmlns:s="{SOAP}"><s:Body><s:Fault>'
            f'<faultcode xmlns:a="{T}">a:{code}</faultcode>'
            f"<faultstring>{escape(text)}</faultstring><detail>"
            f'<e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">{code}</e:ResponseCode>'
            f'<e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">{escape(text)}</e:Message>{detail}'
            "</detail></s:Fault></s:Body></s:Envelope>"
        ).encode()

    def _busy_fault(self) -> bytes:
        # "ErrorServerBusy" (EWS throttling in Exchange): BackOffMilliseconds in MessageXml
        detail = (
            f'<t:MessageXml xmlns:t="{T}"><t:Value Name="BackOffMilliseconds">'
            f"{self.busy_back_off_ms}</t:Value></t:MessageXml>"
        )
        return self._fault(
            "ErrorServerBusy", "The server cannot service this request right now.", detail
        )

    @staticmethod
    def _messages(op: str, parts: list[str]) -> str:
        return (
            f"<m:{op}Response><m:ResponseMessages>{''.join(parts)}"
            f"</m:ResponseMessages></m:{op}Response>"
        )

    @staticmethod
    def _ok(op: str, inner: str) -> str:
        return (
            f'<m:{op}ResponseMessage ResponseClass="Success"><m:ResponseCode>NoError'
            f"</m:ResponseCode>{inner}</m:{op}ResponseMessage>"
        )

    @staticmethod
    def _error(op: str, code: str, text: str, extra: str = "") -> str:
        return (
            f'<m:{op}ResponseMessage ResponseClass="Error"><m:MessageText>{escape(text)}'
            f"</m:MessageText><m:ResponseCode>{code}</m:ResponseCode>"
            f"<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>{extra}</m:{op}ResponseMessage>"
        )

    @staticmethod
    def _children(op: Any, allowed: dict[str, bool]) -> dict[str, Any]:
        """*op*'s child elements by local name; *allowed* maps each permitted
        name to whether it is required. Anything else is a schema error."""
        found: dict[str, Any] = {}
        for child in op:
            if not isinstance(child.tag, str):
                continue
            local = etree.QName(child).localname
            if etree.QName(child).namespace != M or local not in allowed or local in found:
                raise Refused(
                    "ErrorSchemaValidation",
                    f"element {child.tag} not allowed in {etree.QName(op).localname}",
                )
            found[local] = child
        for name, required in allowed.items():
            if required and name not in found:
                raise Refused(
                    "ErrorSchemaValidation",
                    f"{etree.QName(op).localname} needs m:{name}",
                )
        return found

    def _folder_ref(self, element: Any) -> Folder | None:
        """A t:FolderId or t:DistinguishedFolderId, resolved (None: not found)."""
        local = etree.QName(element).localname
        if etree.QName(element).namespace != T:
            raise Refused("ErrorSchemaValidation", f"{element.tag} is not a folder id")
        if local == "DistinguishedFolderId":
            name = element.get("Id")
            if name not in WELL_KNOWN:
                return None
            mailbox = element.findtext(f"{{{T}}}Mailbox/{{{T}}}EmailAddress")
            if mailbox is not None:
                self._may_open(mailbox)  # ErrorNonExistentMailbox, ErrorAccessDenied
            return self.store.folders[name]
        if local == "FolderId":
            if not element.get("Id"):
                raise Refused("ErrorSchemaValidation", "t:FolderId needs Id")
            return self.store.folders.get(element.get("Id"))
        raise Refused("ErrorSchemaValidation", f"{element.tag} is not a folder id")

    @staticmethod
    def _folder_xml(folder: Folder, store: Mailbox) -> str:
        children = sum(
            1 for f in {x.id: x for x in store.folders.values()}.values() if f.parent == folder.id
        )
        parent = f'<t:ParentFolderId Id="{folder.parent}" ChangeKey="ck"/>' if folder.parent else ""
        return (
            f'<t:Folder><t:FolderId Id="{folder.id}" ChangeKey="ck"/>{parent}'
            f"<t:FolderClass>IPF.Note</t:FolderClass>"
            f"<t:DisplayName>{escape(folder.name)}</t:DisplayName>"
            f"<t:TotalCount>{len(folder.items)}</t:TotalCount>"
            f"<t:ChildFolderCount>{children}</t:ChildFolderCount>"
            f"<t:UnreadCount>0</t:UnreadCount></t:Folder>"
        )

    @staticmethod
    def _item_ids(element: Any) -> list[str]:
        ids = []
        for child in element:
            if etree.QName(child).namespace != T or etree.QName(child).localname != "ItemId":
                raise Refused("ErrorSchemaValidation", f"{child.tag} in ItemIds")
            if not child.get("Id"):
                raise Refused("ErrorSchemaValidation", "t:ItemId needs Id")
            ids.append(child.get("Id"))
        if not ids:
            raise Refused("ErrorSchemaValidation", "ItemIds is empty")
        return ids

    @staticmethod
    def _shape(element: Any) -> set[str]:
        base = element.findtext(f"{{{T}}}BaseShape")
        if base not in ("IdOnly", "Default", "AllProperties"):
            raise Refused("ErrorSchemaValidation", f"BaseShape {base!r}")
        extra = element.find(f"{{{T}}}AdditionalProperties")
        fields = set()
        if extra is not None:
            for uri in extra:
                if etree.QName(uri).localname != "FieldURI" or not uri.get("FieldURI"):
                    raise Refused("ErrorSchemaValidation", f"{uri.tag} in AdditionalProperties")
                fields.add(uri.get("FieldURI"))
        return fields

    # --- operations ("EWS operations in Exchange")

    def op_GetFolder(self, op: Any) -> str:
        # "GetFolder operation": FolderShape, FolderIds
        parts = self._children(op, {"FolderShape": True, "FolderIds": True})
        self._shape(parts["FolderShape"])
        answers = []
        for ref in parts["FolderIds"]:
            folder = self._folder_ref(ref)
            if folder is None:
                answers.append(
                    self._error(
                        "GetFolder",
                        "ErrorFolderNotFound",
                        "The specified folder could not be found in the store.",
                    )
                )
            else:
                answers.append(
                    self._ok(
                        "GetFolder",
                        f"<m:Folders>{self._folder_xml(folder, self.store)}</m:Folders>",
                    )
                )
        return self._messages("GetFolder", answers)

    def op_FindFolder(self, op: Any) -> str:
        # "FindFolder operation": Traversal Shallow, FolderShape, ParentFolderIds
        if op.get("Traversal") not in ("Shallow", "Deep"):
            raise Refused("ErrorSchemaValidation", "FindFolder needs Traversal")
        parts = self._children(
            op,
            {
                "FolderShape": True,
                "IndexedPageFolderView": False,
                "FractionalPageFolderView": False,
                "Restriction": False,
                "ParentFolderIds": True,
            },
        )
        self._shape(parts["FolderShape"])
        answers = []
        unique = {f.id: f for f in self.store.folders.values()}.values()
        for ref in parts["ParentFolderIds"]:
            parent = self._folder_ref(ref)
            if parent is None:
                answers.append(self._error("FindFolder", "ErrorFolderNotFound", "not found"))
                continue
            found = [f for f in unique if f.parent == parent.id]
            if op.get("Traversal") == "Deep":  # every descendant, parents first
                for folder in found:
                    found.extend(f for f in unique if f.parent == folder.id)
            xml = "".join(self._folder_xml(f, self.store) for f in found)
            answers.append(
                self._ok(
                    "FindFolder",
                    f'<m:RootFolder IndexedPagingOffset="{len(found)}" '
                    f'TotalItemsInView="{len(found)}" IncludesLastItemInRange="true">'
                    f"<t:Folders>{xml}</t:Folders></m:RootFolder>",
                )
            )
        return self._messages("FindFolder", answers)

    def op_SyncFolderItems(self, op: Any) -> str:
        # "SyncFolderItems operation" / [MS-OXWSSYNC] 3.1.4.2: ItemShape, SyncFolderId,
        # SyncState (optional: from the start), Ignore, MaxChangesReturned (1..512), SyncScope
        parts = self._children(
            op,
            {
                "ItemShape": True,
                "SyncFolderId": True,
                "SyncState": False,
                "Ignore": False,
                "MaxChangesReturned": True,
                "SyncScope": False,
            },
        )
        fields = self._shape(parts["ItemShape"])
        refs = list(parts["SyncFolderId"])
        if len(refs) != 1:
            raise Refused("ErrorSchemaValidation", "SyncFolderId holds one folder id")
        folder = self._folder_ref(refs[0])
        try:
            limit = int(parts["MaxChangesReturned"].text)
        except (TypeError, ValueError):
            raise Refused("ErrorSchemaValidation", "MaxChangesReturned is not a number") from None
        if not 1 <= limit <= 512:
            raise Refused("ErrorSchemaValidation", "MaxChangesReturned must be 1 to 512")
        self.max_changes_seen.append(limit)
        if folder is None:
            return self._messages(
                "SyncFolderItems",
                [
                    self._error(
                        "SyncFolderItems", "ErrorFolderNotFound", "folder not found", SYNC_ERROR
                    )
                ],
            )
        position = 0
        state = parts.get("SyncState")
        if state is not None and state.text:
            known = self._states.get(state.text)
            if self.invalid_sync_state or known is None or known[0] != folder.id:
                self.invalid_sync_state = False
                # "ErrorInvalidSyncStateData": the client must sync again from no state
                return self._messages(
                    "SyncFolderItems",
                    [
                        self._error(
                            "SyncFolderItems",
                            "ErrorInvalidSyncStateData",
                            "Synchronization state data is corrupt or otherwise invalid.",
                            SYNC_ERROR,
                        )
                    ],
                )
            position = known[1]
        log = self.store.log[folder.id]
        changes = []
        count = 0
        while position < len(log) and count < limit:
            item = log[position]
            position += 1
            if item not in folder.items:
                continue  # created and gone again since the state: no change to report
            size = f"<t:Size>{len(self.store.mime[item])}</t:Size>" if "item:Size" in fields else ""
            changes.append(
                f'<t:Create><t:Message><t:ItemId Id="{item}" ChangeKey="ck"/>{size}'
                "</t:Message></t:Create>"
            )
            count += 1
        token = base64.b64encode(f"state:{folder.id}:{position}".encode()).decode()
        self._states[token] = (folder.id, position)
        last = "true" if position >= len(log) else "false"
        return self._messages(
            "SyncFolderItems",
            [
                self._ok(
                    "SyncFolderItems",
                    f"<m:SyncState>{token}</m:SyncState><m:IncludesLastItemInRange>{last}"
                    f"</m:IncludesLastItemInRange><m:Changes>{''.join(changes)}</m:Changes>",
                )
            ],
        )

    def op_GetItem(self, op: Any) -> str:
        # "GetItem operation (email message)": ItemShape (MimeContent asked as
        # item:MimeContent), ItemIds; a missing item is ErrorItemNotFound
        parts = self._children(op, {"ItemShape": True, "ItemIds": True})
        fields = self._shape(parts["ItemShape"])
        answers = []
        for item in self._item_ids(parts["ItemIds"]):
            if item in self.vanish:
                self.vanish.discard(item)
                self.store.remove(item)
            code = self.item_errors.pop(item, None)
            if code is not None:
                answers.append(self._error("GetItem", code, f"{code} (a test control)"))
                continue
            mime = self.store.mime.get(item)
            if mime is None:
                answers.append(
                    self._error(
                        "GetItem",
                        "ErrorItemNotFound",
                        "The specified object was not found in the store.",
                    )
                )
                continue
            # "MimeContent": base64 of the RFC 5322 bytes, CharacterSet attribute
            content = (
                f'<t:MimeContent CharacterSet="UTF-8">{base64.b64encode(mime).decode()}'
                "</t:MimeContent>"
                if "item:MimeContent" in fields
                else ""
            )
            # "InternetMessageId" (message:InternetMessageId), after ItemId in MessageType
            if "message:InternetMessageId" in fields:
                mid = self.message_ids.get(item) or self._message_id_of(mime)
                content += f"<t:InternetMessageId>{escape(mid)}</t:InternetMessageId>"
            answers.append(
                self._ok(
                    "GetItem",
                    f'<m:Items><t:Message><t:ItemId Id="{item}" '
                    f'ChangeKey="ck"/>{content}</t:Message></m:Items>',
                )
            )
        return self._messages("GetItem", answers)

    def op_MoveItem(self, op: Any) -> str:
        # "MoveItem operation": ToFolderId, ItemIds, ReturnNewItemIds; the item gets a new id
        parts = self._children(op, {"ToFolderId": True, "ItemIds": True, "ReturnNewItemIds": False})
        refs = list(parts["ToFolderId"])
        target = self._folder_ref(refs[0]) if len(refs) == 1 else None
        answers = []
        for item in self._item_ids(parts["ItemIds"]):
            if target is None or item not in self.store.mime:
                code = "ErrorToFolderNotFound" if target is None else "ErrorItemNotFound"
                answers.append(self._error("MoveItem", code, "not found"))
                continue
            mime = self.store.mime[item]
            self.store.remove(item)
            new = self.store.new_id("item")
            self.store.mime[new] = mime
            target.items.append(new)
            self.store.log[target.id].append(new)
            answers.append(
                self._ok(
                    "MoveItem",
                    f'<m:Items><t:Message><t:ItemId Id="{new}" '
                    'ChangeKey="ck"/></t:Message></m:Items>',
                )
            )
        return self._messages("MoveItem", answers)

    def op_DeleteItem(self, op: Any) -> str:
        # "DeleteItem operation": DeleteType HardDelete | SoftDelete | MoveToDeletedItems
        delete_type = op.get("DeleteType")
        if delete_type not in ("HardDelete", "SoftDelete", "MoveToDeletedItems"):
            raise Refused("ErrorSchemaValidation", f"DeleteType {delete_type!r}")
        parts = self._children(op, {"ItemIds": True})
        answers = []
        for item in self._item_ids(parts["ItemIds"]):
            if item not in self.store.mime:
                answers.append(self._error("DeleteItem", "ErrorItemNotFound", "not found"))
                continue
            self.store.remove(item)
            answers.append(self._ok("DeleteItem", ""))
        return self._messages("DeleteItem", answers)

    def op_SendItem(self, op: Any) -> str:
        # "SendItem operation" / [MS-OXWSMSG] 3.1.4.6: SaveItemToFolder
        # (required): true saves the sent item to SavedItemFolderId, or Sent
        # Items without it; false saves nothing, and with a SavedItemFolderId
        # is ErrorInvalidSendItemSaveSettings ("SendItem" element). The draft
        # leaves the folder it was saved in.
        flag = op.get("SaveItemToFolder")
        if flag not in ("true", "false", "1", "0"):
            raise Refused("ErrorSchemaValidation", f"SendItem SaveItemToFolder {flag!r}")
        save = flag in ("true", "1")
        parts = self._children(op, {"ItemIds": True, "SavedItemFolderId": False})
        items = self._item_ids(parts["ItemIds"])
        if "SavedItemFolderId" in parts and not save:
            return self._messages(
                "SendItem",
                [
                    self._error(
                        "SendItem",
                        "ErrorInvalidSendItemSaveSettings",
                        "SavedItemFolderId with SaveItemToFolder false.",
                    )
                    for _ in items
                ],
            )
        saved = None
        if save:
            refs = list(parts["SavedItemFolderId"]) if "SavedItemFolderId" in parts else []
            if len(refs) > 1:
                raise Refused("ErrorSchemaValidation", "SavedItemFolderId holds one folder id")
            saved = self._folder_ref(refs[0]) if refs else self.store.folders["sentitems"]
            if saved is None:
                raise Refused("ErrorSchemaValidation", "SavedItemFolderId: no such folder")
        answers = []
        for item in items:
            mime = self.store.mime.get(item)
            if mime is None:
                answers.append(
                    self._error(
                        "SendItem",
                        "ErrorItemNotFound",
                        "The specified object was not found in the store.",
                    )
                )
                continue
            problem = self._submit(mime, "SendItem", saved)
            if problem is not None:
                answers.append(self._error("SendItem", *problem))
                continue
            self.store.remove(item)
            answers.append(self._ok("SendItem", ""))
        return self._messages("SendItem", answers)

    def _submit(self, mime: bytes, how: str, saved: Folder | None) -> tuple[str, str] | None:
        """Send *mime* as the acting account, a copy into *saved*; or the
        ResponseCode and MessageText refusing it."""
        parsed = email.message_from_bytes(mime, policy=email.policy.compat32)
        senders = email.utils.getaddresses(parsed.get_all("From", []))
        sender = senders[0][1] if senders else self._request.acting
        if not self._may_send_as(sender):
            self.denied.append((how, "ErrorSendAsDenied", sender))
            return (
                "ErrorSendAsDenied",
                "The user account which was used to submit this request does not have the "
                "right to send mail on behalf of the specified sending account.",
            )
        recipients = [
            address
            for header in ("To", "Cc", "Bcc")
            for _name, address in email.utils.getaddresses(parsed.get_all(header, []))
        ]
        if not recipients:
            return ("ErrorInvalidRecipients", "At least one recipient is required.")
        self.sent.append((mime, how, recipients))
        self.senders.append((self._request.acting, sender.lower()))
        if saved is not None:
            copy = self.store.new_id("item")
            self.store.mime[copy] = mime
            saved.items.append(copy)
            self.store.log[saved.id].append(copy)
            self.message_ids[copy] = self._message_id_of(mime)
        return None

    def _internet_message_id(self, mime: bytes) -> bytes:
        """*mime* as Exchange stores it: with :attr:`replace_message_id` (a
        control) its Message-ID field is replaced; without a Message-ID one is
        added ("InternetMessageId": the item's RFC 5322 Message-ID)."""
        new = self.replace_message_id
        head, sep, body = mime.partition(b"\r\n\r\n")
        lines = re.split(rb"\r\n(?![ \t])", head)
        kept = [line for line in lines if not line.lower().startswith(b"message-id:")]
        if new is None and len(kept) < len(lines):
            return mime
        value = new or f"<{self.store.new_id('mid')}@fake.exchange.test>"
        self.replace_message_id = None
        return b"\r\n".join([*kept, f"Message-ID: {value}".encode()]) + sep + body

    @staticmethod
    def _message_id_of(mime: bytes) -> str:
        parsed = email.message_from_bytes(mime, policy=email.policy.compat32)
        return str(parsed.get("Message-ID", "")).strip()

    def op_CreateItem(self, op: Any) -> str:
        # "CreateItem operation (email message)" / [MS-OXWSMSG] 3.1.4.2:
        # MessageDisposition SaveOnly | SendOnly | SendAndSaveCopy;
        # SavedItemFolderId only with SendAndSaveCopy or SaveOnly (SaveOnly
        # without it saves to Drafts); Items/t:Message with t:MimeContent
        # (base64). Exchange delivers to the To, Cc and Bcc of the MIME
        # ("MimeContent"); a SaveOnly answer carries the new item's ItemId, a
        # send answers an empty Items.
        disposition = op.get("MessageDisposition")
        if disposition not in ("SaveOnly", "SendOnly", "SendAndSaveCopy"):
            raise Refused("ErrorSchemaValidation", f"MessageDisposition {disposition!r}")
        parts = self._children(op, {"SavedItemFolderId": False, "Items": True})
        saved = None
        if "SavedItemFolderId" in parts:
            if disposition == "SendOnly":
                raise Refused("ErrorInvalidRequest", "SavedItemFolderId with SendOnly")
            refs = list(parts["SavedItemFolderId"])
            saved = self._folder_ref(refs[0]) if len(refs) == 1 else None
            if saved is None:
                raise Refused("ErrorSchemaValidation", "SavedItemFolderId: no such folder")
        elif disposition == "SaveOnly":
            saved = self.store.folders["drafts"]
        elif disposition == "SendAndSaveCopy":
            saved = self.store.folders["sentitems"]
        answers = []
        for item in parts["Items"]:
            if etree.QName(item).namespace != T or etree.QName(item).localname != "Message":
                raise Refused("ErrorSchemaValidation", f"{item.tag} in Items")
            content = item.find(f"{{{T}}}MimeContent")
            if content is None or not (content.text or "").strip():
                raise Refused("ErrorSchemaValidation", "Message without MimeContent")
            mime = self._internet_message_id(base64.b64decode(content.text, validate=True))
            if disposition == "SaveOnly":
                assert saved is not None
                new = self.store.new_id("item")
                self.store.mime[new] = mime
                saved.items.append(new)
                self.store.log[saved.id].append(new)
                self.message_ids[new] = self._message_id_of(mime)
                answers.append(
                    self._ok(
                        "CreateItem",
                        f'<m:Items><t:Message><t:ItemId Id="{new}" ChangeKey="ck"/>'
                        "</t:Message></m:Items>",
                    )
                )
                continue
            problem = self._submit(mime, disposition, saved)
            if problem is not None:
                answers.append(self._error("CreateItem", *problem))
                continue
            answers.append(self._ok("CreateItem", "<m:Items/>"))
        return self._messages("CreateItem", answers)

    # --- streaming notifications ([MS-OXWSNTIF]; "Streaming notifications on
    # Exchange mailbox events")

    def _delivered(self, folder: str, item: str) -> None:
        """A message arrived in *folder*: queue a NewMailEvent and a
        CreatedEvent for each subscription watching it (the events it asked for)."""
        with self.streams:
            for subscription in self.subscriptions.values():
                if folder in subscription.folders:
                    subscription.pending.extend(
                        self._event(kind, item, folder)
                        for kind in ("NewMailEvent", "CreatedEvent")
                        if kind in subscription.events
                    )
            self.streams.notify_all()

    def _event(self, kind: str, item: str, folder: str) -> str:
        # "NewMailEvent" / "CreatedEvent" (BaseObjectChangedEventType): Watermark,
        # TimeStamp, then the ItemId and its ParentFolderId
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        mark = base64.b64encode(f"watermark:{item}:{kind}".encode()).decode()
        return (
            f"<t:{kind}><t:Watermark>{mark}</t:Watermark><t:TimeStamp>{stamp}</t:TimeStamp>"
            f'<t:ItemId Id="{item}" ChangeKey="ck"/><t:ParentFolderId Id="{folder}" '
            f'ChangeKey="ck"/></t:{kind}>'
        )

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait (bounded) until *predicate* holds; it is re-checked whenever a
        stream, a subscription or a delivery changes. For tests."""
        with self.streams:
            return self.streams.wait_for(predicate, timeout)

    def end_streams(self) -> None:
        """Every open GetStreamingEvents ends now, as at its ConnectionTimeout:
        ConnectionStatus Closed."""
        with self.streams:
            self._end_streams += 1
            self.streams.notify_all()

    def expire_subscriptions(self) -> None:
        """Every subscription expires: open streams end (Closed) and the next
        GetStreamingEvents on them answers ErrorSubscriptionNotFound."""
        with self.streams:
            self.subscriptions.clear()
            self._end_streams += 1
            self.streams.notify_all()

    def op_Subscribe(self, op: Any) -> str:
        # "Subscribe operation" / [MS-OXWSNTIF] 3.1.4.3: one of
        # PullSubscriptionRequest, PushSubscriptionRequest,
        # StreamingSubscriptionRequest; the fake offers streaming only.
        parts = self._children(op, {"StreamingSubscriptionRequest": True})
        request = parts["StreamingSubscriptionRequest"]
        # "StreamingSubscriptionRequest": FolderIds (or SubscribeToAllFolders), EventTypes
        if request.get("SubscribeToAllFolders") not in (None, "false"):
            raise Refused("ErrorInvalidRequest", "SubscribeToAllFolders is not implemented")
        folders: set[str] = set()
        events: set[str] = set()
        seen: set[str] = set()
        for child in request:
            local = etree.QName(child).localname
            if (
                etree.QName(child).namespace != T
                or local in seen
                or local
                not in (
                    "FolderIds",
                    "EventTypes",
                )
            ):
                raise Refused(
                    "ErrorSchemaValidation", f"{child.tag} in StreamingSubscriptionRequest"
                )
            seen.add(local)
            if local == "FolderIds":
                for ref in child:
                    folder = self._folder_ref(ref)
                    if folder is None:
                        return self._messages(
                            "Subscribe",
                            [self._error("Subscribe", "ErrorFolderNotFound", "not found")],
                        )
                    folders.add(folder.id)
            else:
                for kind in child:
                    if (
                        etree.QName(kind).namespace != T
                        or etree.QName(kind).localname != "EventType"
                        or kind.text not in EVENT_TYPES
                    ):
                        raise Refused("ErrorSchemaValidation", f"EventType {kind.text!r}")
                    events.add(kind.text)
        if not folders or not events:
            raise Refused("ErrorSchemaValidation", "FolderIds and EventTypes must not be empty")
        if self.refuse_streaming:
            return self._messages(
                "Subscribe",
                [
                    self._error(
                        "Subscribe",
                        self.refuse_streaming,
                        "Streaming notifications are not available on this server.",
                    )
                ],
            )
        # "SubscribeResponseMessage": a streaming subscription has a
        # SubscriptionId and no Watermark
        identifier = base64.b64encode(
            f"subscription-{next(self._subscription_ids):06d}".encode()
        ).decode()
        with self.streams:
            self.subscriptions[identifier] = Subscription(identifier, folders, events)
            self.streams.notify_all()
        return self._messages(
            "Subscribe",
            [self._ok("Subscribe", f"<m:SubscriptionId>{identifier}</m:SubscriptionId>")],
        )

    def op_Unsubscribe(self, op: Any) -> str:
        # "Unsubscribe operation" / [MS-OXWSNTIF] 3.1.4.4: SubscriptionId
        parts = self._children(op, {"SubscriptionId": True})
        identifier = (parts["SubscriptionId"].text or "").strip()
        with self.streams:
            found = self.subscriptions.pop(identifier, None)
            if found is not None:
                self.unsubscribed.append(identifier)
            self.streams.notify_all()
        if found is None:
            return self._messages(
                "Unsubscribe",
                [self._error("Unsubscribe", "ErrorSubscriptionNotFound", "not found")],
            )
        return self._messages("Unsubscribe", [self._ok("Unsubscribe", "")])

    def _stream(self, request: BaseHTTPRequestHandler, op: Any) -> None:
        """GetStreamingEvents ([MS-OXWSNTIF] 3.1.4.2, "GetStreamingEvents
        operation"): one chunked HTTP answer of several SOAP envelopes, each a
        GetStreamingEventsResponse: the Notifications as events happen, and
        ConnectionStatus Closed once ConnectionTimeout minutes passed."""
        parts = self._children(op, {"SubscriptionIds": True, "ConnectionTimeout": True})
        ids = []
        for child in parts["SubscriptionIds"]:
            if etree.QName(child).namespace != T or etree.QName(child).localname != (
                "SubscriptionId"
            ):
                raise Refused("ErrorSchemaValidation", f"{child.tag} in SubscriptionIds")
            ids.append((child.text or "").strip())
        if not ids:
            raise Refused("ErrorSchemaValidation", "SubscriptionIds is empty")
        try:
            minutes = int(parts["ConnectionTimeout"].text)
        except (TypeError, ValueError):
            raise Refused("ErrorSchemaValidation", "ConnectionTimeout is not a number") from None
        # StreamingSubscriptionConnectionTimeoutType: 1 to 30 minutes
        if not 1 <= minutes <= 30:
            raise Refused("ErrorSchemaValidation", "ConnectionTimeout must be 1 to 30")
        with self.streams:
            missing = [i for i in ids if i not in self.subscriptions]
            if missing:
                # an expired or unknown subscription: ErrorSubscriptionNotFound,
                # the ids in ErrorSubscriptionIds
                listed = "".join(f"<m:SubscriptionId>{i}</m:SubscriptionId>" for i in missing)
                answer = self._messages(
                    "GetStreamingEvents",
                    [
                        self._error(
                            "GetStreamingEvents",
                            "ErrorSubscriptionNotFound",
                            "The specified subscription was not found.",
                            f"<m:ErrorSubscriptionIds>{listed}</m:ErrorSubscriptionIds>",
                        )
                    ],
                )
                self._send(request, 200, self._envelope(answer))
                return
            subscriptions = [self.subscriptions[i] for i in ids]
            for subscription in subscriptions:
                subscription.streams += 1
            self.open_streams += 1
            ending = self._end_streams
            self.streams.notify_all()
        deadline = time.monotonic() + minutes * self.minute
        try:
            # chunked transfer coding needs HTTP/1.1; the connection ends with the stream
            request.protocol_version = "HTTP/1.1"
            request.send_response(200)
            request.send_header("Content-Type", "text/xml; charset=utf-8")
            request.send_header("Transfer-Encoding", "chunked")
            request.send_header("Connection", "close")
            request.end_headers()
            request.close_connection = True
            while True:
                with self.streams:
                    self.streams.wait_for(
                        lambda: (
                            self._closing
                            or self._end_streams != ending
                            or time.monotonic() >= deadline
                            or any(s.pending for s in subscriptions)
                        ),
                        max(0.0, deadline - time.monotonic()),
                    )
                    notifications = "".join(
                        f"<m:Notification><t:SubscriptionId>{s.id}</t:SubscriptionId>"
                        f"<t:MoreEvents>false</t:MoreEvents>{''.join(s.pending)}</m:Notification>"
                        for s in subscriptions
                        if s.pending
                    )
                    for subscription in subscriptions:
                        subscription.pending = []
                    done = (
                        self._closing or self._end_streams != ending or time.monotonic() >= deadline
                    )
                if notifications:
                    self._chunk(
                        request,
                        self._ok(
                            "GetStreamingEvents",
                            f"<m:Notifications>{notifications}</m:Notifications>",
                        ),
                    )
                if done:
                    # "ConnectionStatus": Closed when the ConnectionTimeout has passed
                    self._chunk(
                        request,
                        self._ok(
                            "GetStreamingEvents", "<m:ConnectionStatus>Closed</m:ConnectionStatus>"
                        ),
                    )
                    request.wfile.write(b"0\r\n\r\n")
                    request.wfile.flush()
                    return
        except OSError:
            return  # the client went away
        finally:
            with self.streams:
                for subscription in subscriptions:
                    subscription.streams -= 1
                self.open_streams -= 1
                self.streams.notify_all()

    def _chunk(self, request: BaseHTTPRequestHandler, message: str) -> None:
        """One SOAP envelope of a stream as one HTTP chunk (RFC 9112 7.1)."""
        data = self._envelope(self._messages("GetStreamingEvents", [message]))
        request.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        request.wfile.flush()


def raw_request(fake: EWSFake, body: bytes, authorization: str | None) -> tuple[int, bytes]:
    """POST *body* to the fake as is (for the tests of its strictness)."""
    import http.client

    context = ssl.create_default_context(cafile=fake.ca_file)
    assert fake.httpd is not None
    connection = http.client.HTTPSConnection(
        "127.0.0.1", fake.httpd.server_address[1], context=context, timeout=10
    )
    headers = {"Content-Type": "text/xml; charset=utf-8"}
    if authorization:
        headers["Authorization"] = authorization
    with contextlib.closing(connection):
        connection.request("POST", PATH, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
