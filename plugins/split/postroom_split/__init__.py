"""postroom-split: one interaction per To/CC recipient (specification, section 5).

The hooks are in :mod:`postroom_split.plugin` (entry point ``split`` in the
group ``postroom.plugins``); the choice of recipients is
:func:`postroom_split.recipients.unique_recipients`, a pure function.
"""

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.0"
