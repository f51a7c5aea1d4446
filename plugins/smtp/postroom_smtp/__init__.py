"""postroom-smtp: the ``smtp`` sender driver (entry point ``postroom.senders: smtp``).

smtplib in the kernel's thread pool, a pool of reusable connections, verified
TLS (STARTTLS or implicit), AUTH through the configured auth driver.
"""

from postroom_smtp.sender import SMTPSender

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.0"

__all__ = ["SMTPSender"]
