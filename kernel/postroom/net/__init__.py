"""Pieces every network driver shares: connection options, TLS, time limits, traces.

Protocol plugins (IMAP, POP3, SMTP, EWS) declare their connection options with
:func:`postroom.net.options.add_connection_options` so the names, types and
defaults are the same everywhere, read them into
:class:`postroom.net.server.ServerSettings`, build TLS from it so certificates
are verified by default, limit their waits with :mod:`postroom.net.timing`
(connect deadline, response timer, on the injected clock), describe failures
with :mod:`postroom.net.errors`, and write protocol traces through
:mod:`postroom.net.trace` so passwords and tokens never reach a log.
"""
