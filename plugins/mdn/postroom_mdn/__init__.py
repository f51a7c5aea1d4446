"""postroom-mdn: message disposition notifications (read receipts), RFC 8098.

The hooks are in :mod:`postroom_mdn.plugin` (entry point ``mdn`` in the group
``postroom.plugins``); reading a receipt is :func:`postroom_mdn.report.read_mdn`,
a pure function that ``postroom_analyze`` runs (:mod:`postroom_mdn.analysis`),
and :mod:`postroom_mdn.fields` is the tolerant field-block reader it uses.
"""

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.2"
