"""Options shared by every connection: the ``proxy`` section and OAuth 2.0.

Declared by the kernel rather than by the drivers that read them, for two
reasons. The commercial product switches OAuth on with a pass-through
property (``mail.imap.auth.mechanisms: XOAUTH2``) on a mailbox that carries
the Azure or Google options, so those options must validate before any auth
driver is chosen; and the four OAuth drivers share them, so one declaration
keeps their names and meanings the same. The kernel's core declarations call
:func:`add_shared_connection_options`; the drivers read them; the proxy is
read by :func:`postroom.net.proxyconfig.proxy_for`.
"""

from __future__ import annotations

from postroom.config.options import OptionSchema, Scope

PROXY_SECTION = "proxy"
#: the commercial product's default token-expiry margin (5 minutes)
DEFAULT_TOKEN_MARGIN = "00:05:00"
#: OAuth options apply to mailboxes and to the SMTP client alike
_OAUTH_SCOPES = (Scope.MAILBOX, Scope.SMTP_CLIENT)
#: the protocols whose JavaMail proxy properties postroom reads, and where
PROTOCOL_SCOPES = {"imap": Scope.MAILBOX, "pop3": Scope.MAILBOX, "smtp": Scope.SMTP_CLIENT}


def add_shared_connection_options(schema: OptionSchema) -> None:
    """Everything this module declares (called by :mod:`postroom.config.core`)."""
    add_proxy_options(schema)
    add_passthrough_proxy_options(schema)
    add_oauth_options(schema)
    schema.add(
        "token-encryption-secret",
        "secret",
        section="gateway",
        description="Key material (at least 16 bytes, e.g. `${file:/etc/postroom/token.key}` "
        "holding `openssl rand -hex 32`) that encrypts the refresh tokens an identity "
        "provider rotates, before they are stored. Required by mailboxes whose refresh "
        "token may rotate (`google-refresh`); changing it puts those mailboxes into "
        "`needs-reauthorisation` until a new refresh token is configured.",
    )


def add_proxy_options(schema: OptionSchema) -> None:
    """The ``proxy`` section: the commercial product's names, plus ``type``."""
    add = schema.add
    s = PROXY_SECTION
    add(
        "useProxy",
        "bool",
        section=s,
        default="false",
        description="Only `true` sends IMAP, POP3, SMTP and token requests through the proxy.",
    )
    add("host", section=s, description="Host name or address of the proxy.")
    add("port", "port", section=s, description="TCP port of the proxy.")
    add(
        "user",
        section=s,
        description="User name for the proxy (SOCKS5 RFC 1929, or HTTP Basic); "
        "give `password` too.",
    )
    add("password", "secret", section=s, description="Password for the proxy user.")
    add(
        "socksVersion",
        "int",
        section=s,
        default=5,
        minimum=5,
        maximum=5,
        description="SOCKS version; only 5 (SOCKS4 has no authentication and no names).",
    )
    add(
        "type",
        "choice",
        section=s,
        default="socks5",
        choices=("socks5", "http"),
        description="`socks5`, or `http` for an HTTP proxy's CONNECT method (postroom's "
        "option: the product's section does not say which kind).",
    )
    add(
        "resolve-at-proxy",
        "bool",
        section=s,
        default="true",
        description="SOCKS5: let the proxy resolve the server's name (for sites where only "
        "the proxy has DNS); `false` resolves it here and sends the address.",
    )


def add_passthrough_proxy_options(schema: OptionSchema) -> None:
    """Declare ``mail.<protocol>.socks.*`` and ``mail.<protocol>.proxy.*``."""
    for protocol, scope in PROTOCOL_SCOPES.items():
        types = (protocol,) if scope is Scope.MAILBOX else None
        for kind, what in (("socks", "SOCKS5 proxy"), ("proxy", "HTTP CONNECT proxy")):
            prefix = f"mail.{protocol}.{kind}"
            schema.add(
                f"{prefix}.host",
                scope=scope,
                types=types,
                description=f"JavaMail pass-through: the {what} for this connection "
                "(wins over the `proxy` section).",
            )
            schema.add(
                f"{prefix}.port",
                "port",
                scope=scope,
                types=types,
                description=f"JavaMail pass-through: the {what}'s port.",
            )
        schema.add(
            f"mail.{protocol}.proxy.user",
            scope=scope,
            types=types,
            description="JavaMail pass-through: the HTTP proxy's user name.",
        )
        schema.add(
            f"mail.{protocol}.proxy.password",
            "secret",
            scope=scope,
            types=types,
            description="JavaMail pass-through: the HTTP proxy's password.",
        )


def add_oauth_options(schema: OptionSchema) -> None:
    """The OAuth 2.0 options of mailboxes and ``smtp-client`` (SPEC section 7)."""
    for scope in _OAUTH_SCOPES:
        add = schema.add
        add(
            "directory-id",
            scope=scope,
            description="Azure: the tenant (directory) id or domain of the app registration.",
        )
        add(
            "tenant-authority",
            scope=scope,
            description="Azure: the authority, default `https://login.microsoftonline.com/`. "
            "Google: any URL containing `google` (the product's way of saying Google).",
        )
        add("client-id", scope=scope, description="OAuth client (application) id.")
        add(
            "scope",
            scope=scope,
            description="Scope requested with the token; each OAuth auth driver has its own "
            "default (see docs/auth.md).",
        )
        add(
            "token-expiry-margin-time",
            "duration",
            scope=scope,
            default=DEFAULT_TOKEN_MARGIN,
            minimum=0,
            maximum=3600,
            description="Refresh an access token this long before it expires.",
        )
        add(
            "secret",
            scope=scope,
            description="Name of the `secret-<name>` section whose `password` is the OAuth "
            "client secret (`secret: google` refers to `secret-google`).",
        )
        add(
            "client-certificate-file",
            "path",
            scope=scope,
            description="azure-client-credentials: PEM file with the app's certificate and "
            "private key, to sign the client assertion instead of sending a client secret.",
        )
        add(
            "service-account-file",
            "path",
            scope=scope,
            description="google-service-account: the service account's JSON key file.",
        )
        add(
            "token-endpoint",
            "url",
            scope=scope,
            description="The token endpoint, when not the provider's usual one (a private "
            "authority, a sovereign cloud, or a test identity provider).",
        )
        add(
            "token-ca-file",
            "path",
            scope=scope,
            description="PEM file of the certificate authorities to trust for the token "
            "endpoint instead of the system's.",
        )
