"""The end-to-end demo: real data through the whole system on the local broker.

1. Start the local Kafka broker and create a fresh topic layout (prefix ``demo-<run>.``).
2. Train the 1-D CNN on ItalyPowerDemand and the LSTM on Airline (``streamedge train``),
   register both as signed versions and promote them (published on the model-updates topic).
3. Start a stream worker (``streamedge stream worker``), which fetches and verifies both models.
4. Replay the ItalyPowerDemand *test* series (one device per series) and the Airline series
   (three airports, one with an injected spike) as readings, plus 1% garbage.
5. Collect classifications, forecasts, anomalies and dead letters; compare the stream's
   accuracy with the trainer's offline TFLite accuracy; scrape the worker's ``/metrics``.
6. Run an edge agent on the Airline forecaster from a file while the broker is reachable.

Everything runs through the public CLI in subprocesses, so this module imports no area.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamedge.contracts.manifest import read_manifest
from streamedge.contracts.reading import Reading
from streamedge.errors import StreamedgeError
from streamedge.kafka.broker import LocalBroker
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout, create_topics
from streamedge.processes import stop_process
from streamedge.registry import ModelRegistry

__all__ = ["DemoConfig", "run_demo"]

_EPOCH = 1_700_000_000.0


@dataclass(frozen=True)
class DemoConfig:
    """Where the demo works and how long it trains."""

    workdir: Path
    data_dir: Path
    state_dir: Path
    port: int = 9092
    classifier_epochs: int | None = None
    forecaster_epochs: int | None = None
    web_port: int = 6066
    collect_timeout_s: float = 180.0


def _cli(*args: str, log: Path | None = None) -> None:
    """Run one ``streamedge`` command; raise with its last output lines when it fails."""
    command = [sys.executable, "-m", "streamedge.cli.main", *args]
    print(f"$ streamedge {' '.join(args)}", flush=True)
    result = subprocess.run(command, capture_output=log is not None, text=True, check=False)
    if log is not None:
        log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:] if log is not None else []
        raise StreamedgeError(f"`streamedge {args[0]} {args[1]}` failed ({result.returncode}): {' | '.join(tail)}")


def _ts_series(path: Path) -> Iterator[tuple[str, list[float]]]:
    """(label, values) of every series in a univariate UCR ``.ts`` file."""
    in_data = False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower() == "@data":
            in_data = True
            continue
        if in_data:
            values, label = line.rsplit(":", 1)
            yield label, [float(v) for v in values.split(",")]


def _airline(path: Path) -> list[float]:
    rows = path.read_text().splitlines()[1:]
    return [float(row.split(",")[1]) for row in rows if row.strip()]


def _readings(data_dir: Path) -> tuple[list[Reading], dict[str, str]]:
    """Demo readings and the true label of every ItalyPowerDemand device."""
    readings: list[Reading] = []
    labels: dict[str, str] = {}
    for i, (label, values) in enumerate(_ts_series(data_dir / "ucr" / "ItalyPowerDemand_TEST.ts")):
        device = f"meter-{i:04d}"
        labels[device] = label
        readings += [Reading(device, "power", _EPOCH + 3600.0 * j, (v,), j) for j, v in enumerate(values)]
    airline = _airline(data_dir / "forecasting" / "Airline.csv")
    for k in range(3):
        values = list(airline)
        if k == 2:
            values[120] *= 1.8  # an injected incident the forecaster's band should flag
        month = 30.44 * 86400.0
        readings += [Reading(f"airport-{k}", "passengers", _EPOCH + month * j, (v,), j) for j, v in enumerate(values)]
    return readings, labels


def _produce(settings: KafkaSettings, topic: str, readings: list[Reading], garbage_every: int) -> int:
    """Send every reading (keyed by device/stream) plus one garbage record per ``garbage_every``."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**settings.kafka_python_config(), linger_ms=20)
    rng = random.Random(7)
    garbage = [b"{not json", b'{"device_id": "x", "stream": "power"}', b'{"device_id": "m", "stream": "power", '
               b'"ts": 1, "value": NaN, "seq": 1}', b"\xff\xfe", b"[]"]
    sent_garbage = 0
    for i, reading in enumerate(readings):
        producer.send(topic, key=reading.key.encode(), value=reading.to_json())
        if i % garbage_every == 0:
            producer.send(topic, key=b"garbage", value=rng.choice(garbage))
            sent_garbage += 1
    producer.flush(timeout=60)
    producer.close()
    return sent_garbage


def _collect(settings: KafkaSettings, topics: list[str], expected: dict[str, int], timeout: float) -> dict[str, list[Any]]:
    """Read result topics until each has its expected count (deduplicated) or ``timeout`` passes."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(*topics, **settings.kafka_python_config(), auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    seen: dict[str, dict[str, Any]] = {topic: {} for topic in topics}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    body = json.loads(record.value)
                    ident = body.get("idempotency_key") or f"{record.partition}:{record.offset}"
                    seen[record.topic][ident] = body
            if all(len(seen[topic]) >= count for topic, count in expected.items()):
                break
    finally:
        consumer.close()
    return {topic: list(bodies.values()) for topic, bodies in seen.items()}


def _scrape(port: int) -> dict[str, float]:
    """The worker's sample values by full series name (first sample of each)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("streamedge_") and " " in line:
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def _train(config: DemoConfig, keys: dict[str, Path], registry: Path) -> dict[str, Any]:
    work, data = config.workdir, config.data_dir
    classifier = ["train", "classifier", "--train", str(data / "ucr" / "ItalyPowerDemand_TRAIN.ts"),
                  "--test", str(data / "ucr" / "ItalyPowerDemand_TEST.ts"), "--out", str(work / "italy"),
                  "--name", "italy-fcn", "--register", str(registry), "--signing-key", str(keys["private"])]
    if config.classifier_epochs:
        classifier += ["--epochs", str(config.classifier_epochs)]
    forecaster = ["train", "forecaster", "--data", str(data / "forecasting" / "Airline.csv"), "--column", "Passengers",
                  "--horizon", "12", "--season", "12", "--out", str(work / "airline"), "--name", "airline-lstm",
                  "--register", str(registry), "--signing-key", str(keys["private"])]
    if config.forecaster_epochs:
        forecaster += ["--epochs", str(config.forecaster_epochs)]
    _cli(*classifier)
    _cli(*forecaster)
    return {
        "italy": json.loads((work / "italy" / "metrics.json").read_text()),
        "airline": json.loads((work / "airline" / "metrics.json").read_text()),
    }


def _run_edge(config: DemoConfig, model: Path, public_key: Path, common: list[str],
              settings: KafkaSettings, layout: TopicLayout) -> int:
    """Install the promoted forecaster on a simulated device, replay Airline from a file, count results."""
    work = config.workdir / "edge"
    work.mkdir(parents=True, exist_ok=True)
    source = work / "airline.jsonl"
    values = _airline(config.data_dir / "forecasting" / "Airline.csv")
    source.write_bytes(b"\n".join(Reading("edge-demo", "passengers", _EPOCH + 2629746.0 * j, (v,), j).to_json()
                                   for j, v in enumerate(values)) + b"\n")
    device = ["--model-dir", str(work / "models"), "--public-key", str(public_key)]
    _cli("edge", "install", str(model), *device, log=work / "install.log")
    _cli("edge", "run", "--device-id", "edge-demo", *device, "--source", "file", "--source-path", str(source),
         "--buffer-path", str(work / "buffer.sqlite"), "--metrics-port", "0", "--model-updates", "false",
         "--log-format", "text", *common, log=work / "agent.log")
    window = read_manifest(model).window
    return len(_collect(settings, [layout.edge_results], {layout.edge_results: len(values) - window + 1}, 30.0)[
        layout.edge_results])


def run_demo(config: DemoConfig) -> int:
    """Run the whole demo; prints a summary and returns 0 when every check held."""
    work = config.workdir
    work.mkdir(parents=True, exist_ok=True)
    broker = LocalBroker(config.state_dir, port=config.port, controller_port=config.port + 1)
    print(broker.up().detail, flush=True)
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, client_id="streamedge-demo")
    layout = TopicLayout(prefix=f"demo-{int(time.time())}.", partitions=6)
    create_topics(settings, layout)
    common = ["--bootstrap-servers", broker.bootstrap, "--topic-prefix", layout.prefix]

    keys = {"private": work / "keys" / "signing.pem", "public": work / "keys" / "public.pem"}
    if not keys["private"].is_file():
        _cli("models", "keygen", "--signing-key", str(keys["private"]), "--public-key", str(keys["public"]))
    registry = ModelRegistry(work / "registry")
    offline = _train(config, keys, registry.root)
    promoted = {name: registry.versions(name)[-1] for name in ("italy-fcn", "airline-lstm")}
    for name, version in promoted.items():
        _cli("models", "promote", name, str(version), "--registry", str(registry.root),
             "--public-key", str(keys["public"]), "--signing-key", str(keys["private"]), *common)

    routes = json.dumps({"power": ["italy-fcn"], "passengers": ["airline-lstm"]})
    worker_log = (work / "worker.log").open("wb")
    env = {**os.environ, "STREAMEDGE_STREAM_DATA_DIR": str(work / "worker-data")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamedge.cli.main", "stream", "worker", *common, "--model-dir",
         str(work / "worker-models"), "--public-key", str(keys["public"]), "--routes", routes,
         "--web-port", str(config.web_port)],
        stdout=worker_log, stderr=subprocess.STDOUT, env=env,
    )
    try:
        readings, labels = _readings(config.data_dir)
        started = time.monotonic()
        garbage = _produce(settings, layout.readings, readings, garbage_every=100)
        print(f"produced {len(readings)} readings and {garbage} garbage records", flush=True)
        window = registry.manifest("airline-lstm", promoted["airline-lstm"]).window
        airports = {r.device_id for r in readings if r.stream == "passengers"}
        per_airport = sum(1 for r in readings if r.device_id == "airport-0") - window + 1
        expected = {layout.classifications: len(labels), layout.dead_letters: garbage,
                    layout.forecasts: len(airports) * per_airport}
        results = _collect(settings, [layout.classifications, layout.forecasts, layout.anomalies, layout.dead_letters],
                           expected, config.collect_timeout_s)
        elapsed = time.monotonic() - started
        metrics = _scrape(config.web_port)
    finally:
        stop_process(worker, timeout=30)
        worker_log.close()

    edge_results = _run_edge(config, registry.path("airline-lstm", promoted["airline-lstm"]), keys["public"], common,
                             settings, layout)
    classifications = results[layout.classifications]
    correct = sum(1 for body in classifications if labels.get(body["device_id"]) == body["label"])
    stream_accuracy = correct / max(1, len(classifications))
    anomalies = results[layout.anomalies]
    dead = Counter(body["reason"] for body in results[layout.dead_letters])
    selected = offline["italy"]["selected_variant"]
    print("\n== streamedge demo summary ==")
    print(f"classifications: {len(classifications)}/{len(labels)} series, stream accuracy {100 * stream_accuracy:.2f}% "
          f"(offline TFLite {selected}: {offline['italy']['tflite'][selected]['accuracy']:.2f}%, "
          f"Keras: {offline['italy']['keras']['accuracy']:.2f}%)")
    airline_variant = offline["airline"]["selected_variant"]
    print(f"forecasts: {len(results[layout.forecasts])}; offline MASE {offline['airline']['tflite'][airline_variant]['mase']:.3f}"
          f" vs seasonal naive {offline['airline']['baselines']['seasonal_naive']['mase']:.3f}")
    print(f"anomalies: {len(anomalies)} " + ", ".join(sorted({f"{a['device_id']}#{a['seq']}" for a in anomalies})[:8]))
    print(f"dead letters: {sum(dead.values())}/{garbage} by reason {dict(dead)}")
    print(f"end to end: {len(readings) + garbage} records in {elapsed:.1f} s")
    print(f"edge agent: {edge_results} results forwarded to {layout.edge_results} (file source, SQLite buffer)")
    print(f"worker metrics sample: readings consumed {metrics.get('streamedge_stream_readings_consumed_total', 0):.0f}")
    spike_flagged = any(a["device_id"] == "airport-2" and a["seq"] == 120 for a in anomalies)
    ok = len(classifications) == len(labels) and sum(dead.values()) == garbage and spike_flagged and edge_results > 0
    print("demo checks: " + ("all held" if ok else f"FAILED (spike flagged: {spike_flagged})"))
    print(f"\nThe broker keeps running ({broker.bootstrap}); stop it with `streamedge kafka down`. Work folder: {work}")
    return 0 if ok else 1
