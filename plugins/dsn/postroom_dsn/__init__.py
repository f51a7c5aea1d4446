"""postroom-dsn: delivery status notifications and bounces.

Inbound, it classifies RFC 3464 reports and vendor-format bounces
(``InboundNDR`` / ``InboundReport``), attaches their data, threads them under
the outbound interaction they report on and suppresses hard-bounced
addresses; outbound, it turns a request's ``options["dsn"]`` into SMTP
``NOTIFY``/``RET``/``ENVID`` parameters. The hooks are in
:mod:`postroom_dsn.plugin` (entry point ``dsn`` in ``postroom.plugins``).
"""

__version__ = "0.1.0"
