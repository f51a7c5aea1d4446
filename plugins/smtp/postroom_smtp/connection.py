"""One SMTP connection, blocking: smtplib, run only in the kernel's thread pool.

Why smtplib (see ``NOTES-servers.md``): it dot-stuffs correctly whatever the
message size, takes MAIL/RCPT parameters (DSN), keeps the EHLO extensions,
does STARTTLS with a verifying ``SSLContext`` and several messages per
connection; Twisted's ESMTP client does none of these right.

:class:`TracingSMTP` is smtplib's client with four changes: the protocol trace
goes to the :class:`postroom.net.trace.Tracer` (never to stderr) with AUTH
redacted and message bodies summarised; the connect timeout (TCP and implicit
TLS handshake) is separate from the timeout for each server response; implicit
TLS is a parameter rather than a subclass; SASL responses are UTF-8.

:class:`SMTPConnection` is what the pool holds: it opens a session (greeting,
EHLO, STARTTLS, EHLO, AUTH), checks it (NOOP), runs mail transactions and turns
every failure into an :class:`SMTPSendError` that says what happened in the
operator's terms and whether a retry can help.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from postroom.api import (
    Credentials,
    ProxyError,
    SenderAuthenticationFailed,
    SendError,
    ServerSettings,
    Tracer,
    read_error_challenge,
)
from postroom_smtp import sasl
from postroom_smtp.envelope import normalise_line_ends, plan_transaction

log = logging.getLogger(__name__)

#: What servers say when the logged-in user may not use the envelope sender:
#: Postfix ``reject_sender_login_mismatch`` ("not owned by user agent1"),
#: Exchange/Microsoft 365 ("SendAsDenied", "5.7.60 ... permission to send as").
SEND_AS_REFUSAL = re.compile(
    r"not owned by user|send-?as-?denied|not allowed to send as|permissions? to send as"
    r"|sender login mismatch|\b5\.7\.60\b",
    re.IGNORECASE,
)


class SMTPSendError(SendError):
    """A send failed; says whether to retry and what to do with the connection.

    ``broken``: the connection's state is unknown, the pool must not reuse it.
    ``stale``: a pooled connection turned out to be dead before the server
    took anything: the sender retries at once on a new connection.
    ``auth_failed``: the server refused the credentials (the auth driver is
    told to refresh them).
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        code: int | None = None,
        broken: bool = False,
        stale: bool = False,
        auth_failed: bool = False,
    ) -> None:
        super().__init__(message, permanent=permanent)
        self.code = code
        self.broken = broken
        self.stale = stale
        self.auth_failed = auth_failed


class SMTPAuthenticationFailed(SMTPSendError, SenderAuthenticationFailed):
    """The server refused the credentials (535...): the outbox pauses all sending
    by the login policy instead of retrying entry by entry."""


def said(code: int, response: bytes | str) -> str:
    """A server reply as one line: ``553 5.7.1 <x>: Sender address rejected: ...``."""
    text = response.decode("utf-8", "replace") if isinstance(response, bytes) else response
    return f"{code} " + " ".join(line.strip() for line in text.splitlines() if line.strip())


def _timed_out(exc: BaseException) -> bool:
    """True when *exc* or what it was raised from is a socket timeout.

    smtplib turns a timeout into ``SMTPServerDisconnected`` raised inside the
    ``except OSError`` block, so the timeout is its ``__context__``.
    """
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError):
            return True
        if isinstance(seen, smtplib.SMTPServerDisconnected) and str(seen).endswith("timed out"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


#: bytes of the message body written per socket call (each gets protocol-timeout)
BODY_CHUNK = 256 * 1024


@functools.cache
def default_helo_name() -> str:
    """The host's FQDN, or an address literal (as smtplib does), computed once:
    ``getfqdn`` may wait on DNS and would otherwise run for every connection."""
    fqdn = socket.getfqdn()
    if "." in fqdn:
        return fqdn
    try:
        return f"[{socket.gethostbyname(socket.gethostname())}]"
    except OSError:
        return "[127.0.0.1]"


@attrs.frozen
class ConnectionSettings(ServerSettings):
    """What a connection needs from the ``smtp-client`` options: the shared
    server settings (host, port, security, CA file, timeouts, trace) and the
    EHLO name."""

    helo_name: str | None = None
    #: ``mail.smtp.auth.mechanisms``: the OAuth mechanism(s) to use with a token
    auth_mechanisms: str | None = None

    def tls_context(self) -> ssl.SSLContext:
        """The verifying context for implicit TLS and STARTTLS."""
        return self.stdlib_tls()


class TracingSMTP(smtplib.SMTP):
    """smtplib's client, traced through a Tracer, with separate connect/response timeouts."""

    def __init__(
        self,
        *,
        tracer: Tracer,
        connect_timeout: float,
        protocol_timeout: float,
        implicit_tls: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        connect: Callable[[float], socket.socket] | None = None,
    ) -> None:
        self.tracer = tracer
        #: opens the TCP socket (directly or through the proxy: ``ServerSettings.connect_socket``)
        self.connect_tcp = connect
        self.protocol_timeout = protocol_timeout
        self.implicit_tls = implicit_tls
        self.stage = "connect"
        self.body_sent = False
        self._in_auth = False
        super().__init__(
            local_hostname=local_hostname or default_helo_name(), timeout=connect_timeout
        )

    def open_session(self, host: str, port: int) -> tuple[int, bytes]:
        """Connect and read the greeting (smtplib's ``connect`` with the host kept
        for the certificate check of a later STARTTLS)."""
        self._host = host
        return self.connect(host, port)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        self.stage = "connect"
        if self.connect_tcp is not None:
            sock = self.connect_tcp(timeout)
        else:
            sock = socket.create_connection((host, port), timeout, self.source_address)
        try:
            if self.implicit_tls is not None:
                sock = self.implicit_tls.wrap_socket(sock, server_hostname=host)
            sock.settimeout(self.protocol_timeout)
        except BaseException:
            sock.close()
            raise
        self.stage = "greeting"
        return sock

    def send(self, s: Any) -> None:
        if self.tracer.enabled:
            if isinstance(s, bytes | bytearray):
                self.tracer.in_auth = False
                self.tracer.sent(f"<message body: {len(s)} bytes, dot-stuffed>".encode())
            else:
                line = str(s).encode("utf-8", "replace")
                self.tracer.in_auth = self._in_auth and not line.upper().startswith(b"AUTH ")
                self.tracer.sent(line)
        if isinstance(s, bytes | bytearray):
            # The body, dot-stuffed by smtplib. Sent in chunks because a socket
            # timeout bounds a whole sendall(): one call for a 50 MB message
            # would need the link to carry it within protocol-timeout.
            view = memoryview(s)
            for start in range(0, len(view), BODY_CHUNK):
                super().send(view[start : start + BODY_CHUNK])
            self.body_sent = True
            return
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        code, text = super().getreply()
        if self.tracer.enabled:
            lines = text.split(b"\n") or [b""]
            for i, line in enumerate(lines):
                sep = b" " if i == len(lines) - 1 else b"-"
                self.tracer.received(str(code).encode() + sep + line)
        return code, text

    def authenticate(
        self, mechanism: str, respond: Callable[[bytes | None], str | None]
    ) -> tuple[int, bytes]:
        """The AUTH exchange of RFC 4954 with UTF-8 responses; answers to
        challenges are traced as ``<redacted>``. Raises SMTPAuthenticationError."""

        def b64(text: str) -> str:
            return base64.b64encode(text.encode("utf-8")).decode("ascii") or "="

        self._in_auth = True
        try:
            initial = respond(None)
            if initial is None:
                code, resp = self.docmd("AUTH", mechanism)
            else:
                code, resp = self.docmd("AUTH", f"{mechanism} {b64(initial)}")
            rounds = 0
            while code == 334 and rounds < 5:
                rounds += 1
                try:
                    challenge: bytes = base64.b64decode(resp, validate=False)
                except ValueError:
                    challenge = resp
                answer = respond(challenge)
                code, resp = self.docmd(b64(answer) if answer else "")
        finally:
            self._in_auth = False
        if code in (235, 503):  # 503: already authenticated
            return code, resp
        raise smtplib.SMTPAuthenticationError(code, resp)


@attrs.define
class Delivery:
    """What the server accepted in one transaction."""

    accepted: list[str]
    refused: dict[str, str]
    reply: str
    dropped: tuple[str, ...] = ()


class SMTPConnection:
    """An open, greeted, possibly encrypted and authenticated SMTP session."""

    def __init__(
        self,
        client: TracingSMTP,
        settings: ConnectionSettings,
        number: int,
        user: str | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.number = number
        self.user = user
        self.transactions = 0  # attempted on this connection
        self.messages_sent = 0
        self.broken = False

    def __repr__(self) -> str:
        return f"<SMTPConnection #{self.number} to {self.settings.where}>"

    # -- opening

    @classmethod
    def open(
        cls,
        settings: ConnectionSettings,
        credentials: Credentials | None,
        number: int,
        *,
        client_factory: Callable[..., TracingSMTP] = TracingSMTP,
    ) -> SMTPConnection:
        """Connect, greet, secure and log in; blocking. Raises SMTPSendError."""
        tracer = settings.tracer(f"smtp-client#{number}")
        client = client_factory(
            tracer=tracer,
            connect_timeout=settings.connect_timeout,
            protocol_timeout=settings.protocol_timeout,
            implicit_tls=settings.tls_context() if settings.security == "ssl" else None,
            local_hostname=settings.helo_name,
            connect=settings.connect_socket,
        )
        conn = cls(client, settings, number, credentials.username if credentials else None)
        try:
            code, greeting = client.open_session(settings.host, settings.port)
            if code != 220:
                raise SMTPSendError(
                    f"the SMTP server {settings.where} refused the connection "
                    f"(server said: {said(code, greeting)})",
                    code=code,
                    broken=True,
                )
            client.stage = "EHLO"
            client.ehlo_or_helo_if_needed()
            if settings.security == "starttls":
                conn._starttls()
            if credentials is not None:
                conn._login(credentials)
            client.stage = "idle"
        except SMTPSendError as exc:
            if exc.code != 421 and client.stage != "greeting":
                conn._quit_quietly()  # the session is sane: say goodbye properly
            client.close()
            raise
        except Exception as exc:
            client.close()
            raise conn._failure(exc) from exc
        return conn

    def _quit_quietly(self) -> None:
        try:
            self.client.quit()
        except Exception:
            log.debug("QUIT on %r failed", self, exc_info=True)

    def _starttls(self) -> None:
        client = self.client
        client.stage = "STARTTLS"
        if not client.has_extn("starttls"):
            raise SMTPSendError(
                f"the SMTP server {self.settings.where} does not offer STARTTLS, and "
                "smtp-connection-security is starttls: not sending in clear text (use `ssl` "
                "for implicit TLS on port 465, or fix the server)",
                permanent=True,
                broken=True,
            )
        client.starttls(context=self.settings.tls_context())
        client.stage = "EHLO"
        client.ehlo_or_helo_if_needed()

    def _login(self, credentials: Credentials) -> None:
        client = self.client
        client.stage = "AUTH"
        after = " after STARTTLS" if self.settings.security == "starttls" else ""
        if not client.has_extn("auth"):
            raise SMTPSendError(
                f"the SMTP server {self.settings.where} does not offer AUTH{after}, and "
                "enable-authentication is true (a server that only offers AUTH over TLS needs "
                "smtp-connection-security: starttls or ssl)",
                permanent=True,
                broken=True,
            )
        advertised = client.esmtp_features.get("auth", "").split()
        try:
            mechanism, responder = sasl.choose(
                credentials,
                advertised,
                self.settings.host,
                self.settings.port,
                self.settings.auth_mechanisms,
            )
        except sasl.NoUsableMechanism as exc:
            raise SMTPSendError(
                f"cannot log in to the SMTP server {self.settings.where} as "
                f"{credentials.username}: {exc}",
                permanent=True,
                broken=True,
            ) from None
        try:
            client.authenticate(mechanism, responder)
        except smtplib.SMTPAuthenticationError as exc:
            server_said = said(exc.smtp_code, exc.smtp_error)
            if 400 <= exc.smtp_code < 500:  # 454: the server cannot check it now
                raise SMTPSendError(
                    f"the SMTP server {self.settings.where} cannot check the login of user "
                    f"{credentials.username} now (server said: {server_said})",
                    code=exc.smtp_code,
                    broken=True,
                ) from None
            hint = ""
            if responder.last_challenge is not None and isinstance(responder, sasl.Bearer):
                # the responder keeps the challenge decoded; the reader takes base64
                challenge = read_error_challenge(base64.b64encode(responder.last_challenge))
                if challenge is not None:
                    hint = f"; {challenge.describe()}"
            raise SMTPAuthenticationFailed(
                f"the SMTP server {self.settings.where} refused the login of user "
                f"{credentials.username} with AUTH {mechanism} "
                f"(server said: {server_said}{hint})",
                code=exc.smtp_code,
                broken=True,
                auth_failed=True,
            ) from None

    # -- using

    def noop(self) -> bool:
        """True when the server still answers (NOOP 250); a dead one is marked broken."""
        self.client.stage = "NOOP"
        try:
            code, _resp = self.client.noop()
        except (smtplib.SMTPException, OSError):
            self.broken = True
            return False
        if code != 250:
            self.broken = True
            return False
        self.client.stage = "idle"
        return True

    def send(
        self,
        message: bytes,
        mail_from: str,
        rcpt_to: Sequence[str],
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> Delivery:
        """One mail transaction; blocking. Raises SMTPSendError (or EnvelopeError).

        The message is made CRLF-only first; smtplib dot-stuffs it.
        """
        data = normalise_line_ends(message)
        client = self.client
        features: dict[str, str] = dict(client.esmtp_features) if client.does_esmtp else {}
        plan = plan_transaction(
            mail_from,
            rcpt_to,
            mail_options,
            rcpt_options,
            features,
            size=len(data),
            eight_bit=not data.isascii(),
        )
        self.transactions += 1
        client.body_sent = False
        client.stage = "MAIL FROM"
        try:
            code, resp = client.mail(plan.mail_from, list(plan.mail_options))
            if code != 250:
                raise self._sender_refused(plan.mail_from, code, resp)
            client.stage = "RCPT TO"
            refused: dict[str, tuple[int, bytes]] = {}
            for rcpt in plan.rcpt_to:
                code, resp = client.rcpt(rcpt, list(plan.rcpt_options))
                if code == 421:
                    raise self._closing(code, resp)
                if code not in (250, 251):
                    refused[rcpt] = (code, resp)
            if len(refused) == len(plan.rcpt_to):
                self._reset()
                permanent = all(500 <= c < 600 for c, _ in refused.values())
                for c, t in refused.values():
                    # Postfix delays a sender restriction to RCPT (smtpd_delay_reject)
                    if permanent and SEND_AS_REFUSAL.search(said(c, t)):
                        raise self._send_as(plan.mail_from, c, said(c, t))
                detail = "; ".join(f"{r} ({said(c, t)})" for r, (c, t) in refused.items())
                raise SMTPSendError(
                    f"the SMTP server {self.settings.where} refused every recipient: {detail}",
                    permanent=permanent,
                    code=next(iter(refused.values()))[0],
                    broken=self.broken,
                )
            client.stage = "DATA"
            try:
                code, resp = client.data(data)
            except smtplib.SMTPDataError as exc:  # DATA itself was not answered 354
                error = exc.smtp_error
                code, resp = exc.smtp_code, error if isinstance(error, bytes) else error.encode()
            if code == 421:
                raise self._closing(code, resp)
            if code != 250:
                self._reset()
                raise self._message_refused(plan.mail_from, code, resp)
        except SMTPSendError:
            client.stage = "idle" if not self.broken else "broken"
            raise
        except (smtplib.SMTPException, OSError) as exc:
            self.broken = True
            raise self._failure(exc) from exc
        self.messages_sent += 1
        client.stage = "idle"
        return Delivery(
            accepted=[r for r in plan.rcpt_to if r not in refused],
            refused={r: said(c, t) for r, (c, t) in refused.items()},
            reply=said(code, resp),
            dropped=plan.dropped,
        )

    def _reset(self) -> None:
        """RSET after a refusal so the next transaction starts clean; a
        connection that cannot be reset is not reused."""
        try:
            code, _ = self.client.rset()
        except (smtplib.SMTPException, OSError):
            self.broken = True
            return
        if code != 250:
            self.broken = True

    def _closing(self, code: int, resp: bytes) -> SMTPSendError:
        """421: the server is closing the connection (shutting down, idle timeout)."""
        self.broken = True
        stage = self.client.stage
        return SMTPSendError(
            f"the SMTP server {self.settings.where} closed the connection during {stage} "
            f"(server said: {said(code, resp)}); the message is retried",
            code=code,
            broken=True,
            stale=stage == "MAIL FROM" and self.transactions > 1,
        )

    def _sender_refused(self, mail_from: str, code: int, resp: bytes) -> SMTPSendError:
        if code == 421:
            return self._closing(code, resp)
        self._reset()
        text = said(code, resp)
        permanent = 500 <= code < 600
        if permanent and SEND_AS_REFUSAL.search(text):
            return self._send_as(mail_from, code, text)
        if code == 530:  # like a refused login: fixed in the configuration, then retried
            return SMTPSendError(
                f"the SMTP server {self.settings.where} requires a login to send "
                f"(server said: {text}); set enable-authentication: true with user and password",
                permanent=False,
                code=code,
                broken=self.broken,
            )
        return SMTPSendError(
            f"the SMTP server {self.settings.where} refused the sender address "
            f"<{mail_from}> (server said: {text})",
            permanent=permanent,
            code=code,
            broken=self.broken,
        )

    def _message_refused(self, mail_from: str, code: int, resp: bytes) -> SMTPSendError:
        text = said(code, resp)
        permanent = 500 <= code < 600
        if permanent and SEND_AS_REFUSAL.search(text):  # Exchange refuses after DATA
            return self._send_as(mail_from, code, text)
        return SMTPSendError(
            f"the SMTP server {self.settings.where} refused the message (server said: {text})",
            permanent=permanent,
            code=code,
            broken=self.broken,
        )

    def _send_as(self, mail_from: str, code: int, text: str) -> SMTPSendError:
        user = self.user or "the client (not logged in)"
        return SMTPSendError(
            f"the server refused to let {user} send as {mail_from}: grant send-as rights "
            f"or use the user's own address (server said: {text})",
            permanent=True,
            code=code,
            broken=self.broken,
        )

    def _failure(self, exc: BaseException) -> SMTPSendError:
        """An exception of smtplib, ssl or the socket layer, in the operator's terms."""
        self.broken = True
        where = self.settings.where
        stage = self.client.stage
        if isinstance(exc, SMTPSendError):
            return exc
        if isinstance(exc, ProxyError):
            return SMTPSendError(f"cannot connect to the SMTP server {where}: {exc}", broken=True)
        if _timed_out(exc):
            if stage == "connect":
                text = (
                    f"timed out connecting to the SMTP server {where} after "
                    f"{self.settings.connect_timeout:g} s (connect-timeout)"
                )
            else:
                text = (
                    f"the SMTP server {where} did not answer within "
                    f"{self.settings.protocol_timeout:g} s (protocol-timeout) during {stage}"
                )
            return SMTPSendError(text + maybe_delivered(self.client), broken=True)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return SMTPSendError(
                f"the certificate of the SMTP server {where} could not be verified "
                f"({exc.verify_message}); if it is signed by a private CA, set ca-file",
                broken=True,
            )
        if isinstance(exc, ssl.SSLError):
            hint = ""
            if "WRONG_VERSION_NUMBER" in str(exc) and self.settings.security == "ssl":
                hint = (
                    "; the port seems to speak plain SMTP: use smtp-connection-security: "
                    "starttls (port 587) or the implicit-TLS port (465)"
                )
            return SMTPSendError(
                f"TLS with the SMTP server {where} failed: {exc}{hint}", broken=True
            )
        if isinstance(exc, socket.gaierror):
            return SMTPSendError(
                f"cannot resolve the SMTP server name {self.settings.host}: {exc}", broken=True
            )
        if isinstance(exc, ConnectionRefusedError):
            return SMTPSendError(f"the SMTP server {where} refused the connection", broken=True)
        if isinstance(exc, smtplib.SMTPResponseException):
            return SMTPSendError(
                f"the SMTP server {where} answered {said(exc.smtp_code, exc.smtp_error)} "
                f"during {stage}",
                permanent=False,
                code=exc.smtp_code,
                broken=True,
            )
        if isinstance(exc, smtplib.SMTPServerDisconnected | OSError):
            stale = (
                stage == "MAIL FROM"
                and self.transactions > 1
                and isinstance(exc, smtplib.SMTPServerDisconnected)
            )
            return SMTPSendError(
                f"the connection to the SMTP server {where} broke during {stage}: {exc}"
                + maybe_delivered(self.client),
                broken=True,
                stale=stale,
            )
        return SMTPSendError(
            f"SMTP with {where} failed during {stage}: {type(exc).__name__}: {exc}", broken=True
        )

    # -- closing

    def close(self) -> None:
        """QUIT (unless broken) and close the socket; never raises."""
        try:
            if not self.broken and self.client.sock is not None:
                self.client.stage = "QUIT"
                self._quit_quietly()
        finally:
            self.client.close()


def maybe_delivered(client: TracingSMTP) -> str:
    """The warning for a failure after the whole message went out: the server
    may have queued it, and the retry may deliver it twice."""
    if client.body_sent:
        return (
            "; the whole message had been sent, so the server may have accepted it: the "
            "retry can deliver it twice (same Message-ID, so the recipient can tell)"
        )
    return ""
