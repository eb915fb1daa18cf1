"""Cycle classification on the edge agent: a device sending cycles gets one classification per cycle,
a SIGKILL in the middle of a cycle neither loses nor repeats it, and the worker agrees on every class."""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streamedge.contracts.reading import ReadingBlock
from streamedge.contracts.signing import load_public_key
from streamedge.edge.agent import EdgeAgent
from streamedge.edge.models import ModelStore
from streamedge.edge.settings import EdgeSettings
from streamedge.edge.sources import IteratorSource
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.services.metrics import StreamMetrics
from streamedge.services.models import ModelSet, load_model
from streamedge.services.processor import Processor
from streamedge.services.records import Source
from streamedge.services.settings import StreamSettings
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import consume_results, count_results, write_jsonl

REPO = Path(__file__).resolve().parents[2]
_OFFLINE = KafkaSettings(bootstrap_servers="127.0.0.1:9")
# Three labelled cycles of unequal lengths: a smooth one, a shaky one (strong noise), a smooth one.
CYCLES = (("calm", 8), ("shaky", 12), ("calm", 10))
ENDS = [7, 19, 29]


def _cycle_rows(gap: float = 0.0) -> tuple[list[float], list[float], list[float]]:
    """``(ts, value, marker)`` of the three cycles, seeded; ``gap`` seconds between cycles."""
    rng = np.random.default_rng(7)
    ts, values, markers, now = [], [], [], 1.7e9
    for label, length in CYCLES:
        for i in range(length):
            noise = float(rng.normal(0, 3.0)) if label == "shaky" else 0.0
            ts.append(now)
            values.append(10.0 + 3.0 * math.sin(2 * math.pi * i / 16) + noise)
            markers.append(1.0 if i == length - 1 else 0.0)
            now += 1.0
        now += gap
    return ts, values, markers


def _readings(marker: bool, gap: float = 0.0) -> list[bytes]:
    ts, values, markers = _cycle_rows(gap)
    return [json.dumps({"device_id": "press", "stream": "s", "ts": t, "seq": i,
                        "value": [v, m] if marker else v}).encode()
            for i, (t, v, m) in enumerate(zip(ts, values, markers, strict=True))]


@pytest.fixture
def classifier_dir(tmp_path: Path, tiny_models: TinyModels) -> Path:
    """A device model folder with the tiny classifier installed and active."""
    root = tmp_path / "classifier-models"
    ModelStore(root, load_public_key(tiny_models.public_key)).install(tiny_models.classifier)
    return root


def _agent(tmp_path: Path, classifier_dir: Path, tiny_models: TinyModels, **overrides: Any) -> EdgeAgent:
    settings = EdgeSettings(device_id="press", model_dir=classifier_dir, public_key=tiny_models.public_key,
                            buffer_path=tmp_path / "buffer.sqlite", metrics_port=0, model_updates=False,
                            heartbeat_interval_s=3600, log_format="text", **overrides)
    return EdgeAgent(settings, _OFFLINE, TopicLayout(prefix="t."), IteratorSource(iter(()), queue_size=4),
                     load_public_key(tiny_models.public_key), CollectorRegistry())


def _classifications(buffer: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{buffer}?mode=ro", uri=True)
    try:
        rows = [json.loads(v) for (v,) in db.execute("SELECT value FROM outbox ORDER BY id")]
    finally:
        db.close()
    return [row for row in rows if row.get("type") == "classification"]


def _command(classifier_dir: Path, tiny_models: TinyModels, buffer: Path, source: list[str],
             bootstrap: str, prefix: str) -> list[str]:
    return [sys.executable, "-m", "streamedge.edge", "run", "--device-id", "press", "--model-dir", str(classifier_dir),
            "--public-key", str(tiny_models.public_key), *source, "--cycle", "marker", "--buffer-path", str(buffer),
            "--metrics-port", "0", "--model-updates", "false", "--kafka-timeout-s", "2", "--drain-timeout-s", "60",
            "--heartbeat-interval-s", "3600", "--bootstrap-servers", bootstrap, "--topic-prefix", prefix]


def test_three_marked_cycles_give_exactly_three_classifications_from_an_agent_process(
        tmp_path: Path, kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        classifier_dir: Path, tiny_models: TinyModels) -> None:
    layout = make_topics()
    readings = write_jsonl(tmp_path / "cycles.jsonl", _readings(marker=True))
    run = subprocess.run(_command(classifier_dir, tiny_models, tmp_path / "buffer.sqlite",
                                  ["--source", "file", "--source-path", str(readings)],
                                  kafka_settings.bootstrap_servers, layout.prefix),
                         cwd=REPO, capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert count_results(kafka_settings, layout.edge_results)[1] == 3  # drained: all of them are there
    results = consume_results(kafka_settings, layout.edge_results, expect=3)
    assert [(r["source_seq"], r["label"]) for r in results] == [(7, "calm"), (19, "shaky"), (29, "calm")]
    assert [(r["cycle"]["first_seq"], r["cycle"]["samples"]) for r in results] == [(0, 8), (8, 12), (20, 10)]


def _window_seq(buffer: Path) -> int | None:
    if not buffer.exists():
        return None
    db = sqlite3.connect(f"file:{buffer}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT last_seq FROM windows WHERE key = 'press/s'").fetchone()
    except sqlite3.OperationalError:  # the agent has not created its tables yet
        return None
    finally:
        db.close()
    return None if row is None else int(row[0])


def test_a_sigkill_in_the_middle_of_a_cycle_still_gives_it_exactly_one_classification(
        tmp_path: Path, kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        classifier_dir: Path, tiny_models: TinyModels) -> None:
    layout = make_topics()
    readings = _readings(marker=True)
    buffer = tmp_path / "buffer.sqlite"
    (tmp_path / "reference").mkdir()
    reference = _agent(tmp_path / "reference", classifier_dir, tiny_models, cycle="marker")
    reference.process(readings)
    reference.outbox.close()
    expected = _classifications(tmp_path / "reference" / "buffer.sqlite")

    agent = subprocess.Popen(_command(classifier_dir, tiny_models, buffer, ["--source", "stdin"], "127.0.0.1:9",
                                      layout.prefix), cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert agent.stdin is not None
        agent.stdin.write(b"".join(r + b"\n" for r in readings[:14]))  # cycle 1, and 6 of cycle 2's 12
        agent.stdin.flush()
        deadline = time.monotonic() + 60
        while _window_seq(buffer) != 13:  # committed: cycle 1's result and cycle 2's open half
            assert agent.poll() is None and time.monotonic() < deadline, "the agent did not commit seq 13"
            time.sleep(0.05)
        agent.send_signal(signal.SIGKILL)  # a power cut in the middle of cycle 2
        agent.wait(timeout=10)
    finally:
        if agent.poll() is None:
            agent.kill()
    # The restarted device replays its whole log: what was committed is refused, cycle 2 goes on.
    replay = write_jsonl(tmp_path / "replay.jsonl", readings)
    run = subprocess.run(_command(classifier_dir, tiny_models, buffer, ["--source", "file", "--source-path",
                                                                        str(replay)],
                                  kafka_settings.bootstrap_servers, layout.prefix),
                         cwd=REPO, capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert count_results(kafka_settings, layout.edge_results)[1] == 3  # drained: all of them are there
    results = consume_results(kafka_settings, layout.edge_results, expect=3)
    assert [r["cycle"] for r in results] == [r["cycle"] for r in expected]
    assert [r["cycle"]["samples"] for r in results] == [8, 12, 10]  # cycle 2 whole, not its second half
    assert [(r["label"], r["probabilities"]) for r in results] == [(r["label"], r["probabilities"]) for r in expected]
    assert len({r["idempotency_key"] for r in results}) == 3


def _worker(tiny_models: TinyModels, **settings: Any) -> Processor:
    key = load_public_key(tiny_models.public_key)
    models = ModelSet()
    models.swap(load_model(tiny_models.classifier, key))
    return Processor(StreamSettings(routes={"s": ["tiny-classifier"]}, **settings), models,
                     StreamMetrics(CollectorRegistry()))


def _worker_classes(processor: Processor, readings: list[bytes]) -> list[tuple[int, str]]:
    """``(seq, label)`` of the worker's classifications, each reading as its own block (as the agent sees them)."""
    found: list[tuple[int, str]] = []
    for offset, payload in enumerate(readings):
        reading = json.loads(payload)
        value = reading["value"] if isinstance(reading["value"], list) else [reading["value"]]
        block = ReadingBlock("press", "s", reading["seq"], np.array([reading["ts"]]), np.array([value]))
        for output in processor.process([(block.to_json(), Source("r", 0, offset, reading["ts"], b"press/s"))]):
            assert output.topic != "dead_letters", output.value
            if output.topic == "classifications":
                record = json.loads(output.value)
                found += [(record["seq"] + i, label)
                          for i, label in zip(record["sample_indexes"], record["labels"], strict=True)]
    return found


@pytest.mark.parametrize(("settings", "marker", "gap", "cycles"), [
    ({"cycle": "marker"}, True, 0.0, 3),
    ({"cycle": "gap", "cycle_gap_s": 30.0}, False, 60.0, 3),
    ({"cycle": "period", "cycle_period": 6}, False, 0.0, 5),
    ({"cycle": "marker", "cycle_max_samples": 9}, True, 0.0, 5),  # 8 | 9 + 3 | 9 + 1
], ids=["marker", "gap", "period", "marker-capped"])
def test_agent_and_worker_give_the_same_classes_for_the_same_rows(
        tmp_path: Path, classifier_dir: Path, tiny_models: TinyModels, settings: dict[str, Any], marker: bool,
        gap: float, cycles: int) -> None:
    readings = _readings(marker, gap)
    if gap:  # the next cycle's first reading shows the third cycle's gap
        last = json.loads(readings[-1])
        readings.append(json.dumps({**last, "seq": last["seq"] + 1, "ts": last["ts"] + gap + 1}).encode())
    agent = _agent(tmp_path, classifier_dir, tiny_models, **settings)
    agent.process(readings)
    agent.outbox.close()
    edge = [(r["source_seq"], r["label"]) for r in _classifications(tmp_path / "buffer.sqlite")]
    worker = _worker_classes(_worker(tiny_models, **settings), readings)
    assert edge == worker
    assert len(edge) == cycles


def test_a_gap_cycle_without_its_gap_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="cycle-gap-s"):
        EdgeSettings(cycle="gap")


@pytest.mark.parametrize("cycle", [{"values": "x", "seq": 8, "ts": [1.7e9, 1.7e9 + 5]},
                                   {"values": [[1.0]] * 5000, "seq": 8, "ts": [1.7e9, 1.7e9 + 5]},
                                   {"values": [[1.0, 2.0]] * 6, "seq": 8, "ts": [1.7e9, 1.7e9 + 5]},
                                   {"values": [[1.0]] * 6, "seq": 8, "ts": [1.7e9 + 5, 1.7e9]}],
                         ids=["not-rows", "over-max-samples", "other-width", "time-backwards"])
def test_a_hostile_saved_cycle_is_dropped_and_the_next_cycle_starts_afresh(
        tmp_path: Path, classifier_dir: Path, tiny_models: TinyModels, cycle: dict[str, Any]) -> None:
    readings = _readings(marker=True)
    first = _agent(tmp_path, classifier_dir, tiny_models, cycle="marker")
    first.process(readings[:14])
    first.outbox.close()
    with sqlite3.connect(tmp_path / "buffer.sqlite") as db:
        (state,) = db.execute("SELECT state FROM windows WHERE key = 'press/s'").fetchone()
        db.execute("UPDATE windows SET state = ? WHERE key = 'press/s'",
                   (json.dumps({**json.loads(state), "cycle": cycle}),))
    db.close()
    restarted = _agent(tmp_path, classifier_dir, tiny_models, cycle="marker")
    restarted.process(readings[14:])
    restarted.outbox.close()
    results = _classifications(tmp_path / "buffer.sqlite")
    assert [(r["cycle"]["first_seq"], r["cycle"]["samples"]) for r in results] == [(0, 8), (14, 6), (20, 10)]
