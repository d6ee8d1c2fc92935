"""Open a store: a URL becomes a :class:`~worker.store.gateway.Gateway`.

The one place that knows both implementations; nothing in the store imports
this module, so the gateways and their interface stay free of cycles.
"""

from __future__ import annotations

from worker.store.chdb_gateway import ChdbGateway
from worker.store.errors import MIGRATE_HINT, SchemaMissingError
from worker.store.gateway import DEFAULT_TIMEOUT_S, Gateway
from worker.store.native_gateway import NativeGateway
from worker.store.url import ChdbLocation, parse_store_url, redact_url


def open_gateway(url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, create: bool = True) -> Gateway:
    """Open the gateway for ``url``; raise :class:`StoreError` if it cannot be reached.

    Blocks at most about ``timeout_s`` (connect + ping). The caller owns the
    gateway and must :meth:`~Gateway.close` it. ``create=False`` (readers)
    refuses a ``chdb://`` directory that does not exist instead of creating it.
    """
    location = parse_store_url(url)
    if isinstance(location, ChdbLocation):
        if not create and not location.path.is_dir():
            raise SchemaMissingError(
                f"no chdb store at {location.path}: check the path, or {MIGRATE_HINT}"
            )
        return ChdbGateway.open(location, url=redact_url(url), timeout_s=timeout_s)
    return NativeGateway.open(location, url=redact_url(url), timeout_s=timeout_s)
