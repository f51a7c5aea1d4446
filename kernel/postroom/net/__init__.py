"""Pieces every network driver shares: connection options, TLS, trace redaction.

Protocol plugins (IMAP, POP3, SMTP, EWS) declare their connection options with
:func:`postroom.net.options.add_connection_options` so the names, types and
defaults are the same everywhere, build TLS with :mod:`postroom.net.tls` so
certificates are verified by default, and write protocol traces through
:mod:`postroom.net.trace` so passwords and tokens never reach a log.
"""
