"""Durable progress of reprocess requests (table ``reprocess_progress``, migration 5).

One logical row per (tenant, environment, request id): two tenants may use the
same request id, and every read is scoped by tenant and environment. Each save
appends a new version and reads use ``FINAL``, so the latest save wins. A
request rejected before its tenant was known (not JSON, no tenant) is kept
under the empty tenant and environment. The reprocess consumer saves after every
page it has re-published (and the broker acknowledged), so a killed worker
resumes from the last saved cursor: at most one page is re-published twice.

Both functions block and raise :class:`~worker.store.errors.StoreError`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from worker.store.gateway import Gateway
from worker.store.schema import PROGRESS_COLUMNS

REPROCESS_TABLE = "reprocess_progress"

#: Cursor of a request that has not re-published anything yet.
NO_CURSOR_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)


class RequestState(StrEnum):
    """Where a request stands. Only ``completed`` is final for a valid request."""

    RUNNING = "running"
    COMPLETED = "completed"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class ReprocessProgress:
    """The saved state of one request.

    ``request`` is the canonical JSON text of the control message (used to
    tell a redelivered request from a different one reusing its id).
    ``cursor_timestamp``/``cursor_id`` is the last event re-published and
    acknowledged (``cursor_id == ""``: none yet). ``found`` counts events the
    anti-join returned, ``republished`` those the broker acknowledged.
    """

    request_id: str
    tenant_id: str
    environment_id: str
    request: str
    state: RequestState
    cursor_timestamp: datetime = NO_CURSOR_TIMESTAMP
    cursor_id: str = ""
    found: int = 0
    republished: int = 0
    pages: int = 0
    error: str = ""
    created_at: datetime = NO_CURSOR_TIMESTAMP
    updated_at: datetime = NO_CURSOR_TIMESTAMP
    version: int = 0

    @property
    def has_cursor(self) -> bool:
        return bool(self.cursor_id)

    def advanced(self, **changes: Any) -> ReprocessProgress:
        """A copy with ``changes``, the next version and ``updated_at`` now."""
        return replace(self, **changes, version=self.version + 1, updated_at=datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (times RFC 3339 UTC with microseconds)."""
        return {
            "request_id": self.request_id,
            "tenant_id": self.tenant_id,
            "environment_id": self.environment_id,
            "state": self.state.value,
            "found": self.found,
            "republished": self.republished,
            "pages": self.pages,
            "cursor_timestamp": _rfc3339(self.cursor_timestamp) if self.has_cursor else None,
            "cursor_id": self.cursor_id or None,
            "error": self.error or None,
            "created_at": _rfc3339(self.created_at),
            "updated_at": _rfc3339(self.updated_at),
            "request": self.request,
        }


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_COLUMNS = PROGRESS_COLUMNS
_LOAD_SQL = """
SELECT request_id, tenant_id, environment_id, request, state, cursor_timestamp, cursor_id,
       found, republished, pages, error, created_at, updated_at, version
FROM reprocess_progress FINAL
WHERE tenant_id = {tenant_id:String} AND environment_id = {environment_id:String}
  AND request_id = {request_id:String}
"""


def load_progress(
    gateway: Gateway, tenant_id: str, environment_id: str, request_id: str
) -> ReprocessProgress | None:
    """The latest saved progress of ``request_id`` of that tenant and environment,
    or None when never saved."""
    rows = gateway.query(
        _LOAD_SQL,
        {"tenant_id": tenant_id, "environment_id": environment_id, "request_id": request_id},
    )
    if not rows:
        return None
    row = dict(zip(_COLUMNS, rows[0], strict=True))
    return ReprocessProgress(
        request_id=row["request_id"],
        tenant_id=row["tenant_id"],
        environment_id=row["environment_id"],
        request=row["request"],
        state=RequestState(row["state"]),
        cursor_timestamp=row["cursor_timestamp"].astimezone(UTC),
        cursor_id=row["cursor_id"],
        found=int(row["found"]),
        republished=int(row["republished"]),
        pages=int(row["pages"]),
        error=row["error"],
        created_at=row["created_at"].astimezone(UTC),
        updated_at=row["updated_at"].astimezone(UTC),
        version=int(row["version"]),
    )


def save_progress(gateway: Gateway, progress: ReprocessProgress) -> None:
    """Append ``progress`` as the request's newest version. Durable on return.

    Idempotent in effect: saving the same version again leaves the same state.
    """
    gateway.insert(
        REPROCESS_TABLE,
        {
            "request_id": [progress.request_id],
            "tenant_id": [progress.tenant_id],
            "environment_id": [progress.environment_id],
            "request": [progress.request],
            "state": [progress.state.value],
            "cursor_timestamp": [progress.cursor_timestamp],
            "cursor_id": [progress.cursor_id],
            "found": [progress.found],
            "republished": [progress.republished],
            "pages": [progress.pages],
            "error": [progress.error],
            "created_at": [progress.created_at],
            "updated_at": [progress.updated_at],
            "version": [progress.version],
        },
    )
