"""postroom-amqp: hand every committed interaction to RabbitMQ (AMQP 0-9-1).

``postroom_submit`` publishes the interaction's hand-off JSON
(``postroom.api.handoff_json``) as one persistent message, mandatory and with
publisher confirms, on one connection and channel kept open per kernel
(:mod:`postroom_amqp.publisher`). Only the broker's confirm makes a hand-off
succeed; a nack, a return (unroutable), a lost connection or a confirm that
does not come in time raise ``HandoffError`` and the kernel retries later, so
nothing is lost and a message may arrive twice (its ``message_id`` is the
interaction id). The options are in :mod:`postroom_amqp.options`, the hooks
in :mod:`postroom_amqp.plugin` (entry point ``amqp``).
"""

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.2"

__version__ = "0.1.0"
