"""The kernel: one site configuration, one plugin manager, one store.

Building a :class:`Kernel` is where the configuration, the plugins and the
drivers meet, in this order:

1. read the YAML document (positions kept);
2. load the hook plugins (the ``plugins:`` list, or every installed one);
3. collect option declarations from the plugins and from the *configured*
   drivers only (stevedore, interface-checked);
4. validate the document against them;
5. ``postroom_configure``; build the store driver (with the kernel's clock)
   and give it the plugins' own tables (``postroom_store_migrations``).

Nothing is global: two kernels in one process have their own plugin managers.
An embedding application passes its reactor, clock, thread-pool runner and
in-process plugins (see ``examples/embed``). Without a runner the kernel makes
its own thread pool (``gateway.thread-pool-size`` threads, started with the
reactor, stopped at its shutdown): blocking calls never run on the reactor
thread unless a test asks for :class:`~postroom.runner.InlineRunner`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred

from postroom.config.document import Document, read_document
from postroom.config.loader import default_site
from postroom.config.options import OptionSchema
from postroom.config.site import SiteConfig
from postroom.config.validator import validate
from postroom.context import Context
from postroom.drivers import DriverContext, installed_drivers, load_driver, needs_auth
from postroom.errors import ConfigError
from postroom.events import EventHub
from postroom.identity import MailboxIdentity, account_section, identity_warnings, load_identities
from postroom.interfaces import AUTH_GROUP, SENDERS_GROUP, SOURCES_GROUP, STORES_GROUP
from postroom.metrics import Metrics
from postroom.net.proxyconfig import check_proxies, section_proxy
from postroom.oauth import OAuthRuntime
from postroom.pipeline.analysis import Analysis, setup_worker, worker_spec
from postroom.plugins.facade import Hooks
from postroom.plugins.manager import PluginInfo, PluginSet, load_plugins
from postroom.runner import Runner, ThreadPoolRunner
from postroom.store.async_store import AsyncStore
from postroom.store.plugintables import add_plugin_tables
from postroom.store.sql.dialect import to_utc
from postroom.workers import Budget, BudgetPool

log = logging.getLogger(__name__)


class Kernel:
    def __init__(
        self,
        config_path: str | os.PathLike[str] | Document | None = None,
        *,
        reactor: Any = None,
        clock: Any = None,
        runner: Runner | None = None,
        plugins: Iterable[tuple[str, object]] = (),
        enabled_plugins: Sequence[str] | None = None,
        store_override: dict[str, Any] | None = None,
    ) -> None:
        """Build a kernel.

        *enabled_plugins* overrides the configuration's ``plugins:`` key
        (``postroom ingest --plugins``); *store_override* replaces its
        ``store:`` (``{"driver": "memory"}`` for a throwaway store).
        Raises ConfigErrors or PluginLoadError.
        """
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.document: Document | None = (
            config_path
            if isinstance(config_path, Document) or config_path is None
            else read_document(Path(config_path))
        )
        names = self.document.driver_names() if self.document is not None else None
        enabled = (
            enabled_plugins
            if enabled_plugins is not None
            else (names.plugins if names is not None else None)
        )
        self.plugins: PluginSet = load_plugins(enabled, extra=plugins)
        self.hooks = Hooks(self.plugins)
        self.schema = OptionSchema()
        self.hooks.add_options(self.schema)
        self.drivers: dict[tuple[str, str], type] = {}
        self.driver_infos: list[PluginInfo] = []
        wanted: list[tuple[str, str]] = [(STORES_GROUP, "sqlite"), (STORES_GROUP, "memory")]
        installed = installed_drivers()
        if names is not None:
            # a name nothing provides is not loaded: validate() reports it with its line
            if names.store in installed.stores:
                wanted.append((STORES_GROUP, names.store))
            wanted += [(SOURCES_GROUP, n) for n in names.sources if n in installed.sources]
            wanted += [(SENDERS_GROUP, n) for n in names.senders if n in installed.senders]
        if store_override is not None:
            wanted.append((STORES_GROUP, str(store_override.get("driver", "memory"))))
        for group, name in dict.fromkeys(wanted):
            self.load_driver(group, name)
        # an auth driver only for the source and sender drivers that log in
        for group, name, auth in names.auth if names is not None else []:
            cls = self.drivers.get((group, name))
            if cls is not None and needs_auth(cls) and auth in installed.auth:
                self.load_driver(AUTH_GROUP, auth)
        installed = attrs.evolve(
            installed,
            without_auth=frozenset(
                name
                for (group, name), cls in self.drivers.items()
                if group in (SOURCES_GROUP, SENDERS_GROUP) and not needs_auth(cls)
            ),
        )
        if self.document is not None:
            self.config: SiteConfig = validate(self.document, self.schema, drivers=installed)
        else:
            self.config = default_site(self.schema)
        self.hooks.configure(self.config)
        _check_http(self.config)
        check_proxies(self.config)
        #: each mailbox's address, display name, signature and own SMTP login
        self.identities: dict[str, MailboxIdentity] = load_identities(self.config)
        self.config.warnings.extend(identity_warnings(self.config, self.identities))
        self.config.warnings.extend(self._unused_accounts())
        #: blocking calls (store, file and network libraries), never on the reactor thread
        self.runner: Runner = (
            runner
            if runner is not None
            else ThreadPoolRunner.create(
                reactor, size=int(self.config.get("gateway", "thread-pool-size"))
            )
        )
        store_driver = self.config.store_driver
        store_options: dict[str, Any] = dict(self.config.store_options)
        if store_override is not None:
            store_driver = str(store_override.get("driver", "memory"))
            store_options = {k: v for k, v in store_override.items() if k != "driver"}
        self.store_driver = self.drivers[(STORES_GROUP, store_driver)](store_options, now=self.now)
        add_plugin_tables(self.store_driver, self.hooks)
        self.store = AsyncStore(self.store_driver, self.runner)
        self._spool_dir: str | None = None
        self.metrics = Metrics()
        #: the event stream's recorder and subscribers (``GET /events``)
        self.events = EventHub(self)
        token_secret = self.config.get("gateway", "token-encryption-secret")
        #: what every OAuth auth driver shares (one token request per grant and expiry)
        try:
            self.oauth = OAuthRuntime(
                reactor,
                self.clock,
                self.store,
                token_secret.reveal() if token_secret is not None else None,
                proxy=section_proxy(self.config),
                metrics=self.metrics,
            )
        except ValueError as exc:  # a key too short to protect anything
            raise self.config.error(str(exc), "gateway", "token-encryption-secret") from None
        self.pool = self._worker_pool()
        #: runs CPU-bound picklable calls: the budgeted workers, or the threads
        self.cpu_runner: Runner = self.pool if self.pool is not None else self.runner
        self.analysis = Analysis(
            self.hooks, self.config, self.runner, self.pool, self._unbudgeted_plugins
        )
        self.ctx = Context(
            config=self.config,
            store=self.store,
            clock=self.clock,
            runner=self.runner,
            cpu_runner=self.cpu_runner,
        )

    def now(self) -> datetime:
        """The injected clock as an aware datetime (every timestamp the store writes)."""
        return to_utc(self.clock.seconds())

    @property
    def budget(self) -> Budget:
        """What parsing and analysing one message may use (``gateway`` options)."""
        return Budget(
            cpu_seconds=float(self.config.get("gateway", "analysis-cpu-limit")),
            memory=int(self.config.get("gateway", "worker-memory-limit")),
        )

    def _worker_pool(self) -> BudgetPool | None:
        """Budgeted worker processes for parsing and analysis when the kernel
        runs a real thread pool (``gateway.parse-workers``; 0: in threads)."""
        spec, self._unbudgeted_plugins = worker_spec(self.plugins, self.config)
        workers = int(self.config.get("gateway", "parse-workers"))
        if workers < 0:
            workers = os.cpu_count() or 1
        if workers == 0 or not isinstance(self.runner, ThreadPoolRunner):
            return None
        return BudgetPool(self.reactor, workers, self.budget, setup_worker, (spec,))

    def unbudgeted_warnings(self) -> list[str]:
        """What runs without the per-message budget, for the start-up log."""
        warnings = []
        if int(self.config.get("gateway", "parse-workers")) == 0:
            warnings.append(
                "gateway.parse-workers is 0: messages are parsed and analysed in the "
                "gateway's threads, without the per-message CPU and memory budget; "
                "one hostile message can stall every mailbox"
            )
        elif self.pool is not None and self._unbudgeted_plugins:
            warnings.append(
                "plugin(s) " + ", ".join(self._unbudgeted_plugins) + " were registered "
                "in-process and cannot be loaded in worker processes: their "
                "postroom_analyze runs in the gateway, without the per-message budget"
            )
        return warnings

    @property
    def spool_dir(self) -> str:
        """Where sources stream downloads before the store takes them (made on first use)."""
        if self._spool_dir is None:
            self._spool_dir = tempfile.mkdtemp(prefix="postroom-spool-")
        return self._spool_dir

    # -- drivers

    def load_driver(self, group: str, name: str) -> type:
        key = (group, name)
        if key not in self.drivers:
            cls = load_driver(group, name)
            self.hooks.add_options_of(cls, f"{group}:{name}", self.schema)
            self.drivers[key] = cls
        return self.drivers[key]

    def driver_context(self, authenticator: Any = None, auth_event: Any = None) -> DriverContext:
        """What drivers are built with; *auth_event* replaces the hook call (``check``)."""
        return DriverContext(
            reactor=self.reactor,
            clock=self.clock,
            runner=self.runner,
            config=self.config,
            spool_dir=self.spool_dir,
            authenticator=authenticator,
            auth_event=auth_event or self.auth_event,
            known_source_keys=self.store.known_source_keys,
            oauth=self.oauth,
        )

    def auth_event(self, mailbox: str, event: str, detail: str) -> Deferred[None]:
        """Tell the ``postroom_auth_event`` hook; never fails the caller."""
        return ensureDeferred(self.hooks.auth_event(mailbox, event, detail, self.ctx))

    def build_source(self, mailbox: Any, auth_event: Any = None) -> Any:
        """The source driver of *mailbox*, with its auth driver when it logs in."""
        cls = self.drivers[(SOURCES_GROUP, mailbox.type)]
        authenticator = None
        if needs_auth(cls) and (AUTH_GROUP, mailbox.auth) in self.drivers:
            authenticator = self.drivers[(AUTH_GROUP, mailbox.auth)](mailbox, self.driver_context())
        return cls(mailbox, self.driver_context(authenticator, auth_event))

    def build_sender(self) -> Any:
        smtp = self.config.smtp
        if smtp is None:
            return None
        cls = self.drivers[(SENDERS_GROUP, str(smtp.server_type))]
        authenticator = None
        if needs_auth(cls) and smtp.get("enable-authentication"):
            auth_cls = self.drivers[(AUTH_GROUP, str(smtp.get("auth")))]
            authenticator = auth_cls(smtp, self.driver_context())
        return cls(smtp, self.driver_context(authenticator))

    def build_mailbox_senders(self) -> dict[str, Any]:
        """One sender of its own for each mailbox that logs in as its own user
        (``smtp-user``), by mailbox name: the ``smtp-client``'s driver, server and
        settings, the mailbox's login, its own connections. Empty without an
        ``smtp-client`` or when its driver does not log in."""
        smtp = self.config.smtp
        if smtp is None:
            return {}
        cls = self.drivers[(SENDERS_GROUP, str(smtp.server_type))]
        if not needs_auth(cls):
            return {}
        senders = {}
        for name, identity in self.identities.items():
            if not identity.own_account:
                continue
            section = account_section(smtp, self.config.mailbox(name))
            auth_cls = self.drivers.get((AUTH_GROUP, str(section.get("auth"))))
            if auth_cls is None:
                raise section.error(f"auth driver {section.get('auth')!r} is not loaded", "auth")
            authenticator = auth_cls(section, self.driver_context())
            senders[name] = cls(section, self.driver_context(authenticator))
        return senders

    def _unused_accounts(self) -> list[ConfigError]:
        """Mailboxes whose ``smtp-user`` the sender cannot use (it does not log in)."""
        smtp = self.config.smtp
        if smtp is None:
            return []
        cls = self.drivers.get((SENDERS_GROUP, str(smtp.server_type)))
        if cls is None or needs_auth(cls):
            return []
        return [
            self.config.mailbox(name).error(
                f"ignored: the smtp-client's server-type {smtp.server_type!r} does not log in",
                "smtp-user",
            )
            for name, identity in self.identities.items()
            if identity.own_account
        ]

    # -- lifecycle

    def open(self) -> Deferred[None]:
        """Open the store (migrations) and run the startup hooks."""

        async def go() -> None:
            await self.store.open()
            await self.hooks.startup(self)

        return ensureDeferred(go())

    def close(self) -> Deferred[None]:
        async def go() -> None:
            try:
                await self.hooks.shutdown(self)
            finally:
                await self.store.close()
                if self.pool is not None:
                    grace = float(self.config.get("gateway", "stop-grace"))
                    await self.runner.run(self.pool.close, grace)
                if self._spool_dir is not None:
                    shutil.rmtree(self._spool_dir, ignore_errors=True)
                    self._spool_dir = None

        return ensureDeferred(go())


def _check_http(config: SiteConfig) -> None:
    """Refuse a weak API token when the site is read (``postroom check`` as well as
    ``run``), with the option's file and line."""
    secret = config.get("http", "token")
    problem = token_problem(secret.reveal() if secret is not None else None)
    if problem is not None:
        raise config.error(problem, "http", "token")


#: shortest ``http.token`` accepted: a guessable token is no protection
MIN_TOKEN_LENGTH = 16


def token_problem(token: str | None) -> str | None:
    """Why *token* protects nothing (short, or with blanks or control characters), or None."""
    if token is None or (len(token) >= MIN_TOKEN_LENGTH and all("!" <= c <= "~" for c in token)):
        return None
    return (
        f"the token must be at least {MIN_TOKEN_LENGTH} printable ASCII characters "
        "without blanks (e.g. the output of 'openssl rand -hex 32')"
    )
