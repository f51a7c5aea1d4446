"""The ``graph`` sender (``smtp-client: server-type: graph``): ``sendMail`` with MIME.

"user: sendMail" (https://learn.microsoft.com/graph/api/user-sendmail),
MIME format: ``POST /users/{from}/sendMail`` with ``Content-Type: text/plain``
and the base64 MIME text as the body; 202 Accepted. The message is sent as
the envelope's sender (``MAIL FROM``), which must be a mailbox the app may
send as (Exchange RBAC for Applications).

Exchange delivers to the addresses *in the message*, not to an envelope
(the user-sendmail page: "provide the MIME content with the applicable
Internet message headers ("To", "CC", "BCC", "Subject")"). So before sending,
the message's recipient headers are made to say exactly the envelope:

* ``To`` and ``Cc`` keep only the addresses the envelope has (a suppressed
  recipient, removed from the envelope by the kernel, leaves the headers too);
* envelope recipients that no ``To``/``Cc`` shows (the request's bcc) go in
  a ``Bcc`` header, which Graph honours and does not deliver to others.

DSN parameters (``NOTIFY``, ``RET``, ``ENVID``: SMTP extensions) have no
Graph equivalent: a request carrying them fails at once with a permanent
SendError saying so.

**Which request.** The MIME form of sendMail always saves to Sent Items
(``saveToSentItems`` exists only in the JSON form) and tells nothing of the
message it made. So a message goes with sendMail only when it fits one request
(:data:`MAX_MIME`), ``save-to-sent-items`` is true and ``verify-message-id``
false (then Mail.Send alone is enough). Otherwise it goes through a draft
("Create message in MIME format": ``POST /users/{from}/messages``, base64
``text/plain``, 201 with the message), then "message: send" (202):

* the draft's ``internetMessageId`` (PidTagInternetMessageId, [MS-OXPROPS]
  2.749, where Exchange keeps a MIME Message-ID) is the Message-ID the message
  goes out with. Microsoft does not promise that Exchange keeps the one postroom
  wrote, so the sender returns the draft's: the outbound interaction records
  what recipients see, and their replies thread;
* without ``save-to-sent-items`` the draft gets PidTagDeleteAfterSubmit
  (``Boolean 0x0E01`` = true, [MS-OXPROPS] 2.669, [MS-OXOMSG] 2.2.3.8: "the
  original message is to be deleted after it is sent") through a
  single-value extended property (``PATCH`` of the draft) before it is sent;
* a send that fails once the draft exists deletes the draft (best effort,
  logged when that fails too): a retry makes a new one. Unless the send
  request itself failed without a clear refusal (a lost connection, a 5xx, a
  408): the message may be out, and a sent draft's immutable id names its
  Sent Items copy ("Get immutable identifiers for Outlook resources",
  https://learn.microsoft.com/graph/outlook-immutable-id), so it is left.

Messages over :data:`MAX_MIME` (Graph's 4 MB request limit, base64 included)
take Microsoft's large-attachment path ("Attach large files to Outlook
messages", https://learn.microsoft.com/graph/outlook-large-attachments): every
MIME leaf part over :data:`MAX_INLINE_ATTACHMENT` (3 MB) is taken out, the rest
becomes the draft, and each part taken out is uploaded through an upload
session ("attachment: createUploadSession", then ``PUT`` byte ranges of up to
4 MB to the ``uploadUrl``, which carries its own token: no ``Authorization``)
before the draft is sent. When the draft itself stays over the request limit
(a huge text body, many 3 MB parts) the send fails permanently, naming the
size and the limit.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from dataclasses import dataclass
from email import message_from_bytes
from email.generator import BytesGenerator
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses
from io import BytesIO
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, ensureDeferred
from zope.interface import implementer

from postroom.api import (
    Credentials,
    DriverContext,
    Envelope,
    HTTPClient,
    ISender,
    OptionSchema,
    PostroomError,
    Scope,
    SenderAuthenticationFailed,
    SendError,
    SendResult,
    SourceError,
    proxy_for,
)
from postroom_graph.session import IMMUTABLE_ID, GraphError, GraphSession, error_of

log = logging.getLogger(__name__)

TYPES = ("graph",)
DEFAULT_SERVER = "https://graph.microsoft.com"
#: the ``mailbox`` argument of ``postroom_auth_event`` for the sender's logins
AUTH_EVENT_NAME = "smtp-client"
#: the largest MIME sent with sendMail: Graph refuses requests over 4 MB, and
#: base64 adds a third
MAX_MIME = 3 * 1024 * 1024 - 64 * 1024
#: outlook-large-attachments: attachments over 3 MB need an upload session
MAX_INLINE_ATTACHMENT = 3 * 1024 * 1024
#: the byte range of one upload PUT: attachment-createuploadsession says "up to 4 MB";
#: 10 x 320 KiB also keeps to the multiples other Graph upload sessions want
UPLOAD_CHUNK = 10 * 320 * 1024
#: outlook-large-attachments: an upload session takes files up to 150 MB
MAX_UPLOAD = 150 * 1024 * 1024
#: PidTagDeleteAfterSubmit ([MS-OXPROPS] 2.669) as a Graph single-value extended
#: property id, proptag form "{type} {tag}" ("Outlook extended properties overview")
DELETE_AFTER_SUBMIT = "Boolean 0x0E01"
#: upload range answers the outbox retries: 408 Request Timeout (RFC 9110
#: 15.5.9), 409 Conflict and 429 Too Many Requests ("Microsoft Graph error
#: responses", https://learn.microsoft.com/graph/errors: a conflict with the
#: current state, a throttled client to try again after a while)
UPLOAD_RETRIED = (408, 409, 429)
#: SMTP DSN parameters (RFC 3461) Graph cannot carry
DSN_PARAMETERS = ("NOTIFY=", "RET=", "ENVID=", "ORCPT=")
_RECIPIENT_HEADER = re.compile(rb"^(to|cc|bcc)\s*:", re.IGNORECASE)


class _SendSession(GraphSession):
    auth_failed = SenderAuthenticationFailed
    unavailable = SendError  # temporary: the outbox retries with its back-off


@implementer(ISender)
class GraphSender:
    """Sends outbound mail through Microsoft Graph's sendMail (MIME)."""

    needs_auth = True

    @staticmethod
    def postroom_add_options(schema: OptionSchema) -> None:
        add = schema.add
        add("server", scope=Scope.SMTP_CLIENT, types=TYPES, default=DEFAULT_SERVER,
            description="The Graph service (`https://graph.microsoft.com`). https only.")
        add("user", scope=Scope.SMTP_CLIENT, types=TYPES,
            description="The mailbox the auth driver asks a token for (app-only tokens "
            "serve every mailbox the app may send as; mail is sent as its From).")
        add("ca-file", "path", scope=Scope.SMTP_CLIENT, types=TYPES,
            description="PEM file of the certificate authorities to trust instead of the "
            "system's.")
        add("protocol-timeout", "duration", scope=Scope.SMTP_CLIENT, types=TYPES,
            default="00:02:00", minimum=1, maximum=3600,
            description="Time allowed for one Graph request, connection included.")
        add("enable-debug", "bool", scope=Scope.SMTP_CLIENT, types=TYPES, default="false",
            description="Log each Graph request and its status (never the token).")
        add("verify-message-id", "bool", scope=Scope.SMTP_CLIENT, types=TYPES, default="true",
            description="Send through a draft, whose Message-ID as Exchange keeps it "
            "(internetMessageId) the outbound interaction records, so that replies thread "
            "even when Exchange replaced postroom's (needs Mail.ReadWrite). false: messages "
            "that fit one request go with sendMail (Mail.Send alone) and postroom's "
            "Message-ID is recorded unchecked.")
        add("save-to-sent-items", "bool", scope=Scope.SMTP_CLIENT, types=TYPES,
            default="true",
            description="Keep a copy of each sent message in the sender's Sent Items. "
            "false: the message is sent through a draft marked PidTagDeleteAfterSubmit, "
            "which Exchange deletes once sent (needs Mail.ReadWrite).")

    def __init__(self, options: Any, context: DriverContext) -> None:
        self.options = options
        self.context = context
        self.name = AUTH_EVENT_NAME
        self.who = AUTH_EVENT_NAME
        self.server = str(options.get("server") or DEFAULT_SERVER).rstrip("/")
        ca_file = options.get("ca-file")
        self.ca_file: str | None = str(ca_file) if ca_file else None
        self.timeout = float(options.get("protocol-timeout"))
        self.debug = bool(options.get("enable-debug"))
        self.verify = bool(options.get("verify-message-id"))
        self.save_sent = bool(options.get("save-to-sent-items"))
        try:
            self.session = _SendSession(self, self.make_http(), self.server)
        except SourceError as exc:
            raise SendError(str(exc), permanent=True) from None

    def make_http(self) -> Any:
        return HTTPClient(
            self.context.reactor,
            self.context.clock,
            proxy=proxy_for(self.context.config, None, "graph"),
            ca_file=self.ca_file,
            timeout=self.timeout,
            persistent=True,
        )

    # -- what the session asks of its owner

    async def credentials(self) -> Credentials:
        authenticator = self.context.authenticator
        if authenticator is None:
            raise SendError(
                "smtp-client: Graph needs an OAuth auth driver (enable-authentication and "
                "auth: azure-client-credentials)", permanent=True,
            )
        credentials: Credentials = await authenticator.credentials("graph")
        return credentials

    def login_refused(self, detail: str) -> None:
        authenticator = self.context.authenticator
        if authenticator is not None:
            authenticator.invalidate()
        if self.context.auth_event is not None:
            self.context.auth_event(AUTH_EVENT_NAME, "login-failed", detail)

    # -- ISender

    def send(self, message: bytes, envelope: Envelope, message_id: str) -> Deferred[SendResult]:
        return ensureDeferred(self._send(message, envelope, message_id))

    def close(self) -> Deferred[None]:
        """Close the connections kept open between sends."""
        session = getattr(self, "session", None)
        return session.http.close() if session is not None else ensureDeferred(_nothing())

    async def _send(self, message: bytes, envelope: Envelope, message_id: str) -> SendResult:
        dsn = [p for p in (*envelope.mail_options, *envelope.rcpt_options)
               if p.upper().startswith(DSN_PARAMETERS)]
        if dsn:
            raise SendError(
                f"smtp-client: Graph cannot carry SMTP DSN parameters ({' '.join(dsn)}); "
                "send this message without delivery status notification options",
                permanent=True,
            )
        if not envelope.mail_from:
            raise SendError("smtp-client: Graph sends as a mailbox; the message has no sender",
                            permanent=True)
        mime = with_recipients(message, envelope.rcpt_to)
        user = f"/users/{quote(envelope.mail_from, safe='@')}"
        used = message_id
        try:
            if len(mime) <= MAX_MIME and self.save_sent and not self.verify:
                await self.session.request(
                    "POST", f"{user}/sendMail", headers={"Content-Type": "text/plain"},
                    body=base64.b64encode(mime), ok=(202,),
                )
                done = "sendMail accepted (202); Message-ID not checked"
            else:
                done, used = await self._send_draft(user, mime, message_id)
        except GraphError as exc:
            # a 4xx about this message (a mailbox the app may not send as, bad MIME)
            raise SendError(str(exc), permanent=exc.status not in (408, 409)) from None
        except SendError:
            raise
        except PostroomError as exc:
            raise SendError(str(exc)) from None
        if self.context.auth_event is not None:
            self.context.auth_event(AUTH_EVENT_NAME, "login-ok", f"bearer token on {self.server}")
        return SendResult(message_id=used, accepted=list(envelope.rcpt_to),
                          detail=f"{self.server}: {done}")

    async def _send_draft(self, user: str, mime: bytes, message_id: str) -> tuple[str, str]:
        """Draft, [DeleteAfterSubmit], [upload sessions], send; what was done and
        the Message-ID the message went out with. A failure once the draft
        exists deletes it."""
        draft, uploads = split_large_parts(mime) if len(mime) > MAX_MIME else (mime, [])
        if len(draft) > MAX_MIME:
            raise SendError(
                f"smtp-client: the message is {len(mime)} bytes and without its attachments "
                f"over 3 MB still {len(draft)}; Graph takes at most {MAX_MIME} bytes of MIME "
                "in one request (4 MB with base64)", permanent=True,
            )
        for upload in uploads:
            if len(upload.data) > MAX_UPLOAD:
                raise SendError(
                    f"smtp-client: attachment {upload.name!r} is {len(upload.data)} bytes; "
                    f"Graph's upload sessions take at most {MAX_UPLOAD}", permanent=True,
                )
        response, _ = await self.session.request(
            "POST", f"{user}/messages",
            headers={"Content-Type": "text/plain", "Prefer": IMMUTABLE_ID},
            body=base64.b64encode(draft), ok=(201,),
        )
        created = json.loads(response.body)
        item = f"{user}/messages/{quote(str(created['id']), safe='')}"
        sending = False
        try:
            used = await self._message_id_of(item, created, message_id)
            if not self.save_sent:
                # "Create single-value extended property" (PATCH of an existing message)
                await self.session.request(
                    "PATCH", item, headers={"Prefer": IMMUTABLE_ID},
                    json_body={"singleValueExtendedProperties": [
                        {"id": DELETE_AFTER_SUBMIT, "value": "true"}]},
                )
            for upload in uploads:
                await self._upload(item, upload)
            sending = True
            await self.session.request("POST", f"{item}/send",
                                       headers={"Prefer": IMMUTABLE_ID}, body=b"", ok=(202,))
        except Exception as exc:
            if not sending or _refused(exc):
                await self._discard(item)
            else:
                # the send may have gone through, and a sent draft's immutable id
                # names its Sent Items copy ("Get immutable identifiers for Outlook
                # resources"): deleting it could delete that copy
                log.warning(
                    "smtp-client: sending the draft of outbound %s got no clear answer "
                    "(%s); it may have gone out, so the draft is not deleted (if it was "
                    "not sent, it stays in Drafts)", message_id, exc,
                )
            raise
        done = "draft sent (202)"
        if uploads:
            done += f" with {len(uploads)} attachment(s) through upload sessions"
        if not self.save_sent:
            done += ", not saved to Sent Items"
        if used == message_id:
            done += "; Message-ID kept"
        else:
            done += f"; Exchange gave it Message-ID {used}"
            log.warning(
                "smtp-client: Exchange gave outbound %s the Message-ID %s; the interaction "
                "records it (replies quote it)", message_id, used,
            )
        return done, used

    async def _message_id_of(self, item: str, created: dict[str, Any], assigned: str) -> str:
        """The draft's ``internetMessageId``: from the create answer (Graph
        answers the message), else one GET with ``$select``."""
        found = created.get("internetMessageId")
        if not found:
            response, _ = await self.session.request(
                "GET", f"{item}?$select=internetMessageId", headers={"Prefer": IMMUTABLE_ID}
            )
            found = json.loads(response.body).get("internetMessageId")
        if isinstance(found, str) and found.strip():
            return found.strip()
        log.warning("smtp-client: Graph gave no internetMessageId for outbound %s; "
                    "recording the Message-ID postroom assigned", assigned)
        return assigned

    async def _discard(self, item: str) -> None:
        """Delete a draft whose send failed ("Delete message"): a retry makes a new
        one, so leftovers would pile up in Drafts. Best effort: logged when it fails."""
        try:
            await self.session.request("DELETE", item, headers={"Prefer": IMMUTABLE_ID},
                                       ok=(204,))
        except Exception as exc:
            log.warning("smtp-client: could not delete the draft of a failed send (%s); "
                        "it stays in Drafts", exc)

    async def _upload(self, message: str, upload: LargePart) -> None:
        """One attachment: createUploadSession, then the byte ranges in order."""
        item: dict[str, Any] = {"attachmentType": "file", "name": upload.name,
                                "size": len(upload.data), "contentType": upload.content_type}
        if upload.content_id:
            item.update(isInline=upload.inline, contentId=upload.content_id)
        response, _ = await self.session.request(
            "POST", f"{message}/attachments/createUploadSession",
            json_body={"AttachmentItem": item}, ok=(201,),
        )
        url = str(json.loads(response.body)["uploadUrl"])
        if not url.startswith("https://"):
            raise SendError(f"smtp-client: Graph gave a non-https upload URL for {upload.name!r}",
                            permanent=True)
        total = len(upload.data)
        for start in range(0, total, UPLOAD_CHUNK):
            chunk = upload.data[start:start + UPLOAD_CHUNK]
            # the uploadUrl is pre-authenticated: the bearer token must not go with it
            headers = {"Content-Type": "application/octet-stream",
                       "Content-Range": f"bytes {start}-{start + len(chunk) - 1}/{total}"}
            try:
                answer = await self.session.http.request("PUT", url, headers=headers, body=chunk)
            except Exception as exc:  # a lost connection: temporary
                raise SendError(f"smtp-client: uploading {upload.name!r} failed: {exc}") from None
            last = start + len(chunk) >= total
            status = int(answer.status)
            if status != (201 if last else 200):
                code, detail = error_of(getattr(answer, "body", b"") or b"")
                raise SendError(
                    f"smtp-client: the upload of {upload.name!r} (bytes {start}-"
                    f"{start + len(chunk) - 1}/{total}) answered {status} {code}: {detail}",
                    # timed out, in conflict, throttled, 5xx: the outbox retries the send
                    permanent=400 <= status < 500 and status not in UPLOAD_RETRIED,
                )

    def check_connection(self) -> Deferred[str]:
        """A token and one authenticated request, for ``postroom check --connect``:
        the Sent Items folder of ``user`` (Mail.ReadWrite reads it; Mail.Send alone
        allows no request but sending, and "Get user" would need User.Read.All)."""
        return ensureDeferred(self._check())

    async def _check(self) -> str:
        user = self.options.get("user")
        if not user:
            return f"{self.server}: token not checked (no user set)"
        await self.session.request(
            "GET", f"/users/{quote(str(user), safe='@')}/mailFolders/sentitems?$select=id"
        )
        return f"{self.server}: token accepted for {user}"


def _refused(exc: Exception) -> bool:
    """Whether Graph clearly refused a request (a 4xx other than 408 Request
    Timeout): nothing was done."""
    return isinstance(exc, GraphError) and 400 <= exc.status < 500 and exc.status != 408


async def _nothing() -> None:
    return None


def with_recipients(message: bytes, recipients: list[str]) -> bytes:
    """*message* with To and Cc limited to *recipients* and the others in Bcc,
    so that Exchange delivers to the envelope, exactly."""
    wanted = {r.lower(): r for r in recipients}
    head, sep, body = _split(message)
    lines = _unfold(head)
    shown: set[str] = set()
    out: list[bytes] = []
    for line in lines:
        match = _RECIPIENT_HEADER.match(line)
        if match is None:
            out.append(line)
            continue
        name = match.group(1).decode().lower()
        if name == "bcc":
            continue  # rebuilt below from the envelope
        value = line[match.end():].decode("utf-8", "replace")
        keep = [(n, a) for n, a in getaddresses([value]) if a.lower() in wanted]
        shown.update(a.lower() for _n, a in keep)
        if keep:
            header = "To" if name == "to" else "Cc"
            out.append(f"{header}: {', '.join(_format(n, a) for n, a in keep)}".encode())
    hidden = [wanted[a] for a in wanted if a not in shown]
    if hidden:
        out.append(b"Bcc: " + ", ".join(hidden).encode())
    newline = b"\r\n" if b"\r\n" in message[:2000] else b"\n"
    return newline.join(out) + sep + body


@dataclass
class LargePart:
    """An attachment taken out of the MIME for an upload session."""

    name: str
    content_type: str
    data: bytes
    inline: bool
    content_id: str | None


def split_large_parts(mime: bytes) -> tuple[bytes, list[LargePart]]:
    """*mime* without its leaf parts whose content is over
    :data:`MAX_INLINE_ATTACHMENT`, and those parts (decoded)."""
    message = message_from_bytes(mime)
    taken: list[LargePart] = []

    def prune(part: Message) -> None:
        children = part.get_payload()
        if not part.is_multipart() or not isinstance(children, list):
            return
        kept: list[Message | str] = []
        for child in children:
            if not isinstance(child, Message):
                continue
            data = None if child.is_multipart() else child.get_payload(decode=True)
            if isinstance(data, bytes) and len(data) > MAX_INLINE_ATTACHMENT:
                content_id = child.get("Content-ID")
                taken.append(LargePart(
                    name=child.get_filename() or f"attachment-{len(taken) + 1}",
                    content_type=child.get_content_type(), data=data,
                    inline=child.get_content_disposition() == "inline",
                    content_id=str(content_id).strip().strip("<>") if content_id else None,
                ))
                continue
            prune(child)
            kept.append(child)
        part.set_payload(kept)

    prune(message)
    if not taken:
        return mime, []
    out = BytesIO()
    linesep = "\r\n" if b"\r\n" in mime[:2000] else "\n"
    BytesGenerator(out, mangle_from_=False, policy=compat32.clone(linesep=linesep)).flatten(
        message)
    return out.getvalue(), taken


def _format(name: str, address: str) -> str:
    from email.utils import formataddr

    return formataddr((name, address)) if name else address


def _split(message: bytes) -> tuple[bytes, bytes, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = message.find(sep)
        if at >= 0:
            return message[:at], sep, message[at + len(sep):]
    return message, b"", b""


def _unfold(head: bytes) -> list[bytes]:
    """Header lines, folded continuation lines joined to their header."""
    lines: list[bytes] = []
    for raw in re.split(rb"\r?\n", head):
        if raw[:1] in (b" ", b"\t") and lines and _RECIPIENT_HEADER.match(lines[-1]):
            lines[-1] += b" " + raw.strip()
        elif raw[:1] in (b" ", b"\t") and lines:
            lines.append(raw)  # other headers keep their folding
        else:
            lines.append(raw)
    return lines
