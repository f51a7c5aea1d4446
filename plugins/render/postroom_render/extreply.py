"""``POST /ext-reply``: the commercial product's ``ReplyFromExtResource``.

An external resource (a bot, a knowledge base) answers an inbound interaction:
the call names the interaction it answers, the standard response and the
external text, and postroom queues an outbound reply as an agent's would be
(``in_reply_to``, ``options.standard_response`` with ``ext_reply_text``, which
``[ExtAgentReply]`` in the template shows). It goes through the gateway's normal
queue path (``Gateway.send``), so the kernel's and every plugin's checks apply:
a refused call is a 400 naming the call's own field, nothing queued.

The product's ``queue`` parameter names the hand-off target the result goes to
(an interaction queue of the contact-centre stack). postroom keeps it for
migration: it is stored on the outbound interaction as the attached data
:data:`QUEUE_KEY`, where routing reads it; postroom does nothing else with it.
"""

from __future__ import annotations

import re
from typing import Any

from postroom.api import (
    OutboundRequest,
    RequestError,
    Response,
    Route,
    RouteRequest,
    interaction_json,
)
from postroom_render.options import OPTION

PATH = "/ext-reply"
#: the attached-data key the ``queue`` parameter is kept under
QUEUE_KEY = "render.ExtReplyQueue"
MAX_QUEUE = 255
REQUIRED = ("in_reply_to", "standard_response", "ext_reply_text")
KNOWN = (*REQUIRED, "queue", "fields")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: the part of ``options.standard_response`` a refusal concerns -> this call's field
_FIELD_OF_KEY = {
    "id": "standard_response",
    "fields": "fields",
    "ext_reply_text": "ext_reply_text",
    "in_reply_to": "in_reply_to",
}
#: a field of the send request -> this call's field
_FIELD_OF_SEND = {"to": "in_reply_to", "attached_data": "queue"}


def request_of(data: Any) -> OutboundRequest:
    """The send request of a call's JSON; RequestError naming the call's field."""
    if not isinstance(data, dict):
        raise RequestError(None, "the body must be a JSON object")
    unknown = sorted(key for key in data if key not in KNOWN)
    if unknown:
        shown = unknown[0] if len(unknown[0]) <= 60 else unknown[0][:60] + "..."
        raise RequestError(unknown[0], f"unknown key {shown!r} (known: {', '.join(KNOWN)})")
    for key in REQUIRED:
        value = data.get(key)
        if value is None:
            raise RequestError(key, "is required")
        if not isinstance(value, str) or not value.strip():
            raise RequestError(key, "must be a non-empty string")
    queue = data.get("queue")
    attached: dict[str, Any] = {}
    if queue is not None:
        if not isinstance(queue, str) or not queue:
            raise RequestError("queue", "must be a non-empty string")
        if len(queue) > MAX_QUEUE:
            raise RequestError("queue", f"longer than {MAX_QUEUE} characters")
        if _CONTROL.search(queue):
            raise RequestError("queue", "contains a control character")
        attached[QUEUE_KEY] = queue
    spec: dict[str, Any] = {
        "id": data["standard_response"],
        "ext_reply_text": data["ext_reply_text"],
    }
    if data.get("fields") is not None:
        spec["fields"] = data["fields"]
    return OutboundRequest(
        in_reply_to=data["in_reply_to"], options={OPTION: spec}, attached_data=attached
    )


def renamed(exc: RequestError) -> RequestError:
    """A refusal of the send request, naming this call's field instead."""
    message = exc.message
    field: str | None
    if exc.field == "options":
        field = _FIELD_OF_KEY.get(getattr(exc, "key", None) or "", "standard_response")
        message = message.removeprefix(f"{OPTION}: ").removeprefix(f"{OPTION}.")
    else:
        field = _FIELD_OF_SEND.get(exc.field or "", exc.field)
    return RequestError(field, message)


async def ext_reply(request: RouteRequest) -> Response:
    """Queue the reply; 202 with its outbound interaction, 400 naming the field."""
    outbound = request_of(request.json())
    try:
        interaction = await request.gateway.send(outbound)
    except RequestError as exc:
        raise renamed(exc) from None
    return Response.json(interaction_json(interaction), 202)


def route() -> Route:
    return Route("POST", PATH, ext_reply)
