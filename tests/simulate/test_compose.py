"""The load generator's pure parts: payloads, counts by kind, determinism, hostile settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from streamedge.contracts.reading import Reading, ReadingBlock, Rejection, parse_message
from streamedge.errors import ConfigError
from streamedge.simulate.garbage import GARBAGE_KINDS, garbage_payload
from streamedge.simulate.run import Tally, compose, open_source
from streamedge.simulate.settings import SimulateSettings
from streamedge.simulate.sources import ReplaySource, load_replay_table


def _run(settings: SimulateSettings) -> tuple[list[tuple[bytes, bytes]], Tally]:
    tally = Tally()
    messages = [m for batch in compose(settings, open_source(settings), 1_700_000_000.0, tally) for m in batch]
    return messages, tally


@pytest.mark.parametrize("kind", GARBAGE_KINDS)
def test_every_garbage_kind_is_rejected_with_its_own_reason(kind: str) -> None:
    parsed = parse_message(garbage_payload(kind, "sim-1", "signal", 1_700_000_000.0, 7))
    assert isinstance(parsed, Rejection) and parsed.reason == kind


def test_unknown_garbage_kind_raises() -> None:
    with pytest.raises(ValueError, match="unknown garbage kind"):
        garbage_payload("too_polite", "d", "s", 1.0, 0)


@pytest.mark.parametrize("block", [1, 7])
def test_exact_count_valid_payloads_and_tally(block: int) -> None:
    settings = SimulateSettings(devices=3, rate=300.0, count=50, block_size=block, anomalies=0.05, garbage=0.2,
                                drift_at_s=0.1, seed=4)
    messages, tally = _run(settings)
    parsed = [parse_message(value) for _, value in messages]
    good = [p for p in parsed if not isinstance(p, Rejection)]
    bad = [p for p in parsed if isinstance(p, Rejection)]
    samples = sum(1 if isinstance(p, Reading) else len(p) for p in good)
    assert samples == tally.readings == 50
    assert len(good) == tally.messages
    assert {r: sum(1 for b in bad if b.reason == r) for r in tally.garbage} == dict(tally.garbage)
    assert all(isinstance(p, ReadingBlock if block > 1 else Reading) for p in good)
    assert tally.normal + tally.drifted + tally.anomalies == 50 and tally.drifted > 0


def test_sequence_numbers_and_event_times_follow_each_device() -> None:
    settings = SimulateSettings(devices=2, rate=20.0, count=40, block_size=4, seed=1)
    messages, _ = _run(settings)
    by_device: dict[str, list[ReadingBlock]] = {}
    for key, value in messages:
        block = parse_message(value)
        assert isinstance(block, ReadingBlock) and key == block.key.encode()
        by_device.setdefault(block.device_id, []).append(block)
    for blocks in by_device.values():
        seqs = [s for b in blocks for s in range(b.seq, b.last_seq + 1)]
        times = np.concatenate([b.ts for b in blocks])
        assert seqs == list(range(20))
        np.testing.assert_allclose(np.diff(times), settings.period, rtol=1e-5)


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    settings = SimulateSettings(devices=4, rate=100.0, count=64, block_size=4, anomalies=0.1, garbage=0.1, seed=9)
    assert _run(settings)[0] == _run(settings)[0]
    assert _run(settings)[0] != _run(settings.model_copy(update={"seed": 10}))[0]


def test_drift_shifts_the_level_from_its_time_on() -> None:
    base = SimulateSettings(devices=1, rate=1.0, count=2000, block_size=100, seed=2)
    drifting = base.model_copy(update={"drift_at_s": 1000.0, "drift_shift": 2.0})
    before = np.concatenate([np.asarray(b.values) for b in _blocks(base)])
    after = np.concatenate([np.asarray(b.values) for b in _blocks(drifting)])
    np.testing.assert_allclose(after[:1000], before[:1000])
    np.testing.assert_allclose(after[1000:] - before[1000:], 6.0)  # 2 scales of the sine source (3.0)


def _blocks(settings: SimulateSettings) -> list[ReadingBlock]:
    blocks = [parse_message(value) for _, value in _run(settings)[0]]
    assert all(isinstance(b, ReadingBlock) for b in blocks)
    return blocks  # type: ignore[return-value]


def test_anomalies_are_spikes_far_from_the_signal() -> None:
    clean = _blocks(SimulateSettings(devices=1, rate=1.0, count=1000, block_size=100, seed=3))
    spiky = _blocks(SimulateSettings(devices=1, rate=1.0, count=1000, block_size=100, seed=3, anomalies=0.02))
    diff = np.abs(np.concatenate([b.values for b in spiky]) - np.concatenate([b.values for b in clean]))
    moved = diff[diff > 0]
    assert 5 <= len(moved) <= 50
    np.testing.assert_allclose(moved, 18.0)  # 6 scales of 3.0


@pytest.mark.parametrize("values", [
    {"devices": 0, "count": 1}, {"rate": -1.0, "count": 1}, {"rate": float("nan"), "count": 1},
    {"anomalies": 1.5, "count": 1}, {"block_size": 5000, "count": 1}, {}, {"count": 1, "stream": "a/b"},
    {"count": 1, "generator": "g", "replay": "r"}, {"count": 1, "colour": "red"},
])
def test_hostile_settings_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SimulateSettings(**values)  # type: ignore[arg-type]


def test_oversized_block_is_refused() -> None:
    settings = SimulateSettings(devices=1, count=4096, block_size=4096, n_features=64)
    with pytest.raises(ConfigError, match="lower the block size"):
        _run(settings)


def test_replay_loops_a_table_from_an_offset_per_device(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("time,a,b,label\n" + "".join(f"2024-01-{i + 1:02d},{i},{2 * i},x\n" for i in range(10)))
    names, values = load_replay_table(table)
    assert names == ["a", "b"] and values.shape == (10, 2)
    source = ReplaySource(table, devices=2)
    out = source.samples(8, 4)
    assert out.shape == (2, 4, 2)
    assert out[0, :, 0].tolist() == [8.0, 9.0, 0.0, 1.0] and out[1, :, 0].tolist() == [3.0, 4.0, 5.0, 6.0]


@pytest.mark.parametrize("text", ["", "a,b\n", "a,b\nx,y\n", "a\nnan\n", "a\n1e999\n"])
def test_hostile_replay_tables_are_refused(tmp_path: Path, text: str) -> None:
    table = tmp_path / "t.csv"
    table.write_text(text)
    with pytest.raises(ConfigError):
        load_replay_table(table)


def test_binary_replay_file_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError):
        load_replay_table(table)
