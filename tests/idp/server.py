"""The identity provider over HTTP: a Twisted resource answering at Azure's and
Google's paths, introspection, tokeninfo, revocation and the test controls.

:class:`IdentityProvider` is what tests hold: the state (an
:class:`~tests.idp.authority.Authority`), the controls, and :meth:`listen`,
which serves it with TLS on any reactor (the test's own, or the global one of
the standalone process, ``python -m tests.idp``).
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.common import Request
from oauthlib.oauth2 import BearerToken
from oauthlib.oauth2.rfc6749.endpoints import IntrospectEndpoint, RevocationEndpoint, TokenEndpoint
from oauthlib.oauth2.rfc6749.grant_types import (
    ClientCredentialsGrant,
    RefreshTokenGrant,
    ResourceOwnerPasswordCredentialsGrant,
)
from twisted.internet import ssl
from twisted.internet.interfaces import IListeningPort, IReactorCore, IReactorSSL
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from tests.idp import authority as a
from tests.idp import pki
from tests.idp.validator import (
    JWT_BEARER,
    JWTBearerGrant,
    Validator,
    claims_of,
    require_introspector,
)

AZURE_TOKEN_PATH = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$")
GRANT_TYPES = ("password", "refresh_token", "client_credentials", JWT_BEARER)
#: the endpoints an outage can cover (the controls never go down)
ENDPOINTS = ("token", "introspect", "tokeninfo", "revoke")

log = Logger(namespace="postroom.tests.idp")
# oauthlib's debug records print whole tokens and validator objects: keep them out
logging.getLogger("oauthlib").setLevel(logging.INFO)


def access_log_line(timestamp: str, request: server.Request) -> str:
    """Twisted's access log without the query string (tokeninfo carries the
    token there) and without headers (they carry credentials)."""
    path = request.uri.split(b"?", 1)[0].decode("ascii", "replace")
    return f'{timestamp} "{request.method.decode()} {path}" {request.code}'


class IdentityProvider:
    """The local identity provider: state, controls and the HTTP resource."""

    def __init__(self, authority: a.Authority | None = None,
                 signing_key: rsa.RSAPrivateKey | None = None) -> None:
        self.authority = authority or a.Authority()
        #: signs Azure-style access tokens
        self.signing_key = signing_key or pki.new_key()
        self.resource = IdPResource(self)
        #: set by :meth:`listen`: the reactor answering, so held requests are released on it
        self.reactor: IReactorCore | None = None

    # -- serving ------------------------------------------------------------

    def site(self) -> server.Site:
        return server.Site(self.resource, logFormatter=access_log_line)

    def listen(self, reactor: IReactorSSL, tls: pki.TestCA, port: int = 0,
               interface: str = "127.0.0.1") -> IListeningPort:
        """Serve HTTPS with *tls*'s certificate on *interface*:*port* (0: any free port)."""
        options = ssl.DefaultOpenSSLContextFactory(str(tls.key_file), str(tls.cert_file))
        self.reactor = reactor  # type: ignore[assignment]
        return reactor.listenSSL(port, self.site(), options, interface=interface)

    # -- test controls (the Python API; /_control/ mirrors it) --------------

    def advance(self, seconds: float) -> None:
        self.authority.advance(seconds)

    def set_access_ttl(self, seconds: int) -> None:
        """The lifetime of access tokens issued from now on."""
        self.authority.access_ttl = seconds

    def revoke(self, user: str | None = None, client_id: str | None = None) -> int:
        return self.authority.revoke(user, client_id)

    def set_rotation(self, on: bool, client_id: str | None = None) -> None:
        self.authority.set_rotation(on, client_id)

    def set_mfa_required(self, user: str, on: bool = True) -> None:
        self.authority.set_mfa_required(user, on)

    def set_consent(self, user: str, client_id: str, on: bool) -> None:
        self.authority.set_consent(user, client_id, on)

    def expire_secret(self, client_id: str, expired: bool = True) -> None:
        self.authority.expire_secret(client_id, expired)

    def start_outage(self, status: int = 503, hang: bool = False,
                     endpoints: Iterable[str] = ()) -> None:
        unknown = set(endpoints) - set(ENDPOINTS)
        if unknown:
            raise ValueError(f"unknown endpoints {sorted(unknown)}; known: {ENDPOINTS}")
        self.authority.start_outage(status, hang, endpoints)

    def end_outage(self) -> None:
        self.authority.end_outage()

    def release(self) -> None:
        """Answer the requests an outage held, normally (even while it lasts).
        Safe from any thread: the answers are written on the serving reactor."""
        if self.reactor is None:
            self.resource.answer_held()
        else:
            self.reactor.callFromThread(self.resource.answer_held)  # type: ignore[attr-defined]

    def held(self) -> int:
        return len(self.resource.held)

    def wait_held(self, count: int, timeout: float = 10.0) -> bool:
        """Wait (from another thread) until *count* requests are held."""
        with self.resource.holding:
            return self.resource.holding.wait_for(lambda: self.held() >= count, timeout)

    def issue_refresh_token(self, client_id: str, user: str, scope: str) -> str:
        return self.authority.issue_refresh_token(client_id, user, scope.split())

    def snapshot(self) -> dict[str, Any]:
        """The settings the controls change, for :meth:`restore` (JSON-able)."""
        return self.authority.snapshot()

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Put the settings of *snapshot* back; requests an outage held are
        answered normally unless the restored state is itself a hanging outage."""
        self.authority.restore(snapshot)
        outage = self.authority.outage
        if outage is None or not outage.hang:
            self.release()

    def request_count(self, key: str) -> int:
        """Requests received, by endpoint (``azure-token``, ``google-token``,
        ``introspect``, ``tokeninfo``, ``revoke``) or ``endpoint:grant_type``."""
        return self.authority.request_count(key)

    def stats(self) -> dict[str, int]:
        return self.authority.stats()

    def reset_counts(self) -> None:
        self.authority.reset_counts()


def _now_text() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def azure_error(refusal: a.Refusal) -> dict[str, Any]:
    """Azure's error body: the AADSTS code leads the description, as clients parse it."""
    trace, correlation, stamp = str(uuid.uuid4()), str(uuid.uuid4()), _now_text()
    return {
        "error": refusal.error,
        "error_description": (f"AADSTS{refusal.code}: {refusal.description}\r\n"
                              f"Trace ID: {trace}\r\nCorrelation ID: {correlation}\r\n"
                              f"Timestamp: {stamp}"),
        "error_codes": [refusal.code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={refusal.code}",
    }


def google_error(refusal: a.Refusal) -> dict[str, Any]:
    return {"error": refusal.error, "error_description": refusal.google_description}


#: Azure codes for the errors oauthlib itself finds (missing parameters and the like)
OAUTHLIB_AZURE_CODES = {
    "invalid_request": 900144, "unsupported_grant_type": 70003, "invalid_scope": 70011,
    "invalid_client": 7000215, "invalid_grant": 70000, "unauthorized_client": 700016,
}


class IdPResource(resource.Resource):
    """Every path of the IdP; one leaf resource dispatching on the path."""

    isLeaf = True

    def __init__(self, idp: IdentityProvider) -> None:
        super().__init__()
        self.idp = idp
        self.held: list[tuple[server.Request, Callable[[], bytes]]] = []
        #: notified whenever a request is held, for tests in another thread
        self.holding = threading.Condition()

    @property
    def authority(self) -> a.Authority:
        return self.idp.authority

    # -- dispatch -----------------------------------------------------------

    def render(self, request: server.Request) -> bytes | int:
        path = request.path.decode("utf-8", "replace")
        method = request.method.decode()
        if path.startswith("/_control/"):
            return self._control(request, path[len("/_control/"):])
        body = request.content.read().decode("utf-8", "replace") if request.content else ""
        query = request.uri.decode("utf-8", "replace").partition("?")[2]
        form = dict(parse_qsl(body)) if method == "POST" else {}
        match = AZURE_TOKEN_PATH.match(path)
        answer: Callable[[], bytes]
        if match and method == "POST":
            endpoint, dialect, tenant = "token", a.AZURE, match["tenant"]
            self.authority.count("azure-token", form.get("grant_type"))
            answer = lambda: self._token(request, body, dialect, tenant)  # noqa: E731
        elif path == "/token" and method == "POST":
            endpoint, dialect = "token", a.GOOGLE
            self.authority.count("google-token", form.get("grant_type"))
            answer = lambda: self._token(request, body, dialect, None)  # noqa: E731
        elif path == "/introspect" and method in ("POST", "GET"):
            endpoint, dialect = "introspect", a.AZURE
            self.authority.count("introspect", method.lower())
            answer = lambda: self._introspect(request, body, query)  # noqa: E731
        elif path == "/tokeninfo" and method in ("GET", "POST"):
            endpoint, dialect = "tokeninfo", a.GOOGLE
            self.authority.count("tokeninfo")
            answer = lambda: self._tokeninfo(request, query, form)  # noqa: E731
        elif path == "/revoke" and method == "POST":
            endpoint, dialect = "revoke", a.GOOGLE
            self.authority.count("revoke")
            answer = lambda: self._revoke(request, body, query)  # noqa: E731
        else:
            request.setResponseCode(404)
            return self._json(request, {"error": "not_found"})
        outage = self.authority.outage
        if outage is not None and outage.covers(endpoint):
            if outage.hang:
                self._hold(request, answer)
                return server.NOT_DONE_YET
            log.info("idp {endpoint}: outage, answering {status}", endpoint=endpoint,
                     status=outage.status)
            refusal = a.unavailable()
            refusal.status = outage.status
            return self._refuse(request, refusal, dialect)
        return answer()

    def _hold(self, request: server.Request, answer: Callable[[], bytes]) -> None:
        entry = (request, answer)
        with self.holding:
            self.held.append(entry)
            self.holding.notify_all()

        def forget(_: Failure) -> None:  # the client went away while held
            if entry in self.held:
                self.held.remove(entry)

        request.notifyFinish().addErrback(forget)

    def answer_held(self) -> None:
        held, self.held = self.held, []
        for request, answer in held:
            if not request.finished and not request._disconnected:
                request.write(answer())
                request.finish()

    # -- helpers ------------------------------------------------------------

    @staticmethod
    def _json(request: server.Request, data: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(data).encode()

    def _refuse(self, request: server.Request, refusal: a.Refusal, dialect: str) -> bytes:
        request.setResponseCode(refusal.status)
        body = azure_error(refusal) if dialect == a.AZURE else google_error(refusal)
        return self._json(request, body)

    def _oauthlib_answer(self, request: server.Request, headers: dict[str, str], body: str,
                         status: int, dialect: str) -> bytes:
        """oauthlib's own answer; its errors reshaped as the provider words them."""
        if status >= 400:
            found = json.loads(body or "{}")
            error = found.get("error", "invalid_request")
            description = found.get("error_description") or error.replace("_", " ")
            refusal = a.Refusal(error, OAUTHLIB_AZURE_CODES.get(error, 90000), description,
                                status)
            return self._refuse(request, refusal, dialect)
        request.setResponseCode(status)
        for name, value in headers.items():
            request.setHeader(name.encode(), value.encode())
        return body.encode()

    def _validator(self, request: server.Request, dialect: str, tenant: str | None) -> Validator:
        host = (request.getHeader(b"host") or b"127.0.0.1").decode("ascii", "replace")
        token_url = f"https://{host}{request.path.decode('utf-8', 'replace')}"
        return Validator(self.authority, dialect, token_url, tenant, self.idp.signing_key)

    @classmethod
    def _headers_lower(cls, request: server.Request) -> dict[str, str]:
        return {k.lower(): v for k, v in cls._headers(request).items()}

    @staticmethod
    def _headers(request: server.Request) -> dict[str, str]:
        return {k.decode("latin-1"): v[-1].decode("latin-1")
                for k, v in request.requestHeaders.getAllRawHeaders()}

    # -- endpoints ----------------------------------------------------------

    def _token(self, request: server.Request, body: str, dialect: str,
               tenant: str | None) -> bytes:
        grant_type = dict(parse_qsl(body)).get("grant_type")
        validator = self._validator(request, dialect, tenant)
        if tenant is not None and tenant not in self.authority.tenants:
            return self._refuse(request, a.Refusal(
                "invalid_request", 90002, f"Tenant '{tenant}' not found."), dialect)
        if grant_type not in GRANT_TYPES:
            return self._refuse(request, a.Refusal(
                "unsupported_grant_type", 70003,
                f"The app requested an unsupported grant type '{grant_type}'."), dialect)
        bearer = BearerToken(
            validator, token_generator=validator.access_token_value,
            expires_in=lambda _: self.authority.access_ttl,
            refresh_token_generator=validator.refresh_token_value,
        )
        endpoint = TokenEndpoint(None, bearer, {
            "password": ResourceOwnerPasswordCredentialsGrant(validator),
            "refresh_token": RefreshTokenGrant(validator),
            "client_credentials": ClientCredentialsGrant(validator),
            JWT_BEARER: JWTBearerGrant(validator),
        })
        try:
            with self.authority.lock:
                headers, answer, status = endpoint.create_token_response(
                    "https://idp" + request.path.decode(), "POST", body, self._headers(request))
        except a.Refusal as refusal:
            log.info("idp token {dialect} grant={grant}: refused {error} {code}",
                     dialect=dialect, grant=grant_type, error=refusal.error, code=refusal.code)
            return self._refuse(request, refusal, dialect)
        log.info("idp token {dialect} grant={grant}: {status}", dialect=dialect,
                 grant=grant_type, status=status)
        return self._oauthlib_answer(request, headers, answer, status, dialect)

    def _introspect(self, request: server.Request, body: str, query: str) -> bytes:
        """RFC 7662 for Dovecot's three modes: ``post`` (oauthlib), ``get``
        (``?token=`` with the client's credentials) and ``auth`` (the token as
        a bearer token in the Authorization header)."""
        validator = self._validator(request, a.AZURE, None)
        headers = self._headers(request)
        try:
            with self.authority.lock:
                if request.method == b"POST":
                    answer_headers, answer, status = IntrospectEndpoint(
                        validator).create_introspect_response(
                        "https://idp/introspect", "POST", body, headers)
                    return self._oauthlib_answer(request, answer_headers, answer, status,
                                                 a.AZURE)
                params = dict(parse_qsl(query))
                auth = headers.get("Authorization", "")
                if "token" in params:
                    fake = _form_request(params, headers)
                    validator.authenticate_client(fake)
                    require_introspector(fake.client)
                    token = params["token"]
                elif auth.lower().startswith("bearer "):
                    token = auth[7:].strip()
                else:
                    request.setResponseCode(400)
                    return self._json(request, {"error": "invalid_request"})
                claims = claims_of(self.authority, token)
        except a.Refusal as refusal:
            return self._refuse(request, refusal, a.AZURE)
        return self._json(request, {"active": False} if claims is None
                          else {"active": True, **claims})

    def _tokeninfo(self, request: server.Request, query: str, form: dict[str, str]) -> bytes:
        """Google's tokeninfo: strings, as Google sends them; 400 when invalid."""
        token = dict(parse_qsl(query)).get("access_token") or form.get("access_token", "")
        with self.authority.lock:
            claims = claims_of(self.authority, token)
            now = self.authority.clock.now()
        if claims is None:
            request.setResponseCode(400)
            return self._json(request, {"error": "invalid_token",
                                        "error_description": "Invalid Value"})
        info = {
            "azp": claims["client_id"], "aud": claims["client_id"], "sub": claims["sub"],
            "scope": claims["scope"], "exp": str(claims["exp"]),
            "expires_in": str(max(0, int(claims["exp"] - now))), "access_type": "offline",
        }
        if "email" in claims:
            info |= {"email": claims["email"], "email_verified": "true"}
        return self._json(request, info)

    def _revoke(self, request: server.Request, body: str, query: str) -> bytes:
        """RFC 7009 and Google's ``/revoke?token=``: revoking any token of a
        grant revokes the grant."""
        params = dict(parse_qsl(body)) | dict(parse_qsl(query))
        validator = self._validator(request, a.GOOGLE, None)
        if "client_id" not in params and "authorization" not in self._headers_lower(request):
            with self.authority.lock:
                known = self.authority.revoke_token(params.get("token", ""))
            if not known:
                request.setResponseCode(400)
                return self._json(request, {"error": "invalid_token",
                                            "error_description": "Token expired or revoked"})
            return self._json(request, {})
        try:
            with self.authority.lock:
                headers, answer, status = RevocationEndpoint(validator).create_revocation_response(
                    "https://idp/revoke", "POST", urlencode(params), self._headers(request))
        except a.Refusal as refusal:
            return self._refuse(request, refusal, a.GOOGLE)
        return self._oauthlib_answer(request, headers, answer, status, a.GOOGLE)

    # -- controls -----------------------------------------------------------

    def _control(self, request: server.Request, name: str) -> bytes:
        try:
            raw = request.content.read() if request.content else b""
            args: dict[str, Any] = json.loads(raw) if raw.strip() else {}
            result = self._run_control(name, args)
        except (KeyError, TypeError, ValueError) as exc:
            request.setResponseCode(400)
            return self._json(request, {"error": f"{type(exc).__name__}: {exc}"})
        if result is NotImplemented:
            request.setResponseCode(404)
            return self._json(request, {"error": f"no control {name!r}"})
        log.info("idp control {name}", name=name)
        return self._json(request, {"ok": True} if result is None else result)

    def _run_control(self, name: str, args: dict[str, Any]) -> Any:
        idp = self.idp
        if name == "advance":
            idp.advance(float(args["seconds"]))
        elif name == "access-ttl":
            idp.set_access_ttl(int(args["seconds"]))
        elif name == "revoke":
            return {"revoked": idp.revoke(args.get("user"), args.get("client_id"))}
        elif name == "rotation":
            idp.set_rotation(bool(args["on"]), args.get("client_id"))
        elif name == "mfa":
            idp.set_mfa_required(args["user"], bool(args.get("on", True)))
        elif name == "consent":
            idp.set_consent(args["user"], args["client_id"], bool(args["on"]))
        elif name == "expire-secret":
            idp.expire_secret(args["client_id"], bool(args.get("expired", True)))
        elif name == "outage":
            idp.start_outage(int(args.get("status", 503)), bool(args.get("hang", False)),
                             args.get("endpoints", ()))
        elif name == "end-outage":
            idp.end_outage()
        elif name == "release":
            self.answer_held()
        elif name == "issue-refresh-token":
            return {"refresh_token": idp.issue_refresh_token(
                args["client_id"], args["user"], args["scope"])}
        elif name == "snapshot":
            return idp.snapshot()
        elif name == "restore":
            idp.authority.restore(args)
            outage = idp.authority.outage
            if outage is None or not outage.hang:
                self.answer_held()  # on this reactor already
        elif name == "stats":
            return idp.stats()
        elif name == "reset-stats":
            idp.reset_counts()
        else:
            return NotImplemented
        return None


def _form_request(params: dict[str, str], headers: dict[str, str]) -> Request:
    """An oauthlib request for a hand-written endpoint's client authentication."""
    return Request("https://idp/", "POST", urlencode(params), headers)
