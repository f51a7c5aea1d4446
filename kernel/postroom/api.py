"""postroom's public API: the one module a plugin or an embedding application imports.

As ``pytest`` is to ``_pytest``, this module is to the rest of the ``postroom``
package: every name here is documented in ``docs/api.md`` and follows
:data:`VERSION` (semantic versioning: a name is removed or changes meaning only
with a new major version). Every other ``postroom.*`` module is private and may
change in any release; first-party plugins and examples import nothing else
(``make lint`` enforces it). Tests import :mod:`postroom.testing` as well.

A plugin module may declare the API version it was written against::

    POSTROOM_API = "1.0"

and the kernel refuses to load it, with a clear error, when this kernel's API
is not compatible (another major version, or an older minor one).
"""

from __future__ import annotations

from postroom import hookimpl
from postroom._apiversion import VERSION, api_compatible
from postroom.backoff import Backoff, sleep
from postroom.cli.commands import PluginCommands
from postroom.config.options import (
    MAILBOX_SECTION,
    SECRET_PREFIX,
    SMTP_SECTION,
    STORE_SECTION,
    Option,
    OptionSchema,
    Scope,
)
from postroom.config.types import Secret
from postroom.context import AnalysisContext, Context
from postroom.drivers import Credentials, DriverContext, SendResult, SourceItem, needs_auth
from postroom.errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionDown,
    HandoffError,
    NotAnalysed,
    PluginLoadError,
    PostroomError,
    SenderAuthenticationFailed,
    SendError,
    SourceError,
)
from postroom.grants import GrantVault, NeedsReauthorisation, NoEncryptionKey
from postroom.interfaces import (
    AUTH_GROUP,
    PLUGINS_GROUP,
    SENDERS_GROUP,
    SOURCES_GROUP,
    STORES_GROUP,
    IAuthenticator,
    IParser,
    ISender,
    ISource,
    ISQLAccess,
    IStore,
)
from postroom.kernel import Kernel
from postroom.keys import (
    ATTACHMENT_FILE_NAMES,
    AUTOMATIC,
    PARSE_DEFECTS,
    PLUGIN_ERRORS,
    REFUSED_RECIPIENTS,
    SEND_ERROR,
    WRAPPING_MESSAGE_REASON,
)
from postroom.model import (
    AttachedValue,
    Attachment,
    CommitResult,
    Cursor,
    DeliveryReport,
    DeliveryStatus,
    Envelope,
    FetchedMessage,
    GrantRecord,
    GrantState,
    HandoffState,
    HandoffTarget,
    Interaction,
    InteractionType,
    MailboxStateRecord,
    OutboundAttachment,
    OutboundRequest,
    OutboxEntry,
    OutboxState,
    ParsedMessage,
    Part,
    QuarantineEntry,
    RawRef,
    Subtype,
    SuppressionEntry,
    Verdict,
    new_id,
)
from postroom.net.errors import describe_connection_error, is_hostname_mismatch, tls_reasons
from postroom.net.http import HTTPClient, HTTPResponse, HTTPUnavailable
from postroom.net.options import add_connection_options, port_for
from postroom.net.proxy import (
    ProxiedEndpoint,
    ProxyError,
    ProxySettings,
    connect_through_proxy,
    proxied_endpoint,
)
from postroom.net.proxyconfig import proxy_for
from postroom.net.sasl import (
    ERROR_CHALLENGE_REPLY,
    OAUTH_MECHANISMS,
    ErrorChallenge,
    choose_mechanism,
    error_challenge_reply,
    initial_response,
    oauthbearer_response,
    read_error_challenge,
    xoauth2_response,
)
from postroom.net.server import ServerSettings
from postroom.net.timing import Deadline, ResponseTimer
from postroom.net.tls import stdlib_context, twisted_client_tls
from postroom.net.trace import Tracer, redact
from postroom.oauth import (
    BEARER,
    IdentityProviderUnavailable,
    OAuthAuthenticator,
    OAuthRuntime,
    TokenAnswer,
    TokenHTTP,
    read_token_answer,
)
from postroom.outbound_files import FileError, FileLimits, check_limits, file_limits, outbound_file
from postroom.parsing.headers import (
    Address,
    normalize_message_id,
    parse_addresses,
    parse_date,
    parse_message_ids,
    strip_comments,
)
from postroom.pipeline.outbound import Preview
from postroom.progress import ListingProgress
from postroom.routes import HTTPError, Response, Route, RouteRequest
from postroom.runner import InlineRunner, Runner, ThreadPoolRunner
from postroom.sendrequest import RequestError
from postroom.services.gateway import Gateway
from postroom.sources.base import LOGIN_FAILED, LOGIN_OK, LoginRefused, SourceBase, refresh_once
from postroom.sources.server import MAILBOX_SECURITY_OPTION, ServerSourceBase
from postroom.sources.spool import SpoolFile, remove_spooled
from postroom.store.errors import DatabaseError, RawIntegrityError, StoreError
from postroom.store.lock import GatewayLock, GatewayLocked, GatewayLockLost
from postroom.store.sql.core import Now
from postroom.store.sql.dialect import SQLDialect, to_utc
from postroom.store.sql.migrations import Migration, PluginMigrations
from postroom.store.sql.store import SQLStore
from postroom.store.sql.tx import Tx
from postroom.storeaccess import StoreAccess
from postroom.tokens import Token, TokenCache, TokenError, TokenFailure, classify_token_error
from postroom.views import handoff_json, interaction_json

__all__ = [  # noqa: RUF022 (grouped as docs/api.md is)
    # version
    "VERSION",
    "api_compatible",
    # hooks
    "hookimpl",
    # model
    "AttachedValue",
    "Attachment",
    "CommitResult",
    "Cursor",
    "Envelope",
    "FetchedMessage",
    "HandoffState",
    "HandoffTarget",
    "Interaction",
    "InteractionType",
    "OutboundAttachment",
    "outbound_file",
    "FileError",
    "FileLimits",
    "file_limits",
    "check_limits",
    "OutboundRequest",
    "OutboxEntry",
    "OutboxState",
    "DeliveryReport",
    "DeliveryStatus",
    "ParsedMessage",
    "Part",
    "QuarantineEntry",
    "RawRef",
    "SuppressionEntry",
    "Subtype",
    "Verdict",
    "new_id",
    "interaction_json",
    "handoff_json",
    # contexts
    "AnalysisContext",
    "Context",
    "StoreAccess",
    # errors
    "AuthenticationFailed",
    "ConfigError",
    "ConnectionDown",
    "HandoffError",
    "NotAnalysed",
    "PluginLoadError",
    "PostroomError",
    "RequestError",
    "SendError",
    "SenderAuthenticationFailed",
    "SourceError",
    # options
    "MAILBOX_SECTION",
    "SECRET_PREFIX",
    "SMTP_SECTION",
    "STORE_SECTION",
    "Option",
    "OptionSchema",
    "Scope",
    "Secret",
    # attached-data keys
    "ATTACHMENT_FILE_NAMES",
    "AUTOMATIC",
    "PARSE_DEFECTS",
    "PLUGIN_ERRORS",
    "REFUSED_RECIPIENTS",
    "SEND_ERROR",
    "WRAPPING_MESSAGE_REASON",
    # header helpers
    "Address",
    "normalize_message_id",
    "parse_addresses",
    "parse_date",
    "parse_message_ids",
    "strip_comments",
    # drivers
    "AUTH_GROUP",
    "PLUGINS_GROUP",
    "SENDERS_GROUP",
    "SOURCES_GROUP",
    "STORES_GROUP",
    "Credentials",
    "DriverContext",
    "IAuthenticator",
    "IParser",
    "ISender",
    "ISource",
    "ISQLAccess",
    "IStore",
    "SendResult",
    "SourceItem",
    "needs_auth",
    # source building blocks
    "LOGIN_FAILED",
    "LOGIN_OK",
    "ListingProgress",
    "LoginRefused",
    "MAILBOX_SECURITY_OPTION",
    "ServerSourceBase",
    "SourceBase",
    "SpoolFile",
    "refresh_once",
    "remove_spooled",
    # network
    "Backoff",
    "Deadline",
    "ProxiedEndpoint",
    "ProxyError",
    "ProxySettings",
    "proxy_for",
    "HTTPClient",
    "HTTPResponse",
    "HTTPUnavailable",
    "ResponseTimer",
    "ServerSettings",
    "Tracer",
    "add_connection_options",
    "connect_through_proxy",
    "describe_connection_error",
    "is_hostname_mismatch",
    "port_for",
    "proxied_endpoint",
    "redact",
    "sleep",
    "stdlib_context",
    "tls_reasons",
    "twisted_client_tls",
    "xoauth2_response",
    # SASL for OAuth
    "ERROR_CHALLENGE_REPLY",
    "OAUTH_MECHANISMS",
    "ErrorChallenge",
    "choose_mechanism",
    "error_challenge_reply",
    "initial_response",
    "oauthbearer_response",
    "read_error_challenge",
    # store drivers
    "DatabaseError",
    "RawIntegrityError",
    "Migration",
    "Now",
    "PluginMigrations",
    "SQLDialect",
    "SQLStore",
    "StoreError",
    "GatewayLock",
    "GatewayLocked",
    "GatewayLockLost",
    "Tx",
    "to_utc",
    # OAuth token lifecycle
    "Token",
    "TokenCache",
    "TokenError",
    "TokenFailure",
    "classify_token_error",
    "GrantVault",
    "NoEncryptionKey",
    "OAuthAuthenticator",
    "OAuthRuntime",
    "IdentityProviderUnavailable",
    "TokenAnswer",
    "TokenHTTP",
    "read_token_answer",
    "BEARER",
    "GrantRecord",
    "MailboxStateRecord",
    "GrantState",
    "NeedsReauthorisation",
    # HTTP routes and commands of plugins
    "HTTPError",
    "PluginCommands",
    "Response",
    "Route",
    "RouteRequest",
    # embedding
    "Gateway",
    "Preview",
    "InlineRunner",
    "Kernel",
    "Runner",
    "ThreadPoolRunner",
]
