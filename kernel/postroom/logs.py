"""Logging: the standard library's, as text lines or JSON objects (one per line).

Twisted's own log events are forwarded to the standard library, so there is
one stream, in one format. Structured fields passed with ``extra={...}``
(:data:`FIELDS`: ``mailbox``, ``interaction_id``...) appear as keys of a JSON
line, and after the message, as ``key=value``, on a text line.

``postroom run`` applies the site's ``logging:`` section (:func:`site_logging`);
the command line's ``-v``/``--log-level`` and ``--log-format`` override it. Under
``twist``/``twistd`` the runner owns the output (:func:`bridge_to_twisted`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

#: the structured fields the kernel attaches to its lines, in the order a text
#: line shows them: the mailbox, the message's key on its server (an IMAP UID,
#: a POP3 UIDL, a Graph/EWS id, a maildir file name), its Message-ID, the
#: interaction, the hand-off target
FIELDS = ("mailbox", "source_key", "message_id", "interaction_id", "target")

#: the ``logging: level`` values
LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

#: Twisted's own informational lines (a factory started, each HTTP request of
#: the access log) are written only at ``debug``: a load balancer polling
#: ``/health`` would fill the log with them
TWISTED_LOGGER = "twisted"

_bridged = False


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields (``extra``) of *record*, known ones first; a field
    whose value is None (a message without a Message-ID) is left out."""
    extra = {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_") and value is not None
    }
    known = {key: extra.pop(key) for key in FIELDS if key in extra}
    return {**known, **extra}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``,
    ``logger``, ``message``, the structured fields, ``exception`` (a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields(record).items():
            data.setdefault(key, value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value...`` (the structured fields)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extra = fields(record)
        if extra:
            line += " [" + " ".join(f"{k}={v}" for k, v in extra.items()) + "]"
        return line


class _TwistedInfo(logging.Filter):
    """Lets Twisted's records below WARNING through only when DEBUG is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] != TWISTED_LOGGER or record.levelno >= logging.WARNING:
            return True
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def setup_logging(level: int = logging.INFO, fmt: str = "text") -> None:
    """Write records of *level* and above to standard error as *fmt* (``text``
    or ``json``); Twisted's events go the same way. Called again (a site's
    ``logging:`` once the site is read), it replaces the level and format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(_TwistedInfo())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    global _bridged
    if not _bridged:
        from twisted.logger import STDLibLogObserver, globalLogBeginner

        globalLogBeginner.beginLoggingTo(
            [STDLibLogObserver(name=TWISTED_LOGGER)], redirectStandardIO=False
        )
        _bridged = True


def site_logging(config: Any, level: int | None = None, fmt: str | None = None) -> None:
    """Apply the site's ``logging:`` section; *level* and *fmt* (from the command
    line) override its ``level`` and ``format`` when given."""
    site_level = LEVELS[str(config.get("logging", "level"))]
    setup_logging(
        level if level is not None else site_level,
        fmt if fmt is not None else str(config.get("logging", "format")),
    )


class _ToTwisted(logging.Handler):
    """Hands standard-library records to Twisted's log (``twist``/``twistd``
    own the output there), structured fields as event keys."""

    _LEVELS = (
        (logging.CRITICAL, "critical"),
        (logging.ERROR, "error"),
        (logging.WARNING, "warn"),
        (logging.INFO, "info"),
    )

    def emit(self, record: logging.LogRecord) -> None:
        from twisted.logger import Logger, LogLevel

        try:
            name = next((n for at, n in self._LEVELS if record.levelno >= at), "debug")
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            Logger(namespace=record.name).emit(
                LogLevel.levelWithName(name), "{text}", text=text, **fields(record)
            )
        except Exception:
            self.handleError(record)


def bridge_to_twisted(level: int) -> None:
    """Under ``twist``/``twistd``: postroom's records of *level* and above go to
    Twisted's log, written by the runner (its ``--log-format``, ``--log-file``)."""
    root = logging.getLogger()
    root.handlers[:] = [_ToTwisted()]
    root.setLevel(level)
