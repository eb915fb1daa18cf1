"""streamedge.contracts.cycles: where cycles end, whatever the blocks the samples arrive in."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamedge.contracts.cycles import Cycle, CycleCutter, CycleSpec, fit_cycle

LENGTHS = (8, 12, 10)


def _stream(marker: bool = False, gap: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """Three cycles of LENGTHS samples, 1 s apart inside a cycle, ``gap`` s between cycles."""
    ts, values, now = [], [], 1.7e9
    for c, length in enumerate(LENGTHS):
        for i in range(length):
            ts.append(now)
            values.append([c * 100.0 + i, float(marker and i == length - 1)])
            now += 1.0
        now += gap
    return np.array(ts), np.array(values)


def _feed(cutter: CycleCutter, ts: np.ndarray, values: np.ndarray, sizes: list[int]) -> list[Cycle]:
    out, start, turn = [], 0, 0
    while start < len(ts):
        n = min(sizes[turn % len(sizes)], len(ts) - start)
        out += cutter.cut("k", start, ts[start:start + n], values[start:start + n])
        start, turn = start + n, turn + 1
    return out


def _spans(cycles: list[Cycle]) -> list[tuple[int, int]]:
    return [(c.first_seq, c.last_seq) for c in cycles]


EXPECTED = [(0, 7), (8, 19), (20, 29)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 31), min_size=1, max_size=5))
def test_markers_give_one_cycle_each_whatever_the_blocks(sizes: list[int]) -> None:
    ts, values = _stream(marker=True)
    cycles = _feed(CycleCutter(CycleSpec("marker")), ts, values, sizes)
    assert _spans(cycles) == EXPECTED
    # The marker is not a feature: each cycle holds the first column only, all of its samples.
    assert [c.values[:, 0].tolist() for c in cycles] == [[c * 100.0 + i for i in range(n)] for c, n in enumerate(LENGTHS)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 31), min_size=1, max_size=5))
def test_a_gap_ends_a_cycle_when_the_next_sample_shows_it_and_flush_ends_the_last(sizes: list[int]) -> None:
    ts, values = _stream()
    cutter = CycleCutter(CycleSpec("gap", gap_s=10.0))
    cycles = _feed(cutter, ts, values, sizes)
    assert _spans(cycles) == EXPECTED[:2]
    last = cutter.flush("k")
    assert last is not None and (last.first_seq, last.last_seq) == EXPECTED[2] and cutter.flush("k") is None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 31), min_size=1, max_size=5), st.integers(0, 20))
def test_periods_are_aligned_on_seq(sizes: list[int], first_seq: int) -> None:
    ts, values = _stream(gap=0.0)
    cutter = CycleCutter(CycleSpec("period", period=10))
    cycles: list[Cycle] = []
    start, turn = 0, 0
    while start < len(ts):
        n = min(sizes[turn % len(sizes)], len(ts) - start)
        cycles += cutter.cut("k", first_seq + start, ts[start:start + n], values[start:start + n])
        start, turn = start + n, turn + 1
    assert all((c.last_seq + 1) % 10 == 0 for c in cycles)
    assert all(len(c.values) == 10 for c in cycles[1:]) and cycles[0].first_seq == first_seq


def test_a_cycle_that_reaches_max_samples_ends_there() -> None:
    ts, values = _stream(marker=True)
    cycles = _feed(CycleCutter(CycleSpec("marker", max_samples=5)), ts, values, [3])
    assert _spans(cycles) == [(0, 4), (5, 7), (8, 12), (13, 17), (18, 19), (20, 24), (25, 29)]


def test_a_seq_jump_starts_a_new_cycle() -> None:
    ts, values = _stream(marker=True)
    cutter = CycleCutter(CycleSpec("marker"))
    assert cutter.cut("k", 0, ts[:4], values[:4]) == []
    (cycle,) = cutter.cut("k", 50, ts[4:8], values[4:8])
    assert (cycle.first_seq, cycle.last_seq) == (50, 53)


@pytest.mark.parametrize(("spec", "message"), [(("gap",), "--cycle-gap-s"), (("period",), "--cycle-period"),
                                               (("slices",), "not one of")])
def test_a_cycle_spec_without_its_length_is_refused_naming_the_flag(spec: tuple[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CycleSpec(*spec)  # type: ignore[arg-type]


def test_fit_cycle_resamples_linearly_to_the_window() -> None:
    values = np.array([[0.0, 10.0], [2.0, 30.0]])
    np.testing.assert_allclose(fit_cycle(values, 3), [[0.0, 10.0], [1.0, 20.0], [2.0, 30.0]])
    assert fit_cycle(values[:1], 4).shape == (4, 2)
