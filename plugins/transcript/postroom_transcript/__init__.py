"""postroom-transcript: chat transcripts in outbound e-mail (specification, section 6).

The hooks are in :mod:`postroom_transcript.plugin` (entry point ``transcript`` in
the group ``postroom.plugins``); :mod:`postroom_transcript.transcript` reads the
XML, :mod:`postroom_transcript.javadate` formats Java ``SimpleDateFormat``
patterns, :mod:`postroom_transcript.render` writes the HTML and text.
"""

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.1"
