"""Bounds the parse stage enforces on every message."""

from __future__ import annotations

import attrs

#: The email package recurses a few frames per MIME level while parsing:
#: beyond ~100 levels Python's recursion limit, not this bound, would decide.
#: (The option ``max-mime-depth`` is declared with this maximum.)
MAX_DEPTH = 100


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}")


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


def _depth(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 1 <= value <= MAX_DEPTH:
        raise ValueError(f"max_depth must be between 1 and {MAX_DEPTH}, got {value}")


@attrs.frozen
class ParseLimits:
    """What a message may be before it is wrapped instead of parsed.

    ``max_size`` is the option ``maximum-msg-size`` in bytes (0: no limit);
    ``max_depth`` bounds MIME nesting (the root is level 0, attached messages
    count as a level); ``max_parts`` bounds the number of MIME entities;
    ``max_header_bytes`` bounds the top-level header block and that of each
    part and attached message; ``max_part_text``
    is how many characters of a textual or report part :class:`Part.text`
    keeps; ``default_domain`` (option ``default-domain``) makes the
    ``unknown@<domain>`` From of a wrapping message.
    """

    max_size: int = attrs.field(default=0, validator=_non_negative)
    max_depth: int = attrs.field(default=20, validator=_depth)
    max_parts: int = attrs.field(default=1000, validator=_positive)
    max_header_bytes: int = attrs.field(default=1 << 20, validator=_positive)
    max_part_text: int = attrs.field(default=1_000_000, validator=_non_negative)
    default_domain: str = "localhost"
