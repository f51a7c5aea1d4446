"""How interactions are shown: one JSON shape everywhere, and a readable table.

The JSON shape is documented as a JSON Schema in
``kernel/postroom/schemas/interaction.json`` (tests validate against it).
"""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any

from postroom.model import Interaction


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=False)


def _cut(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def table(interactions: list[Interaction]) -> str:
    """A summary table that fits the terminal."""
    width = shutil.get_terminal_size((120, 20)).columns if sys.stdout.isatty() else 10_000
    short = {i.id: i.id[:8] for i in interactions}
    rows = [("ID", "TYPE", "SUBTYPE", "STATUS", "PARENT", "FROM", "SUBJECT / NOTES")]
    for i in interactions:
        notes = []
        reason = i.attached_data.get("_WrappingMessageReason")
        if reason:
            notes.append(f"[wrapped: {reason}]")
        names = i.attached_data.get("_AttachmentFileNames")
        if names:
            notes.append(f"[attachments: {names}]")
        custom = [f"{k}={v}" for k, v in sorted(i.attached_data.items()) if not k.startswith("_")]
        if custom:
            notes.append("[" + ", ".join(custom) + "]")
        if i.duplicate_of:
            notes.append(f"[duplicate of {i.duplicate_of[:8]}]")
        parent = short.get(i.parent_id or "", (i.parent_id or "")[:8])
        rows.append(
            (
                i.id[:8],
                i.type,
                i.subtype,
                i.status,
                parent or "-",
                _cut(i.from_addr, 36),
                " ".join([i.subject or "(no subject)", *notes]),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(6)]
    used = sum(widths) + 2 * 6
    lines = []
    for r in rows:
        head = "  ".join(r[c].ljust(widths[c]) for c in range(6))
        lines.append(head + "  " + _cut(r[6], max(20, width - used)))
    return "\n".join(lines)
