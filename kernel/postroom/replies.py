"""Replies done for the agent: what ``in_reply_to`` fills in from the interaction answered.

A send request naming its parent may leave out ``to`` and ``subject``: the
recipients are the parent's Reply-To, else its From (the parent's To when the
parent is our own outbound mail: a follow-up), and the subject is the parent's
with the site's ``subject-reply-prefix`` put before it once. The built
message's ``In-Reply-To`` is the parent's Message-ID and its ``References``
the parent's chain followed by that id (RFC 5322, section 3.6.4), bounded as
:func:`postroom.model.bounded_references` keeps it.
"""

from __future__ import annotations

import re

from postroom.model import Interaction, InteractionType, bounded_references

#: the reply prefix when the site sets none
DEFAULT_REPLY_PREFIX = "Re:"


def reply_recipients(parent: Interaction) -> list[str]:
    """Who a reply to *parent* goes to, when the request names nobody."""
    if parent.type == InteractionType.OUTBOUND.value:
        return list(parent.to)
    if parent.reply_to:
        return list(parent.reply_to)
    return [parent.from_addr] if parent.from_addr else []


def _prefix_pattern(prefix: str) -> re.Pattern[str]:
    """Leading reply markers: ``Re:``, ``RE :``, ``Re[2]:`` and the site's own
    prefix, any number of them, in any case."""
    words = {"re"}
    word = prefix.strip().rstrip(":").strip()
    if word:
        words.add(re.escape(word.lower()))
    alternatives = "|".join(sorted(words))
    return re.compile(rf"^\s*(?:(?:{alternatives})\s*(?:\[\d{{1,4}}\])?\s*:\s*)+", re.IGNORECASE)


def reply_subject(subject: str, prefix: str = DEFAULT_REPLY_PREFIX) -> str:
    """*subject* with *prefix* before it once: markers already there are replaced,
    so a reply to ``RE: Re: order`` is ``Re: order``, never ``Re: Re: ...``."""
    marker = prefix.strip()
    rest = _prefix_pattern(prefix).sub("", subject, count=1)
    if not marker:
        return rest
    return f"{marker} {rest}" if rest else marker


def reply_references(parent: Interaction) -> list[str]:
    """The References of a reply to *parent*: its chain, then its Message-ID, bounded."""
    chain = list(parent.references)
    if parent.message_id and parent.message_id not in chain[-1:]:
        chain.append(parent.message_id)
    return bounded_references(chain)
