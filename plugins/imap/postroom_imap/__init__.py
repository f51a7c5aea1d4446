"""postroom-imap: the IMAP mailbox driver (``postroom.sources:imap``).

:mod:`postroom_imap.client` extends Twisted's ``IMAP4Client`` (IDLE, long
lines, streamed bodies, UID commands, verified TLS only, timeouts on the
injected clock); :mod:`postroom_imap.source` is the ISource the kernel drives.
"""

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.0"
