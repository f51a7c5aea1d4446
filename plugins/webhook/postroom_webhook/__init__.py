"""postroom-webhook: hands each new interaction to routing with an HTTPS POST.

The body is the interaction's hand-off JSON (``postroom.api.handoff_json``:
the documented interaction schema with ``raw_url``), signed as Standard
Webhooks sign (:mod:`postroom_webhook.signing`), so a receiver verifies it
with any Standard Webhooks library. The options are
:mod:`postroom_webhook.options`, what an answer means
:mod:`postroom_webhook.answer`, the hooks :mod:`postroom_webhook.plugin`
(entry point ``webhook`` in ``postroom.plugins``).
"""

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.2"

__version__ = "0.1.0"
