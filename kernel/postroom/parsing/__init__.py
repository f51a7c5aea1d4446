"""The parse stage: raw bytes to :class:`postroom.model.ParsedMessage`.

:func:`parse_message` never raises for bad input; what it cannot read becomes
the wrapping message of the specification (see :mod:`postroom.parsing.parser`
for exactly what counts as unparsable).
"""

from postroom.parsing.attachments import attachment_file_names, decode_filename
from postroom.parsing.default import DefaultParser
from postroom.parsing.limits import ParseLimits
from postroom.parsing.parser import (
    UNKNOWN_SUBJECT,
    WRAP_INTRO,
    WRAP_OUTRO,
    parse_bytes,
    parse_message,
    wrapping_text,
)

__all__ = [
    "UNKNOWN_SUBJECT",
    "WRAP_INTRO",
    "WRAP_OUTRO",
    "DefaultParser",
    "ParseLimits",
    "attachment_file_names",
    "decode_filename",
    "parse_bytes",
    "parse_message",
    "wrapping_text",
]
