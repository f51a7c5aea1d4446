"""``postroom mailboxes`` and ``postroom check --connect``: what each connection is doing.

Both read the site's store, not a running gateway's memory, so they work
beside the gateway and after a restart: the gateway's services keep each
mailbox's last state there (``mailbox_states``), and the OAuth drivers keep
grant states there (``oauth_grants``). ``check --connect`` logs in through
the same drivers and the same stored grant state as the gateway, so a
rotating refresh token it spends is stored for the gateway, not lost.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

import attrs

from postroom.grants import NeedsReauthorisation
from postroom.loginpolicy import NEEDS_REAUTHORISATION

log = logging.getLogger(__name__)

#: the name the sender's state is kept under (``mailbox_states.mailbox``)
SMTP_CLIENT = "smtp-client"
UNKNOWN = "unknown"


@attrs.frozen
class ConnectionRow:
    """One mailbox (or ``smtp-client``) as ``postroom mailboxes`` shows it."""

    name: str
    kind: str
    auth: str
    state: str
    reason: str | None = None
    failures: int = 0
    next_attempt: datetime | None = None
    since: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        for key in ("next_attempt", "since"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


def _logs_in(kernel: Any, source_type: str) -> bool:
    from postroom.drivers import needs_auth
    from postroom.interfaces import SOURCES_GROUP

    cls = kernel.drivers.get((SOURCES_GROUP, source_type))
    return cls is not None and needs_auth(cls)


def _authenticator(kernel: Any, config: Any, auth: str) -> Any:
    """The auth driver the gateway would build for *config* (no network), or None."""
    from postroom.interfaces import AUTH_GROUP

    cls = kernel.drivers.get((AUTH_GROUP, auth))
    if cls is None:
        return None
    try:
        return cls(config, kernel.driver_context())
    except Exception:
        return None


async def _grant_problem(kernel: Any, authenticator: Any) -> str | None:
    """The persisted ``needs-reauthorisation`` reason of an OAuth driver's app or grant."""
    for key_of, configured_of in (
        ("client_key", "client_configured"),
        ("grant_key", "configured"),
    ):
        key = getattr(authenticator, key_of, None)
        configured = getattr(authenticator, configured_of, None)
        if key is None or configured is None:
            return None
        try:
            await kernel.oauth.vault.check(key(), configured())
        except NeedsReauthorisation as exc:
            return exc.reason
    return None


async def connection_rows(kernel: Any) -> list[ConnectionRow]:
    """Every configured mailbox and the SMTP client, with the state the store holds."""
    kept = {record.mailbox: record for record in await kernel.store.list_mailbox_states()}
    config = kernel.config
    wanted: list[tuple[str, str, str, Any]] = [
        (m.name, m.type, m.auth if _logs_in(kernel, m.type) else "-", m) for m in config.mailboxes
    ]
    smtp = config.smtp
    if smtp is not None:
        auth = str(smtp.get("auth")) if smtp.get("enable-authentication") else "-"
        wanted.append((SMTP_CLIENT, str(smtp.server_type), auth, smtp))
    rows = []
    for name, kind, auth, options in wanted:
        record = kept.get(name)
        row = ConnectionRow(
            name,
            kind,
            auth,
            record.state if record else UNKNOWN,
            record.reason if record else None,
            record.failures if record else 0,
            record.next_attempt if record else None,
            record.updated_at if record else None,
        )
        authenticator = _authenticator(kernel, options, auth) if auth != "-" else None
        problem = await _grant_problem(kernel, authenticator) if authenticator else None
        if problem is not None:
            row = attrs.evolve(row, state=NEEDS_REAUTHORISATION, reason=problem)
        rows.append(row)
    return rows


def format_rows(rows: list[ConnectionRow]) -> str:
    """A table, then one line per problem saying what to do."""
    head = ("NAME", "TYPE", "AUTH", "STATE", "FAILURES", "NEXT ATTEMPT", "SINCE")
    table = [head]
    for row in rows:
        table.append(
            (
                row.name,
                row.kind,
                row.auth,
                row.state,
                str(row.failures),
                row.next_attempt.isoformat(timespec="seconds") if row.next_attempt else "-",
                row.since.isoformat(timespec="seconds") if row.since else "-",
            )
        )
    widths = [max(len(r[c]) for r in table) for c in range(len(head))]
    lines = ["  ".join(r[c].ljust(widths[c]) for c in range(len(head))).rstrip() for r in table]
    for row in rows:
        if row.reason and row.state != "connected":
            lines.append(f"{row.name}: {row.reason}")
    return "\n".join(lines)


@attrs.frozen
class ConnectionCheck:
    """The outcome of one ``check --connect`` attempt."""

    name: str
    ok: bool
    seconds: float
    detail: str

    def line(self) -> str:
        mark = "ok    " if self.ok else "FAILED"
        return f"{mark} {self.name} ({self.seconds:.2f} s): {self.detail}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 else text[:399] + "…"


async def check_mailbox(kernel: Any, mailbox: Any) -> ConnectionCheck:
    """Connect, negotiate TLS and log in to one mailbox, then disconnect."""
    events: list[str] = []

    def auth_event(name: str, event: str, detail: str) -> None:
        if event == "login-ok":
            events.append(detail)

    started = time.monotonic()
    source = None
    try:
        source = kernel.build_source(mailbox, auth_event=auth_event)
        await source.connect()
        capabilities = _capabilities(source)
        where = getattr(source, "where", None)
        detail = (f"logged in with {events[-1]}" if events else "connected") + (
            f" ({where})" if where and not events else ""
        )
        if capabilities:
            detail += "; capabilities: " + " ".join(capabilities)
        return ConnectionCheck(f"mailbox {mailbox.name}", True, time.monotonic() - started, detail)
    except Exception as exc:
        return ConnectionCheck(
            f"mailbox {mailbox.name}", False, time.monotonic() - started, _one_line(exc)
        )
    finally:
        if source is not None:
            try:
                await source.disconnect()
            except Exception as exc:
                log.debug("disconnect after the check failed: %s", exc)


async def check_sender(
    kernel: Any, name: str = SMTP_CLIENT, built: Any = None
) -> ConnectionCheck | None:
    """The SMTP client's connection, TLS and login (no message sent); *built* is
    another sender of it (a mailbox's own account, *name* ``smtp-client[<mailbox>]``)."""
    if kernel.config.smtp is None:
        return None
    started = time.monotonic()
    sender = None
    try:
        sender = built if built is not None else kernel.build_sender()
        probe = getattr(sender, "check_connection", None)
        if probe is None:
            return ConnectionCheck(
                name, True, 0.0, f"{kernel.config.smtp.server_type}: nothing to connect to"
            )
        detail = await probe()
        return ConnectionCheck(name, True, time.monotonic() - started, str(detail))
    except Exception as exc:
        return ConnectionCheck(name, False, time.monotonic() - started, _one_line(exc))
    finally:
        if sender is not None:
            try:
                await sender.close()
            except Exception as exc:
                log.debug("closing the sender after the check failed: %s", exc)


def _capabilities(source: Any) -> list[str]:
    found = getattr(source, "capabilities", None)
    if callable(found):
        found = found()
    return sorted(str(c) for c in found) if found else []


async def check_connections(kernel: Any) -> list[ConnectionCheck]:
    """Every enabled mailbox, then the SMTP client, then the mailboxes' own SMTP
    logins (``smtp-user``), one after another."""
    results = []
    for mailbox in kernel.config.mailboxes:
        if mailbox.get("enabled"):
            results.append(await check_mailbox(kernel, mailbox))
    sender = await check_sender(kernel)
    if sender is not None:
        results.append(sender)
    for name, own in kernel.build_mailbox_senders().items():
        checked = await check_sender(kernel, f"{SMTP_CLIENT}[{name}]", own)
        if checked is not None:
            results.append(checked)
    return results


__all__ = [
    "ConnectionCheck",
    "ConnectionRow",
    "check_connections",
    "connection_rows",
    "format_rows",
]
