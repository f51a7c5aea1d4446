"""What a receiver's answer means for the hand-off.

As the issue and Standard Webhooks say: a 2xx took the interaction. 408
(the receiver timed out), 429 (slow down), any 5xx and any other status
(a redirect is not followed: it means the ``url`` needs fixing) are "not
now": the kernel retries with its back-off. Any other 4xx (400, 401, 403,
404, 410...) is the receiver refusing this interaction for good: a permanent
:class:`~postroom.api.HandoffError`, shown on the interaction, not retried
until someone asks.

The message names the receiver's host, the status and a short excerpt of the
answer's body (a receiver's reason helps whoever reads the failed hand-off),
with every secret value the request carried (signatures, the secret, extra
header values) blanked out, in case the receiver echoes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus

from postroom.api import HandoffError, HTTPResponse

#: statuses in 4xx that still mean "try again later"
RETRIED_4XX = frozenset({408, 429})
#: characters of the answer's body quoted in a message
EXCERPT = 200
#: values shorter than this are not blanked out (they would blank ordinary words)
MIN_REDACTED = 8

#: control characters, line and paragraph separators, bidi marks and overrides
_UNPRINTABLE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]+"
)
_SPACES = re.compile(r"\s+")


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "(unknown status)"


def excerpt(response: HTTPResponse, hidden: Iterable[str] = ()) -> str:
    """The start of the answer's body as one short line: secrets blanked,
    control and direction characters dropped, at most :data:`EXCERPT` characters."""
    text = response.body.decode("utf-8", "replace")
    for value in sorted({v for v in hidden if len(v) >= MIN_REDACTED}, key=len, reverse=True):
        text = text.replace(value, "***")
    text = _SPACES.sub(" ", _UNPRINTABLE.sub(" ", text)).strip()
    cut = len(text) > EXCERPT or response.truncated
    return text[:EXCERPT] + ("..." if cut else "")


def outcome(response: HTTPResponse, where: str, hidden: Iterable[str] = ()) -> HandoffError | None:
    """None when the receiver took the interaction, else the error to raise."""
    status = response.status
    if 200 <= status < 300:
        return None
    permanent = 400 <= status < 500 and status not in RETRIED_4XX
    said = excerpt(response, hidden)
    verdict = "refused for good" if permanent else "will retry"
    message = f"webhook {where}: HTTP {status} {phrase(status)} ({verdict})"
    if said:
        message += f": {said}"
    return HandoffError(message, permanent=permanent)


__all__ = ["EXCERPT", "RETRIED_4XX", "excerpt", "outcome"]
