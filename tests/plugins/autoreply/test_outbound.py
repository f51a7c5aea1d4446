"""Outbound: ``postroom_veto`` refuses automatic replies that would answer a machine or
feed a loop; ``postroom_envelope`` marks automatic mail with ``X-Loop``."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.model import Envelope, Interaction, OutboundRequest
from tests.conftest import run
from tests.plugins.autoreply.support import (
    CUSTOMER,
    OUR_MAILBOX,
    SITE_WITH_MAILBOX,
    Harness,
    message,
)


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path, SITE_WITH_MAILBOX, **{"autowar-max-reply-count": "3"})


def request(
    in_reply_to: str | None = None, automatic: bool = True, **fields: object
) -> OutboundRequest:
    values: dict[str, object] = {"to": [CUSTOMER], "from_addr": OUR_MAILBOX}
    values.update(fields)
    return OutboundRequest(
        subject="We received your message",
        text="Thank you, we will answer within a day.",
        in_reply_to=in_reply_to,
        automatic=automatic,
        **values,  # type: ignore[arg-type]
    )


def refused(harness: Harness, req: OutboundRequest) -> str:
    """The reason autoreply vetoes *req* with (rendering never refuses)."""
    run(harness.hooks.render(req, harness.ctx))
    veto = run(harness.hooks.veto(req, harness.ctx))
    assert veto is not None, "the request was not vetoed"
    assert veto.plugin == "autoreply"
    assert veto.reason.startswith("automatic mail refused: ")
    return veto.reason


def allowed(harness: Harness, req: OutboundRequest) -> None:
    run(harness.hooks.render(req, harness.ctx))
    assert run(harness.hooks.veto(req, harness.ctx)) is None


def inbound(harness: Harness, *headers: str, subtype: str = "InboundNew") -> Interaction:
    return harness.keep(harness.enrich(message(*headers), subtype=subtype))


# ---------------------------------------------------------- what is answered


@pytest.mark.parametrize("subtype", ["InboundNDR", "InboundReport", "InboundDisposition"])
def test_an_automatic_reply_to_a_report_is_refused(harness: Harness, subtype: str) -> None:
    parent = inbound(harness, subtype=subtype)
    error = refused(harness, request(parent.id))
    assert f"is a report ({subtype})" in error and parent.id in error


def test_an_automatic_reply_to_an_auto_reply_is_refused(harness: Harness) -> None:
    parent = inbound(harness, "Auto-Submitted: auto-replied")
    error = refused(harness, request(parent.id))
    assert "is an automatic mail (Auto-Submitted: auto-replied)" in error


def test_an_automatic_reply_to_a_mail_loop_is_refused(harness: Harness) -> None:
    parent = inbound(harness, f"X-Loop: {OUR_MAILBOX}")
    error = refused(harness, request(parent.id))
    assert "part of a mail loop (X-Loop: support@centre.example" in error


def test_the_parent_is_read_from_the_store_not_from_the_request(harness: Harness) -> None:
    # the mark may also come from elsewhere (e.g. a strategy), as text
    parent = harness.keep(Interaction(from_addr=CUSTOMER, attached_data={"_AutoReply": "true"}))
    assert "is an automatic mail (marked _AutoReply)" in refused(harness, request(parent.id))


def test_an_automatic_reply_to_a_person_is_allowed(harness: Harness) -> None:
    parent = inbound(harness)
    allowed(harness, request(parent.id))


def test_an_unknown_parent_does_not_block(harness: Harness) -> None:
    allowed(harness, request("no-such-interaction"))


@pytest.mark.parametrize("subtype", ["InboundNDR", "InboundNew"])
def test_an_agents_reply_is_never_refused(harness: Harness, subtype: str) -> None:
    parent = inbound(harness, "Auto-Submitted: auto-replied", f"X-Loop: {OUR_MAILBOX}",
                     subtype=subtype)  # fmt: skip
    harness.exchange(CUSTOMER, n=10)
    allowed(harness, request(parent.id, automatic=False))
    allowed(harness, request(None, automatic=False, to=[OUR_MAILBOX]))


# ----------------------------------------------------------- who it goes to


def test_automatic_mail_to_our_own_address_is_refused(harness: Harness) -> None:
    error = refused(harness, request(None, to=[CUSTOMER], cc=[f"Desk <{OUR_MAILBOX.upper()}>"]))
    assert "mail loop: support@centre.example is one of our own addresses" in error


def test_enable_mail_loops_allows_mail_to_ourselves(tmp_path: Path) -> None:
    harness = Harness(tmp_path, SITE_WITH_MAILBOX, **{"enable-mail-loops": "true"})
    allowed(harness, request(None, to=[OUR_MAILBOX]))


@pytest.mark.parametrize(("earlier", "refuse"), [(0, False), (2, False), (3, True), (9, True)])
def test_the_autowar_budget_of_a_recipient(harness: Harness, earlier: int, refuse: bool) -> None:
    harness.exchange(CUSTOMER, "in", n=earlier)
    if refuse:
        error = refused(harness, request(None))
        assert error == (
            f"automatic mail refused: auto-reply war: {earlier + 1} automatic mails exchanged "
            f"with {CUSTOMER} within 00:10:00 (autowar-max-reply-count 3)"
        )
    else:
        allowed(harness, request(None))


@pytest.mark.parametrize("field", ["to", "cc", "bcc"])
def test_every_recipient_has_its_own_budget(harness: Harness, field: str) -> None:
    busy = "busy@example.org"
    harness.exchange(busy, "out", n=3)
    allowed(harness, request(None, to=[CUSTOMER]))
    recipients = {"to": [CUSTOMER], field: [*([CUSTOMER] if field == "to" else []), busy]}
    assert busy in refused(harness, request(None, **recipients))  # type: ignore[arg-type]


def test_the_budget_recovers_when_the_window_has_passed(harness: Harness) -> None:
    harness.exchange(CUSTOMER, "out", n=3)
    refused(harness, request(None))
    harness.clock.advance(601)
    allowed(harness, request(None))


def test_without_autowar_detection_only_the_budget_check_is_off(tmp_path: Path) -> None:
    harness = Harness(
        tmp_path,
        SITE_WITH_MAILBOX,
        **{"autowar-max-reply-count": "1", "enable-autowar-detect": "false"},
    )
    harness.exchange(CUSTOMER, "out", n=5)
    allowed(harness, request(None))
    parent = inbound(harness, "Precedence: bulk")
    refused(harness, request(parent.id))  # RFC 3834 is not an option


# ------------------------------------------------------------------ X-Loop


def envelope_for(harness: Harness, req: OutboundRequest) -> Envelope:
    envelope = Envelope(mail_from=req.from_addr or "", rcpt_to=list(req.to))
    run(harness.hooks.envelope(req, envelope, harness.ctx))
    return envelope


def test_automatic_mail_carries_x_loop_with_our_address(harness: Harness) -> None:
    envelope = envelope_for(harness, request(None, from_addr=f"Support <{OUR_MAILBOX}>"))
    assert envelope.extra_headers == {"X-Loop": OUR_MAILBOX}


def test_an_agents_mail_carries_no_x_loop(harness: Harness) -> None:
    assert envelope_for(harness, request(None, automatic=False)).extra_headers == {}


def test_an_x_loop_the_request_set_is_kept(harness: Harness) -> None:
    req = request(None, headers={"x-loop": "campaign-7@centre.example"})
    assert envelope_for(harness, req).extra_headers == {}
