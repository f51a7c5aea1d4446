"""The ``webhook`` hook plugin: an HTTPS POST of each new interaction.

* ``postroom_add_options`` / ``postroom_configure``: the ``webhook`` section
  (:mod:`postroom_webhook.options`); a mistake stops start-up.
* ``postroom_startup``: the kernel's HTTP client for this kernel (its
  reactor, its clock, verified TLS, the site's proxy, the timeout); one
  connection per delivery: a kept connection that the receiver closed while
  idle (HTTP/1.0 servers close after each answer) would fail the next POST,
  which HTTP clients rightly do not resend by themselves, and hand-offs are
  few enough that a TLS handshake each costs nothing that matters.
  ``postroom_shutdown`` forgets the kernel.
* ``postroom_submit``: POST ``handoff_json`` as compact JSON with the
  Standard Webhooks headers (:mod:`postroom_webhook.signing`); the answer
  decides (:mod:`postroom_webhook.answer`): a 2xx is done, anything else a
  :class:`~postroom.api.HandoffError`, permanent for a refusing 4xx.

The kernel calls the hand-off again on retry and after a restart, so a
receiver may see an interaction more than once: ``webhook-id`` (the
interaction's id) is its idempotency key.

State is per kernel (the object the entry point names is shared by every
kernel of a process), keyed by the kernel's site configuration, which is
also what ``ctx.config`` of the hand-off is.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
from twisted.internet.defer import DeferredSemaphore, ensureDeferred

from postroom.api import (
    Context,
    HandoffError,
    HTTPClient,
    HTTPUnavailable,
    Interaction,
    OptionSchema,
    handoff_json,
    hookimpl,
    proxy_for,
)
from postroom_webhook.answer import outcome
from postroom_webhook.options import SECTION, Settings, add_options
from postroom_webhook.signing import SIGNATURE_HEADER, signed_headers

log = logging.getLogger("postroom.webhook")

#: bytes of an answer read at most: enough for a receiver's reason; the rest
#: of a longer body is not read (the connection is dropped)
MAX_ANSWER = 64 * 1024


def body_of(interaction: Interaction, config: Any) -> bytes:
    """The request body: the hand-off JSON, compact, UTF-8 (the bytes signed)."""
    data = handoff_json(interaction, config)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@attrs.define
class Target:
    """One kernel's receiver: its settings and HTTP client."""

    config: Any
    settings: Settings
    client: HTTPClient
    slots: DeferredSemaphore

    async def deliver(self, interaction: Interaction, ctx: Context) -> None:
        await self.slots.run(lambda: ensureDeferred(self._post(interaction, ctx)))

    async def _post(self, interaction: Interaction, ctx: Context) -> None:
        settings = self.settings
        body = body_of(interaction, ctx.config)
        # the attempt's time, on the kernel's clock (a retry is signed anew)
        timestamp = int(ctx.clock.seconds())
        signed = signed_headers(settings.keys, interaction.id, timestamp, body)
        headers = {**settings.headers, "Content-Type": "application/json", **signed}
        try:
            response = await self.client.request(
                "POST",
                settings.url,
                headers=headers,
                body=body,
                max_body=MAX_ANSWER,
                truncate=True,
            )
        except HTTPUnavailable as exc:
            # it names the host (or the proxy) and the reason, never a header or the body
            raise HandoffError(f"webhook: {exc} (will retry)") from None
        macs = [s.partition(",")[2] for s in signed[SIGNATURE_HEADER].split(" ")]
        hidden = (*settings.hidden, *macs)
        error = outcome(response, settings.where, hidden)
        if error is not None:
            raise error
        log.debug("webhook %s took %s (HTTP %d)", settings.where, interaction.id, response.status)


class WebhookPlugin:
    """The hooks; one :class:`Target` per kernel that configured a ``url``."""

    def __init__(self) -> None:
        self.targets: dict[int, Target] = {}

    @hookimpl
    def postroom_add_options(self, schema: OptionSchema) -> None:
        add_options(schema)

    @hookimpl
    def postroom_configure(self, config: Any) -> None:
        Settings.read(config)

    @hookimpl
    def postroom_startup(self, kernel: Any) -> None:
        settings = Settings.read(kernel.config)
        if settings is None:
            return
        proxy = proxy_for(kernel.config, None, "https") if settings.use_proxy else None
        client = HTTPClient(
            kernel.reactor,
            kernel.clock,
            proxy=proxy,
            ca_file=settings.ca_file,
            timeout=settings.timeout,
        )
        slots = DeferredSemaphore(settings.max_connections)
        self.targets[id(kernel.config)] = Target(kernel.config, settings, client, slots)
        via = f", via {proxy.kind} proxy {proxy.where}" if proxy is not None else ""
        log.info("webhook: handing interactions to %s%s", settings.where, via)

    @hookimpl
    def postroom_shutdown(self, kernel: Any) -> None:
        self.targets.pop(id(kernel.config), None)

    @hookimpl
    async def postroom_submit(self, interaction: Interaction, ctx: Context) -> None:
        target = self.targets.get(id(ctx.config))
        if target is None or target.config is not ctx.config:
            if not ctx.config.get(SECTION, "url"):
                return  # no webhook configured for this site
            raise HandoffError("webhook: not started for this gateway (postroom_startup)")
        await target.deliver(interaction, ctx)


#: the entry point ``webhook`` (``postroom.plugins``)
plugin = WebhookPlugin()

__all__ = ["MAX_ANSWER", "Target", "WebhookPlugin", "body_of", "plugin"]
