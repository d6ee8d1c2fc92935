"""ClickHouse storage: one gateway (embedded chdb or a server), the schema, repositories.

* :mod:`worker.store.gateway` - the :class:`~worker.store.gateway.Gateway` interface
* :mod:`worker.store.url` - store URLs, parsed strictly and shown without the password
* :mod:`worker.store.connect` - :func:`~worker.store.connect.open_gateway`: URL -> gateway
* :mod:`worker.store.chdb_gateway`, :mod:`worker.store.native_gateway` - the two backends
* :mod:`worker.store.schema` - tables and idempotent migrations (``events-worker migrate``)
* :mod:`worker.store.raw`, :mod:`worker.store.processed` - writes and deduplicated reads
* :mod:`worker.store.errors` - :class:`~worker.store.errors.StoreError`, one-line messages
"""
