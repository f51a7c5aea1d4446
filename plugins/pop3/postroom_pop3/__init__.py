"""postroom-pop3: the ``pop3`` mailbox driver (``postroom.sources:pop3``).

See :mod:`postroom_pop3.source` for the behaviour, :mod:`postroom_pop3.protocol`
for what is changed in Twisted's POP3 client and why, and
:mod:`postroom_pop3.spool` for the streaming RETR writer.
"""

from __future__ import annotations

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.0"

__all__ = ["POP3Source"]

def __getattr__(name: str) -> object:
    # Lazy: importing the package (e.g. for its version) must not pull Twisted's TLS in.
    if name == "POP3Source":
        from postroom_pop3.source import POP3Source

        return POP3Source
    raise AttributeError(name)
