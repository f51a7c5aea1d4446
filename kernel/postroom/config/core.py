"""The kernel's own option declarations.

Declared through the same hook as every plugin's, so the kernel's options are
validated and documented by the same code. Driver-specific options (a maildir's
``folder-path``, the file sender's ``folder-path``, PostgreSQL's ``dsn``) are
declared by those drivers. The exception is SQLite's ``path``: SQLite is the
embedded default store, so ``loader.default_site`` needs it without any driver
having been loaded.
"""

from __future__ import annotations

import functools
from typing import Any

from postroom import hookimpl
from postroom.config.connections import add_shared_connection_options
from postroom.config.options import OptionSchema, Scope
from postroom.config.retention import add_retention_options
from postroom.parsing.limits import MAX_DEPTH

KERNEL = "postroom"
#: the HTTP API's default port: unprivileged, below Linux's ephemeral range
#: (32768+), clear of common development ports (8000, 8025, 8080); "POST" on a
#: phone keypad
DEFAULT_HTTP_PORT = 7678

#: Bounds whose reason lies elsewhere (every numeric option has both bounds,
#: so ``postroom check`` refuses what would fail or misbehave at run time).
#: ``interactions.tenant_id`` is a 32-bit INTEGER column in PostgreSQL.
MAX_TENANT_ID = 2**31 - 1
#: parsing holds a few times the message in memory, and PostgreSQL keeps at
#: most 1 GB in one text value (a body)
MAX_MESSAGE_SIZE = 512 * 1024**2
#: the files of one outbound message are held in memory while it is built
MAX_OUTBOUND_FILES = 100 * 1024**2
#: charsets outbound text may be written in (``outbound-msg-charset``): those
#: mail clients read everywhere; others would risk unreadable mail
OUTBOUND_CHARSETS = (
    "UTF-8", "US-ASCII", "ISO-8859-1", "ISO-8859-2", "ISO-8859-5", "ISO-8859-7",
    "ISO-8859-9", "ISO-8859-15", "Windows-1250", "Windows-1251", "Windows-1252",
    "Windows-1253", "Windows-1254", "Windows-1257", "KOI8-R", "KOI8-U", "ISO-2022-JP",
    "Shift_JIS", "EUC-JP", "EUC-KR", "GB2312", "GBK", "GB18030", "Big5",
)  # fmt: skip
HOUR = 3600
DAY = 24 * HOUR


@hookimpl
def postroom_add_options(schema: OptionSchema) -> None:
    """Declare the kernel's options."""
    with schema.declaring(KERNEL):
        add_shared_connection_options(schema)
    # attributed to "postroom" whatever name the plugin manager registers this under
    add = functools.partial(schema.add, declared_by=KERNEL)

    # top level
    add(
        "tenant-id",
        "int",
        default=1,
        minimum=0,
        maximum=MAX_TENANT_ID,
        description="Tenant the interactions are created for in the contact centre.",
    )
    add(
        "plugins",
        "list",
        default=None,
        description="Hook plugins to enable, exactly these and in this order. "
        "Absent: every installed plugin, in a deterministic order.",
    )

    # store (`driver` is read structurally: it chooses which other options apply)
    add(
        "driver",
        scope=Scope.STORE,
        default="sqlite",
        description="Store driver: `sqlite` (one file, the embedded default) or "
        "`postgresql` (a PostgreSQL database; one gateway process owns a store, as with SQLite).",
    )

    # email-processing (the commercial product's names)
    ep = "email-processing"
    add(
        "default-domain",
        section=ep,
        default="localhost",
        aliases=("default_domain",),
        description="Domain added to addresses written without one.",
    )
    add(
        "maximum-msg-size",
        "size",
        section=ep,
        default="10MB",
        minimum=1,
        maximum=MAX_MESSAGE_SIZE,
        description="Largest inbound message accepted (e.g. `10MB`, 1024-based; at most "
        "`512MB`: parsing needs a few times the size in memory).",
    )
    add(
        "default-from-address",
        section=ep,
        default=None,
        description="From address of outbound mail whose request names none "
        "(absent: `postroom@<default-domain>`).",
    )
    add(
        "subject-reply-prefix",
        section=ep,
        default="Re:",
        description="Put before the answered interaction's subject when a send request with "
        "`in_reply_to` gives none (followed by one space; put there once: `Re:`, `RE :` and "
        "this prefix already leading the subject are replaced, in any case).",
    )
    add(
        "subject-forward-prefix",
        section=ep,
        default="Fwd:",
        description="Put before the forwarded interaction's subject when a send request with "
        "`forward_of` gives none (followed by one space; put there once, like "
        "`subject-reply-prefix`).",
    )
    add(
        "forward-separator",
        section=ep,
        default="---------- Forwarded message ----------",
        description="The line between a forward's own text and the forwarded mail, which "
        "follows with the `quote-*` labels' header lines, unprefixed (empty: no line).",
    )
    add(
        "bcc-address",
        "email",
        section=ep,
        default=None,
        description="An address every outbound message is also sent to, in the envelope "
        "only (an archive or a supervisor): no header shows it.",
    )
    add(
        "outbound-msg-charset",
        "choice",
        section=ep,
        default="UTF-8",
        choices=OUTBOUND_CHARSETS,
        description="Charset of outbound text and HTML parts. A part with a character the "
        "charset cannot write goes out in UTF-8 instead (logged): no text is lost.",
    )
    add(
        "outbound-attachment-max-size",
        "size",
        section=ep,
        default="10MB",
        minimum=1,
        maximum=MAX_OUTBOUND_FILES,
        description="Largest file sent with one outbound message (uploaded, or taken from a "
        "stored interaction); a request with a larger one is refused (HTTP 400, exit 2).",
    )
    add(
        "outbound-attachments-max-total",
        "size",
        section=ep,
        default="20MB",
        minimum=1,
        maximum=MAX_OUTBOUND_FILES,
        description="Largest total of the files of one outbound message (base64 makes the "
        "message about a third larger; most servers refuse mail over 25 to 50 MB).",
    )
    add(
        "outbound-attachment-max-count",
        "int",
        section=ep,
        default=20,
        minimum=0,
        maximum=100,
        description="Most files one outbound message may carry (0: none).",
    )
    for option, default, what in (
        ("quote-prefix", "> ", "Put before every line of the quoted text (plain text)."),
        (
            "quote-separator",
            "-----Original Message-----",
            "The line between the reply's own text and the quoted mail (empty: none).",
        ),
        ("quote-from", "From:", "Label of the quoted mail's sender line (empty: no line)."),
        ("quote-to", "To:", "Label of the quoted mail's recipients line (empty: no line)."),
        (
            "quote-cc",
            "Cc:",
            "Label of the quoted mail's Cc line (empty: no line; none when it had no Cc).",
        ),
        (
            "quote-sent",
            "Sent:",
            "Label of the quoted mail's date line: its Date header as the sender wrote it, "
            "else when it was stored (empty: no line).",
        ),
        ("quote-subject", "Subject:", "Label of the quoted mail's subject line (empty: no line)."),
    ):
        add(
            option,
            section=ep,
            default=default,
            description=what + " Used when a send request with `in_reply_to` asks for "
            '`"quote": true`: the answered mail is quoted below the reply\'s text (and in '
            "a `<blockquote>` below its HTML, every value escaped); see docs/outbound.md.",
        )
    add(
        "enable-message-id-check",
        "bool",
        section=ep,
        default=False,
        description="Deduplicate inbound messages by Message-ID as well as by source key "
        "and content (split copies are exempt).",
    )
    add(
        "max-mime-depth",
        "int",
        section=ep,
        default=20,
        minimum=1,
        maximum=MAX_DEPTH,
        description="Deepest MIME nesting parsed (a guard against hostile messages).",
    )
    add(
        "max-mime-parts",
        "int",
        section=ep,
        default=1000,
        minimum=1,
        maximum=100_000,
        description="Most MIME parts parsed in one message (a guard against hostile messages).",
    )

    # gateway (postroom's own)
    gw = "gateway"
    add(
        "concurrency",
        "int",
        section=gw,
        default=16,
        minimum=1,
        maximum=256,
        description="Messages of one mailbox processed at the same time.",
    )
    add(
        "parse-workers",
        "int",
        section=gw,
        default=-1,
        minimum=-1,
        maximum=256,
        description="Worker processes that parse and analyse messages, under the "
        "per-message budget, so parsing uses every core and a hostile message can be "
        "stopped (-1: one per CPU; 0: in threads of the gateway process, without the "
        "budget: for debugging only).",
    )
    add(
        "analysis-cpu-limit",
        "duration",
        section=gw,
        default="00:00:30",
        minimum=1,
        maximum=3600,
        description="CPU time one message's parse and analysis may use in a worker "
        "process; a message over it is quarantined at once (its worker is killed and "
        "replaced). CPU time, not wall-clock time: a loaded machine causes no false alarms.",
    )
    add(
        "worker-memory-limit",
        "size",
        section=gw,
        default="2GB",
        minimum=256 << 20,
        maximum=1 << 40,
        description="Address space each worker process may use (RLIMIT_AS); a message "
        "that needs more is quarantined at once. Leave room for about four times "
        "`maximum-msg-size` plus the worker's own 200 MB.",
    )
    add(
        "stop-grace",
        "duration",
        section=gw,
        default="00:00:02",
        minimum=0,
        maximum=60,
        description="Longest time a stop waits for the worker processes to exit; busy "
        "ones are terminated at once (their messages stay on the server for the next run).",
    )
    add(
        "max-attempts",
        "int",
        section=gw,
        default=5,
        minimum=1,
        maximum=100,
        description="Tries at processing a message before it is quarantined.",
    )
    add(
        "handoff-retry-initial",
        "duration",
        section=gw,
        default="00:00:05",
        minimum=1,
        maximum=HOUR,
        description="First delay before retrying a failed hand-off to routing; "
        "doubles on each failure.",
    )
    add(
        "handoff-retry-max",
        "duration",
        section=gw,
        default="00:05:00",
        minimum=1,
        maximum=DAY,
        description="Longest delay between hand-off retries.",
    )
    add(
        "login-retry-initial",
        "duration",
        section=gw,
        default="00:01:00",
        minimum=1,
        maximum=HOUR,
        description="Wait after a server refused a mailbox's (or the smtp-client's) "
        "credentials; doubles on each consecutive refusal, so a wrong password never "
        "locks the account. Connection failures have their own, shorter back-off.",
    )
    add(
        "login-retry-max",
        "duration",
        section=gw,
        default="00:30:00",
        minimum=1,
        maximum=DAY,
        description="Longest wait between login attempts after refused credentials.",
    )
    add(
        "thread-pool-size",
        "int",
        section=gw,
        default=10,
        minimum=1,
        maximum=256,
        description="Threads for blocking work (store, SDKs), so the reactor never blocks.",
    )

    # every mailbox
    add(
        "name",
        scope=Scope.MAILBOX,
        required=True,
        description="Unique name of the mailbox, used in logs, metrics and the store.",
    )
    add(
        "type",
        scope=Scope.MAILBOX,
        required=True,
        description="Source driver: `maildir`; later `pop3`, `imap`, `ews`.",
    )
    add(
        "auth",
        scope=Scope.MAILBOX,
        default="basic",
        description="Auth driver for mailboxes with a server: `basic`; later "
        "`azure-ropc`, `google-refresh`.",
    )
    add(
        "enabled",
        "bool",
        scope=Scope.MAILBOX,
        default=True,
        description="A disabled mailbox is validated but not read.",
    )
    add(
        "poll-interval",
        "duration",
        scope=Scope.MAILBOX,
        default="00:01:00",
        minimum=1,
        maximum=DAY,
        description="Time between checks for new mail when the server cannot push it.",
    )
    add_identity_options(schema)
    with schema.declaring(KERNEL):
        add_retention_options(schema)

    # smtp-client
    add(
        "server-type",
        scope=Scope.SMTP_CLIENT,
        required=True,
        description="Sender driver: `file`; later `smtp`, `ews`.",
    )
    add(
        "enable-authentication",
        "bool",
        scope=Scope.SMTP_CLIENT,
        default="false",
        description="Log in to the SMTP server (AUTH) with `user` and `password`, through "
        "the auth driver named by `auth`.",
    )
    add(
        "auth",
        scope=Scope.SMTP_CLIENT,
        default="basic",
        description="Auth driver used when `enable-authentication` is true: `basic`; "
        "later `azure-ropc`, `google-refresh`.",
    )
    add(
        "forbidden-headers-file",
        "path",
        scope=Scope.SMTP_CLIENT,
        description="A file with one header name per line (`#` starts a comment) that "
        "replaces the built-in list of headers never sent (Bcc, Received, Return-Path, "
        "Delivered-To...), whatever a request or plugin asks.",
    )

    # secret-<name>
    add(
        "password",
        "secret",
        scope=Scope.SECRET,
        description="The secret itself (e.g. an OAuth client secret); best given as "
        "`${NAME}` or `${file:path}`.",
    )

    # logging
    add(
        "level",
        "choice",
        section="logging",
        default="info",
        choices=("debug", "info", "warning", "error"),
        description="Least severe log level written.",
    )
    add(
        "format",
        "choice",
        section="logging",
        default="text",
        choices=("text", "json"),
        description="`text` for people, `json` (one object per line) for log collectors.",
    )

    # http
    add(
        "bind",
        section="http",
        default="127.0.0.1",
        description="Address the HTTP API listens on; local only by default.",
    )
    add(
        "port",
        "int",
        section="http",
        default=DEFAULT_HTTP_PORT,
        minimum=0,
        maximum=65534,
        description=f"Port of the HTTP API (default {DEFAULT_HTTP_PORT}: unprivileged, "
        "below the ephemeral range, clear of common development ports); 0 turns it off.",
    )
    add(
        "token",
        "secret",
        section="http",
        description="Bearer token clients of the HTTP API must present.",
    )
    add(
        "scrape-token",
        "secret",
        section="http",
        description="A second, read-only bearer token: it reads `GET /health` (with its "
        "details) and `GET /metrics`, nothing else (403), for monitoring systems. Without "
        "any token, `GET /health` answers only `up` or `down` (docs/operations.md).",
    )
    add(
        "public-url",
        section="http",
        description="The API's address as other systems reach it "
        "(`https://postroom.centre.example`), for the links hand-off messages carry "
        "(`raw_url`). Absent: `http://<bind>:<port>` when "
        "`bind` is one address; none when it is a wildcard or the API is off.",
    )
    add_handoff_event_options(add)


def add_handoff_event_options(add: Any) -> None:
    """Hand-off sweeping (:mod:`postroom.services.handoff`) and the event stream
    (``GET /events``, :mod:`postroom.events`)."""
    add(
        "handoff-sweep-interval",
        "duration",
        section="gateway",
        default="00:00:30",
        minimum=0,
        maximum=HOUR,
        description="How often a running gateway looks in the store for hand-offs put back "
        "to pending by `postroom interactions retry-handoff` in another process; 0 turns "
        "it off (`POST /interactions/{id}/retry-handoff` starts its retry at once anyway).",
    )
    ev = "events"
    add(
        "keep-count",
        "int",
        section=ev,
        default=100_000,
        minimum=100,
        maximum=100_000_000,
        description="Most events kept for `GET /events` (older ones are deleted; a client "
        "resuming from a deleted event gets what is left).",
    )
    add(
        "keep-days",
        "int",
        section=ev,
        default=7,
        minimum=0,
        maximum=3650,
        description="Events older than this many days are deleted; 0: kept by count only.",
    )
    add(
        "max-subscribers",
        "int",
        section=ev,
        default=20,
        minimum=1,
        maximum=1000,
        description="Most clients reading `GET /events` at once; one more is answered 503.",
    )
    add(
        "heartbeat",
        "duration",
        section=ev,
        default="00:00:15",
        minimum=1,
        maximum=HOUR,
        description="Quiet time after which `GET /events` sends a comment line, so proxies "
        "and clients see the stream is alive.",
    )
    add(
        "client-buffer",
        "int",
        section=ev,
        default=1024 * 1024,
        minimum=4096,
        maximum=256 * 1024 * 1024,
        description="Bytes of events held for one client that reads too slowly; past it "
        "the client is disconnected (it resumes with `Last-Event-ID`).",
    )


def add_identity_options(schema: OptionSchema) -> None:
    """A mailbox's identity: who mail from it is, and how it is sent (docs/outbound.md,
    "Mailbox identity"); read by :mod:`postroom.identity`."""
    add = functools.partial(schema.add, scope=Scope.MAILBOX, declared_by=KERNEL)
    add(
        "address",
        "email",
        description="The mailbox's own e-mail address (`support@centre.example`): the From "
        "of replies to mail that came in here, and of send requests naming this mailbox "
        "(`mailbox`). Absent: such mail goes out from `email-processing: default-from-address`.",
    )
    add(
        "display-name",
        description="Display name written before `address` in the From "
        "(`Customer Care <support@centre.example>`); needs `address`.",
    )
    add(
        "signature-text-file",
        "path",
        description="UTF-8 file appended, after a blank line, to the plain-text part of mail "
        "sent from this mailbox (before a reply's quote); also put into the HTML part, escaped, "
        "when `signature-html-file` is absent. At most 64 KB.",
    )
    add(
        "signature-html-file",
        "path",
        description="UTF-8 HTML fragment appended to the HTML part of mail sent from this "
        "mailbox (before `</body>` and before a reply's quote); its text goes into the "
        "plain-text part when `signature-text-file` is absent. At most 64 KB.",
    )
    add(
        "smtp-user",
        description="Send this mailbox's mail through the `smtp-client` server logged in as "
        "this user (its own connections) instead of the `smtp-client` account; give "
        "`smtp-password` too. Absent: the `smtp-client` account sends it, and needs the right "
        "to send as `address` (send-as).",
    )
    add(
        "smtp-password",
        "secret",
        description="Password of `smtp-user`. Use `${ENV_VAR}` or `${file:path}`; never printed.",
    )


def kernel_schema() -> OptionSchema:
    """A schema holding the kernel's declarations only (tests, docs, embedding)."""
    schema = OptionSchema()
    with schema.declaring(KERNEL):
        postroom_add_options(schema)
    return schema
