"""postroom-postgresql: the PostgreSQL interaction store (``postroom.stores:postgresql``)."""

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.0"
