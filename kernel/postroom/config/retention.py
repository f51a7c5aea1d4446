"""The ``retention`` section: how long raw messages and interactions are kept.

Read by the retention job (:mod:`postroom.services.retention`) and by
``postroom purge``; docs/operations.md, "Retention", says what is purged and
what is never purged.
"""

from __future__ import annotations

from postroom.config.options import OptionSchema

SECTION = "retention"

DAY = 24 * 3600
#: the longest age an option takes: about a hundred years
MAX_AGE = 36525 * DAY


def add_retention_options(schema: OptionSchema) -> None:
    """Everything this module declares (called by :mod:`postroom.config.core`)."""
    schema.add(
        "raw-max-age",
        "duration",
        section=SECTION,
        default="0",
        minimum=0,
        maximum=MAX_AGE,
        description="Raw messages stored longer ago than this are purged by the retention "
        "job; their interactions stay, marked raw-purged (0: kept forever). Written "
        "HH:MM:SS or seconds: 30 days is `720:00:00`. A raw message still needed (its "
        "hand-off not done, an open quarantine entry, an unsent outbox file) is kept.",
    )
    schema.add(
        "interactions-max-age",
        "duration",
        section=SECTION,
        default="0",
        minimum=0,
        maximum=MAX_AGE,
        description="Whole interactions stored longer ago than this are purged, with "
        "their raw message, text pieces, hand-off row, outbox entry and files; their "
        "dedupe keys stay as hashed tombstones so mail left on a server is not imported "
        "again (0: kept forever). Interactions whose hand-off is not done or whose outbox "
        "entry is not sent are kept.",
    )
    schema.add(
        "interval",
        "duration",
        section=SECTION,
        default="01:00:00",
        minimum=60,
        maximum=DAY,
        description="Time between two runs of the retention job in the gateway (the first "
        "runs one interval after start-up).",
    )
    schema.add(
        "batch-size",
        "int",
        section=SECTION,
        default=100,
        minimum=1,
        maximum=10000,
        description="Rows removed by one purge transaction (and at most about 64 MB of raw "
        "bytes), so the job never holds the store's write lock for long.",
    )
