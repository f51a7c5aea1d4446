"""The OAuth 2.0 test servers: the identity provider (tests/idp) and the Dovecot
instance "oauth" with Postfix's OAuth submission port, and helpers to use them.

``contrib/scripts/mail-test-servers start`` starts them with the other mail
servers (once per run); :class:`OAuthServers` reads the same state. The
session fixture ``oauth_servers`` (tests/integration/conftest.py) gives one.

Ports (``ports``): ``imap_oauth`` (STARTTLS), ``imaps_oauth``, ``pop3_oauth``
(STLS), ``pop3s_oauth``, ``submission_oauth`` (STARTTLS, then AUTH XOAUTH2,
OAUTHBEARER, PLAIN, LOGIN) and ``idp`` (HTTPS). Users: ``token_users``
(alice@contoso.test and bob@contoso.test at "Azure", carol@workspace.test and
dave@workspace.test at "Google") log in with tokens only; ``password_users``
(erin@contoso.test, frank@workspace.test) with passwords only. The IdP's
population (apps, secrets, key files) is ``world`` (tests/idp/README.md).

**One IdP serves every test of a run.** A control that changes its global
state (the clock, an outage, refresh-token rotation, MFA, consent, expired
secrets, the access-token lifetime) must be undone before the test ends: do
it inside ``with oauth_servers.idp.restoring():``, which snapshots those
settings on entry and puts them back on exit (ending an outage and answering
held requests). Revoking is not undone: revoke only the grant of a token the
test got itself, with :meth:`OAuthServers.revoke_token` (RFC 7009: that token's
grant only); ``idp.revoke(user=..., client_id=...)`` revokes every grant of
that user and app, including grants other tests of the run may still hold.
Request counters are global too: compare ``stats()`` before and after, never
against absolute numbers.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.integration.servers import MailServers

#: what an Azure ROPC client asks for: Outlook's IMAP, POP and SMTP scopes
OUTLOOK = "https://outlook.office.com/"
AZURE_USER_SCOPE = " ".join(
    OUTLOOK + s for s in ("IMAP.AccessAsUser.All", "POP.AccessAsUser.All", "SMTP.Send")
)
EXCHANGE_APP_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_MAIL = "https://mail.google.com/"
_DOVECOT_LOGIN = re.compile(
    r"Login: user=<(?P<user>[^>]*)>, method=(?P<method>\S+), rip=(?P<rip>[\d.]+)"
)
_POSTFIX_CLIENT = re.compile(
    r"client=[^\[\s]*\[(?P<rip>[\d.]+)\](?:, sasl_method=(?P<method>[^,\s]+))?"
    r"(?:, sasl_username=(?P<user>[^,\s]+))?"
)


class IdPControl:
    """The IdP's test controls over HTTPS (``POST /_control/<name>``, JSON).

    Global state: see the module docstring, and use :meth:`restoring`.
    """

    def __init__(self, url: str, ca_file: str) -> None:
        self.url = url
        self.ca_file = ca_file

    def __repr__(self) -> str:
        return f"<IdPControl {self.url}>"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def call(self, name: str, **args: Any) -> dict[str, Any]:
        """One control; its JSON answer. An HTTP error raises (a test failure)."""
        request = urllib.request.Request(
            f"{self.url}/_control/{name}", json.dumps(args).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, context=self.ssl_context(), timeout=30) as answer:
            result: dict[str, Any] = json.loads(answer.read())
        return result

    def advance(self, seconds: float) -> None:
        """Move the IdP's clock forward (tokens expire without sleeping)."""
        self.call("advance", seconds=seconds)

    def set_access_ttl(self, seconds: int) -> None:
        self.call("access-ttl", seconds=seconds)

    def revoke(self, user: str | None = None, client_id: str | None = None) -> int:
        """Revoke the grants of a user and/or an app; how many (not undone)."""
        args = {k: v for k, v in (("user", user), ("client_id", client_id)) if v is not None}
        return int(self.call("revoke", **args)["revoked"])

    def set_rotation(self, on: bool, client_id: str | None = None) -> None:
        args: dict[str, Any] = {"on": on}
        if client_id is not None:
            args["client_id"] = client_id
        self.call("rotation", **args)

    def start_outage(self, status: int = 503, hang: bool = False,
                     endpoints: tuple[str, ...] = ()) -> None:  # fmt: skip
        """``token``, ``introspect``, ``tokeninfo``, ``revoke`` (all when none)."""
        self.call("outage", status=status, hang=hang, endpoints=list(endpoints))

    def end_outage(self) -> None:
        self.call("end-outage")

    def release(self) -> None:
        """Answer the requests a hanging outage holds."""
        self.call("release")

    def issue_refresh_token(self, client_id: str, user: str, scope: str) -> str:
        """A refresh token as an interactive consent gives it (Google users)."""
        return str(self.call("issue-refresh-token", client_id=client_id, user=user,
                             scope=scope)["refresh_token"])  # fmt: skip

    def stats(self) -> dict[str, int]:
        """Requests received by endpoint (``introspect``, ``tokeninfo``,
        ``azure-token``, ``azure-token:password``, ...); global to the run."""
        return {k: int(v) for k, v in self.call("stats").items()}

    def snapshot(self) -> dict[str, Any]:
        return self.call("snapshot")

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        self.call("restore", **snapshot)

    @contextlib.contextmanager
    def restoring(self) -> Iterator[IdPControl]:
        """Undo, on exit, every change to the IdP's global settings (clock,
        outage, rotation, MFA, consent, expired secrets, token lifetime)."""
        saved = self.snapshot()
        try:
            yield self
        finally:
            self.restore(saved)


class TokenError(RuntimeError):
    """The IdP refused a token request: ``status`` and the JSON ``body``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"token request refused: HTTP {status} {body.get('error')}")
        self.status = status
        self.body = body


class OAuthServers(MailServers):
    """The "oauth" Dovecot instance (mailbox helpers of :class:`MailServers`
    work on it: ``deliver``, ``deliver_lmtp``, ``message_count``,
    ``wait_for_messages``, ``clear``, ...; user names are whole addresses),
    its ports, users and logs, and the identity provider (``idp``, ``world``).
    """

    _submission = "submission_oauth"

    def __init__(self, state: Mapping[str, Any]) -> None:
        super().__init__(state)
        oauth = state["oauth"]
        self.token_users: tuple[str, ...] = tuple(oauth["token_users"])
        self.password_users: dict[str, str] = dict(oauth["password_users"])
        self.domains: tuple[str, ...] = tuple(oauth["domains"])
        #: every user of the instance; token users have no password ("")
        self.users = {u: "" for u in self.token_users} | self.password_users
        self.lmtp_socket = oauth["lmtp_socket"]
        self._doveconf = oauth["dovecot_config"]
        idp = state["idp"]
        self.idp_url: str = idp["url"]
        self.idp_ca_file: str = idp["ca_file"]
        #: the IdP's population: tenant, apps, secrets, key files, token URLs
        self.world: dict[str, Any] = dict(idp["world"])
        self.idp = IdPControl(self.idp_url, self.idp_ca_file)
        self.dovecot_log = self.logs["dovecot-oauth"]
        self.postfix_log = self.logs["postfix"]

    def __repr__(self) -> str:
        return f"<OAuthServers {self.host} base {self.base}, IdP {self.idp_url}>"

    def address(self, user: str) -> str:
        return user if "@" in user else super().address(user)

    # --- tokens ------------------------------------------------------------------------

    def token_request(self, url: str, form: Mapping[str, str]) -> dict[str, Any]:
        """POST a token request (HTTPS, the run's CA); the JSON answer, or
        :class:`TokenError`."""
        request = urllib.request.Request(url, urllib.parse.urlencode(form).encode())
        try:
            with urllib.request.urlopen(request, context=self.idp.ssl_context(),
                                        timeout=30) as answer:  # fmt: skip
                result: dict[str, Any] = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            with exc:
                raise TokenError(exc.code, json.loads(exc.read() or b"{}")) from None
        return result

    def password_token(self, user: str, scope: str = AZURE_USER_SCOPE,
                       client_id: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Azure ROPC for *user* (alice or bob) with the public app."""
        return self.token_request(self.world["azure_token_url"], {
            "grant_type": "password", "client_id": client_id or self.world["public_app"],
            "username": user, "password": self.world["users"][user],
            "scope": scope + " offline_access",
        })  # fmt: skip

    def app_token(self, scope: str = EXCHANGE_APP_SCOPE) -> dict[str, Any]:
        """Azure client credentials (secret) of the daemon app: an app-only
        token, good for the mailboxes the app may open (alice, bob)."""
        return self.token_request(self.world["azure_token_url"], {
            "grant_type": "client_credentials", "client_id": self.world["daemon_app"],
            "client_secret": self.world["daemon_secret"], "scope": scope,
        })  # fmt: skip

    def google_token(self, user: str) -> dict[str, Any]:
        """A Google access token for *user* (carol or dave): a refresh token
        from the consent stand-in, then the refresh-token grant at /token."""
        client = self.world["google_client"]
        refresh = self.idp.issue_refresh_token(client, user, GOOGLE_MAIL)
        return self.token_request(self.world["google_token_url"], {
            "grant_type": "refresh_token", "client_id": client,
            "client_secret": self.world["google_secret"], "refresh_token": refresh,
        })  # fmt: skip

    def revoke_token(self, token: str) -> None:
        """Revoke *token*'s grant (RFC 7009 at /revoke, Google style: the token
        alone): its access tokens introspect inactive, its refresh token fails."""
        request = urllib.request.Request(
            f"{self.idp_url}/revoke", urllib.parse.urlencode({"token": token}).encode())
        with urllib.request.urlopen(request, context=self.idp.ssl_context(), timeout=30):
            pass

    # --- logs --------------------------------------------------------------------------

    def log_mark(self, name: str = "dovecot-oauth") -> LogMark:
        """Remember the end of a log; :meth:`LogMark.new_text` is what came after."""
        return LogMark(self.logs[name])


class LogMark:
    """A position in a server's log; what was written after it. Also for a
    proxy's own log: ``LogMark(Path(proxy["log"]))`` with an entry of
    proxy-test-servers' state (microsocks "connected to HOST:PORT", Dante
    "pass(1): tcp/connect", tinyproxy "CONNECT HOST:PORT")."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new_text(self) -> str:
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")

    def dovecot_logins(self) -> list[dict[str, str]]:
        """Dovecot's successful logins since the mark: user, method, rip."""
        return [m.groupdict() for m in _DOVECOT_LOGIN.finditer(self.new_text())]

    def postfix_clients(self) -> list[dict[str, str | None]]:
        """Postfix's ``client=...[rip], sasl_method=, sasl_username=`` since the mark."""
        return [m.groupdict() for m in _POSTFIX_CLIENT.finditer(self.new_text())]


# --- SASL --------------------------------------------------------------------------------


def xoauth2(user: str, token: str) -> bytes:
    """The XOAUTH2 initial response (before base64)."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer(user: str, token: str, host: str, port: int) -> bytes:
    """The RFC 7628 OAUTHBEARER initial response (``a=`` is required by Dovecot)."""
    return f"n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()


class SaslResponder:
    """An imaplib/smtplib authobject: the initial response first; to a
    server's error challenge (base64 JSON) an empty answer, so the server then
    says NO/535. ``error`` is that challenge's JSON (None when none came)."""

    def __init__(self, initial: bytes) -> None:
        self.initial = initial
        self.error: dict[str, Any] | None = None
        self._sent = False

    def __call__(self, challenge: bytes | None = None) -> bytes:
        if not self._sent:
            self._sent = True
            return self.initial
        with contextlib.suppress(ValueError):
            self.error = json.loads(challenge or b"{}")
        return b""

    def text(self, challenge: bytes | None = None) -> str:
        """The same for smtplib, which wants ``str`` (``smtp.auth(m, r.text)``)."""
        return self(challenge).decode("ascii")


def pop3_auth(pop: Any, mechanism: str, initial: bytes) -> bytes:
    """POP3 AUTH in two lines, as Office 365 documents it (``AUTH XOAUTH2``,
    ``+``, then the base64 line); answers an error challenge with an empty
    line. The final ``+OK`` line; a refusal raises ``poplib.error_proto``."""
    answer: bytes = pop._shortcmd(f"AUTH {mechanism}")
    if not answer.startswith(b"+ ") and answer != b"+":
        raise ValueError(f"no continuation: {answer!r}")
    answer = pop._shortcmd(base64.b64encode(initial).decode())
    if answer.startswith(b"+") and not answer.startswith(b"+OK"):  # poplib takes "+ " for OK
        answer = pop._shortcmd("")
    return answer


def proxy_connect(proxy: Mapping[str, Any], host: str, port: int,
                  timeout: float = 10.0) -> socket.socket:  # fmt: skip
    """A socket tunnelled to *host*:*port* through one proxy of
    ``contrib/scripts/proxy-test-servers`` (its state entry: ``kind`` socks5
    or http, ``host``, ``port``, ``user``, ``password``). Stdlib only; the
    gateway has its own client, this one proves the servers."""
    if proxy["kind"] == "http":
        return http_connect(proxy["host"], proxy["port"], host, port, timeout,
                            proxy.get("user"), proxy.get("password"))  # fmt: skip
    return socks5_connect(proxy["host"], proxy["port"], host, port, timeout,
                          proxy.get("user"), proxy.get("password"))  # fmt: skip


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise OSError(f"proxy closed the connection after {data!r}")
        data += chunk
    return data


def socks5_connect(proxy_host: str, proxy_port: int, host: str, port: int,
                   timeout: float = 10.0, user: str | None = None,
                   password: str | None = None) -> socket.socket:  # fmt: skip
    """RFC 1928 CONNECT to an IPv4 address (RFC 1929 user/password when given)."""
    sock = socket.create_connection((proxy_host, proxy_port), timeout=timeout)
    try:
        method = 2 if user is not None else 0
        sock.sendall(bytes([5, 1, method]))
        if _read_exactly(sock, 2) != bytes([5, method]):
            raise OSError("SOCKS5 proxy refused the authentication method")
        if user is not None:
            name, secret = user.encode(), (password or "").encode()
            sock.sendall(bytes([1, len(name)]) + name + bytes([len(secret)]) + secret)
            if _read_exactly(sock, 2)[1] != 0:
                raise OSError("SOCKS5 proxy refused the credentials")
        sock.sendall(bytes([5, 1, 0, 1]) + socket.inet_aton(host) + port.to_bytes(2, "big"))
        reply = _read_exactly(sock, 4)
        if reply[1] != 0:
            raise OSError(f"SOCKS5 CONNECT refused: reply code {reply[1]}")
        _read_exactly(sock, {1: 4, 4: 16}.get(reply[3], 0) + 2)  # bound address and port
    except BaseException:
        sock.close()
        raise
    return sock


def http_connect(proxy_host: str, proxy_port: int, host: str, port: int,
                 timeout: float = 10.0, user: str | None = None,
                 password: str | None = None) -> socket.socket:  # fmt: skip
    """A socket tunnelled through an HTTP CONNECT proxy (Basic credentials when given)."""
    sock = socket.create_connection((proxy_host, proxy_port), timeout=timeout)
    try:
        auth = ""
        if user is not None:
            basic = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            auth = f"Proxy-Authorization: Basic {basic}\r\n"
        target = f"{host}:{port}"
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)  # byte by byte: nothing after the head may be eaten
            if not chunk:
                raise OSError(f"proxy closed the connection after {head!r}")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 200" not in status:
            raise OSError(f"proxy refused CONNECT: {status!r}")
    except BaseException:
        sock.close()
        raise
    return sock
