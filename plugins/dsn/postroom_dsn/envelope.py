"""Outbound DSN requests (RFC 3461): ``NOTIFY``, ``RET`` and ``ENVID``.

An outbound request asks for DSNs with ``options["dsn"]``, a mapping::

    {"notify": ["SUCCESS", "FAILURE", "DELAY"],   # or "NEVER", or "SUCCESS,FAILURE"
     "ret": "HDRS",                               # or "FULL"
     "envid": "order-4711"}                       # any printable ASCII, max 100

Every key is optional. ``NOTIFY`` goes to every ``RCPT TO``, ``RET`` and
``ENVID`` (xtext-encoded) to ``MAIL FROM``. An invalid request is a permanent
:class:`~postroom.errors.SendError`: sending it would only fail again. The SMTP
driver drops these parameters when the server does not announce DSN.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from postroom.api import SendError

NOTIFY_VALUES = ("SUCCESS", "FAILURE", "DELAY")
RET_VALUES = ("FULL", "HDRS")
KEYS = ("notify", "ret", "envid")
ENVID_MAX = 100  # RFC 3461, section 4.4

_XTEXT_ESCAPE = re.compile(r"\+([0-9A-Fa-f]{2})")


def xtext_encode(value: str) -> str:
    """RFC 3461 xtext: ``+``, ``=`` and characters outside ``!``..``~`` as ``+XX``."""
    return "".join(f"+{ord(c):02X}" if c in "+=" or not 33 <= ord(c) <= 126 else c for c in value)


def xtext_decode(value: str) -> str:
    return _XTEXT_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)


@attrs.frozen
class DsnRequest:
    notify: tuple[str, ...] = ()
    ret: str | None = None
    envid: str | None = None

    @property
    def mail_options(self) -> list[str]:
        options = []
        if self.ret:
            options.append(f"RET={self.ret}")
        if self.envid:
            options.append(f"ENVID={xtext_encode(self.envid)}")
        return options

    @property
    def rcpt_options(self) -> list[str]:
        return [f"NOTIFY={','.join(self.notify)}"] if self.notify else []


def _refuse(problem: str) -> SendError:
    return SendError(f"invalid DSN request (options['dsn']): {problem}", permanent=True)


def _notify(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [v for v in re.split(r"[,\s]+", value) if v]
    elif isinstance(value, list | tuple):
        items = [str(v) for v in value]
    else:
        raise _refuse(f"'notify' must be a list or a comma-separated string, not {value!r}")
    wanted = [item.strip().upper() for item in items]
    if not wanted:
        raise _refuse("'notify' is empty (use NEVER for no notification)")
    if "NEVER" in wanted:
        if len(wanted) > 1:
            raise _refuse("NOTIFY=NEVER cannot be combined with other values")
        return ("NEVER",)
    unknown = [w for w in wanted if w not in NOTIFY_VALUES]
    if unknown:
        raise _refuse(
            f"unknown NOTIFY value(s) {', '.join(unknown)}; "
            f"use NEVER or any of {', '.join(NOTIFY_VALUES)}"
        )
    return tuple(v for v in NOTIFY_VALUES if v in wanted)  # RFC order, no repeats


def parse_request(value: Any) -> DsnRequest | None:
    """The DSN request in ``options["dsn"]``; None when none is asked for."""
    if value is None or value is False:
        return None
    if not isinstance(value, Mapping):
        raise _refuse(f"expected a mapping with keys {', '.join(KEYS)}, got {value!r}")
    unknown = sorted(set(value) - set(KEYS))
    if unknown:
        raise _refuse(f"unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(KEYS)}")
    notify = _notify(value["notify"]) if value.get("notify") is not None else ()
    ret = value.get("ret")
    if ret is not None:
        ret = str(ret).strip().upper()
        if ret not in RET_VALUES:
            raise _refuse(f"RET must be FULL or HDRS, not {value.get('ret')!r}")
    envid = value.get("envid")
    if envid is not None:
        envid = str(envid)
        if not envid or len(envid) > ENVID_MAX or not all(32 <= ord(c) <= 126 for c in envid):
            raise _refuse(
                f"ENVID must be 1 to {ENVID_MAX} printable ASCII characters, got {envid!r}"
            )
    return DsnRequest(notify=notify, ret=ret, envid=envid)
