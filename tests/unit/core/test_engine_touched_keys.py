"""``touched`` hands back the state keys ``missing`` made for the same
states when made alike (same key type and names list), and makes its own
from the names it is given otherwise."""

from __future__ import annotations

from tests.unit.core.test_engine_state_keys import NOW, _prepared_engine
from worker.core_engine import CoreBatchEngine
from worker.domain.rating_reads import StateKey

Names = list[tuple[str, str, str]]


def _upper(names: Names) -> Names:
    return [(tenant.upper(), env, item) for tenant, env, item in names]


def _rated(upper_in_missing: bool = False) -> tuple[CoreBatchEngine, list[StateKey]]:
    """An engine that rated one batch of new states; the keys ``missing`` made."""
    engine = _prepared_engine()
    names = _upper(engine._state_names) if upper_in_missing else engine._state_names
    core = engine._core
    states, _ = core.missing(StateKey, names, engine._buckets)
    core.load_at([(position, None) for position in range(len(states))])
    engine.rate(NOW)
    assert states
    return engine, states


def test_touched_hands_back_the_keys_missing_made() -> None:
    engine, made = _rated()
    touched = [key for _, key in engine.touched()]
    assert sorted(touched) == sorted(made)
    assert {id(key) for key in touched} == {id(key) for key in made}


def test_keys_made_with_other_names_are_not_handed_back() -> None:
    engine, _ = _rated()
    touched = [key for _, key in engine._core.touched(StateKey, _upper(engine._state_names))]
    assert touched and all(type(key) is StateKey for key in touched)
    assert all(key.tenant_id.isupper() for key in touched)


def test_keys_missing_made_from_other_names_are_not_handed_back() -> None:
    engine, made = _rated(upper_in_missing=True)
    assert all(key.tenant_id.isupper() for key in made)
    touched = [key for _, key in engine.touched()]
    assert touched and not any(key.tenant_id.isupper() for key in touched)
