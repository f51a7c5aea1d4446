"""The attached-data keys the kernel itself writes.

Sites migrating from the commercial product read these names in their routing
strategies, so they are part of the public API (``postroom.api``) and never
change. Plugins' own keys live with the plugin (``_DSNInfo...`` in dsn).
"""

from __future__ import annotations

#: the decoded names of the attached files (SPEC section 2)
ATTACHMENT_FILE_NAMES = "_AttachmentFileNames"
#: parse defects the default parser repaired or noted
PARSE_DEFECTS = "_ParseDefects"
#: why an unreadable message was wrapped (SPEC section 2)
WRAPPING_MESSAGE_REASON = "_WrappingMessageReason"
#: plugins whose hook failed on this interaction (name: error)
PLUGIN_ERRORS = "_PluginErrors"
#: on an outbound interaction: the last send error
SEND_ERROR = "_SendError"
#: on an outbound interaction: recipients the server refused
REFUSED_RECIPIENTS = "_RefusedRecipients"
#: on an outbound interaction: the mail was sent automatically (auto-reply,
#: receipt), so loop protection counts it
AUTOMATIC = "_Automatic"
#: on an outbound interaction: the id of the interaction it forwards
FORWARD_OF = "_ForwardOf"

#: separator of the lists written into one attached value (file names rarely hold it)
LIST_SEPARATOR = "; "

__all__ = [
    "ATTACHMENT_FILE_NAMES",
    "AUTOMATIC",
    "FORWARD_OF",
    "LIST_SEPARATOR",
    "PARSE_DEFECTS",
    "PLUGIN_ERRORS",
    "REFUSED_RECIPIENTS",
    "SEND_ERROR",
    "WRAPPING_MESSAGE_REASON",
]
