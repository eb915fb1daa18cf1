"""Per-key windows: ordering, bounds, expiry (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamedge.contracts.reading import Reading
from streamedge.services.windows import Extension, WindowStore


def _r(key: str, seq: int, ts: float | None = None, values: tuple[float, ...] = (1.0,)) -> Reading:
    return Reading(key, "s", float(seq) if ts is None else ts, values, seq)


def test_duplicate_and_out_of_order_are_refused_and_leave_state_alone() -> None:
    store = WindowStore(capacity=4, idle_ttl_s=100, max_keys=10)
    assert isinstance(store.accept(_r("a", 5), 0.0), Extension)
    assert store.accept(_r("a", 5), 0.0) == "duplicate"
    assert store.accept(_r("a", 6, ts=5.0), 0.0) == "duplicate"
    assert store.accept(_r("a", 4), 0.0) == "out_of_order"
    assert store.accept(_r("a", 7, ts=4.0), 0.0) == "out_of_order"
    state = store.get("a/s")
    assert state is not None and state.last_seq == 5 and len(state.values) == 1


def test_idle_keys_expire_by_message_time_and_key_count_is_capped() -> None:
    store = WindowStore(capacity=2, idle_ttl_s=10, max_keys=3)
    store.accept(_r("old", 1), seen_at=0.0)
    store.accept(_r("b", 1), seen_at=15.0)
    store.accept(_r("c", 1), seen_at=20.0)
    assert store.expire() == 1 and store.get("old/s") is None and len(store) == 2
    for i in range(5):
        store.accept(_r(f"k{i}", 1), seen_at=21.0)
    assert len(store) == 3 and store.evicted == 4


def test_drop_partition_forgets_only_its_keys() -> None:
    store = WindowStore(capacity=2, idle_ttl_s=10, max_keys=10)
    store.accept(_r("a", 1), 0.0, partition=0)
    store.accept(_r("b", 1), 0.0, partition=1)
    assert store.drop_partition(0) == 1
    assert store.get("a/s") is None and store.get("b/s") is not None


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60), st.integers(1, 10))
def test_window_holds_the_last_readings_in_order(values: list[float], capacity: int) -> None:
    store = WindowStore(capacity=capacity, idle_ttl_s=1e9, max_keys=10)
    for seq, value in enumerate(values):
        store.accept(_r("a", seq, values=(value,)), 0.0)
    state = store.get("a/s")
    assert state is not None
    assert len(state.values) == min(capacity, len(values))
    window = state.window(min(capacity, len(values)))
    assert window is not None
    assert [float(v) for v in window[:, 0]] == [float(__import__("numpy").float32(v)) for v in values[-capacity:]]
    assert state.window(capacity + 1) is None
