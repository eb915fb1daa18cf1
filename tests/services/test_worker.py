"""The worker process against the real broker: results, dead letters and replay, no restart."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from streamedge.cli.main import main
from streamedge.contracts.runner import TFLiteRunner
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.services.records import parse_dead_letter
from streamedge.training.tiny import TINY_WINDOW, TinyModels
from tests.services.helpers import WorkerProcess, consume_until, produce, reading, sine

_DEVICES = 10
_SEQS = 40


def _stream() -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, str]]]:
    """400 good readings with 10% malformed ones mixed in; returns messages and expected reasons."""
    messages: list[tuple[bytes, bytes]] = []
    bad: list[tuple[bytes, str]] = []

    def _bad(key: bytes, payload: bytes, reason: str) -> None:
        messages.append((key, payload))
        bad.append((payload, reason))

    kinds = [
        (b"{oops", "bad_json"), (b"\xc3\x28", "not_utf8"),
        (b'{"device_id":"d0","stream":"s","ts":1.7e9,"value":Infinity,"seq":3}', "non_finite"),
        (b'{"device_id":"d0","stream":"s","ts":1.7e9,"value":1.0}', "missing_field"),
        (reading("d0", 1, stream="nobody-routes-this"), "unknown_stream"),
    ]
    for seq in range(_SEQS):
        for d in range(_DEVICES):
            key = f"d{d}/s".encode()
            messages.append((key, reading(f"d{d}", seq)))
            if d == seq % _DEVICES and seq % 4 == 1:
                _bad(key, reading(f"d{d}", seq, value=sine(seq) + 0.001), "duplicate")
            if d == (seq + 3) % _DEVICES and seq % 4 == 2 and seq > 0:
                _bad(key, reading(f"d{d}", seq - 1, ts=1.7e9 + seq - 0.5), "out_of_order")
        if seq % 2 == 0:
            payload, reason = kinds[(seq // 2) % len(kinds)]
            payload = payload if reason in ("unknown_stream",) else payload + b" " * (seq // 2)
            _bad(b"d0/nobody-routes-this" if reason == "unknown_stream" else b"d0/s", payload, reason)
        if seq < TINY_WINDOW:
            _bad(b"fixme/s", reading("fixme", seq, value=[sine(seq), 0.0]), "wrong_feature_count")
    return messages, bad


def test_results_match_offline_and_malformed_go_to_the_dlq_then_replay(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        start_worker: Callable[..., WorkerProcess], tiny_models: TinyModels, tmp_path: Path) -> None:
    layout = make_topics(3)
    messages, bad = _stream()
    assert 0.09 <= len(bad) / len(messages) <= 0.12
    produce(kafka_settings, layout.readings, messages)
    worker = start_worker(layout, f"app-{layout.prefix}")
    per_key = _SEQS - TINY_WINDOW + 1

    found = consume_until(kafka_settings, [layout.forecasts, layout.classifications, layout.dead_letters],
                          lambda ms: len(ms) >= 2 * _DEVICES * per_key + len(bad))
    forecasts = [json.loads(m.value) for m in found if m.topic == layout.forecasts]
    classes = [json.loads(m.value) for m in found if m.topic == layout.classifications]
    letters = [parse_dead_letter(m.value) for m in found if m.topic == layout.dead_letters]
    assert len(forecasts) == len(classes) == _DEVICES * per_key
    assert {(f["key"], f["seq"]) for f in forecasts} == {
        (f"d{d}/s", s) for d in range(_DEVICES) for s in range(TINY_WINDOW - 1, _SEQS)}
    assert sorted((original or b"", record["reason"]) for record, _, original in letters) == sorted(bad)
    for record, _, _ in letters:
        assert record["source"]["topic"] == layout.readings and record["source"]["offset"] >= 0

    runner = TFLiteRunner(tiny_models.forecaster / "model.tflite")
    manifest = json.loads((tiny_models.forecaster / "manifest.json").read_text())
    mean, std = manifest["normalisation"]["mean"][0], manifest["normalisation"]["std"][0]
    windows = np.array([[[sine(s)] for s in range(f["seq"] - TINY_WINDOW + 1, f["seq"] + 1)] for f in forecasts],
                       dtype=np.float32)
    offline = runner.run((windows - mean) / std) * std + mean
    np.testing.assert_allclose(np.array([np.ravel(f["forecast"]) for f in forecasts]), offline, atol=1e-4)

    assert worker.proc is not None and worker.proc.poll() is None
    assert worker.metric("streamedge_stream_readings_consumed_total") == len(messages)
    assert worker.metric("streamedge_stream_dead_letters_total", 'reason="duplicate"') == sum(
        1 for _, r in bad if r == "duplicate")
    assert worker.metric("streamedge_stream_model_version", 'model="tiny-forecaster"') == 1
    assert worker.metric("streamedge_stream_inference_seconds_count", 'model="tiny-forecaster"') >= 1

    # Fix the device that sent two features, replay it, and its window now yields a forecast.
    exported = tmp_path / "dlq.jsonl"
    args = ["stream", "export-dlq", "--bootstrap-servers", kafka_settings.bootstrap_servers,
            "--topic-prefix", layout.prefix, "--out", str(exported), "--reason", "wrong_feature_count"]
    assert main(args) == 0
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(lines) == TINY_WINDOW
    for line in lines:
        fixed = json.loads(line["text"])
        fixed["value"] = fixed["value"][0]
        line["fixed"] = fixed
    exported.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["stream", "replay-dlq", "--bootstrap-servers", kafka_settings.bootstrap_servers,
                 "--topic-prefix", layout.prefix, "--from-file", str(exported)]) == 0
    replayed = consume_until(kafka_settings, [layout.forecasts],
                             lambda ms: any(json.loads(m.value)["key"] == "fixme/s" for m in ms), timeout=60)
    assert [json.loads(m.value)["seq"] for m in replayed if json.loads(m.value)["key"] == "fixme/s"] == [
        TINY_WINDOW - 1]
    assert worker.proc.poll() is None
