"""postroom-render: standard responses (templates with field codes) for outbound mail.

The hooks are in :mod:`postroom_render.plugin` (entry point ``render`` in the group
``postroom.plugins``); the on-disk template library is :mod:`postroom_render.library`,
listed by ``postroom responses`` and ``GET /responses`` (:mod:`postroom_render.listing`);
``POST /ext-reply`` is :mod:`postroom_render.extreply`; the field-code sandbox is
:mod:`postroom_render.sandbox`; option names are in :mod:`postroom_render.options`.
"""

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.1"
