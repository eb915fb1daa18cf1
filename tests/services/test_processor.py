"""The micro-batch pipeline without Kafka: validation, windows, inference, anomalies, monitors."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamedge.cli.main import main as cli_main
from streamedge.contracts.reading import Reading, ReadingBlock
from streamedge.contracts.runner import TFLiteRunner
from streamedge.contracts.signing import load_public_key, verify_model_dir
from streamedge.edge.predictor import Predictor
from streamedge.edge.predictor import WindowStore as EdgeWindows
from streamedge.services.errors import ModelRejectedError
from streamedge.services.models import load_model
from streamedge.services.processor import Processor
from streamedge.services.records import Output, Source, parse_dead_letter
from streamedge.training.tiny import TINY_WINDOW, TinyModels
from tests.services.helpers import key_of, reading, sine


def _batch(payloads: Sequence[bytes | None], start: int = 0) -> list[tuple[bytes | None, Source]]:
    return [(p, Source("r", 0, start + i, 1.7e9 + start + i, key_of(p))) for i, p in enumerate(payloads)]


def _by_topic(outputs: list[Output], topic: str) -> list[dict[str, Any]]:
    return [json.loads(o.value) for o in outputs if o.topic == topic]


def test_forecasts_and_classes_match_the_runner_offline(make_processor: Callable[..., Processor],
                                                       tiny_models: TinyModels) -> None:
    processor = make_processor()
    payloads = [reading(f"d{d}", seq) for seq in range(20) for d in range(3)]
    outputs = processor.process(_batch(payloads))
    forecasts = _by_topic(outputs, "forecasts")
    classes = _by_topic(outputs, "classifications")
    assert len(forecasts) == len(classes) == 3 * (20 - TINY_WINDOW + 1)
    key = load_public_key(tiny_models.public_key)
    forecaster = load_model(tiny_models.forecaster, key)
    runner = TFLiteRunner(tiny_models.forecaster / "model.tflite")
    for record in forecasts:
        seq = int(record["seq"])
        window = np.array([[sine(s)] for s in range(seq - TINY_WINDOW + 1, seq + 1)], dtype=np.float32)
        expected = runner.run_one((window - forecaster.mean) / forecaster.std) * forecaster.std + forecaster.mean
        np.testing.assert_allclose(np.ravel(record["forecast"]), expected, rtol=1e-5, atol=1e-5)
        assert record["model"] == {"name": "tiny-forecaster", "version": 1}
        source = record["source"]
        assert record["idempotency_key"] == (f"forecast:tiny-forecaster:{record['key']}:{seq}"
                                             f"@{source['partition']}:{source['offset']}")
        assert set(record["source"]) == {"topic", "partition", "offset"}
    assert {c["label"] for c in classes} <= {"calm", "shaky"}
    # One invoke per model for the whole batch of 39 windows: one histogram observation each.
    value = processor.metrics.registry.get_sample_value
    for name in ("tiny-forecaster", "tiny-classifier"):
        assert value("streamedge_stream_batch_size_windows_count", {"model": name}) == 1
        assert value("streamedge_stream_batch_size_windows_sum", {"model": name}) == len(forecasts)
        assert value("streamedge_stream_inference_seconds_count", {"model": name}) == 1


@pytest.mark.parametrize(("payload", "reason"), [
    (b"\xff\xfe", "not_utf8"),
    (b"{not json", "bad_json"),
    (b'{"device_id": "d", "stream": "s", "ts": 1.7e9, "value": NaN, "seq": 1}', "non_finite"),
    (b'{"device_id": "d", "stream": "s", "ts": 1.7e9, "seq": 1}', "missing_field"),
    (reading("d", 1, stream="unrouted"), "unknown_stream"),
    (reading("d", 1, value=[1.0, 2.0]), "wrong_feature_count"),
    (None, "not_object"),
])
def test_each_bad_input_goes_to_the_dead_letter_topic(make_processor: Callable[..., Processor], payload: bytes | None,
                                                      reason: str) -> None:
    processor = make_processor()
    outputs = processor.process(_batch([payload]))
    assert [o.topic for o in outputs] == ["dead_letters"]
    record, key, original = parse_dead_letter(outputs[0].value)
    assert record["reason"] == reason and original == payload and key == key_of(payload)
    assert record["source"] == {"topic": "r", "partition": 0, "offset": 0}
    assert processor.metrics.dead_letters.labels(reason)._value.get() == 1


def test_duplicates_out_of_order_and_unknown_devices_are_dead_lettered(
        make_processor: Callable[..., Processor]) -> None:
    processor = make_processor(devices=["d*"])
    payloads = [reading("d1", 5), reading("d1", 5), reading("d1", 4), reading("d1", 6, ts=1.7e9 + 5),
                reading("intruder", 1), reading("d1", 6)]
    outputs = processor.process(_batch(payloads))
    reasons = [parse_dead_letter(o.value)[0]["reason"] for o in outputs if o.topic == "dead_letters"]
    assert reasons == ["duplicate", "out_of_order", "duplicate", "unknown_device"]
    state = processor.store.get("d1/s")
    assert state is not None and state.last_seq == 6 and len(state.values) == 2


def test_anomaly_when_residual_exceeds_k_residual_std(make_processor: Callable[..., Processor]) -> None:
    processor = make_processor(anomaly_k=4.0)
    normal = processor.process(_batch([reading("d", s) for s in range(30)]))
    assert _by_topic(normal, "anomalies") == []
    spike = processor.process(_batch([reading("d", 30, value=sine(30) + 50.0)], start=30))
    anomalies = _by_topic(spike, "anomalies")
    assert len(anomalies) == 1
    event = anomalies[0]
    assert event["seq"] == 30 and event["forecast_seq"] == 29
    assert abs(float(event["residual"][0])) > float(event["threshold"])
    model = processor.models.get("tiny-forecaster")
    assert model is not None and event["threshold"] == pytest.approx(4.0 * model.residual_std())
    assert processor.metrics.anomalies.labels("tiny-forecaster")._value.get() == 1
    assert processor.metrics.forecast_mae.labels("tiny-forecaster")._value.get() > 0


def test_classification_stride_and_seq_gap(make_processor: Callable[..., Processor]) -> None:
    processor = make_processor(classify_stride=4)
    outputs = processor.process(_batch([reading("d", s) for s in range(24)]))
    assert [c["seq"] for c in _by_topic(outputs, "classifications")] == [8, 12, 16, 20]
    # A gap in seq: the pending forecast was for the lost reading, so nothing is scored.
    gap = processor.process(_batch([reading("d", 40, value=500.0)], start=24))
    assert _by_topic(gap, "anomalies") == []


def test_rebuild_mode_restores_state_without_output(make_processor: Callable[..., Processor]) -> None:
    live, rebuilt = make_processor(), make_processor()
    history = [reading("d", s) for s in range(12)]
    live.process(_batch(history))
    assert rebuilt.process(_batch(history), emit=False) == []
    assert rebuilt.metrics.readings._value.get() == 0
    nxt = _batch([reading("d", 12, value=sine(12) + 40.0)], start=12)

    def _strip(outputs: list[Output]) -> list[dict[str, Any]]:
        records = [json.loads(o.value) for o in outputs]
        for record in records:
            record.pop("produced_at")
        return records

    expected = _strip(live.process(nxt))
    assert [r["type"] for r in expected] == ["anomaly", "forecast", "classification"]
    assert _strip(rebuilt.process(nxt)) == expected


def test_retrain_request_on_drift_is_rate_limited(make_processor: Callable[..., Processor]) -> None:
    processor = make_processor(drift_window=50, drift_z=3.0, retrain_min_interval_s=3600)
    processor.process(_batch([reading("d", s, value=1000.0 + s) for s in range(60)]))
    first = processor.retrain_requests()
    assert len(first) >= 1
    request = json.loads(first[0].value)
    assert request["trigger"] == "drift" and request["drift_z"] > 3.0
    assert processor.retrain_requests() == []


def test_install_rejects_a_broken_model_and_keeps_the_old(make_processor: Callable[..., Processor],
                                                         tiny_models: TinyModels, tmp_path: object) -> None:
    processor = make_processor()
    processor.process(_batch([reading("d", s) for s in range(10)]))
    key = load_public_key(tiny_models.public_key)
    classifier = load_model(tiny_models.classifier, key)
    renamed = type(classifier)(classifier.manifest.replace(name="tiny-forecaster"), classifier.runner,
                               classifier.mean, classifier.std)
    with pytest.raises(ModelRejectedError, match="changes task"):
        processor.install(renamed)
    active = processor.models.get("tiny-forecaster")
    assert active is not None and active.manifest.task == "forecast"


def test_non_finite_model_output_is_dead_lettered(make_processor: Callable[..., Processor]) -> None:
    processor = make_processor()
    huge = [reading("d", s, value=1e308 if s == 7 else sine(s)) for s in range(8)]
    outputs = processor.process(_batch(huge))
    letters = [parse_dead_letter(o.value) for o in outputs if o.topic == "dead_letters"]
    assert [record["reason"] for record, _, _ in letters] == ["non_finite_output"]
    assert letters[0][2] == huge[7]
    assert _by_topic(outputs, "forecasts") == []


def test_retrain_request_when_rolling_error_exceeds_the_validation_error(
        make_processor: Callable[..., Processor]) -> None:
    processor = make_processor(mae_window=10, mae_factor=2.0, drift_window=1000)
    noisy = [reading("d", s, value=sine(s) + (5.0 if s % 2 else -5.0)) for s in range(30)]
    processor.process(_batch(noisy))
    requests = [json.loads(o.value) for o in processor.retrain_requests()]
    assert [r["trigger"] for r in requests] == ["error"]
    assert requests[0]["rolling_mae"] > 2.0 * requests[0]["validation_mae"]
    assert processor.metrics.retrain_requests.labels("tiny-forecaster", "error")._value.get() == 1


def test_shadow_candidate_sees_the_same_windows_and_is_compared(make_processor: Callable[..., Processor],
                                                                tiny_models: TinyModels) -> None:
    from prometheus_client import CollectorRegistry

    from streamedge.services.shadow import ShadowSet

    processor = make_processor()
    registry = CollectorRegistry()
    shadows = ShadowSet(registry, mae_window=500)
    key = load_public_key(tiny_models.public_key)
    shadows.add(load_model(tiny_models.forecaster, key))
    shadows.add(load_model(tiny_models.classifier, key))
    processor.shadows = shadows
    outputs = processor.process(_batch([reading(f"d{d}", s) for s in range(20) for d in range(2)]))
    assert {o.topic for o in outputs} == {"forecasts", "classifications"}
    value = registry.get_sample_value
    assert value("streamedge_stream_shadow_version", {"model": "tiny-forecaster"}) == 1
    assert value("streamedge_stream_shadow_forecast_diff", {"model": "tiny-forecaster"}) == 0.0
    assert value("streamedge_stream_shadow_agreement", {"model": "tiny-classifier"}) == 1.0
    active_mae = processor.metrics.forecast_mae.labels("tiny-forecaster")._value.get()
    assert active_mae > 0
    assert value("streamedge_stream_shadow_forecast_mae", {"model": "tiny-forecaster"}) == pytest.approx(active_mae)


def test_drift_reference_reads_the_trainers_per_feature_layout(tiny_models: TinyModels) -> None:
    from streamedge.services.monitor import ModelMonitor

    manifest = load_model(tiny_models.forecaster, load_public_key(tiny_models.public_key)).manifest
    trained = manifest.replace(reference_stats={"n": 10, "features": {"value": {"mean": 100.0, "std": 2.0}}})
    monitor = ModelMonitor(trained, mae_window=10, drift_window=10, mae_factor=2.0, drift_z=3.0, min_interval_s=0)
    for _ in range(10):
        monitor.add_input((110.0,))
    assert monitor.drift_z_score() == pytest.approx(5.0)
    request = monitor.check(now=1.0)
    assert request is not None and request["trigger"] == "drift"


def test_drift_window_holds_the_last_inputs_of_blocks_and_single_readings(tiny_models: TinyModels) -> None:
    from streamedge.services.monitor import ModelMonitor

    manifest = load_model(tiny_models.forecaster, load_public_key(tiny_models.public_key)).manifest
    trained = manifest.replace(reference_stats={"n": 10, "features": {"value": {"mean": 0.0, "std": 1.0}}})
    monitor = ModelMonitor(trained, mae_window=10, drift_window=7, mae_factor=2.0, drift_z=3.0, min_interval_s=0)
    fed: list[float] = []
    rng = np.random.default_rng(2)
    for size in (3, 1, 5, 1, 1, 9, 2, 13, 6):
        values = rng.normal(size=(size, 1))
        if size == 1:
            monitor.add_input((float(values[0, 0]),))
        else:
            monitor.add_inputs(values)
        fed += values[:, 0].tolist()
        expected = None if len(fed) < 7 else abs(float(np.mean(fed[-7:])))
        assert monitor.drift_z_score() == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(("key", "detail"), [
    (None, "no key"),
    (b"\xff\xfe/s", "not UTF-8"),
    (b"k" * 200_000, "200000 bytes"),
    (b"other/s", "'other/s' is not"),
    (b"d/s ", "'d/s ' is not"),
])
def test_item5_a_kafka_key_that_is_not_the_payloads_is_dead_lettered_with_its_reason(
        make_processor: Callable[..., Processor], key: bytes | None, detail: str) -> None:
    processor = make_processor()
    good = [(reading("d", seq), Source("r", 0, seq, 1.7e9 + seq, b"d/s")) for seq in range(3)]
    outputs = processor.process([*good, (reading("d", 3), Source("r", 0, 3, 1.7e9 + 3, key))])
    letters = _by_topic(outputs, "dead_letters")
    assert [letter["reason"] for letter in letters] == ["key_mismatch"], letters
    assert detail in letters[0]["detail"] and letters[0]["source"]["offset"] == 3
    assert processor.metrics.dead_letters.labels("key_mismatch")._value.get() == 1
    # The mis-keyed reading did not move its device's state: seq 3 keyed right is still accepted.
    state = processor.store.get("d/s")
    assert state is not None and state.last_seq == 2


@pytest.mark.parametrize("block", [False, True])
def test_item3_a_device_restarting_its_seq_counter_gets_new_keys_for_its_new_results(
        make_processor: Callable[..., Processor], block: bool) -> None:
    """Before: keys were <kind>:<model>:<key>:<seq>, and every result after the restart reused one."""
    processor = make_processor(idle_ttl_s=60)

    def send(processor: Processor, first_offset: int, t0: float, shift: float) -> list[Output]:
        seqs = range(20)
        if block:
            body = ReadingBlock("d", "s", 0, np.array([t0 + s for s in seqs]),
                                np.array([[sine(s) + shift] for s in seqs])).to_json(period=1.0)
            return processor.process([(body, Source("r", 0, first_offset, t0, b"d/s"))])
        return processor.process([(reading("d", s, sine(s) + shift, ts=t0 + s),
                                   Source("r", 0, first_offset + s, t0 + s, b"d/s")) for s in seqs])

    before = send(processor, 0, 1.7e9, 0.0)
    # The device goes quiet past the idle TTL (its key is dropped), reboots and counts from 0 again.
    processor.process([(reading("x", 0), Source("r", 0, 20, 1.7e9 + 1000, b"x/s"))])
    assert processor.store.get("d/s") is None
    after = send(processor, 21, 1.7e9 + 2000, 1.0)
    results = [r for topic in ("forecasts", "classifications") for r in _by_topic(before + after, topic)
               if r["key"] == "d/s"]
    assert {r["seq"] for r in _by_topic(after, "forecasts")} & {r["seq"] for r in _by_topic(before, "forecasts")}
    keys = [r["idempotency_key"] for r in results]
    assert len(set(keys)) == len(keys), "two different results share an idempotency key"
    # Replaying the same messages gives the same keys (the dedup contract).
    replayed = send(make_processor(idle_ttl_s=60), 0, 1.7e9, 0.0)
    assert [r["idempotency_key"] for r in _by_topic(replayed, "forecasts")] == [
        r["idempotency_key"] for r in _by_topic(before, "forecasts")]


@pytest.mark.parametrize("bad", [
    reading("d", 20, ts=7.0e9),  # stamped in 2191: a clock gone wrong
    reading("d", 20, ts=1.7e9 + 20 + 80_000),  # 22 hours ahead: it blocked the device for 22 hours
    reading("d", 2**63 - 1, ts=1.7e9 + 20),  # the largest seq the contract allows
])
def test_item4_one_implausible_reading_is_dead_lettered_alone_and_the_device_goes_on(
        make_processor: Callable[..., Processor], bad: bytes) -> None:
    """Before: the key's state took the bad reading's ts or seq, and 99 of 99 later readings were dead letters."""
    processor = make_processor()
    processor.process(_batch([reading("d", s) for s in range(20)]))
    outputs = processor.process(_batch([bad], start=20))
    letters = _by_topic(outputs, "dead_letters")
    assert [letter["reason"] for letter in letters] in (["implausible_ts"], ["implausible_seq"])
    state = processor.store.get("d/s")
    assert state is not None and (state.last_seq, state.last_ts) == (19, 1.7e9 + 19)
    later = processor.process(_batch([reading("d", s) for s in range(20, 119)], start=21))
    assert _by_topic(later, "dead_letters") == []
    assert {r["seq"] for r in _by_topic(later, "forecasts")} == set(range(20, 119))


def test_item4_a_counter_reset_restarts_the_key_instead_of_dead_lettering_what_follows(
        make_processor: Callable[..., Processor]) -> None:
    processor = make_processor()
    processor.process(_batch([reading("d", s) for s in range(500, 520)]))
    # The device reboots: seq starts from 0 again, its clock goes on.
    outputs = processor.process(_batch([reading("d", s, ts=1.7e9 + 600 + s) for s in range(30)], start=20))
    assert _by_topic(outputs, "dead_letters") == []
    assert {r["seq"] for r in _by_topic(outputs, "forecasts")} == set(range(TINY_WINDOW - 1, 30))
    assert processor.metrics.key_restarts._value.get() == 1
    # A message older than the key's last reading is still out of order, not a reset.
    late = processor.process(_batch([reading("d", 3, ts=1.7e9 + 5)], start=50))
    assert [r["reason"] for r in _by_topic(late, "dead_letters")] == ["out_of_order"]


def test_item4_a_real_seq_jump_is_refused_once_then_followed(make_processor: Callable[..., Processor]) -> None:
    processor = make_processor(max_seq_jump=1000)
    processor.process(_batch([reading("d", s) for s in range(20)]))
    jumped = [reading("d", 5000 + s, ts=1.7e9 + 20 + s) for s in range(20)]
    outputs = processor.process(_batch(jumped, start=20))
    assert [r["reason"] for r in _by_topic(outputs, "dead_letters")] == ["implausible_seq"]
    assert {r["seq"] for r in _by_topic(outputs, "forecasts")} == set(range(5000 + TINY_WINDOW, 5020))
    assert processor.metrics.key_restarts._value.get() == 1


def test_item7_a_model_with_a_longer_window_is_counted_and_empties_the_windows_for_a_rebuild(
        make_processor: Callable[..., Processor], tiny_models: TinyModels) -> None:
    """Before: keys short of the new window answered nothing for the next readings, with no metric."""
    processor = make_processor()
    processor.store.resize(TINY_WINDOW // 2)  # the windows a model with a shorter window left
    processor.process(_batch([reading("d", s) for s in range(10)]))
    assert processor.store.get("d/s") is not None and not processor.take_windows_dropped()
    processor.install(load_model(tiny_models.forecaster, load_public_key(tiny_models.public_key)))
    value = processor.metrics.registry.get_sample_value
    assert value("streamedge_stream_window_rebuilds_total", {"model": "tiny-forecaster"}) == 1
    assert len(processor.store) == 0 and processor.store.capacity == TINY_WINDOW
    assert processor.take_windows_dropped() and not processor.take_windows_dropped()
    # The same window again: nothing to rebuild.
    processor.process(_batch([reading("d", s) for s in range(10, 20)], start=10))
    processor.install(load_model(tiny_models.forecaster, load_public_key(tiny_models.public_key)))
    assert value("streamedge_stream_window_rebuilds_total", {"model": "tiny-forecaster"}) == 1
    assert len(processor.store) == 1 and not processor.take_windows_dropped()


def test_worker_agent_and_predict_raise_the_same_alarms_on_the_same_rows(
        make_processor: Callable[..., Processor], tiny_models: TinyModels, tmp_path: Path) -> None:
    # 400 noisy readings per key, spikes in the warm-up (fixed threshold) and after it (dynamic
    # threshold), one lasting shift: every part runs contracts/anomaly.py on the same residuals.
    rng = np.random.default_rng(7)
    keys, length = ("d0", "d1"), 400
    values = {d: [sine(s) + float(rng.normal(0, 0.2)) for s in range(length)] for d in keys}
    for d, at, size, span in (("d0", 50, 30.0, 1), ("d0", 210, 20.0, 1), ("d1", 300, 8.0, 15), ("d1", 160, -25.0, 1)):
        for s in range(at, at + span):
            values[d][s] += size
    rows = [(d, s, values[d][s]) for s in range(length) for d in keys]

    processor = make_processor()
    outputs = processor.process(_batch([reading(d, s, value=v) for d, s, v in rows]))
    worker = sorted((a["key"], a["seq"]) for a in _by_topic(outputs, "anomalies"))

    key = load_public_key(tiny_models.public_key)
    manifest, path = verify_model_dir(tiny_models.forecaster, key)
    predictor, store = Predictor(manifest, path, anomaly_sigmas=4.0), EdgeWindows(history=TINY_WINDOW, max_keys=10)
    agent = []
    for d, s, v in rows:
        one = Reading(d, "s", 1.7e9 + s, (v,), s)
        state = store.add(one)
        assert state is not None
        body, _ = predictor.step(one, state)
        if body is not None and body.get("anomaly"):
            agent.append((one.key, s))

    table = tmp_path / "rows.csv"
    table.write_text("device_id,stream,seq,ts,value\n" + "".join(f"{d},s,{s},{1.7e9 + s},{v!r}\n" for d, s, v in rows))
    out = tmp_path / "scored.csv"
    assert cli_main(["predict", str(table), "--model", str(tiny_models.forecaster), "--out", str(out)]) == 0
    with out.open(newline="") as handle:
        scored = list(csv.DictReader(handle))
    offline = sorted((r["key"], (int(r["line"]) - 2) // 2) for r in scored if r["anomaly"] == "1")

    assert worker == sorted(agent) == offline
    assert {("d0/s", 50), ("d0/s", 210), ("d1/s", 160)} <= set(worker)
    assert len([s for k, s in worker if k == "d1/s" and 300 <= s < 315 + 24]) == 1  # one alarm for the shift
