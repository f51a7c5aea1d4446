"""Queue-time validation (``postroom_validate_request``) and the preview: a request is
prepared once (the kernel's checks, the reply fill, the plugins' checks) and either
stored or composed (render, veto, envelope, build) without being stored or sent.

Through :class:`postroom.testing.TestKernel`, its memory store and fake sender.
"""

from __future__ import annotations

from typing import Any

import pytest

from postroom.api import OutboundRequest, RequestError, hookimpl
from postroom.plugins.facade import PluginFailure
from postroom.testing import TestKernel

INBOUND = (
    b"From: Ann Lee <ann@client.example>\r\nReply-To: ann.home@client.example\r\n"
    b"To: support@centre.example\r\nSubject: Where is my order?\r\n"
    b"Message-ID: <q1@client.example>\r\nReferences: <q0@client.example>\r\n"
    b"Date: Sun, 06 Dec 2026 10:00:00 +0000\r\n\r\nPlease help.\r\n"
)
SITE = "email-processing:\n  default-domain: centre.example\n"


class Recorder:
    """Records the outbound hooks it is called in, and what validation saw."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.validated: list[OutboundRequest] = []

    @hookimpl
    def postroom_validate_request(self, request: OutboundRequest) -> None:
        self.calls.append("validate")
        self.validated.append(request)

    @hookimpl
    def postroom_render(self, request: OutboundRequest) -> None:
        self.calls.append("render")
        request.text = (request.text or "") + "\n-- rendered"

    @hookimpl
    def postroom_veto(self) -> None:
        self.calls.append("veto")

    @hookimpl
    def postroom_envelope(self, envelope: Any) -> None:
        self.calls.append("envelope")
        envelope.extra_headers["X-Ticket"] = "4711"

    @hookimpl
    def postroom_sent(self) -> None:
        self.calls.append("sent")


class Refuser:
    """Refuses requests whose ``acme`` option is not a number."""

    def __init__(self) -> None:
        self.asked = 0

    @hookimpl
    async def postroom_validate_request(self, request: OutboundRequest) -> None:
        self.asked += 1
        if not isinstance(request.options.get("acme", 0), int):
            raise RequestError("options", "acme must be a number")


class Vetoer:
    @hookimpl
    def postroom_veto(self, request: OutboundRequest) -> str | None:
        return "the subject says 'secret'" if "secret" in request.subject else None


class Broken:
    @hookimpl
    def postroom_validate_request(self) -> None:
        raise LookupError("the ticket service is down")


def nothing_stored(kernel: TestKernel, before: int = 0) -> bool:
    return len(kernel.interactions()) == before and kernel.outbox() == []


# --------------------------------------------------------------- validation


def test_a_refusal_at_queue_time_stores_nothing_and_later_plugins_are_not_asked() -> None:
    first, second = Refuser(), Refuser()
    with TestKernel([("first", first), ("second", second)], SITE) as kernel:
        with pytest.raises(RequestError) as info:
            kernel.send(OutboundRequest(to=["a@x.example"], text="x", options={"acme": "x"}))
        assert (info.value.field, info.value.message) == ("options", "acme must be a number")
        assert (first.asked, second.asked) == (1, 0)
        assert nothing_stored(kernel) and kernel.sender.sent == []
        assert kernel.send(OutboundRequest(to=["a@x.example"], text="x")).status == "Sent"
        assert (first.asked, second.asked) == (2, 1)


def test_plugins_validate_the_request_as_it_will_be_queued() -> None:
    """After the kernel's checks, the reply fill and the default From."""
    calls: list[str] = []
    recorder = Recorder(calls)
    with TestKernel([("recorder", recorder)], SITE) as kernel:
        [parent] = kernel.ingest(INBOUND)
        kernel.send(OutboundRequest(in_reply_to=parent.id, text="On its way."))
        [seen] = recorder.validated
        assert seen.to == ["ann.home@client.example"] and seen.subject == "Re: Where is my order?"
        assert seen.filled == ["to", "subject"]
        assert seen.from_addr == "postroom@centre.example"


def test_the_kernels_checks_come_first() -> None:
    refuser = Refuser()
    with TestKernel([("refuser", refuser)], SITE) as kernel:
        with pytest.raises(RequestError) as info:
            kernel.send(OutboundRequest(to=["not an address"], options={"acme": "x"}))
        assert info.value.field == "to" and refuser.asked == 0
        with pytest.raises(RequestError) as info:
            kernel.send(OutboundRequest(in_reply_to="no-such-id", options={"acme": "x"}))
        assert info.value.field == "in_reply_to" and refuser.asked == 0


def test_a_validator_that_fails_otherwise_stores_nothing_either() -> None:
    with TestKernel([("broken", Broken())], SITE) as kernel:
        with pytest.raises(PluginFailure, match="'broken' failed in postroom_validate_request"):
            kernel.send(OutboundRequest(to=["a@x.example"], text="x"))
        assert nothing_stored(kernel)


# ------------------------------------------------------------------- preview


def test_the_preview_is_what_the_send_sends_and_stores_nothing() -> None:
    calls: list[str] = []
    with TestKernel([("recorder", Recorder(calls))], SITE) as kernel:
        [parent] = kernel.ingest(INBOUND)
        request = OutboundRequest(in_reply_to=parent.id, text="On its way.", cc=["b@x.example"])
        preview = kernel.preview(request)
        assert calls == ["validate", "render", "veto", "envelope"]
        assert nothing_stored(kernel, before=1) and kernel.sender.sent == []
        assert preview.sendable and preview.error is None and preview.composed is not None
        data = preview.as_json()
        assert data["veto"] is None and data["subtype"] == "OutboundReply"
        assert data["parent_id"] == parent.id and data["message_id"].endswith("@centre.example>")
        assert data["text"] == "On its way.\n-- rendered"
        assert data["envelope"] == {
            "mail_from": "postroom@centre.example",
            "rcpt_to": ["ann.home@client.example", "b@x.example"],
            "mail_options": [],
            "rcpt_options": [],
        }
        headers = dict(data["headers"])
        assert headers["In-Reply-To"] == "<q1@client.example>"
        assert headers["References"] == "<q0@client.example> <q1@client.example>"
        assert headers["X-Ticket"] == "4711" and headers["Subject"] == "Re: Where is my order?"
        assert data["message"] == preview.composed.data.decode()  # type: ignore[union-attr]

        calls.clear()
        sent = kernel.send(OutboundRequest(in_reply_to=parent.id, text="On its way.",
                                           cc=["b@x.example"]))  # fmt: skip
        assert calls == ["validate", "render", "veto", "envelope", "sent"]
        assert sent.status == "Sent"
        [message] = kernel.sender.sent
        # byte for byte, but for the Message-ID each request is given
        previewed = preview.composed.data  # type: ignore[union-attr]
        assert previewed is not None
        assert message.data.replace(sent.message_id.encode(), b"<ID>") == previewed.replace(
            preview.interaction.message_id.encode(), b"<ID>"
        )
        assert message.envelope.rcpt_to == data["envelope"]["rcpt_to"]


def test_a_veto_is_shown_not_raised() -> None:
    with TestKernel([("policy", Vetoer())], SITE) as kernel:
        preview = kernel.preview(OutboundRequest(to=["a@x.example"], subject="secret", text="x"))
        assert not preview.sendable and nothing_stored(kernel)
        data = preview.as_json()
        assert data["veto"] == "vetoed by policy: the subject says 'secret'"
        assert (data["headers"], data["envelope"], data["message"]) == (None, None, None)
        assert data["subject"] == "secret" and data["text"] == "x"


def test_what_would_fail_the_send_for_good_is_shown_as_the_error() -> None:
    class Injector:
        @hookimpl
        def postroom_envelope(self, envelope: Any) -> None:
            envelope.extra_headers["From"] = "evil@x.example"

    with TestKernel([("injector", Injector())], SITE) as kernel:
        preview = kernel.preview(OutboundRequest(to=["a@x.example"], text="x"))
        assert not preview.sendable and preview.composed is None
        assert preview.error is not None and "header 'From' is set by postroom" in preview.error
        assert preview.as_json()["error"] == preview.error and nothing_stored(kernel)


def test_a_refused_request_raises_when_previewed_as_when_queued() -> None:
    with TestKernel([("refuser", Refuser())], SITE) as kernel:
        with pytest.raises(RequestError, match="acme must be a number"):
            kernel.preview(OutboundRequest(to=["a@x.example"], options={"acme": "x"}))
        with pytest.raises(RequestError) as info:
            kernel.preview(OutboundRequest(subject="no recipient"))
        assert info.value.field == "to" and nothing_stored(kernel)
