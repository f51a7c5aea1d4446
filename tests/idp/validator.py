"""oauthlib's server side, told the IdP's policy: the ``RequestValidator``,
the JWT-bearer grant (RFC 7523 section 2.1, Google service accounts) and the
client-assertion check (RFC 7523 section 2.2, Azure certificate credentials),
the last two written here because oauthlib has neither.

One :class:`Validator` serves one HTTP request: it knows the dialect (Azure or
Google), the tenant and the token endpoint's URL (the ``aud`` assertions must
carry). Refusals are raised as :class:`~tests.idp.authority.Refusal`, which the
HTTP layer shapes as the provider would.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.common import Request
from oauthlib.oauth2 import RequestValidator
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749.grant_types.base import GrantTypeBase

from tests.idp import authority as a

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: the longest lifetime Google accepts for a JWT-bearer assertion
GOOGLE_MAX_ASSERTION_LIFETIME = 3600
#: clock skew the assertion checks allow, in seconds
LEEWAY = 300


def param(request: Request, name: str) -> str | None:
    """A request parameter oauthlib does not list among its own."""
    value = request._params.get(name)
    return value if isinstance(value, str) else None


def basic_credentials(request: Request) -> tuple[str, str] | None:
    auth = (request.headers or {}).get("Authorization", "")
    if not auth.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(auth[6:]).decode()
    except ValueError:
        return None
    client_id, _, secret = decoded.partition(":")
    return client_id, secret


def google(refusal: a.Refusal, description: str) -> a.Refusal:
    """The same refusal, with Google's wording."""
    refusal.google_description = description
    return refusal


class Validator(RequestValidator):
    """Every policy decision of the IdP, for one request."""

    def __init__(self, authority: a.Authority, dialect: str, token_url: str,
                 tenant: str | None = None, signing_key: rsa.RSAPrivateKey | None = None) -> None:
        self.authority = authority
        self.dialect = dialect
        self.token_url = token_url
        self.tenant = tenant
        self.signing_key = signing_key

    # -- clients ------------------------------------------------------------

    def _client_id(self, request: Request) -> str | None:
        basic = basic_credentials(request)
        return request.client_id or (basic[0] if basic else None)

    def _known_client(self, client_id: str | None) -> a.Client:
        client = self.authority.clients.get(client_id or "")
        if client is None or client.dialect != self.dialect:
            raise google(a.unknown_client(client_id or ""), "The OAuth client was not found.")
        if self.dialect == a.AZURE and self.tenant and client.tenant not in (None, self.tenant):
            raise a.unknown_client(client_id or "")
        return client

    def client_authentication_required(self, request: Request, *args: Any, **kwargs: Any) -> bool:
        if request.client_secret or param(request, "client_assertion"):
            return True
        if basic_credentials(request):
            return True
        client = self.authority.clients.get(self._client_id(request) or "")
        return client is None or not client.public

    def authenticate_client(self, request: Request, *args: Any, **kwargs: Any) -> bool:
        client = self._known_client(self._client_id(request))
        basic = basic_credentials(request)
        secret = request.client_secret or (basic[1] if basic else None)
        assertion = param(request, "client_assertion")
        if assertion is not None:
            if param(request, "client_assertion_type") != CLIENT_ASSERTION_TYPE:
                raise a.bad_assertion("client_assertion_type is not jwt-bearer")
            self._check_client_assertion(client, assertion)
        elif secret is not None:
            if client.public:
                raise google(a.Refusal(
                    "invalid_client", 700025, "Client is public so neither 'client_assertion' "
                    "nor 'client_secret' should be presented.", 401), "Unauthorized")
            if client.secret is None or not secrets.compare_digest(secret, client.secret):
                raise google(a.bad_secret(), "Unauthorized")
            if client.secret_expired:
                raise a.secret_expired(client.client_id)
        else:
            raise google(a.secret_missing(), "client_secret is missing.")
        request.client = client
        request.client_id = client.client_id
        return True

    def authenticate_client_id(self, client_id: str, request: Request,
                               *args: Any, **kwargs: Any) -> bool:
        client = self._known_client(client_id)
        if not client.public:
            raise google(a.secret_missing(), "client_secret is missing.")
        request.client = client
        return True

    def _check_client_assertion(self, client: a.Client, assertion: str) -> None:
        """RFC 7523 section 2.2 as Azure applies it: signed (RS256/PS256) by a
        registered certificate (picked by ``x5t``), ``aud`` the token endpoint,
        ``iss`` = ``sub`` = the client id, unexpired on the IdP's clock."""
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as exc:
            raise a.bad_assertion("not a JWT") from exc
        key = client.certificates.get(str(header.get("x5t", "")))
        if key is None:
            raise a.bad_assertion("no certificate with this x5t is registered for the app")
        claims = self._decode(assertion, key, a.bad_assertion, ["RS256", "PS256"])
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            raise a.bad_assertion("iss and sub must be the client id")

    def _decode(self, assertion: str, key: rsa.RSAPublicKey, refuse: Any,
                algorithms: list[str]) -> dict[str, Any]:
        now = self.authority.clock.now()
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion, key, algorithms=algorithms, audience=self.token_url,
                options={"require": ["exp", "aud", "iss"], "verify_exp": False,
                         "verify_nbf": False, "verify_iat": False},
            )
        except jwt.InvalidSignatureError as exc:
            raise refuse("signature validation failed") from exc
        except jwt.InvalidAudienceError as exc:
            raise refuse(f"aud must be {self.token_url}") from exc
        except jwt.PyJWTError as exc:
            raise refuse(str(exc)) from exc
        if float(claims["exp"]) + LEEWAY < now:
            raise refuse("the assertion has expired")
        if "nbf" in claims and float(claims["nbf"]) - LEEWAY > now:
            raise refuse("the assertion is not valid yet")
        return claims

    # -- grants -------------------------------------------------------------

    def validate_grant_type(self, client_id: str, grant_type: str, client: a.Client,
                            request: Request, *args: Any, **kwargs: Any) -> bool:
        if grant_type not in client.grants:
            raise google(a.grant_not_allowed(grant_type), "unauthorized_client")
        return True

    def validate_user(self, username: str, password: str, client: a.Client,
                      request: Request, *args: Any, **kwargs: Any) -> bool:
        user = self.authority.users.get(username.lower())
        if user is None:
            raise a.unknown_user(username)
        if not secrets.compare_digest(password, user.password):
            raise a.bad_password()
        if user.mfa_required:
            raise a.mfa_required("Office 365 Exchange Online")
        request.user = user.name
        return True

    def get_default_scopes(self, client_id: str, request: Request,
                           *args: Any, **kwargs: Any) -> list[str]:
        return []

    def _expand(self, client: a.Client, scopes: list[str]) -> list[str]:
        """``<resource>/.default`` becomes every scope of that resource the app has."""
        expanded: list[str] = []
        for scope in scopes:
            if scope.endswith("/.default"):
                resource = scope[: -len(".default")]
                expanded += [s for s in client.scopes if s.startswith(resource)]
            else:
                expanded.append(scope)
        return list(dict.fromkeys(expanded))

    def validate_scopes(self, client_id: str, scopes: list[str], client: a.Client,
                        request: Request, *args: Any, **kwargs: Any) -> bool:
        scopes = [s for s in scopes if s]  # oauthlib splits "" into [""]
        requested = " ".join(scopes)
        if not scopes:
            raise google(a.bad_scope(requested), "Missing required parameter: scope")
        if request.grant_type == "client_credentials":
            # the token carries the app's roles; the scope stays "<resource>/.default"
            if len(scopes) != 1 or not scopes[0].endswith("/.default"):
                raise a.app_scope_not_default(requested)
            if not self._expand(client, scopes):
                raise a.bad_scope(requested)
            return True
        wanted = [s for s in self._expand(client, scopes) if s != a.OFFLINE_ACCESS]
        if not wanted:
            raise a.bad_scope(requested)
        if any(s not in client.scopes for s in wanted):
            raise a.consent_missing(client.client_id)
        user = self.authority.users[request.user]
        if client.client_id not in user.consents:
            raise a.consent_missing(client.client_id)
        request.scopes = wanted + ([a.OFFLINE_ACCESS] if a.OFFLINE_ACCESS in scopes else [])
        return True

    # -- refresh tokens -----------------------------------------------------

    def validate_refresh_token(self, refresh_token: str, client: a.Client, request: Request,
                               *args: Any, **kwargs: Any) -> bool:
        token = self.authority.live_refresh_token(refresh_token)
        if token is None or token.grant.client_id != client.client_id:
            raise google(a.grant_revoked(), "Token has been expired or revoked.")
        if token.grant.user is not None:
            user = self.authority.users[token.grant.user]
            if user.mfa_required and self.dialect == a.AZURE:
                raise a.mfa_required("Office 365 Exchange Online")
            if client.client_id not in user.consents:
                raise google(a.consent_missing(client.client_id),
                             "Token has been expired or revoked.")
        request.user = token.grant.user
        request.idp_grant = token.grant
        return True

    def get_original_scopes(self, refresh_token: str, request: Request,
                            *args: Any, **kwargs: Any) -> list[str]:
        return list(request.idp_grant.scopes)

    def is_within_original_scope(self, request_scopes: list[str], refresh_token: str,
                                 request: Request, *args: Any, **kwargs: Any) -> bool:
        original = request.idp_grant.scopes
        wanted = self._expand(request.client, request_scopes)
        if all(s in original for s in wanted):
            request.scopes = wanted
            return True
        return False

    def rotate_refresh_token(self, request: Request) -> bool:
        return bool(request.client.rotate_refresh_tokens)

    # -- issuing ------------------------------------------------------------

    def save_bearer_token(self, token: dict[str, Any], request: Request,
                          *args: Any, **kwargs: Any) -> None:
        client: a.Client = request.client
        grant: a.Grant | None = getattr(request, "idp_grant", None)
        with self.authority.lock:
            if grant is None:
                grant = self.authority.new_grant(
                    client.client_id, request.user, request.scopes or [], request.grant_type)
            self.authority.store_access_token(
                token["access_token"], grant, request.scopes or [], int(token["expires_in"]),
                self.dialect)
            new_refresh = token.get("refresh_token")
            if self.dialect == a.AZURE and a.OFFLINE_ACCESS not in grant.scopes:
                token.pop("refresh_token", None)  # Azure: no refresh token without offline_access
            elif self.dialect == a.GOOGLE and new_refresh == request.refresh_token:
                token.pop("refresh_token", None)  # Google sends none back when it keeps it
            elif new_refresh and new_refresh != request.refresh_token:
                self.authority.store_refresh_token(new_refresh, grant)
                old = self.authority.refresh_tokens.get(request.refresh_token or "")
                if old is not None:
                    old.valid = False  # rotation: the used one is dead
            if self.dialect == a.AZURE:
                token["ext_expires_in"] = token["expires_in"]
            elif "scope" in token:
                token["scope"] = " ".join(s for s in grant.scopes if s != a.OFFLINE_ACCESS)

    def access_token_value(self, request: Request) -> str:
        """oauthlib's ``token_generator``: Azure's tokens are JWTs (signed by
        the IdP, ~1.6 KB like Azure's), Google's are opaque ``ya29.`` strings."""
        if self.dialect == a.GOOGLE:
            return a.new_google_access_token()
        assert self.signing_key is not None
        now = int(self.authority.clock.now())
        client: a.Client = request.client
        scopes = request.scopes or []
        resource = scopes[0].rsplit("/", 1)[0] if scopes and "/" in scopes[0] else ""
        claims: dict[str, Any] = {
            "aud": resource, "iss": f"https://sts.windows.net/{self.tenant}/",
            "iat": now, "nbf": now, "exp": now + int(request.expires_in),
            "appid": client.client_id, "tid": self.tenant, "ver": "1.0",
            "uti": secrets.token_urlsafe(16), "xms_padding": secrets.token_urlsafe(600),
        }
        if request.user:
            claims |= {"upn": request.user, "unique_name": request.user,
                       "scp": " ".join(s.rsplit("/", 1)[-1] for s in scopes
                                       if s != a.OFFLINE_ACCESS)}
        else:
            claims |= {"roles": list(a.EXCHANGE_APP_ROLES), "oid": client.client_id}
        return jwt.encode(claims, self.signing_key, algorithm="RS256", headers={"kid": "idp"})

    def refresh_token_value(self, request: Request) -> str:
        return a.new_refresh_token_value(self.dialect)

    # -- introspection and revocation ---------------------------------------

    def introspect_token(self, token: str, token_type_hint: str | None, request: Request,
                         *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        require_introspector(request.client)
        return claims_of(self.authority, token)

    def revoke_token(self, token: str, token_type_hint: str | None, request: Request,
                     *args: Any, **kwargs: Any) -> None:
        self.authority.revoke_token(token)


def require_introspector(client: a.Client) -> None:
    """Only a resource server registered for it may introspect."""
    if not client.may_introspect:
        raise a.Refusal("unauthorized_client", 700016,
                        f"The client '{client.client_id}' may not introspect tokens.", 401)


def claims_of(authority: a.Authority, value: str) -> dict[str, Any] | None:
    """RFC 7662 claims of a live access token (a refresh token is never active
    as a bearer token); None when inactive."""
    token = authority.live_access_token(value)
    if token is None:
        return None
    grant = token.grant
    claims: dict[str, Any] = {
        "scope": " ".join(s for s in token.scopes if s != a.OFFLINE_ACCESS),
        "client_id": grant.client_id, "token_type": "Bearer",
        "iat": int(token.issued_at), "exp": int(token.expires_at),
        "sub": grant.user or grant.client_id,
    }
    if grant.user:
        claims |= {"username": grant.user, "email": grant.user}
    else:
        client = authority.clients.get(grant.client_id)
        claims["roles"] = " ".join(a.EXCHANGE_APP_ROLES)
        claims["mailboxes"] = " ".join(client.mailboxes if client else ())
    return claims


class JWTBearerGrant(GrantTypeBase):
    """RFC 7523 section 2.1 as Google's token endpoint applies it to service
    accounts: an RS256 JWT signed with the account's key (``kid`` its key id),
    ``iss`` the account's e-mail, ``aud`` the token endpoint, ``scope`` within
    the domain-wide delegation, ``sub`` a user of the delegated domain,
    ``exp - iat`` at most an hour. No refresh token is issued."""

    def create_token_response(self, request: Request, token_handler: Any) -> tuple[Any, str, int]:
        headers = self._get_default_headers()
        try:
            self.validate_token_request(request)
        except errors.OAuth2Error as e:
            headers.update(e.headers)
            return headers, e.json, e.status_code
        token = token_handler.create_token(request, refresh_token=False)
        self.request_validator.save_token(token, request)
        return headers, json.dumps(token), 200

    def validate_token_request(self, request: Request) -> None:
        validator: Validator = self.request_validator
        auth = validator.authority
        assertion = param(request, "assertion")
        if not assertion:
            raise errors.InvalidRequestError("Missing required parameter: assertion",
                                             request=request)

        def refuse(why: str) -> a.Refusal:
            return google(a.Refusal("invalid_grant", 0, why), f"Invalid JWT: {why}")

        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise refuse("not a JWT") from exc
        account = auth.service_accounts.get(str(unverified.get("iss", "")))
        if account is None:
            raise google(a.Refusal("invalid_grant", 0, "unknown service account"),
                         "Invalid grant: account not found")
        key = account.keys.get(str(header.get("kid", "")))
        if key is None:
            raise google(a.Refusal("invalid_grant", 0, "unknown key id"),
                         "Invalid JWT Signature.")
        try:
            claims = validator._decode(assertion, key, refuse, ["RS256"])
        except a.Refusal as refusal:
            if "signature" in refusal.description:
                raise google(refusal, "Invalid JWT Signature.") from None
            raise
        iat = float(claims.get("iat", -1))
        now = auth.clock.now()
        lifetime = float(claims["exp"]) - iat
        if iat < 0 or iat - LEEWAY > now or lifetime > GOOGLE_MAX_ASSERTION_LIFETIME:
            raise refuse("Token must be a short-lived token (60 minutes) and in a reasonable "
                         "timeframe. Check your iat and exp values in the JWT claim.")
        scopes = str(claims.get("scope", "")).split()
        if not scopes:
            raise google(a.bad_scope(""), "Invalid OAuth scope or ID token audience provided.")
        subject = claims.get("sub")
        if subject is not None:
            subject = str(subject).lower()
            if (subject not in auth.users or not subject.endswith("@" + account.domain)
                    or any(s not in account.scopes for s in scopes)):
                raise google(a.Refusal("unauthorized_client", 0, "delegation refused"),
                             "Client is unauthorized to retrieve access tokens using this "
                             "method, or client not authorized for any of the scopes requested.")
        request.client = a.Client(account.client_id, a.GOOGLE, grants=frozenset({JWT_BEARER}))
        request.client_id = account.client_id
        request.user = subject
        request.scopes = scopes
