"""A strict stand-in for :class:`~postroom.api.TokenHTTP` that tests can run.

The real client runs on Twisted's global reactor, which a test process must
not run. :class:`BlockingTokenHTTP` keeps its contract (``post_form(url,
body, ca_file=, headers=)`` firing a :class:`~postroom.api.TokenAnswer`
whatever the status; a temporary :class:`~postroom.api.TokenError` when no
answer came) and makes the same HTTPS POST with the standard library, so an
auth driver is tested against a real identity provider (``tests/idp``, or
any other on another thread or process) with its certificate verified.

It is strict where a fake would be lenient: ``https://`` only, the
certificate checked against ``ca_file`` (the driver's ``token-ca-file``, else
the one given here, else the system's), a deadline on every request, and the
forms it sent kept for assertions (:attr:`sent`; never in its ``repr``).
"""

from __future__ import annotations

import http.client
import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlsplit

import attrs
from twisted.internet import defer

from postroom.oauth.http import FORM_HEADERS, MAX_ANSWER, TokenAnswer, https_target
from postroom.tokens import TokenError, TokenFailure


@attrs.frozen
class PostedForm:
    """One form a :class:`BlockingTokenHTTP` sent (values hold secrets: not in ``repr``)."""

    url: str
    fields: dict[str, str] = attrs.field(repr=False)
    headers: dict[str, str] = attrs.field(repr=False)
    ca_file: str | None = None


class BlockingTokenHTTP:
    """POSTs token requests with ``http.client`` on the caller's thread.

    *ca_file*: the CAs to trust when the driver passes none; *timeout*:
    seconds for the whole request (socket timeout). :meth:`hold` queues the
    requests instead, until :meth:`release` sends them, so a test can have
    many logins wait for one token request (single flight).
    """

    def __init__(
        self, ca_file: str | os.PathLike[str] | None = None, *, timeout: float = 10.0
    ) -> None:
        self.ca_file = os.fspath(ca_file) if ca_file is not None else None
        self.timeout = timeout
        #: requests sent (as :class:`~postroom.api.TokenHTTP` counts them)
        self.requests = 0
        #: every form sent, in order
        self.sent: list[PostedForm] = []
        self._held: list[tuple[PostedForm, str, defer.Deferred[TokenAnswer]]] | None = None

    def __repr__(self) -> str:
        return f"BlockingTokenHTTP(requests={self.requests})"

    def post_form(
        self,
        url: str,
        body: str,
        *,
        ca_file: str | os.PathLike[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> defer.Deferred[TokenAnswer]:
        """POST *body* to *url*: a fired Deferred (unless :meth:`hold` is on)."""
        try:
            https_target(url)
        except TokenError as exc:
            return defer.fail(exc)
        trusted = os.fspath(ca_file) if ca_file is not None else self.ca_file
        form = PostedForm(
            url,
            dict(parse_qsl(body, keep_blank_values=True)),
            {**FORM_HEADERS, **(headers or {})},
            trusted,
        )
        if self._held is not None:
            waiting: defer.Deferred[TokenAnswer] = defer.Deferred()
            self._held.append((form, body, waiting))
            return waiting
        return self._send(form, body)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Queue requests while the block runs; send them (in order) when it ends."""
        self._held = []
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        """Send the held requests, firing their Deferreds; stop holding."""
        held, self._held = self._held or [], None
        for form, body, waiting in held:
            self._send(form, body).chainDeferred(waiting)

    def _send(self, form: PostedForm, body: str) -> defer.Deferred[TokenAnswer]:
        self.requests += 1
        self.sent.append(form)
        where = https_target(form.url)
        try:
            return defer.succeed(self._post(form, body))
        except TimeoutError:
            reason = f"no answer within {self.timeout:g} s"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        return defer.fail(TokenError(TokenFailure.TEMPORARY, f"token endpoint {where}: {reason}"))

    def _post(self, form: PostedForm, body: str) -> TokenAnswer:
        parts = urlsplit(form.url)
        context = ssl.create_default_context(cafile=form.ca_file)
        connection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=self.timeout, context=context
        )
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            # one connection per request, as TokenHTTP's Agent (no persistent pool)
            headers = {**form.headers, "Connection": "close"}
            connection.request("POST", path, body=body.encode(), headers=headers)
            response = connection.getresponse()
            data = response.read(MAX_ANSWER + 1)
            if len(data) > MAX_ANSWER:
                raise ValueError(f"answer longer than {MAX_ANSWER} bytes")
            return TokenAnswer(response.status, data)
        finally:
            connection.close()


__all__ = ["BlockingTokenHTTP", "PostedForm"]
