"""Attached data every inbound interaction carries (specification, sections 3-4)."""

from __future__ import annotations

from postroom import hookimpl
from postroom.keys import (
    ATTACHMENT_FILE_NAMES,
    LIST_SEPARATOR,
    PARSE_DEFECTS,
    WRAPPING_MESSAGE_REASON,
)
from postroom.model import Interaction, ParsedMessage
from postroom.parsing.attachments import attachment_file_names


@hookimpl(tryfirst=True)
def postroom_enrich(message: ParsedMessage, interaction: Interaction) -> None:
    names = attachment_file_names(message)
    if names:
        interaction.attached_data[ATTACHMENT_FILE_NAMES] = LIST_SEPARATOR.join(names)
    if message.defects:
        interaction.attached_data[PARSE_DEFECTS] = "\n".join(message.defects)
    if message.wrapping_reason is not None:
        interaction.attached_data[WRAPPING_MESSAGE_REASON] = message.wrapping_reason
