"""The gateway as a Twisted application plugin: ``twist postroom -c site.yaml``.

The dropin ``twisted/plugins/postroom_plugin.py`` (installed with the kernel)
offers :data:`service_maker` to ``twist`` and ``twistd``; this module does the
work, so that scanning the plugins (every ``twist --help``) stays cheap.

The runner owns the process: its signal handling (SIGTERM and SIGINT stop
the reactor, which stops the gateway cleanly first, as ``postroom run`` does)
and its log output (``--log-format``, ``--log-file``), into which postroom's
records go (:func:`postroom.logs.bridge_to_twisted`), at the site's
``logging: level`` unless ``--log-level`` (this plugin's) says otherwise.

A site that cannot start (a configuration error) ends the runner at once with
``postroom run``'s exit status 2 and one ``error:`` line; a gateway that fails
to open its store, or loses the store's lock, stops the reactor and the
process exits with the status ``postroom run`` would give (3 for a store held
by another gateway).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from twisted.application import service
from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer

log = logging.getLogger(__name__)


class Options(usage.Options):
    """``twist postroom --help``."""

    synopsis = "-c SITE.yaml [--log-level LEVEL]"
    longdesc = (
        "Run the postroom gateway (as 'postroom run' does): watch every mailbox, hand "
        "interactions to routing, send the outbox, serve the HTTP API. Log output: the "
        "runner's options (twist --log-format text|json, --log-file)."
    )
    optParameters = [
        ["config", "c", None, "site configuration (YAML)"],
        ["log-level", None, None, "postroom's least severe level: debug, info, warning, "
         "error (default: the site's logging: level)"],
    ]  # fmt: skip

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("-c/--config SITE.yaml is required")
        from postroom.logs import LEVELS

        level = self["log-level"]
        if level is not None and level not in LEVELS:
            raise usage.UsageError(f"--log-level must be one of {', '.join(LEVELS)}")


class GatewayRunner(service.MultiService):
    """The gateway under a Twisted runner: a gateway that cannot open, or loses
    its store's lock, stops the reactor; the process then exits with the
    status ``postroom run`` gives for that error."""

    def __init__(self, gateway: Any, reactor: Any) -> None:
        super().__init__()
        self.gateway = gateway
        self.reactor = reactor
        self.setName("postroom-runner")
        gateway.setServiceParent(self)
        #: the exit status of a fatal error, once there was one
        self.status: int | None = None

    def startService(self) -> None:
        super().startService()
        self.gateway.opened.addErrback(lambda f: self._fatal(f.value))
        self.gateway.lost.addCallback(self._fatal)

    def _fatal(self, error: BaseException) -> None:
        from postroom.cli.failures import classify

        status, _lines = classify(error)  # the gateway logged the error itself
        if self.status is None:
            self.status = status
            self.reactor.addSystemEventTrigger("after", "shutdown", self._exit)
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    def _exit(self) -> None:
        """After the shutdown (the gateway stopped): end with the fatal status;
        the runners would end with 0."""
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(self.status or 1)


def make_service(options: Options, reactor: Any = None) -> service.IService:
    """The gateway of the site ``options["config"]``; a site with errors ends
    the process (exit status 2, its ``error:`` lines on standard error)."""
    from postroom.cli.failures import report
    from postroom.kernel import Kernel
    from postroom.logs import LEVELS, bridge_to_twisted
    from postroom.services.gateway import Gateway

    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        kernel = Kernel(options["config"], reactor=reactor)
        level = options["log-level"] or str(kernel.config.get("logging", "level"))
        bridge_to_twisted(LEVELS[level])
        for warning in [*kernel.plugins.warnings, *map(str, kernel.config.warnings)]:
            log.warning("%s", warning)
        gateway = Gateway(kernel)
    except Exception as exc:
        raise SystemExit(report(exc)) from None
    return GatewayRunner(gateway, reactor)


@implementer(IServiceMaker, IPlugin)
class ServiceMaker:
    tapname = "postroom"
    description = "the postroom e-mail gateway (as 'postroom run')"
    options = Options

    def makeService(self, options: Options) -> service.IService:
        return make_service(options)


#: what the dropin offers to twist and twistd
service_maker = ServiceMaker()
