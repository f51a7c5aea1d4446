"""postroom-dsn: delivery status notifications and bounces.

Inbound, it classifies RFC 3464 reports and vendor-format bounces
(``InboundNDR`` / ``InboundReport``), attaches their data, threads them under
the outbound interaction they report on and suppresses hard-bounced
addresses; outbound, it turns a request's ``options["dsn"]`` into SMTP
``NOTIFY``/``RET``/``ENVID`` parameters. The hooks are in
:mod:`postroom_dsn.plugin` (entry point ``dsn`` in ``postroom.plugins``); the
reading of a report, which runs in ``postroom_analyze``, is
:mod:`postroom_dsn.analysis` over :mod:`postroom_dsn.classify`.
"""

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.2"

__version__ = "0.1.0"
