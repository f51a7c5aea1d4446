"""postroom-ews: the Exchange Web Services mailbox driver (``postroom.sources:ews``).

:mod:`postroom_ews.client` wraps exchangelib (blocking, run in the kernel's
thread pool); :mod:`postroom_ews.source` is the ISource the kernel drives.
"""

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.0"
