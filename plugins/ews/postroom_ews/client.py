"""exchangelib, set up the way postroom needs it; every call here blocks and
runs in the kernel's thread pool (``context.runner.run``).

- **No autodiscover, no probing**: the ``server`` URL is the service
  endpoint, the auth type and server version are fixed, so the first request
  is the operation itself.
- **postroom's credentials only**: a password for basic or NTLM; an access
  token from postroom's token cache for OAuth, handed as a bearer token that
  exchangelib never refreshes nor fetches (:class:`_HandedToken`). A 401 is an
  :class:`exchangelib.errors.UnauthorizedError`, which the source turns into a
  refresh by the auth driver and one more try.
- **Verified TLS against ``ca-file``** and **the site's proxy**, on each
  ``requests`` session of a per-mailbox protocol (environment variables are
  not read: ``trust_env`` off). Certificates are always verified.
- **Fail fast**: exchangelib's own retry loop sleeps; the source backs off on
  the kernel's clock instead (``ErrorServerBusy``'s back-off hint).
- **Quiet libraries**: exchangelib logs whole request and response XML (a
  message being sent, a customer's mail being fetched) and request headers
  (``Authorization``); :func:`install_log_filter` cuts what it and the HTTP
  auth libraries log to one line, and :func:`safe_reason` does the same for
  their exceptions' texts, which may quote a server's answer.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from exchangelib import (
    BASIC,
    DELEGATE,
    IMPERSONATION,
    NTLM,
    OAUTH2,
    Account,
    Build,
    Configuration,
    Credentials,
    OAuth2AuthorizationCodeCredentials,
    Version,
)
from exchangelib.errors import (
    ErrorInvalidSyncStateData,
    ErrorItemNotFound,
    EWSError,
    MalformedResponseError,
)
from exchangelib.folders import Folder
from exchangelib.properties import ItemId
from exchangelib.protocol import FailFast, Protocol
from oauthlib.oauth2 import OAuth2Token

#: SyncFolderItems changes per request ([MS-OXWSSYNC]: 1 to 512)
SYNC_PAGE = 512
#: items per GetItem/MoveItem/DeleteItem request
BATCH = 100
#: the server version announced in RequestServerVersion (Exchange 2016 and later)
SERVER_BUILD = Build(15, 1)
AUTH_TYPES = {"basic": BASIC, "ntlm": NTLM}
#: Accounts kept per client (one per From address the sender sent as)
MAX_ACCOUNTS = 64
#: the loggers :func:`install_log_filter` quiets (and their children)
LIBRARY_LOGGERS = ("exchangelib", "requests_ntlm", "requests_oauthlib", "spnego")
#: the longest line kept of a library's log record or exception text
MAX_REASON = 300
#: an HTTP credential in a text: a scheme and a token of base64 or token68 characters
_CREDENTIAL = re.compile(
    r"(?i)\b(basic|bearer|ntlm|negotiate)\s+(?=[\w+/=.~-]*[0-9+/=])[A-Za-z0-9+/=._~-]{12,}"
)


def safe_reason(exc: BaseException) -> str:
    """A one-line, bounded text for *exc* that quotes no XML nor content:
    exchangelib's parse errors quote the answer they could not read
    ("Offending text", "This is not XML: ..."), and a malformed answer is
    quoted whole."""
    name = type(exc).__name__
    if isinstance(exc, SyntaxError) or str(exc).startswith("Bad SOAP response"):
        # lxml's and exchangelib's ParseError, and the SOAPError wrapping it
        return f"{name}: the server's answer is not well-formed XML"
    if isinstance(exc, MalformedResponseError):
        return f"{name}: the server's answer is not a valid EWS response"
    text = str(exc).strip().splitlines()
    line = _CREDENTIAL.sub(r"\1 <redacted>", text[0] if text else "")
    if len(line) > MAX_REASON:
        line = line[:MAX_REASON] + "…"
    return f"{name}: {line}" if line else name


class _OneLine(logging.Filter):
    """On a library's logger: DEBUG and INFO records (request and response
    XML, headers with credentials) are dropped; others keep their first line,
    bounded, without arguments, traceback or stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot be formatted: its template only
            text = str(record.msg)
        lines = text.strip().splitlines()
        line = _CREDENTIAL.sub(r"\1 <redacted>", lines[0] if lines else "")
        if len(line) > MAX_REASON:
            line = line[:MAX_REASON] + "…"
        record.msg = line + (
            " (details not logged: they may hold message content)" if len(lines) > 1 else ""
        )
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


_FILTER = _OneLine()


def install_log_filter() -> None:
    """Put the one-line filter on every logger of :data:`LIBRARY_LOGGERS` and
    their children (a logger's filters do not see its children's records,
    so each gets it). Run again after imports that create loggers."""
    names = [
        name
        for name in list(logging.root.manager.loggerDict)
        if name.split(".")[0] in LIBRARY_LOGGERS
    ]
    for name in {*names, *LIBRARY_LOGGERS}:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class _HandedToken(OAuth2AuthorizationCodeCredentials):
    """An access token postroom fetched: exchangelib uses it as is and never
    refreshes it (no client id, secret nor expiry), so a refused token comes
    back to postroom as a 401."""

    def __init__(self, token: str) -> None:
        super().__init__(access_token=OAuth2Token({"access_token": token, "token_type": "Bearer"}))

    def refresh(self, session: Any) -> None:
        """Refreshing is the auth driver's job, never exchangelib's."""

    def __repr__(self) -> str:
        return "_HandedToken(<redacted>)"

    __str__ = __repr__


@dataclass(frozen=True)
class Endpoint:
    """Where and how one mailbox is reached."""

    url: str
    mailbox: str
    auth_type: str  # basic, ntlm or oauth
    impersonation: bool
    ca_file: str | None
    proxy_url: str | None
    timeout: float


def _protocol_class(endpoint: Endpoint) -> type[Protocol]:
    """A Protocol whose sessions verify against ``ca-file`` and use the proxy,
    and note what a 401 offers (``offered``: the schemes of its
    ``WWW-Authenticate``), so a refused login can say "the server wants NTLM"."""

    class MailboxProtocol(Protocol):
        TIMEOUT = endpoint.timeout
        offered: tuple[str, ...] = ()

        def create_session(self) -> Any:
            session = super().create_session()
            session.trust_env = False  # no proxy or CA bundle from the environment
            session.verify = endpoint.ca_file or True
            if endpoint.proxy_url:
                session.proxies = {"https": endpoint.proxy_url, "http": endpoint.proxy_url}
            session.hooks["response"].append(self._note_offer)
            return session

        def _note_offer(self, response: Any, *args: Any, **kwargs: Any) -> None:
            if response.status_code == 401:
                header = response.headers.get("WWW-Authenticate", "")
                schemes = re.findall(r"(?:^|,)\s*([A-Za-z][\w-]*)(?=\s|,|$)", header)
                self.offered = tuple(dict.fromkeys(schemes))

    return MailboxProtocol


@dataclass
class Change:
    """One new item SyncFolderItems reported, and the sync state to list it again."""

    item_id: str
    change_key: str | None
    size: int | None


@dataclass
class Page:
    """One SyncFolderItems answer: the state it started from and the one it ends at."""

    start: str | None
    end: str
    items: list[Change]


class EWSClient:
    """One mailbox's exchangelib account. Blocking: run it in a thread."""

    #: what to say of an exception of exchangelib's (:func:`safe_reason`)
    reason = staticmethod(safe_reason)

    def __init__(self, endpoint: Endpoint, username: str, secret: str, bearer: bool) -> None:
        self.endpoint = endpoint
        self.bearer = bearer
        if bearer:
            credentials: Any = _HandedToken(secret)
            auth_type = OAUTH2
        else:
            credentials = Credentials(username, secret)
            auth_type = AUTH_TYPES[endpoint.auth_type]
        config = Configuration(
            service_endpoint=endpoint.url,
            credentials=credentials,
            auth_type=auth_type,
            version=Version(build=SERVER_BUILD),
            retry_policy=FailFast(),
        )
        install_log_filter()
        # Built outside exchangelib's protocol cache: this mailbox's CA and proxy
        cls = _protocol_class(endpoint)
        protocol: Any = object.__new__(cls)
        protocol.__init__(config=config)
        self.protocol = protocol
        self.config = config
        self._lock = threading.Lock()
        self.account = self._account(endpoint.mailbox, endpoint.impersonation)
        #: the sender's Accounts by From address, least recently used first
        self._accounts: OrderedDict[tuple[str, bool], Account] = OrderedDict()
        self.folder: Folder | None = None
        #: where processed items are moved (after-processing: move)
        self.target: Folder | None = None

    def _account(self, address: str, impersonation: bool) -> Account:
        """An exchangelib Account for *address* on this client's protocol
        (its sessions, CA and proxy): impersonated (the ExchangeImpersonation
        header names it) or opened as a delegate (its folders addressed by
        their mailbox)."""
        account = Account(
            primary_smtp_address=address,
            config=self.config,
            autodiscover=False,
            access_type=IMPERSONATION if impersonation else DELEGATE,
            default_timezone=None,
        )
        cached = account.protocol
        account.protocol = self.protocol
        if cached is not self.protocol:
            cached.close()
            with contextlib.suppress(KeyError):
                del Protocol[self.config]
        return account

    def account_for(self, address: str, impersonation: bool) -> Account:
        """The Account to send as *address* (cached, at most :data:`MAX_ACCOUNTS`)."""
        key = (address.lower(), impersonation)
        with self._lock:
            if key[0] == self.endpoint.mailbox.lower() and impersonation == (
                self.endpoint.impersonation
            ):
                return self.account
            account = self._accounts.get(key)
            if account is None:
                account = self._account(address, impersonation)
                self._accounts[key] = account
                while len(self._accounts) > MAX_ACCOUNTS:
                    self._accounts.popitem(last=False)
            self._accounts.move_to_end(key)
            return account

    def forget(self, address: str) -> None:
        """Drop the cached Account of *address* (its rights were refused)."""
        with self._lock:
            for key in [k for k in self._accounts if k[0] == address.lower()]:
                del self._accounts[key]

    def offered(self) -> tuple[str, ...]:
        """The auth schemes the server's last 401 offered."""
        return tuple(getattr(self.protocol, "offered", ()))

    def refusal(self, exc: BaseException) -> str:
        """Why a login was refused, saying so when the server does not offer
        the scheme used (Basic to an NTLM-only server, say)."""
        reason = safe_reason(exc)
        wanted = "" if self.bearer else {"basic": "Basic", "ntlm": "NTLM"}[self.endpoint.auth_type]
        offered = self.offered()
        if wanted and offered and wanted.lower() not in {o.lower() for o in offered}:
            reason += (
                f" (the server offers {', '.join(offered)}, not {wanted}: check ews-auth-type)"
            )
        return reason

    def close(self) -> None:
        self.protocol.close()

    # --- folders

    def open_folder(self, path: str) -> tuple[Folder, int]:
        """The folder (a well-known name such as ``inbox``, or a path under the
        top of the mailbox, ``/``-separated) and its item count: one GetFolder,
        plus a FindFolder per path level."""
        folder = self.find_folder(path)
        self.folder = folder
        return folder, int(folder.total_count or 0)

    def find_folder(self, path: str) -> Folder:
        well_known = path.strip().lower()
        if well_known == "inbox":
            return self.account.inbox
        folder = self.account.msg_folder_root
        for part in [p for p in path.strip("/").split("/") if p]:
            folder = folder / part
        return folder

    # --- listing

    def sync_page(self, state: str | None) -> tuple[Page, bool]:
        """One SyncFolderItems page after *state*; and whether it was the last.
        Raises ErrorInvalidSyncStateData for a state the server no longer knows."""
        assert self.folder is not None
        from exchangelib.services import SyncFolderItems

        service = SyncFolderItems(account=self.account)
        items: list[Change] = []
        end = state
        last = True
        for change in service.call(
            folder=self.folder,
            shape="IdOnly",
            additional_fields={self._size_field()},
            sync_state=state,
            ignore=None,
            max_changes_returned=SYNC_PAGE,
            sync_scope=None,
        ):
            if isinstance(change, Exception):
                raise change
            kind, item = change
            if kind == service.CREATE:
                items.append(Change(item.id, item.changekey, getattr(item, "size", None)))
        end = service.sync_state
        last = bool(service.includes_last_item_in_range)
        return Page(start=state, end=end or "", items=items), last

    def _size_field(self) -> Any:
        from exchangelib.fields import FieldPath
        from exchangelib.items import Message

        return FieldPath(field=Message.get_field_by_fieldname("size"))

    # --- items

    def mime(self, item_id: str) -> bytes | None:
        """The item's MimeContent, byte for byte; None when the item is gone."""
        [found] = list(self.account.fetch(ids=[ItemId(id=item_id)], only_fields=["mime_content"]))
        if isinstance(found, ErrorItemNotFound):
            return None
        if isinstance(found, Exception):
            raise found
        content = found.mime_content
        return content if isinstance(content, bytes) else (content or "").encode()

    def move_to_target(self, item_ids: list[str]) -> list[Exception]:
        """Move to :attr:`target` (the processed folder, found at login)."""
        assert self.target is not None
        return self.move(item_ids, self.target)

    def move(self, item_ids: list[str], folder: Folder) -> list[Exception]:
        return self._errors(
            self.account.bulk_move(
                ids=[ItemId(id=i) for i in item_ids], to_folder=folder, chunk_size=BATCH
            )
        )

    def delete(self, item_ids: list[str]) -> list[Exception]:
        return self._errors(
            self.account.bulk_delete(
                ids=[ItemId(id=i) for i in item_ids], delete_type="HardDelete", chunk_size=BATCH
            )
        )

    # --- sending

    def sent_items(self) -> Folder:
        """Sent Items (one GetFolder the first time): ``check --connect`` and
        the folder SendAndSaveCopy saves into."""
        folder: Folder = self.account.sent
        return folder

    def send_mime(self, account: Account, mime: bytes, save_copy: bool, verify: bool) -> str | None:
        """Send *mime* from *account*'s mailbox; the Message-ID Exchange gave it
        (*verify*), else None. Exchange delivers to the To, Cc and Bcc
        addresses of the MIME itself.

        With *verify*: CreateItem ``SaveOnly`` (a draft in Drafts), GetItem of
        its ``InternetMessageId``, SendItem (``SaveItemToFolder`` Sent Items or
        nothing). The ID is read before the message leaves, so it is certain;
        if anything fails before SendItem the draft is deleted and nothing was
        sent. Without: one CreateItem ``SendAndSaveCopy`` or ``SendOnly``."""
        from exchangelib.items import SAVE_ONLY, SEND_AND_SAVE_COPY, SEND_ONLY, Message
        from exchangelib.services import CreateItem, SendItem

        sent = account.sent if save_copy else None
        item = Message(account=account, mime_content=mime)
        if not verify:
            self._one(
                CreateItem(account=account).call(
                    items=[item],
                    folder=sent,
                    message_disposition=SEND_AND_SAVE_COPY if save_copy else SEND_ONLY,
                    send_meeting_invitations="SendToNone",
                )
            )
            return None
        draft = self._one(
            CreateItem(account=account).call(
                items=[item],
                folder=account.drafts,
                message_disposition=SAVE_ONLY,
                send_meeting_invitations="SendToNone",
            )
        )
        draft_id = ItemId(id=draft.id, changekey=draft.changekey)
        try:
            [found] = list(account.fetch(ids=[draft_id], only_fields=["message_id"]))
            if isinstance(found, Exception):
                raise found
            message_id = str(found.message_id or "")
            self._one(SendItem(account=account).call(items=[draft_id], saved_item_folder=sent))
        except BaseException:
            with contextlib.suppress(Exception):  # not sent: the draft must not stay
                account.bulk_delete(ids=[draft_id], delete_type="HardDelete")
            raise
        return message_id

    @staticmethod
    def _one(results: Any) -> Any:
        [result] = list(results)
        if isinstance(result, Exception):
            raise result
        return result

    @staticmethod
    def _errors(results: Any) -> list[Exception]:
        """The failures of a bulk call, but an item already gone is no failure."""
        return [
            r for r in results if isinstance(r, Exception) and not isinstance(r, ErrorItemNotFound)
        ]


install_log_filter()

__all__ = [
    "BATCH",
    "EWSClient",
    "EWSError",
    "Endpoint",
    "ErrorInvalidSyncStateData",
    "Page",
    "install_log_filter",
    "safe_reason",
]
