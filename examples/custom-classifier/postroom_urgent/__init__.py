"""postroom-urgent: tags urgent inbound mail with the attached key ``Urgent``.

The hooks are in :mod:`postroom_urgent.plugin`, which the distribution
advertises in the entry-point group ``postroom.plugins`` as ``urgent``.
"""

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.0"
