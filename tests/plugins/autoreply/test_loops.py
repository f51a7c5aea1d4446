"""Mail loops and auto-reply wars on the inbound side: ``_MailLoop``, and the recording
of exchanges in ``postroom_committed`` / ``postroom_sent``."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from postroom.errors import ConfigError, ConfigErrors
from postroom.model import Interaction, InteractionType, ParsedMessage
from tests.plugins.autoreply.support import (
    CUSTOMER,
    OUR_MAILBOX,
    SITE_WITH_MAILBOX,
    Harness,
    message,
)

PERIOD = 600  # autowar-detect-period 00:10:00, the default

# --------------------------------------------------------------- options


def test_options_are_declared_in_email_processing_with_their_defaults(tmp_path: Path) -> None:
    config = Harness(tmp_path).config
    assert config.get("email-processing", "enable-mail-loops") is False
    assert config.get("email-processing", "enable-autowar-detect") is True
    assert config.get("email-processing", "autowar-detect-period") == 600.0
    assert config.get("email-processing", "autowar-max-reply-count") == 5


def test_options_are_converted_by_their_declared_type(tmp_path: Path) -> None:
    config = Harness(
        tmp_path,
        **{
            "enable-mail-loops": "true",
            "enable-autowar-detect": "false",
            "autowar-detect-period": "01:30:00",
            "autowar-max-reply-count": "3",
        },
    ).config
    assert config.get("email-processing", "enable-mail-loops") is True
    assert config.get("email-processing", "enable-autowar-detect") is False
    assert config.get("email-processing", "autowar-detect-period") == 5400.0
    assert config.get("email-processing", "autowar-max-reply-count") == 3


def test_a_zero_period_is_refused_while_detection_is_on(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="autowar-detect-period"):
        Harness(tmp_path, **{"autowar-detect-period": "00:00:00"})
    # off: the period does not matter
    Harness(tmp_path, **{"autowar-detect-period": "00:00:00", "enable-autowar-detect": "false"})


def test_a_max_reply_count_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors, match="autowar-max-reply-count"):
        Harness(tmp_path, **{"autowar-max-reply-count": "0"})


# ------------------------------------------------------ loops with ourselves


@pytest.mark.parametrize(
    "x_loop",
    [OUR_MAILBOX, "SUPPORT@Centre.Example", f"Support desk <{OUR_MAILBOX}>", f"<{OUR_MAILBOX}>"],
)
def test_x_loop_naming_our_own_address_is_a_loop_for_sure(tmp_path: Path, x_loop: str) -> None:
    harness = Harness(tmp_path, SITE_WITH_MAILBOX)
    interaction = harness.enrich(message(f"X-Loop: {x_loop}"))
    data = interaction.attached_data
    assert data["_AutoReply"] is True
    assert data["_MailLoop"] is True
    assert data["_MailLoopReason"] == f"X-Loop: {x_loop} (one of our own addresses)"


def test_x_loop_naming_another_address_is_automatic_but_no_loop(tmp_path: Path) -> None:
    harness = Harness(tmp_path, SITE_WITH_MAILBOX)
    data = harness.enrich(message("X-Loop: tickets@other.example")).attached_data
    assert data["_AutoReply"] is True
    assert "_MailLoop" not in data


def test_the_kernel_default_from_address_counts_as_our_own(tmp_path: Path) -> None:
    # requests without a From are sent as postroom@<default-domain>
    harness = Harness(tmp_path, **{"default-domain": "centre.example"})
    data = harness.enrich(message("X-Loop: postroom@centre.example")).attached_data
    assert data["_MailLoop"] is True


def test_the_smtp_user_counts_as_our_own(tmp_path: Path) -> None:
    site = "smtp-client:\n  server-type: smtp\n  server: smtp.centre.example\n"
    site += "  user: sender@centre.example\n  password: secret\n"
    harness = Harness(tmp_path, site)
    data = harness.enrich(message("X-Loop: sender@centre.example")).attached_data
    assert data["_MailLoop"] is True


def test_an_automatic_mail_from_our_own_address_is_a_loop(tmp_path: Path) -> None:
    harness = Harness(tmp_path, SITE_WITH_MAILBOX)
    data = harness.enrich(
        message("Auto-Submitted: auto-replied", sender=f"Support <{OUR_MAILBOX}>")
    ).attached_data
    assert data["_MailLoop"] is True
    assert data["_MailLoopReason"] == (
        f"automatic mail from our own address {OUR_MAILBOX} (Auto-Submitted: auto-replied)"
    )


def test_a_person_writing_from_our_own_address_is_no_loop(tmp_path: Path) -> None:
    # an agent testing the mailbox from the shared address
    harness = Harness(tmp_path, SITE_WITH_MAILBOX)
    data = harness.enrich(message(sender=OUR_MAILBOX)).attached_data
    assert "_MailLoop" not in data and "_AutoReply" not in data


def test_enable_mail_loops_turns_the_own_address_checks_off(tmp_path: Path) -> None:
    harness = Harness(tmp_path, SITE_WITH_MAILBOX, **{"enable-mail-loops": "true"})
    data = harness.enrich(
        message(f"X-Loop: {OUR_MAILBOX}", "Auto-Submitted: auto-replied", sender=OUR_MAILBOX)
    ).attached_data
    assert data["_AutoReply"] is True  # still automatic: never auto-answered
    assert "_MailLoop" not in data


# ------------------------------------------------------------- auto-reply war


def auto_reply_from(sender: str = CUSTOMER) -> ParsedMessage:
    return message("Auto-Submitted: auto-replied", sender=sender, subject="Automatic reply: x")


@pytest.mark.parametrize(
    ("earlier", "loop"),
    [
        (0, False),
        (2, False),  # 2 earlier + this one = 3 = the limit: allowed
        (3, True),  # 3 earlier + this one = 4 > 3
        (7, True),
    ],
)
def test_automatic_mails_beyond_the_limit_mark_a_mail_loop(
    tmp_path: Path, earlier: int, loop: bool
) -> None:
    harness = Harness(tmp_path, **{"autowar-max-reply-count": "3"})
    harness.exchange(CUSTOMER, "in", n=earlier // 2)
    harness.exchange(CUSTOMER, "out", n=earlier - earlier // 2)  # both directions count
    data = harness.enrich(auto_reply_from()).attached_data
    assert data["_AutoReply"] is True
    assert data.get("_MailLoop", False) is loop
    if loop:
        assert data["_MailLoopReason"] == (
            f"auto-reply war: {earlier + 1} automatic mails exchanged with {CUSTOMER} "
            "within 00:10:00 (autowar-max-reply-count 3)"
        )


def test_addresses_are_counted_case_insensitively(tmp_path: Path) -> None:
    harness = Harness(tmp_path, **{"autowar-max-reply-count": "1"})
    harness.exchange("Customer@Example.ORG", "out")
    data = harness.enrich(auto_reply_from("CUSTOMER@example.org")).attached_data
    assert data["_MailLoop"] is True


def test_other_addresses_do_not_count(tmp_path: Path) -> None:
    harness = Harness(tmp_path, **{"autowar-max-reply-count": "1"})
    harness.exchange("someone-else@example.org", "out", n=5)
    assert "_MailLoop" not in harness.enrich(auto_reply_from()).attached_data


def test_the_window_slides_with_the_clock(tmp_path: Path) -> None:
    harness = Harness(tmp_path, **{"autowar-max-reply-count": "2"})
    harness.exchange(CUSTOMER, "out", n=2)
    harness.clock.advance(300)
    assert harness.enrich(auto_reply_from()).attached_data["_MailLoop"] is True
    harness.clock.advance(300)  # the two are exactly one period old: still inside
    assert harness.enrich(auto_reply_from()).attached_data["_MailLoop"] is True
    harness.clock.advance(1)  # now they have left the window
    assert "_MailLoop" not in harness.enrich(auto_reply_from()).attached_data


def test_a_longer_period_keeps_older_exchanges(tmp_path: Path) -> None:
    harness = Harness(
        tmp_path, **{"autowar-max-reply-count": "2", "autowar-detect-period": "01:00:00"}
    )
    harness.exchange(CUSTOMER, "in", n=2)
    harness.clock.advance(3000)
    assert harness.enrich(auto_reply_from()).attached_data["_MailLoop"] is True


def test_a_persons_mail_is_not_counted_nor_marked(tmp_path: Path) -> None:
    harness = Harness(tmp_path, **{"autowar-max-reply-count": "1"})
    harness.exchange(CUSTOMER, "out", n=4)
    assert harness.enrich(message()).attached_data == {}


def test_autowar_detection_can_be_turned_off(tmp_path: Path) -> None:
    harness = Harness(
        tmp_path, **{"autowar-max-reply-count": "1", "enable-autowar-detect": "false"}
    )
    harness.exchange(CUSTOMER, "out", n=4)
    data = harness.enrich(auto_reply_from()).attached_data
    assert data["_AutoReply"] is True and "_MailLoop" not in data


# ------------------------------------------------------------------ recording


def test_committed_records_an_automatic_inbound_mail_once(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    interaction = harness.enrich(auto_reply_from(f"Customer <{CUSTOMER}>"))
    harness.committed(interaction)
    assert harness.count(CUSTOMER) == 1
    harness.clock.advance(30)
    harness.committed(interaction)  # called again (at least once): the same interaction
    assert harness.count(CUSTOMER) == 1


def test_the_split_copies_of_one_automatic_mail_count_once(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    first = harness.enrich(auto_reply_from(f"Customer <{CUSTOMER}>"))
    first.raw_sha256 = "ab" * 32
    copy = attrs.evolve(first, id="another-copy", copy_key="team-b@centre.example")
    harness.committed(first)
    harness.committed(copy)
    assert harness.count(CUSTOMER) == 1
    other = harness.enrich(auto_reply_from(f"Customer <{CUSTOMER}>"))
    other.raw_sha256 = "cd" * 32  # another mail from the same responder
    harness.committed(other)
    assert harness.count(CUSTOMER) == 2


def test_committed_records_at_the_kernel_clock(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.committed(harness.enrich(auto_reply_from()))
    harness.clock.advance(PERIOD)
    assert harness.count(CUSTOMER, PERIOD) == 1
    harness.clock.advance(1)
    assert harness.count(CUSTOMER, PERIOD) == 0


def test_committed_does_not_record_a_persons_mail(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.committed(harness.enrich(message()))
    assert harness.count(CUSTOMER) == 0


def test_recorded_inbound_mails_feed_the_next_detection(tmp_path: Path) -> None:
    harness = Harness(tmp_path, **{"autowar-max-reply-count": "2"})
    seen = []
    for _ in range(3):
        interaction = harness.enrich(auto_reply_from())
        harness.committed(interaction)
        seen.append(interaction.attached_data.get("_MailLoop", False))
        harness.clock.advance(5)
    assert seen == [False, False, True]


def outbound(status: str, automatic: bool = True, **fields: object) -> Interaction:
    data = {"_Automatic": True} if automatic else {}
    defaults: dict[str, object] = {"to": [CUSTOMER], "cc": []}
    defaults.update(fields)
    return Interaction(
        type=InteractionType.OUTBOUND.value,
        subtype="OutboundReply",
        status=status,
        from_addr=OUR_MAILBOX,
        attached_data=dict(data),
        **defaults,  # type: ignore[arg-type]
    )


def test_sent_records_an_automatic_mail_to_each_recipient_once(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    sent = outbound("Sent", to=[f"Customer <{CUSTOMER}>", "boss@example.org"],
                    cc=["CUSTOMER@example.org"])  # fmt: skip
    harness.sent(sent)
    harness.sent(sent)  # observed twice: counted once
    assert harness.count(CUSTOMER) == 1
    assert harness.count("boss@example.org") == 1


@pytest.mark.parametrize(
    "interaction",
    [
        outbound("Failed"),  # never left: no exchange
        outbound("Sent", automatic=False),  # an agent's reply
        Interaction(
            status="Sent", from_addr=CUSTOMER, to=[CUSTOMER], attached_data={"_Automatic": True}
        ),  # inbound: not ours to record here
    ],
)
def test_sent_ignores_what_is_not_an_automatic_mail_sent(
    tmp_path: Path, interaction: Interaction
) -> None:
    harness = Harness(tmp_path)
    harness.sent(interaction)
    assert harness.count(CUSTOMER) == 0


def test_the_automatic_flag_may_be_a_string(tmp_path: Path) -> None:
    # a routing strategy may have written the attached value back as text
    harness = Harness(tmp_path)
    sent = outbound("Sent")
    sent.attached_data["_Automatic"] = "true"
    harness.sent(sent)
    assert harness.count(CUSTOMER) == 1
