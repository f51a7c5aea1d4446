"""postroom-autoreply: auto-reply detection, mail-loop and auto-reply war protection.

The hooks are in :mod:`postroom_autoreply.plugin`, advertised in the
entry-point group ``postroom.plugins`` as ``autoreply``. The rules themselves
live apart from the hooks: :mod:`~postroom_autoreply.analysis` (what
``postroom_analyze`` finds), :mod:`~postroom_autoreply.detection` (headers),
:mod:`~postroom_autoreply.subjects` (out-of-office subjects),
:mod:`~postroom_autoreply.autowar` (counting) and
:mod:`~postroom_autoreply.options` (declarations, the centre's own addresses).
"""

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.0"
