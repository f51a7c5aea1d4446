"""The ``postroom`` command line.

Exit status everywhere (see :mod:`postroom.cli.failures`): 0 all well, 1 some
mailbox, message or send failed, or what was asked for is not there, 2 bad
configuration or input (e.g. a refused send request: nothing was queued), 3 the
store or the file system failed, 70 internal error, 128 + N stopped by signal N
(130: Ctrl-C). Failures print one ``error:`` line, never a traceback.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from postroom import __version__
from postroom.cli.failures import (
    EXIT_CONFIG,
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SIGNAL,
    NotFound,
    os_error,
    report,
)
from postroom.errors import ConfigError, ConfigErrors, PluginLoadError
from postroom.store.errors import StoreError

if TYPE_CHECKING:
    from twisted.internet import defer

log = logging.getLogger("postroom.cli")


# --------------------------------------------------------------------- helpers


def _kernel(args: argparse.Namespace, reactor: Any, **kwargs: Any) -> Any:
    """The site's kernel, with its own thread pool of ``gateway.thread-pool-size``."""
    from postroom.kernel import Kernel

    return Kernel(getattr(args, "config", None), reactor=reactor, **kwargs)


def _react(main: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    """Run *main(reactor)* under the reactor; return its exit status.

    *main* starts before the reactor runs (``task.react`` calls it first), so
    what it does before its first real wait (reading the configuration,
    loading plugins) can be interrupted with Ctrl-C like any program; after
    that Twisted's signal handlers stop the reactor, and a command that had
    not finished exits 128 + the signal's number.
    """
    from twisted.internet import defer, task

    status: list[int] = []

    def runner(reactor: Any) -> defer.Deferred[None]:
        async def go() -> None:
            try:
                status.append(await main(reactor))
            except GeneratorExit:
                raise
            except SystemExit as exc:
                status.append(exc.code if isinstance(exc.code, int) else EXIT_FAILED)
            except BaseException as exc:  # one line and a status, never a traceback
                status.append(_report(exc))

        return defer.ensureDeferred(go())

    try:
        task.react(runner)
    except SystemExit as exc:
        if exc.code not in (0, None) and not status:
            return int(exc.code) if isinstance(exc.code, int) else EXIT_FAILED
    if status:
        return status[0]
    from twisted.internet import reactor

    signal_number = getattr(reactor, "_exitSignal", None)
    if signal_number is not None:
        print("error: interrupted", file=sys.stderr)
        return EXIT_SIGNAL + int(signal_number)
    return EXIT_FAILED


def _with_kernel(
    args: argparse.Namespace,
    body: Callable[[Any], Coroutine[Any, Any, int]],
    **kernel_options: Any,
) -> int:
    """Build the site's kernel, open its store, run *body(kernel)*, close it.

    A configuration or plugin problem is reported as such (exit status 2).
    """

    async def main(reactor: Any) -> int:
        kernel = _kernel(args, reactor, **kernel_options)
        await kernel.open()
        try:
            return await body(kernel)
        finally:
            await kernel.close()

    return _react(main)


def _report(exc: BaseException) -> int:
    """One ``error:`` line (several for several configuration errors); the status."""
    return report(exc, debug=log.isEnabledFor(logging.DEBUG))


def _report_config_error(exc: BaseException) -> int:
    return _report(exc)


def _cli_log_level(args: argparse.Namespace) -> int | None:
    """The level the command line asks for (``--log-level``, else ``-v``), or None."""
    from postroom.logs import LEVELS

    if getattr(args, "log_level", None):
        return LEVELS[args.log_level]
    verbose = getattr(args, "verbose", 0)
    return logging.DEBUG if verbose > 1 else logging.INFO if verbose else None


def _setup_logging(args: argparse.Namespace) -> None:
    """A command's logging before any site is read: WARNING unless asked for more."""
    from postroom.logs import setup_logging

    setup_logging(level=_cli_log_level(args) or logging.WARNING, fmt=args.log_format or "text")


def _site_logging(args: argparse.Namespace, config: Any) -> None:
    """A long-running command's logging: the site's ``logging:`` section, the
    command line's ``--log-level``/``-v`` and ``--log-format`` overriding it."""
    from postroom.logs import site_logging

    site_logging(config, _cli_log_level(args), args.log_format)


# -------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    """The gateway. It owns the store: a second ``run`` on it exits 3 at once
    (the gateway lock, :mod:`postroom.store.lock`); the HTTP API is one of its
    services, started and stopped with it."""
    from twisted.internet import defer

    from postroom.services.gateway import Gateway

    # `kill -USR1 <pid>`: every thread's stack to standard error, to see what a
    # gateway that does not stop is waiting for (it goes on running)
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    async def main(reactor: Any) -> int:
        kernel = _kernel(args, reactor)
        _site_logging(args, kernel.config)
        for warning in kernel.plugins.warnings:
            log.warning("%s", warning)
        for cfg_warning in kernel.config.warnings:
            log.warning("%s", cfg_warning)
        gateway = Gateway(kernel, once=args.once)
        finished: defer.Deferred[None] = defer.Deferred()
        try:
            gateway.startService()
            assert gateway.opened is not None
            await gateway.opened  # lock held, store open, startup hooks run
            if args.once:
                ok = await gateway.run_once()
                return EXIT_OK if ok else EXIT_FAILED
            # SIGTERM/SIGINT make Twisted stop the reactor; before it stops, this
            # run stops the gateway cleanly (in-flight messages finish or stay).
            # A lost lock (its database session died) stops the gateway too.
            ended: defer.Deferred[BaseException | None] = defer.Deferred()

            def before_shutdown() -> defer.Deferred[None]:
                if not ended.called:
                    ended.callback(None)
                return finished

            def lost(error: BaseException) -> None:
                if not ended.called:
                    ended.callback(error)

            reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
            gateway.lost.addCallback(lost)
            error = await ended
            return _report(error) if error is not None else EXIT_OK
        except Exception as exc:
            return _report(exc)
        finally:
            try:
                await gateway.stopService()
            finally:
                finished.callback(None)

    return _react(main)


def cmd_check(args: argparse.Namespace) -> int:
    from postroom.kernel import Kernel

    if args.connect:
        return _check_connect(args)
    kernel = Kernel(args.config)
    for warning in [*kernel.plugins.warnings, *map(str, kernel.config.warnings)]:
        print(f"warning: {warning}", file=sys.stderr)
    config = kernel.config
    print(f"{args.config}: OK")
    print(f"  tenant-id: {config.tenant_id}")
    print(f"  store: {config.store_driver}")
    print(f"  plugins: {', '.join(kernel.plugins.order)}")
    for mailbox in config.mailboxes:
        print(f"  mailbox {mailbox.name}: type {mailbox.type}")
    if config.smtp is not None:
        print(f"  smtp-client: {config.smtp.server_type}")
    return EXIT_OK


def _check_connect(args: argparse.Namespace) -> int:
    """``check --connect``: log in everywhere; 0 only when every connection worked."""
    from postroom.cli.connections import check_connections

    async def body(kernel: Any) -> int:
        for warning in map(str, kernel.config.warnings):
            print(f"warning: {warning}", file=sys.stderr)
        results = await check_connections(kernel)
        for result in results:
            print(result.line())
        failed = [r for r in results if not r.ok]
        if not results:
            print("nothing to connect to: no mailbox and no smtp-client")
        elif failed:
            print(f"{len(failed)} of {len(results)} connection(s) failed")
        return EXIT_FAILED if failed else EXIT_OK

    return _with_kernel(args, body)


def cmd_mailboxes(args: argparse.Namespace) -> int:
    from postroom.cli.connections import connection_rows, format_rows
    from postroom.cli.output import dumps

    async def body(kernel: Any) -> int:
        rows = await connection_rows(kernel)
        if args.json:
            for row in rows:
                print(dumps(row.as_dict()))
        elif rows:
            print(format_rows(rows))
        else:
            print("no mailbox and no smtp-client configured")
        return EXIT_OK

    return _with_kernel(args, body)


def cmd_plugins(args: argparse.Namespace) -> int:

    from postroom._apiversion import VERSION, declared_api
    from postroom.drivers import INTERFACES, distribution_of, driver_names, load_driver
    from postroom.plugins.manager import PluginInfo, load_plugins

    enabled = None
    if args.config:
        from postroom.config.document import read_document

        enabled = read_document(Path(args.config)).driver_names().plugins
    plugins = load_plugins(enabled)
    infos = list(plugins.infos)
    for group in INTERFACES:
        for name in driver_names(group):
            dist, version = distribution_of(group, name)
            info = PluginInfo(name, group, dist, version)
            try:
                cls = load_driver(group, name)
                info.api = VERSION if dist == "postroom" else declared_api(cls)
                info.hooks = (
                    ["postroom_add_options"] if hasattr(cls, "postroom_add_options") else []
                )
                info.enabled = True
            except PluginLoadError as exc:
                info.error = f"{type(exc.cause).__name__}: {exc.cause}"
            infos.append(info)
    if args.json:
        import attrs

        for info in infos:
            print(json.dumps(attrs.asdict(info)))
        return EXIT_OK
    rows = [("NAME", "KIND", "DISTRIBUTION", "VERSION", "API", "HOOKS / ERROR")]
    for info in infos:
        detail = (
            f"LOAD ERROR: {info.error}"
            if info.error
            else ", ".join(h.removeprefix("postroom_") for h in info.hooks)
        )
        rows.append(
            (
                info.name,
                info.kind,
                info.distribution or "-",
                info.version or "-",
                info.api or "-",
                detail,
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in range(5)) + "  " + r[5])
    print(f"this kernel provides postroom.api {VERSION}", file=sys.stderr)
    for warning in plugins.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    from postroom.cli.output import dumps, table
    from postroom.ingest import ingest_files
    from postroom.views import interaction_json

    enabled = [p for p in args.plugins.split(",") if p] if args.plugins is not None else None

    async def body(kernel: Any) -> int:
        failed = False
        shown = []
        mailbox = None
        if args.mailbox is not None:
            names = [m.name for m in kernel.config.mailboxes]
            if args.mailbox not in names:
                print(
                    f"error: no mailbox {args.mailbox!r} in the site"
                    + (f" (mailboxes: {', '.join(names)})" if names else " (it has none)"),
                    file=sys.stderr,
                )
                return EXIT_CONFIG
            mailbox = next(m for m in kernel.config.mailboxes if m.name == args.mailbox)
        paths = [Path(p) for p in args.files]
        async for source, outcome in ingest_files(kernel, paths, mailbox):
            if isinstance(outcome, BaseException):
                failed = True
                if isinstance(outcome, OSError) and outcome.filename is not None:
                    print(f"error: {os_error(outcome)}", file=sys.stderr)  # names the file
                else:
                    print(f"error: {source}: {outcome}", file=sys.stderr)
                continue
            for interaction in outcome:
                if args.json:
                    print(dumps(interaction_json(interaction, source)), flush=True)
                else:
                    shown.append(interaction)
        if not args.json:
            print(table(shown))
        return EXIT_FAILED if failed else EXIT_OK

    return _with_kernel(
        args,
        body,
        enabled_plugins=enabled,
        store_override=None if args.config else {"driver": "memory"},
    )


def cmd_retry_handoff(args: argparse.Namespace) -> int:
    """Put an interaction's refused and failed hand-off targets back to pending;
    a running gateway retries them at its next sweep."""
    from postroom.cli.failures import UsageError
    from postroom.cli.interactions import resolved
    from postroom.handoffs import handoff_detail, retry_handoff

    async def body(kernel: Any) -> int:
        interaction_id = await resolved(kernel, args.id)
        try:
            again = await retry_handoff(kernel.store, interaction_id, args.target)
        except KeyError:
            raise NotFound(f"no interaction {interaction_id} with a hand-off") from None
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        detail = await handoff_detail(kernel.store, interaction_id)
        if args.json:
            print(json.dumps({"id": interaction_id, "retried": again, "handoff": detail}))
        elif again:
            print(f"{interaction_id}: {', '.join(again)} back to pending; a running gateway "
                  "retries within gateway.handoff-sweep-interval")  # fmt: skip
        else:
            state = detail["state"] if detail else "unknown"
            print(f"{interaction_id}: no refused or failed target to retry (hand-off {state})")
        return EXIT_OK

    return _with_kernel(args, body)


def cmd_quarantine(args: argparse.Namespace) -> int:
    from postroom.ingest import replay_quarantined

    async def body(kernel: Any) -> int:
        if args.action == "list":
            entries = await kernel.store.list_quarantine(args.all)
            for e in entries:
                state = "released" if e.released else "held"
                print(
                    f"{e.id}  {e.mailbox}  {e.source_key}  attempts={e.attempts}  "
                    f"{state}  {e.reason}"
                )
            if not entries:
                print("quarantine is empty")
            return EXIT_OK
        try:
            interactions = await replay_quarantined(kernel, args.id)
        except KeyError as exc:
            raise NotFound(exc.args[0] if exc.args else f"no entry {args.id}") from None
        except (StoreError, OSError):
            raise  # the store or the disk: status 3
        except Exception as exc:  # the message failed again (a plugin, the pipeline)
            print(f"error: replay failed: {exc}", file=sys.stderr)
            return EXIT_FAILED
        for interaction in interactions:
            print(f"replayed as interaction {interaction.id} ({interaction.subtype})")
        if not interactions:
            print(
                "released: the mailbox fetches the message again on its next pass "
                "(or it was already stored: then nothing new was made)"
            )
        return EXIT_OK

    return _with_kernel(args, body)


def cmd_suppression(args: argparse.Namespace) -> int:
    async def body(kernel: Any) -> int:
        store = kernel.store
        if args.action == "list":
            entries = await store.list_suppressions()
            if args.json:
                for e in entries:
                    print(
                        json.dumps(
                            {
                                "address": e.address,
                                "reason": e.reason,
                                "interaction_id": e.interaction_id,
                                "hits": e.hits,
                                "created_at": e.created_at.isoformat(),
                                "updated_at": e.updated_at.isoformat(),
                            },
                            ensure_ascii=False,
                        )
                    )
            else:
                for e in entries:
                    print(
                        f"{e.address}  since {e.created_at:%Y-%m-%d %H:%M}  hits={e.hits}  "
                        f"{e.reason}" + (f"  (NDR {e.interaction_id})" if e.interaction_id else "")
                    )
                if not entries:
                    print("the suppression list is empty")
            return EXIT_OK
        if args.action == "add":
            await store.suppress(args.address, args.reason or "added by hand")
            print(f"suppressed {args.address}")
            return EXIT_OK
        status = EXIT_OK
        for address in args.address:
            if await store.unsuppress(address):
                print(f"cleared {address}")
            else:
                print(f"error: {address} is not on the suppression list", file=sys.stderr)
                status = EXIT_FAILED
        return status

    return _with_kernel(args, body)


#: the ``postroom send`` option of each send-request field, for error messages
_SEND_OPTIONS = {
    "to": "--to",
    "cc": "--cc",
    "bcc": "--bcc",
    "from": "--from",
    "mailbox": "--mailbox",
    "subject": "--subject",
    "text": "--text",
    "html": "--html",
    "headers": "--header",
    "in_reply_to": "--in-reply-to",
    "forward_of": "--forward-of",
    "attachments": "--attach",
    "quote": "--quote",
    "options": "--option",
    "automatic": "--automatic",
}


def _send_data(args: argparse.Namespace) -> dict[str, Any]:
    """The send request of ``postroom send``'s options, in the JSON shape of ``POST /send``.

    Raises :class:`~postroom.sendrequest.RequestError` for an option that cannot
    even be put in that shape (a header without a colon, an unreadable @FILE).
    """
    from postroom.sendrequest import RequestError, parse_json

    data: dict[str, Any] = {"automatic": args.automatic}
    if args.quote:
        data["quote"] = True
    optional = {
        "to": args.to,
        "cc": args.cc,
        "bcc": args.bcc,
        "from": args.sender,
        "mailbox": args.mailbox,
        "subject": args.subject,
        "in_reply_to": args.in_reply_to,
        "forward_of": args.forward_of,
    }
    data.update({key: value for key, value in optional.items() if value is not None})
    for key in ("text", "html"):
        value = getattr(args, key)
        if value is not None and value.startswith("@"):
            try:
                value = Path(value[1:]).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise RequestError(key, f"cannot read {value[1:]!r}: {exc}") from None
        if value is not None:
            data[key] = value
    headers: dict[str, str] = {}
    for item in args.header or []:
        name, colon, value = item.partition(":")
        if not colon:
            raise RequestError("headers", f"{item!r}: expected 'Name: value'")
        if name.strip().lower() in {n.strip().lower() for n in headers}:
            raise RequestError("headers", f"the header {name.strip()!r} is given twice")
        headers[name] = value.strip(" \t")
    if headers:
        data["headers"] = headers
    options: dict[str, Any] = {}
    for item in args.option or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise RequestError("options", f"{item!r}: expected NAME=JSON")
        try:
            options[name.strip()] = parse_json(value, "options")
        except RequestError as exc:
            raise RequestError("options", f"{item!r}: {exc.message}") from None
    if options:
        data["options"] = options
    stored = []
    for item in args.attach_stored or []:
        interaction, colon, index = item.rpartition(":")
        if not colon or not interaction or not index.isdigit():
            raise RequestError("attachments", f"--attach-stored {item!r}: expected ID:INDEX")
        stored.append({"interaction": interaction, "index": int(index)})
    if stored:
        data["attachments"] = stored
    return data


def _attached_files(args: argparse.Namespace, max_size: int) -> list[Any]:
    """The files of ``--attach``, read (none larger than the site's per-file limit:
    a huge file is refused before it is read)."""
    from postroom.outbound_files import FileError, outbound_file
    from postroom.sendrequest import RequestError

    files = []
    for name in args.attach or []:
        path = Path(name)
        try:
            size = path.stat().st_size
            if size > max_size:
                raise RequestError(
                    "attachments",
                    f"{name!r} is {size} bytes; the site allows {max_size} per file "
                    "(email-processing: outbound-attachment-max-size)",
                )
            files.append(outbound_file(path.name, path.read_bytes()))
        except OSError as exc:
            raise RequestError("attachments", f"cannot read {name!r}: {exc.strerror}") from None
        except FileError as exc:
            raise RequestError("attachments", f"{name!r}: {exc.message}") from None
    return files


def _report_refused(exc: Any) -> int:
    """A refused send request: name the option, exit 2 (bad input; nothing queued)."""
    where = _SEND_OPTIONS.get(exc.field, exc.field)
    print(f"error: {where}: {exc.message}" if where else f"error: {exc}", file=sys.stderr)
    return EXIT_CONFIG


def _outbound_kernel(args: argparse.Namespace, reactor: Any) -> tuple[Any, frozenset[str]] | int:
    """The kernel and the site's forbidden headers for ``send`` and ``render``, or
    the exit status of a configuration that cannot be used (reported)."""
    from postroom.services.outbound import site_forbidden_headers

    try:
        kernel = _kernel(args, reactor)
        return kernel, site_forbidden_headers(kernel)
    except (ConfigError, ConfigErrors, PluginLoadError) as exc:
        return _report_config_error(exc)
    except OSError as exc:  # the forbidden-headers-file
        print(f"error: smtp-client: forbidden-headers-file: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def cmd_send(args: argparse.Namespace) -> int:
    """Queue an e-mail for the gateway that owns the store; ``--now``: be that
    gateway for one outbox pass (only when none runs)."""
    from postroom.sendrequest import RequestError, request_from_json
    from postroom.services.outbound import queue_send

    async def main(reactor: Any) -> int:
        made = _outbound_kernel(args, reactor)
        if isinstance(made, int):
            return made
        kernel, forbidden = made
        try:
            request = request_from_json(_send_data(args), forbidden)
            max_size = int(kernel.config.get("email-processing", "outbound-attachment-max-size"))
            request.attachments += _attached_files(args, max_size)
        except RequestError as exc:
            return _report_refused(exc)
        if args.now:
            return await _send_now(kernel, request)
        # Beside a running gateway: only a row in the outbox, which its worker
        # sends; no outbox worker here, nothing of its in-flight sends touched.
        await kernel.open()
        try:
            interaction = await queue_send(kernel, request, forbidden)
        except RequestError as exc:  # in_reply_to names no stored interaction
            return _report_refused(exc)
        finally:
            await kernel.close()
        print(f"{interaction.id} {interaction.message_id} Queued")
        print(
            "queued: the gateway running on this store ('postroom run') sends it; "
            "--now sends it from here when no gateway runs",
            file=sys.stderr,
        )
        return EXIT_OK

    return _react(main)


async def _send_now(kernel: Any, request: Any) -> int:
    """``send --now``: hold the store's gateway lock for one outbox pass (which
    sends whatever is due, this request included); exit 3 when a gateway runs."""
    from postroom.sendrequest import RequestError
    from postroom.services.gateway import Gateway
    from postroom.store.lock import GatewayLocked

    # The outbox worker of a --once gateway sends what is queued, then stops.
    gateway = Gateway(kernel, once=True, mailboxes=False)
    gateway.startService()
    try:
        assert gateway.opened is not None
        try:
            await gateway.opened
        except GatewayLocked as exc:
            print(
                f"error: --now: {exc.store} is in use by another gateway"
                + (f" ({exc.holder})" if exc.holder else "")
                + "; nothing was queued: without --now the running gateway sends it",
                file=sys.stderr,
            )
            return EXIT_ENVIRONMENT
        interaction = await gateway.send(request)
        await gateway.outbound.finished
        stored = await kernel.store.get_interaction(interaction.id)
        entry = await kernel.store.get_outbox(interaction.id)
    except RequestError as exc:  # in_reply_to names no stored interaction
        return _report_refused(exc)
    finally:
        await gateway.stopService()
    print(f"{stored.id} {stored.message_id} {stored.status}")
    if entry is None or entry.state != "sent":
        error = stored.attached_data.get("_SendError")
        print(
            f"error: not sent{': ' + str(error) if error else ' yet (queued for retry)'}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def _read_request(name: str, limit: int) -> bytes:
    """``postroom render``'s REQUEST: a file, or ``-`` for standard input; at most
    *limit* bytes (the HTTP API's body limit). RequestError when it cannot be read."""
    from postroom.sendrequest import RequestError

    try:
        if name == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(name, "rb") as fh:
                data = fh.read(limit + 1)
    except OSError as exc:
        raise RequestError(None, f"cannot read {name!r}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise RequestError(None, f"{name!r}: over {limit} bytes")
    return data


def cmd_render(args: argparse.Namespace) -> int:
    """What a send request would become, nothing queued or sent: the message on
    standard output (``--json``: its parts, envelope and veto); exit 0 when it
    would be sent, 1 when a plugin vetoes it or it would fail, 2 when refused."""
    from postroom.sendrequest import RequestError, parse_json, request_from_json
    from postroom.services.outbound import preview_send
    from postroom.web import MAX_BODY

    async def main(reactor: Any) -> int:
        made = _outbound_kernel(args, reactor)
        if isinstance(made, int):
            return made
        kernel, forbidden = made
        await kernel.open()
        try:
            request = request_from_json(
                parse_json(_read_request(args.request, MAX_BODY)), forbidden
            )
            preview = await preview_send(kernel, request)
        except RequestError as exc:  # refused as POST /send refuses it: nothing queued
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        finally:
            await kernel.close()
        data = preview.as_json()
        if args.json:
            print(json.dumps(data, indent=2, ensure_ascii=False))
        elif preview.sendable:
            assert preview.composed is not None and preview.composed.data is not None
            sys.stdout.flush()
            sys.stdout.buffer.write(preview.composed.data)
            sys.stdout.buffer.flush()
        if preview.sendable:
            return EXIT_OK
        print(f"error: would not be sent: {data['veto'] or data['error']}", file=sys.stderr)
        return EXIT_FAILED

    return _react(main)


def installed_schema(warn: Callable[[str], None] | None = None) -> Any:
    """Every option of every installed plugin and driver (the whole reference).

    A driver that cannot load is passed to *warn* and left out.
    """
    from postroom.config.options import OptionSchema
    from postroom.drivers import INTERFACES, driver_names, load_driver
    from postroom.plugins.facade import Hooks
    from postroom.plugins.manager import load_plugins

    hooks = Hooks(load_plugins(None))
    schema = OptionSchema()
    hooks.add_options(schema)
    for group in INTERFACES:
        for name in driver_names(group):
            try:
                hooks.add_options_of(load_driver(group, name), f"{group}:{name}", schema)
            except PluginLoadError as exc:
                if warn is not None:
                    warn(str(exc))
    return schema


def cmd_config_reference(args: argparse.Namespace) -> int:
    from postroom.config.docs import render_markdown

    schema = installed_schema(lambda text: print(f"warning: {text}", file=sys.stderr))
    text = render_markdown(schema)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:  # a failed write names no file by itself
            raise OSError(exc.errno, exc.strerror, args.output) from None
    else:
        sys.stdout.write(text)
    return EXIT_OK


# ---------------------------------------------------------------------- parser


def _address(text: str) -> str:
    """An e-mail address: ``local@domain``, no blanks or control characters."""
    address = text.strip()
    local, at, domain = address.rpartition("@")
    if not (at and local and domain) or any(c.isspace() or ord(c) < 32 for c in address):
        raise argparse.ArgumentTypeError(
            f"expected an e-mail address such as user@example.com, got {text!r}"
        )
    return address


def _site_argument(parser: argparse.ArgumentParser) -> None:
    """``-c/--config``, for the commands that need a site."""
    parser.add_argument("-c", "--config", required=True, help="site configuration (YAML)")


def build_parser(plugin_commands: bool = True) -> argparse.ArgumentParser:
    """The command line; with *plugin_commands*, the installed plugins' commands too."""
    parser = argparse.ArgumentParser(
        prog="postroom",
        description="postroom: the e-mail gateway for contact centres.",
    )
    parser.add_argument("--version", action="version", version=f"postroom {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)"
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=None,
        help="least severe log level written (overrides -v, and 'run's logging: level)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="log lines as text or as JSON objects (structured logs); 'run' takes the "
        "site's logging: format unless given",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="run the gateway",
        description=(
            "Run the gateway: watch every mailbox, hand interactions to routing, send the "
            "outbox, serve the HTTP API. One gateway process owns a store: a second 'run' "
            "on the same store exits 3 at once, naming the one that holds it."
        ),
    )
    _site_argument(p)
    p.add_argument(
        "--once",
        action="store_true",
        help=(
            "take what each mailbox holds now, process it, send what was queued, wait for "
            "hand-offs, exit (0 all well, 1 something failed, 2 bad configuration)"
        ),
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "check",
        help="validate a site configuration",
        description="Validate a configuration; errors name file, line, option.",
    )
    _site_argument(p)
    p.add_argument(
        "--connect",
        action="store_true",
        help="also connect to every mailbox and the smtp-client (through the proxy when "
        "configured), negotiate TLS and log in with the configured auth driver; report "
        "each: ok or the failure, capabilities and time; exit 1 if any fails",
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "mailboxes",
        help="list mailboxes and the smtp-client with their state",
        description="Every configured mailbox and the smtp-client with the state the "
        "gateway last reported (connected, connection-failed, auth-failed, "
        "needs-reauthorisation), failures, next attempt, and what to do about a problem. "
        "Read from the store: works beside a running gateway and after a restart.",
    )
    _site_argument(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_mailboxes)

    p = sub.add_parser(
        "plugins",
        help="list plugins and drivers",
        description="Every hook plugin and driver: name, distribution, "
        "version, hooks, load errors.",
    )
    p.add_argument("-c", "--config", help="show the plugins this site enables")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser(
        "ingest",
        help="run the inbound pipeline on .eml files",
        description="Run the inbound pipeline on .eml files without a mailbox. "
        "Uses a throwaway in-memory store unless -c names a site.",
    )
    p.add_argument("-c", "--config", help="use this site's plugins, options and store")
    p.add_argument(
        "--plugins",
        help="comma-separated hook plugins to enable (overrides "
        "the site's plugins: list; empty: none)",
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON object per line per resulting interaction"
    )
    p.add_argument(
        "--mailbox",
        metavar="NAME",
        help="process as if fetched by this mailbox of the site (-c): its options apply, "
        "e.g. the recipient split",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help=".eml files")
    p.set_defaults(func=cmd_ingest)

    from postroom.cli.interactions import add_commands as add_interaction_commands

    isub = add_interaction_commands(sub, _with_kernel, _site_argument)
    q = isub.add_parser(
        "retry-handoff",
        help="retry a refused or failed hand-off",
        description="Put the interaction's refused and failed hand-off targets (or only "
        "--target) back to pending, keeping their attempts; a running gateway retries them "
        "within gateway.handoff-sweep-interval.",
    )
    _site_argument(q)
    q.add_argument("id", help="interaction id")
    q.add_argument("--target", help="only this target (the plugin's name)")
    q.add_argument("--json", action="store_true", help="the outcome as one JSON object")
    q.set_defaults(func=cmd_retry_handoff)

    p = sub.add_parser(
        "quarantine",
        help="list or replay quarantined messages",
        description="Messages that failed max-attempts times.",
    )
    qsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = qsub.add_parser("list", help="list quarantined messages", description="List them.")
    _site_argument(q)
    q.add_argument("--all", action="store_true", help="include released ones")
    q.set_defaults(func=cmd_quarantine)
    q = qsub.add_parser(
        "replay",
        help="run a quarantined message through the pipeline again",
        description="Replay a quarantined message; on success it is released.",
    )
    _site_argument(q)
    q.add_argument("id", help="quarantine entry id")
    q.set_defaults(func=cmd_quarantine)

    p = sub.add_parser(
        "suppression",
        help="list, add or clear hard-bounced addresses",
        description="Addresses on the suppression list get no automatic outbound mail "
        "(auto-replies, acknowledgements); agents' own mail still goes. The DSN plugin "
        "adds every address that hard-bounced.",
    )
    ssub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = ssub.add_parser("list", help="list suppressed addresses", description="List them.")
    _site_argument(q)
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.set_defaults(func=cmd_suppression)
    q = ssub.add_parser(
        "add", help="suppress an address by hand", description="Suppress an address by hand."
    )
    _site_argument(q)
    q.add_argument("address", type=_address, help="e-mail address (compared case-insensitively)")
    q.add_argument("--reason", help="why (shown by list)")
    q.set_defaults(func=cmd_suppression)
    q = ssub.add_parser(
        "clear",
        help="take addresses off the list",
        description="Take addresses off the list; exit 1 when one of them was not on it.",
    )
    _site_argument(q)
    q.add_argument("address", nargs="+", help="e-mail address(es)")
    q.set_defaults(func=cmd_suppression)

    p = sub.add_parser(
        "send",
        help="queue an e-mail in the site's outbox",
        description="Queue an e-mail in the site's outbox for the gateway that owns the "
        "store ('postroom run'), which sends it; prints 'ID MESSAGE-ID Queued', exit 0. "
        "With --now, when no gateway runs, send it from here and wait: exit 0 when sent, "
        "1 when not (it stays queued for retry, or failed for good: the error says which), "
        "3 when a gateway runs (nothing queued). 2 when the request is refused (the error "
        "names the option; nothing is queued) or the configuration is bad. The request is "
        "checked as POST /send checks it.",
    )
    _site_argument(p)
    p.add_argument(
        "--to",
        action="append",
        help="recipients: an address list ('a@x.example, Anna <b@y.example>'), repeatable; "
        "required unless --in-reply-to names the mail answered (then its Reply-To or From)",
    )
    p.add_argument("--cc", action="append", help="Cc recipients (address list, repeatable)")
    p.add_argument("--bcc", action="append", help="Bcc recipients (address list, repeatable)")
    p.add_argument("--from", dest="sender", help="From address (one mailbox)")
    p.add_argument(
        "--mailbox",
        help="the site's mailbox (pop-client name) it goes out from: its address, display "
        "name and signature, its own SMTP login if it has one (default: the mailbox the "
        "--in-reply-to interaction came in on)",
    )
    p.add_argument("--subject", help="subject")
    p.add_argument("--text", help="plain-text body, or @FILE")
    p.add_argument("--html", help="HTML body, or @FILE")
    p.add_argument(
        "--in-reply-to",
        help="id of the interaction this answers (threading; fills --to and --subject "
        "when they are not given)",
    )
    p.add_argument(
        "--quote",
        action="store_true",
        help="quote the --in-reply-to interaction below the text (the site's quote-* options)",
    )
    p.add_argument(
        "--forward-of",
        metavar="ID",
        help="id of an interaction to forward: quoted below the text with its files "
        "attached; the subject, when not given, is its subject with subject-forward-prefix",
    )
    p.add_argument(
        "--attach",
        action="append",
        metavar="FILE",
        help="attach a file (repeatable; its type guessed from its name)",
    )
    p.add_argument(
        "--attach-stored",
        action="append",
        metavar="ID:INDEX",
        help="attach a stored interaction's file: its id and the file's position in "
        "its attachments, 0 first (repeatable)",
    )
    p.add_argument("--header", action="append", help="extra header 'Name: value' (repeatable)")
    p.add_argument(
        "--option",
        action="append",
        metavar="NAME=JSON",
        help='a request option for plugins, e.g. \'dsn={"notify": ["FAILURE"]}\' '
        "or 'mdn=true' (repeatable)",
    )
    p.add_argument(
        "--automatic",
        action="store_true",
        help="sent by automation, not an agent: never to suppressed addresses, "
        "marked Auto-Submitted",
    )
    p.add_argument(
        "--now",
        action="store_true",
        help="no gateway runs on this store: take its lock, send what is queued (this "
        "e-mail included) and wait for the outcome; refused (exit 3) while a gateway runs",
    )
    p.set_defaults(func=cmd_send)

    p = sub.add_parser(
        "render",
        help="preview what a send request would send",
        description="What a send request (the JSON of POST /send) would become, nothing "
        "queued or sent: checked as 'postroom send' checks it, the reply filled from "
        "in_reply_to, rendered, vetoed, enveloped and built as the outbox does. Prints the "
        "RFC 5322 message; --json prints its headers, text, html, envelope and veto. Exit 0 "
        "when it would be sent, 1 when a plugin vetoes it or it would fail (the reason on "
        "stderr), 2 when the request is refused (the error names the field).",
    )
    _site_argument(p)
    p.add_argument(
        "request",
        nargs="?",
        default="-",
        metavar="REQUEST.json",
        help="the send request as JSON ('-', the default: standard input)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="a JSON object: sendable, veto, error, message_id, subject, text, html, "
        "headers, envelope, message",
    )
    p.set_defaults(func=cmd_render)

    from postroom.cli.outbox import add_outbox_command

    add_outbox_command(sub, _with_kernel)

    p = sub.add_parser(
        "config-reference",
        help="print the configuration reference",
        description="Markdown reference of every declared option "
        "(docs/configuration.md is made with this).",
    )
    p.add_argument("-o", "--output", help="write to this file")
    p.set_defaults(func=cmd_config_reference)
    from postroom.cli import erase

    erase.add_commands(sub, _with_kernel)
    if plugin_commands:
        _add_plugin_commands(sub)
    return parser


#: the kernel's own commands: running one loads no plugin to build the command line
KERNEL_COMMANDS = frozenset(
    {
        "run", "check", "mailboxes", "plugins", "ingest", "interactions", "quarantine",
        "suppression", "send", "render", "config-reference", "outbox",
    }
    | {"erase", "purge"}
)  # fmt: skip


def _add_plugin_commands(sub: Any) -> None:
    """The commands of every installed hook plugin (``postroom_register_commands``);
    a plugin that fails there is a warning, the other commands still work."""
    from postroom.cli.commands import PluginCommands
    from postroom.plugins.facade import Hooks
    from postroom.plugins.manager import load_plugins

    plugins = load_plugins(None)
    commands = PluginCommands(sub, set(sub.choices), _with_kernel)
    for warning in Hooks(plugins).register_commands(commands):
        print(f"warning: {warning}", file=sys.stderr)


def _command_of(argv: Sequence[str]) -> str | None:
    """The command word of *argv* (None: none given), without parsing it."""
    values = iter(argv)
    for token in values:
        if token in ("--log-format", "--log-level"):
            next(values, None)
        elif not token.startswith("-"):
            return token
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure ends as one ``error:`` line and a
    documented exit status (:mod:`postroom.cli.failures`), never a traceback."""
    try:
        words = list(sys.argv[1:] if argv is None else argv)
        parser = build_parser(plugin_commands=_command_of(words) not in KERNEL_COMMANDS)
        args = parser.parse_args(words)  # bad arguments: usage and exit status 2
        _setup_logging(args)
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        result: int = args.func(args)
        return result
    except SystemExit:
        raise
    except BaseException as exc:
        return _report(exc)


if __name__ == "__main__":
    sys.exit(main())
