"""postroom-postgresql: the PostgreSQL interaction store (``postroom.stores:postgresql``)."""
