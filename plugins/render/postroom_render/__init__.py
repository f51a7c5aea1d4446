"""postroom-render: standard responses (templates with field codes) for outbound mail.

The hooks are in :mod:`postroom_render.plugin` (entry point ``render`` in the group
``postroom.plugins``); the on-disk template library is :mod:`postroom_render.library`
(:func:`~postroom_render.library.list_responses` lists it for a future CLI/HTTP
listing) and the field-code sandbox is :mod:`postroom_render.sandbox`.
"""

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.0"
