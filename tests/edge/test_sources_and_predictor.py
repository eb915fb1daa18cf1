"""Sources (file, stdin, simulator, backpressure), windows and inference, without Kafka."""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from streamedge.contracts.reading import Reading, parse_reading
from streamedge.contracts.results import encode_result
from streamedge.contracts.signing import load_public_key, verify_model_dir
from streamedge.edge.errors import NonFiniteOutputError, SourceError
from streamedge.edge.predictor import Predictor, WindowStore
from streamedge.edge.sources import IteratorSource, file_payloads, simulator_payloads, stdin_payloads
from streamedge.training.tiny import TINY_WINDOW, TinyModels


def _drain(source: IteratorSource) -> list[bytes]:
    out: list[bytes] = []
    while (batch := source.read(10, timeout=1.0)) is not None:
        out.extend(batch)
    return out


def test_csv_replay_validates_every_row(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("ts,temp,humidity\n1700000000,20.5,40\n1700000001,nan,41\n1700000002,oops,42\n")
    parsed = [parse_reading(p) for p in _drain(IteratorSource(file_payloads(path, device_id="d1")))]
    assert isinstance(parsed[0], Reading) and parsed[0].values == (20.5, 40.0) and parsed[0].device_id == "d1"
    assert [getattr(p, "reason", None) for p in parsed[1:]] == ["non_finite", "wrong_type"]
    (tmp_path / "bad.csv").write_text("step,value\n1,2\n")
    with pytest.raises(SourceError, match=r"no time column found.*--source-time-column"):
        _drain(IteratorSource(file_payloads(tmp_path / "bad.csv")))
    with pytest.raises(SourceError, match="does not exist"):
        file_payloads(tmp_path / "missing.jsonl")


def test_a_long_format_table_with_iso_times_gives_each_row_its_device_and_epoch_seconds(tmp_path: Path) -> None:
    path = tmp_path / "pumps.csv"
    path.write_text("timestamp,device_id,vibration,temperature\n"
                    "2026-03-01T00:00:00Z,pump-1,0.5,40\n2026-03-01T01:00:00Z,pump-2,0.7,41\n")
    parsed = [parse_reading(p) for p in _drain(IteratorSource(file_payloads(path, device_id="d1")))]
    assert all(isinstance(p, Reading) for p in parsed)
    assert [(p.device_id, p.ts, p.values) for p in parsed if isinstance(p, Reading)] == [
        ("pump-1", 1772323200.0, (0.5, 40.0)), ("pump-2", 1772326800.0, (0.7, 41.0))]


def test_jsonl_replay_is_paced(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"b": 2}\n{"c": 3}\n')
    started = time.monotonic()
    assert _drain(IteratorSource(file_payloads(path, rate=20.0))) == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}']
    assert time.monotonic() - started >= 0.09  # three readings at 20/s span two intervals


def test_stdin_and_simulator() -> None:
    lines = list(stdin_payloads(io.BytesIO(b'{"x": 1}\r\n\n{"y": 2}\n')))
    assert lines == [b'{"x": 1}', b'{"y": 2}']
    readings = [parse_reading(p) for p in simulator_payloads(keys=3, n_features=2, total=30, seed=1)]
    assert all(isinstance(r, Reading) and len(r.values) == 2 for r in readings)
    assert {r.key for r in readings if isinstance(r, Reading)} == {"sim-0/signal", "sim-1/signal", "sim-2/signal"}


def test_iterator_source_applies_backpressure() -> None:
    produced = [0]

    def endless() -> object:
        while True:
            produced[0] += 1
            yield b"{}"

    source = IteratorSource(endless(), queue_size=5)  # type: ignore[arg-type]
    time.sleep(0.3)
    assert produced[0] <= 7  # the producer waits for the agent: memory stays bounded
    assert len(source.read(3, timeout=0.1) or []) == 3
    source.close()


def test_window_store_is_bounded() -> None:
    store = WindowStore(history=4, max_keys=2)
    for key in ("a", "b", "c"):
        for seq in range(6):
            store.add(Reading(key, "s", 1.0 + seq, (float(seq),), seq))
    assert len(store) == 2 and store.evicted == 1
    windows = store.recent_windows(4, 1, limit=10)
    assert windows.shape == (2, 4, 1) and windows[0, :, 0].tolist() == [2.0, 3.0, 4.0, 5.0]


def test_forecast_flags_a_spike_and_classifier_labels(tiny_models: TinyModels) -> None:
    key = load_public_key(tiny_models.public_key)
    manifest, path = verify_model_dir(tiny_models.forecaster, key)
    predictor = Predictor(manifest, path, anomaly_sigmas=4.0)
    assert predictor.detector is not None
    store = WindowStore(history=TINY_WINDOW, max_keys=10)
    results = []
    for i in range(48):
        value = 10.0 + 3.0 * math.sin(2 * math.pi * i / 16) + (25.0 if i == 30 else 0.0)
        reading = Reading("d", "s", 1.0 + i, (value,), i)
        body, elapsed = predictor.step(reading, store.add(reading))
        results.append(body)
        assert elapsed >= 0
    assert all(r is None for r in results[: TINY_WINDOW - 1])
    flagged = [i for i, r in enumerate(results) if r and r.get("anomaly")]
    # One alarm for the spike, none while it moves through the input window (one event).
    assert flagged == [30]
    assert results[30]["anomaly_score"] > 1 and results[30]["threshold"] > 0
    assert results[20] is not None and np.isfinite(results[20]["forecast"]).all()

    cmanifest, cpath = verify_model_dir(tiny_models.classifier, key)
    classifier = Predictor(cmanifest, cpath)
    store = WindowStore(history=TINY_WINDOW, max_keys=10)
    body = None
    for i in range(TINY_WINDOW):
        reading = Reading("d", "s", 1.0 + i, (10.0 + 3.0 * math.sin(2 * math.pi * i / 16),), i)
        body, _ = classifier.step(reading, store.add(reading))
    assert body is not None and body["label"] == "calm" and abs(sum(body["probabilities"]) - 1) < 1e-3
    assert json.dumps(body)


def test_duplicates_gaps_and_non_finite_outputs(tiny_models: TinyModels) -> None:
    manifest, path = verify_model_dir(tiny_models.forecaster, load_public_key(tiny_models.public_key))
    predictor = Predictor(manifest, path, anomaly_sigmas=4.0)
    store = WindowStore(history=TINY_WINDOW, max_keys=10)
    readings = [Reading("d", "s", 1.0 + i, (10.0 + math.sin(i),), i) for i in range(TINY_WINDOW + 1)]
    bodies = []
    for reading in readings:
        state = store.add(reading)
        assert state is not None
        bodies.append(predictor.step(reading, state)[0])
    assert bodies[-1] is not None and "residual" in bodies[-1]
    # A repeated or older seq is refused before it touches the window.
    assert store.add(readings[-1]) is None and store.add(readings[2]) is None
    # After a gap the pending forecast was for another reading: no residual, no anomaly verdict.
    after_gap = Reading("d", "s", 100.0, (500.0,), TINY_WINDOW + 5)
    state = store.add(after_gap)
    assert state is not None
    body, _ = predictor.step(after_gap, state)
    assert body is not None and "residual" not in body and body["anomaly"] is None
    # A value the float32 model cannot represent yields no result, only a rejection reason.
    huge = Reading("d", "s", 101.0, (1e39,), TINY_WINDOW + 6)
    state = store.add(huge)
    assert state is not None
    with pytest.raises(NonFiniteOutputError, match="not finite"):
        predictor.step(huge, state)


def test_a_residual_near_the_float32_limit_is_finite_and_encodes(tiny_models: TinyModels) -> None:
    # A forecast of 3e38 and a reading of -3e38 are finite float32 values whose float32 difference
    # overflows; the residual is taken in float64 so the result stays finite, JSON-encodable and an
    # anomaly, instead of failing the buffer write (and the agent) on every replay.
    manifest, path = verify_model_dir(tiny_models.forecaster, load_public_key(tiny_models.public_key))
    predictor = Predictor(manifest, path, anomaly_sigmas=4.0)
    store = WindowStore(history=TINY_WINDOW, max_keys=10)
    for i in range(TINY_WINDOW):
        state = store.add(Reading("d", "s", 1.0 + i, (10.0 + math.sin(i),), i))
        assert state is not None
        predictor.step(Reading("d", "s", 1.0 + i, (10.0 + math.sin(i),), i), state)
    assert state.next_step is not None and state.forecast_seq == TINY_WINDOW
    state.next_step = np.array([3e38], dtype=np.float32)
    extreme = Reading("d", "s", 100.0, (-3e38,), TINY_WINDOW)
    state = store.add(extreme)
    assert state is not None
    body, _ = predictor.step(extreme, state)
    assert body is not None and body["anomaly"] is True
    assert body["residual"] == [pytest.approx(-6e38)]
    assert json.loads(encode_result("d", 1, body))["residual"] == body["residual"]
