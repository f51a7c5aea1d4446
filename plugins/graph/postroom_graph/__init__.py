"""postroom-graph: Microsoft Graph mailboxes (``postroom.sources:graph``).

:mod:`postroom_graph.api` makes the Graph requests of one mailbox (bearer
token, refreshed once when refused; throttling honoured on the injected clock;
Graph error bodies read); :mod:`postroom_graph.source` is the ISource the
kernel drives (delta query, immutable ids, ``$value`` streamed to the spool,
moves and deletes in ``$batch`` requests).
"""

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.0"
