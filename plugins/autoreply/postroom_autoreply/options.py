"""The plugin's options (the commercial product's names) and the centre's own addresses.

Options are read from the context on every call, never cached in the module:
one process may run several kernels with different configurations.
"""

from __future__ import annotations

from datetime import timedelta
from email.utils import parseaddr
from typing import Any

import attrs

from postroom.api import AnalysisContext, Context, OptionSchema, Scope

SECTION = "email-processing"
ENABLE_MAIL_LOOPS = "enable-mail-loops"
ENABLE_AUTOWAR_DETECT = "enable-autowar-detect"
AUTOWAR_DETECT_PERIOD = "autowar-detect-period"
AUTOWAR_MAX_REPLY_COUNT = "autowar-max-reply-count"

DEFAULT_PERIOD = "00:10:00"
#: a longer window counts old mail against a correspondent and makes the
#: count query scan more; far beyond what a war needs to show itself
MAX_PERIOD = 7 * 24 * 3600
#: A war adds one mail per round each way within seconds; a person writing
#: several mails in ten minutes, each acknowledged, stays below this.
DEFAULT_MAX_REPLY_COUNT = 5

#: an option the commercial product has; read when some plugin declares it
DEFAULT_FROM_ADDRESS = "default-from-address"


def declare(schema: OptionSchema) -> None:
    """The options of ``email-processing`` this plugin owns."""
    schema.add(
        ENABLE_MAIL_LOOPS,
        "bool",
        scope=Scope.GLOBAL,
        section=SECTION,
        default=False,
        description="Allow mail loops with the centre's own addresses. false (the default): "
        "an inbound mail whose `X-Loop` names one of the centre's addresses, or an automatic "
        "mail from one of them, is marked `_MailLoop`, and automatic mail to the centre's own "
        "addresses is refused. true: those checks are off (e.g. a test site mailing itself).",
    )
    schema.add(
        ENABLE_AUTOWAR_DETECT,
        "bool",
        scope=Scope.GLOBAL,
        section=SECTION,
        default=True,
        description="Detect auto-reply wars: count the automatic mails exchanged with each "
        "address (automatic mails received from it plus automatic mails sent to it) and stop "
        "at `autowar-max-reply-count` within `autowar-detect-period`.",
    )
    schema.add(
        AUTOWAR_DETECT_PERIOD,
        "duration",
        scope=Scope.GLOBAL,
        section=SECTION,
        default=DEFAULT_PERIOD,
        minimum=0,
        maximum=MAX_PERIOD,
        description="The sliding window in which automatic mails exchanged with one address "
        "are counted (`HH:MM:SS`).",
    )
    schema.add(
        AUTOWAR_MAX_REPLY_COUNT,
        "int",
        scope=Scope.GLOBAL,
        section=SECTION,
        default=DEFAULT_MAX_REPLY_COUNT,
        minimum=1,
        maximum=10_000,
        description="Most automatic mails exchanged with one address within "
        "`autowar-detect-period`: one more marks the inbound mail `_MailLoop` or refuses the "
        "automatic outbound mail.",
    )


def check(config: Any) -> None:
    """Refuse a detection that could never fire (a zero-length window)."""
    enabled = config.get(SECTION, ENABLE_AUTOWAR_DETECT)
    if enabled and config.get(SECTION, AUTOWAR_DETECT_PERIOD) <= 0:
        raise config.error(
            "must be longer than 00:00:00 while enable-autowar-detect is true "
            "(set enable-autowar-detect: false to turn detection off)",
            SECTION,
            AUTOWAR_DETECT_PERIOD,
        )


@attrs.frozen
class Settings:
    """This plugin's options, converted, for one call."""

    mail_loops_allowed: bool = False
    autowar: bool = True
    period: timedelta = timedelta(minutes=10)
    max_count: int = DEFAULT_MAX_REPLY_COUNT

    @classmethod
    def of(cls, ctx: Context) -> Settings:
        return cls(
            mail_loops_allowed=bool(ctx.option(SECTION, ENABLE_MAIL_LOOPS)),
            autowar=bool(ctx.option(SECTION, ENABLE_AUTOWAR_DETECT)),
            period=timedelta(seconds=float(ctx.option(SECTION, AUTOWAR_DETECT_PERIOD))),
            max_count=int(ctx.option(SECTION, AUTOWAR_MAX_REPLY_COUNT)),
        )

    @property
    def period_text(self) -> str:
        """The period as the site writes it (``00:10:00``), for reasons."""
        seconds = int(self.period.total_seconds())
        return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _optional(getter: Any, *args: str) -> Any:
    """An option that may not be declared (or a section that may be absent)."""
    try:
        return getter(*args)
    except KeyError:
        return None


def own_addresses(ctx: Context | AnalysisContext) -> set[str]:
    """The centre's own addresses, lower case: what a loop comes back to.

    Every mailbox's ``mailbox`` (when it is an address), ``smtp-client``'s
    ``user`` (likewise), ``default-from-address`` when declared, and
    ``postroom@<default-domain>``, the From the kernel gives requests without one.
    """
    config = ctx.config
    found: set[str] = set()
    candidates: list[Any] = []
    mailboxes = list(getattr(config, "mailboxes", None) or [])
    if ctx.mailbox is not None and ctx.mailbox not in mailboxes:
        mailboxes.append(ctx.mailbox)
    for mailbox in mailboxes:
        candidates.append(_optional(mailbox.get, "mailbox"))
    smtp = getattr(config, "smtp", None)
    if smtp is not None:
        candidates.append(_optional(smtp.get, "user"))
    candidates.append(_optional(config.get, SECTION, DEFAULT_FROM_ADDRESS))
    domain = _optional(config.get, SECTION, "default-domain")
    if domain:
        candidates.append(f"postroom@{domain}")
    for value in candidates:
        if isinstance(value, str):
            address = parseaddr(value)[1]
            if "@" in address:
                found.add(address.strip().lower())
    return found
