"""Building blocks of source drivers (public through :mod:`postroom.api` only).

:mod:`postroom.sources.base`: :class:`SourceBase` gives every source driver the
same credentials (through the auth driver), auth events and spool files;
:mod:`postroom.sources.server`: :class:`ServerSourceBase` adds a mail server's
connection options, read into :class:`~postroom.net.server.ServerSettings`;
:mod:`postroom.sources.spool`: :class:`SpoolFile`, the hashing spool writer.
The line-protocol pieces (time limits, TLS errors, SASL) are in :mod:`postroom.net`.
"""
