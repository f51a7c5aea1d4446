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
"""

from __future__ import annotations

import contextlib
import threading
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
from exchangelib.errors import ErrorInvalidSyncStateData, ErrorItemNotFound
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
    """A Protocol whose sessions verify against ``ca-file`` and use the proxy."""

    class MailboxProtocol(Protocol):
        TIMEOUT = endpoint.timeout

        def create_session(self) -> Any:
            session = super().create_session()
            session.trust_env = False  # no proxy or CA bundle from the environment
            session.verify = endpoint.ca_file or True
            if endpoint.proxy_url:
                session.proxies = {"https": endpoint.proxy_url, "http": endpoint.proxy_url}
            return session

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

    def __init__(self, endpoint: Endpoint, username: str, secret: str, bearer: bool) -> None:
        self.endpoint = endpoint
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
        # Built outside exchangelib's protocol cache: this mailbox's CA and proxy
        cls = _protocol_class(endpoint)
        protocol: Any = object.__new__(cls)
        protocol.__init__(config=config)
        self.protocol = protocol
        self._lock = threading.Lock()
        self.account = Account(
            primary_smtp_address=endpoint.mailbox,
            config=config,
            autodiscover=False,
            access_type=IMPERSONATION if endpoint.impersonation else DELEGATE,
            default_timezone=None,
        )
        cached = self.account.protocol
        self.account.protocol = protocol
        if cached is not protocol:
            cached.close()
            with contextlib.suppress(KeyError):
                del Protocol[config]
        self.folder: Folder | None = None
        #: where processed items are moved (after-processing: move)
        self.target: Folder | None = None

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

    def send_mime(self, mime: bytes, save_copy: bool) -> None:
        """CreateItem of a Message with MimeContent, MessageDisposition
        SendAndSaveCopy (into Sent Items) or SendOnly. Exchange delivers to
        the To, Cc and Bcc addresses of the MIME itself."""
        from exchangelib.items import SEND_AND_SAVE_COPY, SEND_ONLY, Message
        from exchangelib.services import CreateItem

        item = Message(account=self.account, mime_content=mime)
        [result] = list(
            CreateItem(account=self.account).call(
                items=[item],
                folder=self.sent_items() if save_copy else None,
                message_disposition=SEND_AND_SAVE_COPY if save_copy else SEND_ONLY,
                send_meeting_invitations="SendToNone",
            )
        )
        if isinstance(result, Exception):
            raise result

    @staticmethod
    def _errors(results: Any) -> list[Exception]:
        """The failures of a bulk call, but an item already gone is no failure."""
        return [
            r for r in results if isinstance(r, Exception) and not isinstance(r, ErrorItemNotFound)
        ]


__all__ = ["BATCH", "EWSClient", "Endpoint", "ErrorInvalidSyncStateData", "Page"]
