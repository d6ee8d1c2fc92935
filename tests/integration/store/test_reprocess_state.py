"""Reprocess progress in ClickHouse: the newest saved version of a request wins."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.integration.store.conftest import StoreUnderTest
from worker.store.reprocess_state import (
    ReprocessProgress,
    RequestState,
    load_progress,
    save_progress,
)

CURSOR = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def _first(request_id: str, tenant: str = "t1") -> ReprocessProgress:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    return ReprocessProgress(
        request_id=request_id,
        tenant_id=tenant,
        environment_id="prod",
        request='{"request_id":"' + request_id + '"}',
        state=RequestState.RUNNING,
        created_at=now,
        updated_at=now,
        version=1,
    )


def test_the_newest_version_wins_whatever_the_save_order(migrated: StoreUnderTest) -> None:
    first = _first("r1")
    second = first.advanced(cursor_timestamp=CURSOR, cursor_id="e9", found=10, republished=10)
    done = second.advanced(state=RequestState.COMPLETED, pages=3)
    for progress in (done, first, second, first):  # late and repeated saves
        save_progress(migrated.gateway, progress)
    loaded = load_progress(migrated.gateway, "t1", "prod", "r1")
    assert loaded == done
    assert loaded is not None and loaded.cursor_timestamp == CURSOR  # microseconds kept


def test_requests_are_kept_apart_by_tenant_environment_and_id(migrated: StoreUnderTest) -> None:
    gateway = migrated.gateway
    save_progress(gateway, _first("r1"))
    save_progress(gateway, _first("r2", tenant="t2").advanced(found=5))
    # Another tenant reusing an id is another request, never a newer version of it.
    save_progress(gateway, _first("r1", tenant="t2").advanced(found=7).advanced(found=8))
    r1, r2 = load_progress(gateway, "t1", "prod", "r1"), load_progress(gateway, "t2", "prod", "r2")
    assert r1 is not None and (r1.tenant_id, r1.found) == ("t1", 0)
    assert r2 is not None and (r2.tenant_id, r2.found) == ("t2", 5)
    other = load_progress(gateway, "t2", "prod", "r1")
    assert other is not None and (other.tenant_id, other.found) == ("t2", 8)
    assert load_progress(gateway, "t1", "prod", "r2") is None
    assert load_progress(gateway, "t1", "dev", "r1") is None
    assert load_progress(gateway, "t1", "prod", "never-saved") is None
