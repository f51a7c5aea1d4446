"""The identity provider's state and the test controls: who exists, what was
granted, which tokens are live, and the clock they expire on.

Everything is in memory and guarded by one lock, because tests call the
controls from their own thread while the server answers on its reactor's.
The HTTP layer (server.py) and the oauthlib validator (validator.py) only read
and change state through this module.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

AZURE = "azure"
GOOGLE = "google"
#: the scope a refresh token needs at Azure (without it, no refresh token is issued)
OFFLINE_ACCESS = "offline_access"
#: the app roles an Exchange Online app-only token carries
EXCHANGE_APP_ROLES = ("IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp")


class Refusal(Exception):
    """A request the IdP refuses: the OAuth error, and the provider's own code.

    *code* is Azure's AADSTS number (when the dialect is Azure); *description*
    is the text without the code; *status* the HTTP status.
    """

    def __init__(self, error: str, code: int, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: AADSTS{code}: {description}")
        self.error, self.code, self.description, self.status = error, code, description, status
        #: Google's wording of the same refusal, when it differs
        self.google_description = description


# The refusals the tests meet, with Azure's codes and texts (abridged).
def bad_password() -> Refusal:
    return Refusal("invalid_grant", 50126,
                   "Error validating credentials due to invalid username or password.")


def unknown_user(user: str) -> Refusal:
    return Refusal("invalid_grant", 50034,
                   "The user account does not exist in the directory.")


def mfa_required(resource: str) -> Refusal:
    return Refusal("invalid_grant", 50076,
                   "Due to a configuration change made by your administrator, or because you "
                   f"moved to a new location, you must use multi-factor authentication to access "
                   f"'{resource}'.")


def consent_missing(client_id: str) -> Refusal:
    return Refusal("invalid_grant", 65001,
                   f"The user or administrator has not consented to use the application with ID "
                   f"'{client_id}'. Send an interactive authorization request for this user and "
                   "resource.")


def secret_expired(client_id: str) -> Refusal:
    return Refusal("invalid_client", 7000222,
                   f"The provided client secret keys for app '{client_id}' are expired.", 401)


def bad_secret() -> Refusal:
    return Refusal("invalid_client", 7000215, "Invalid client secret provided.", 401)


def secret_missing() -> Refusal:
    return Refusal("invalid_client", 7000218,
                   "The request body must contain the following parameter: 'client_assertion' "
                   "or 'client_secret'.", 401)


def unknown_client(client_id: str) -> Refusal:
    return Refusal("unauthorized_client", 700016,
                   f"Application with identifier '{client_id}' was not found in the directory.")


def bad_assertion(why: str) -> Refusal:
    return Refusal("invalid_client", 700027, f"Client assertion failed: {why}.", 401)


def grant_revoked() -> Refusal:
    return Refusal("invalid_grant", 70008,
                   "The provided authorization code or refresh token has expired due to "
                   "inactivity or was revoked.")


def bad_scope(scope: str) -> Refusal:
    return Refusal("invalid_scope", 70011,
                   f"The provided request must include a 'scope' input parameter. The provided "
                   f"value for the input parameter 'scope' is not valid: '{scope}'.")


def app_scope_not_default(scope: str) -> Refusal:
    return Refusal("invalid_scope", 1002012,
                   f"The provided value for scope {scope} is not valid. Client credential flows "
                   "must have a scope value with /.default suffixed to the resource identifier.")


def grant_not_allowed(grant_type: str) -> Refusal:
    return Refusal("unauthorized_client", 700030,
                   f"The client is not allowed to use the grant type '{grant_type}'.")


def unavailable() -> Refusal:
    return Refusal("temporarily_unavailable", 90033,
                   "A transient error has occurred. Please try again.", 503)


class Clock:
    """The IdP's time: real time plus an offset that tests move forward.

    Tokens expire on this clock, so a test advances it instead of sleeping;
    a standalone IdP called by Dovecot keeps real time until told otherwise.
    """

    def __init__(self, source: Callable[[], float] = time.time) -> None:
        self._source = source
        self.offset = 0.0

    def now(self) -> float:
        return self._source() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class User:
    name: str  # the e-mail address, also the login name
    password: str = field(repr=False)
    mfa_required: bool = False
    #: client ids the user has consented to (Azure); Google users consent per refresh token
    consents: set[str] = field(default_factory=set)


@dataclass
class Client:
    """An app registration (Azure) or an OAuth client (Google)."""

    client_id: str
    dialect: str
    secret: str | None = field(default=None, repr=False)  # None: a public client
    secret_expired: bool = False
    #: certificate credentials: the public key for each x5t thumbprint
    certificates: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)
    #: the grants it may use; oauthlib names
    grants: frozenset[str] = frozenset({"password", "refresh_token"})
    #: the full scopes it may get ("<resource>/.default" expands to those of the resource)
    scopes: tuple[str, ...] = ()
    rotate_refresh_tokens: bool = False
    #: the mailboxes an app-only (client-credentials) token may open: the Exchange
    #: Online service principal's mailbox permissions
    mailboxes: tuple[str, ...] = ()
    may_introspect: bool = False
    tenant: str | None = None

    @property
    def public(self) -> bool:
        return self.secret is None and not self.certificates


@dataclass
class ServiceAccount:
    """A Google service account with domain-wide delegation for *scopes*."""

    client_email: str
    client_id: str
    #: public keys by private_key_id (the JWT's ``kid``)
    keys: dict[str, rsa.RSAPublicKey]
    scopes: tuple[str, ...]
    domain: str


@dataclass
class Grant:
    """What a user (or an app, or a service account for a subject) allowed a client."""

    grant_id: str
    client_id: str
    user: str | None  # None: app-only
    scopes: tuple[str, ...]
    kind: str
    revoked: bool = False


@dataclass
class AccessToken:
    value: str
    grant: Grant
    scopes: tuple[str, ...]
    issued_at: float
    expires_at: float
    dialect: str


@dataclass
class RefreshToken:
    value: str
    grant: Grant
    valid: bool = True


@dataclass
class Outage:
    """Requests to *endpoints* (all when empty) answer *status*, or are held
    until :meth:`Authority.release` when *hang*."""

    status: int = 503
    hang: bool = False
    endpoints: frozenset[str] = frozenset()

    def covers(self, endpoint: str) -> bool:
        return not self.endpoints or endpoint in self.endpoints


class Authority:
    """Users, clients, grants and tokens, and the controls tests turn."""

    def __init__(self, clock: Clock | None = None, access_ttl: int = 3600) -> None:
        self.lock = threading.RLock()
        self.clock = clock or Clock()
        self.access_ttl = access_ttl
        self.tenants: set[str] = set()
        self.users: dict[str, User] = {}
        self.clients: dict[str, Client] = {}
        self.service_accounts: dict[str, ServiceAccount] = {}
        self.grants: dict[str, Grant] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.outage: Outage | None = None
        #: requests by endpoint, and by "endpoint:grant_type" for token requests
        self.requests: Counter[str] = Counter()

    # -- registration -------------------------------------------------------

    def add_user(self, name: str, password: str, consents: Iterable[str] = ()) -> User:
        with self.lock:
            user = self.users[name.lower()] = User(name.lower(), password, consents=set(consents))
            return user

    def add_client(self, client: Client) -> Client:
        with self.lock:
            self.clients[client.client_id] = client
            if client.tenant:
                self.tenants.add(client.tenant)
            return client

    def add_service_account(self, account: ServiceAccount) -> ServiceAccount:
        with self.lock:
            self.service_accounts[account.client_email] = account
            return account

    # -- issuing ------------------------------------------------------------

    def new_grant(self, client_id: str, user: str | None, scopes: Iterable[str],
                  kind: str) -> Grant:
        with self.lock:
            grant = Grant(secrets.token_hex(8), client_id, user, tuple(scopes), kind)
            self.grants[grant.grant_id] = grant
            return grant

    def store_access_token(self, value: str, grant: Grant, scopes: Iterable[str],
                           expires_in: int, dialect: str) -> AccessToken:
        with self.lock:
            now = self.clock.now()
            token = AccessToken(value, grant, tuple(scopes), now, now + expires_in, dialect)
            self.access_tokens[value] = token
            return token

    def store_refresh_token(self, value: str, grant: Grant) -> RefreshToken:
        with self.lock:
            token = self.refresh_tokens[value] = RefreshToken(value, grant)
            return token

    def issue_refresh_token(self, client_id: str, user: str, scopes: Iterable[str]) -> str:
        """A refresh token as an interactive consent would give it (Google's
        OAuth playground, Azure's authorization-code flow): the tests' start."""
        with self.lock:
            client = self.clients[client_id]
            self.users[user.lower()].consents.add(client_id)
            grant = self.new_grant(client_id, user.lower(), scopes, "consent")
            value = new_refresh_token_value(client.dialect)
            self.store_refresh_token(value, grant)
            return value

    def live_access_token(self, value: str) -> AccessToken | None:
        """The access token when it is known, unexpired and its grant not revoked."""
        with self.lock:
            token = self.access_tokens.get(value)
            if token is None or token.grant.revoked or token.expires_at <= self.clock.now():
                return None
            return token

    def live_refresh_token(self, value: str) -> RefreshToken | None:
        with self.lock:
            token = self.refresh_tokens.get(value)
            if token is None or not token.valid or token.grant.revoked:
                return None
            return token

    def revoke_token(self, value: str) -> bool:
        """RFC 7009 / Google: revoking any token of a grant revokes the grant."""
        with self.lock:
            token = self.access_tokens.get(value) or self.refresh_tokens.get(value)
            if token is None:
                return False
            token.grant.revoked = True
            return True

    def count(self, endpoint: str, grant_type: str | None = None) -> None:
        with self.lock:
            self.requests[endpoint] += 1
            if grant_type:
                self.requests[f"{endpoint}:{grant_type}"] += 1

    # -- test controls ------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the clock forward: tokens whose lifetime has passed are expired."""
        with self.lock:
            self.clock.advance(seconds)

    def revoke(self, user: str | None = None, client_id: str | None = None) -> int:
        """Revoke every grant of *user* and/or *client_id* (both: their common
        grants), as an administrator or the user would; return how many."""
        if user is None and client_id is None:
            raise ValueError("name a user, a client or both")
        with self.lock:
            hit = [
                g for g in self.grants.values()
                if (user is None or g.user == user.lower())
                and (client_id is None or g.client_id == client_id)
                and not g.revoked
            ]
            for grant in hit:
                grant.revoked = True
            return len(hit)

    def set_rotation(self, on: bool, client_id: str | None = None) -> None:
        """Refresh tokens rotate (a new one at each use, the old one dead) or not."""
        with self.lock:
            for client in self.clients.values():
                if client_id is None or client.client_id == client_id:
                    client.rotate_refresh_tokens = on

    def set_mfa_required(self, user: str, on: bool = True) -> None:
        with self.lock:
            self.users[user.lower()].mfa_required = on

    def set_consent(self, user: str, client_id: str, on: bool) -> None:
        with self.lock:
            consents = self.users[user.lower()].consents
            if on:
                consents.add(client_id)
            else:
                consents.discard(client_id)

    def expire_secret(self, client_id: str, expired: bool = True) -> None:
        with self.lock:
            self.clients[client_id].secret_expired = expired

    def start_outage(self, status: int = 503, hang: bool = False,
                     endpoints: Iterable[str] = ()) -> None:
        """Answer *status* (or hold requests, *hang*) on *endpoints* (default all
        but the controls): ``token``, ``introspect``, ``tokeninfo``, ``revoke``."""
        with self.lock:
            self.outage = Outage(status, hang, frozenset(endpoints))

    def end_outage(self) -> None:
        """Answer normally again; held requests stay held until :meth:`release`."""
        with self.lock:
            self.outage = None

    def snapshot(self) -> dict[str, Any]:
        """The settings tests turn (clock, token lifetime, rotation, MFA, consent,
        expired secrets, outage) as JSON-able data, for :meth:`restore`: one IdP
        shared by a test run's tests stays as each found it. Revoked grants
        are not settings: they stay revoked."""
        with self.lock:
            outage = self.outage
            return {
                "clock_offset": self.clock.offset,
                "access_ttl": self.access_ttl,
                "rotation": {c.client_id: c.rotate_refresh_tokens for c in self.clients.values()},
                "secret_expired": {c.client_id: c.secret_expired for c in self.clients.values()},
                "mfa_required": {u.name: u.mfa_required for u in self.users.values()},
                "consents": {u.name: sorted(u.consents) for u in self.users.values()},
                "outage": None if outage is None else {
                    "status": outage.status, "hang": outage.hang,
                    "endpoints": sorted(outage.endpoints)},
            }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Put back what :meth:`snapshot` saw."""
        with self.lock:
            self.clock.offset = float(snapshot["clock_offset"])
            self.access_ttl = int(snapshot["access_ttl"])
            for client_id, on in snapshot["rotation"].items():
                self.clients[client_id].rotate_refresh_tokens = bool(on)
            for client_id, expired in snapshot["secret_expired"].items():
                self.clients[client_id].secret_expired = bool(expired)
            for name, on in snapshot["mfa_required"].items():
                self.users[name].mfa_required = bool(on)
            for name, consents in snapshot["consents"].items():
                self.users[name].consents = set(consents)
            outage = snapshot["outage"]
            self.outage = None if outage is None else Outage(
                int(outage["status"]), bool(outage["hang"]), frozenset(outage["endpoints"]))

    def request_count(self, key: str) -> int:
        with self.lock:
            return self.requests[key]

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()

    def stats(self) -> dict[str, int]:
        with self.lock:
            return dict(self.requests)


def new_refresh_token_value(dialect: str) -> str:
    """Refresh tokens shaped like the provider's: Google's start ``1//``."""
    if dialect == GOOGLE:
        return "1//" + secrets.token_urlsafe(72)
    return "0.A" + secrets.token_urlsafe(300)


def new_google_access_token() -> str:
    return "ya29." + secrets.token_urlsafe(120)
