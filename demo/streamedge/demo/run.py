"""The demo's run, phase by phase, on the local broker (see the package docstring).

Every area runs as its public ``streamedge`` command in a child process (:mod:`.stack`), so this
module imports neither Faust nor TensorFlow. Whatever ends the run (the last phase, an error,
Ctrl-C), every child is stopped, the link proxy and the reader are closed, and a broker the demo
started itself is stopped. With ``keep_running`` that end is Ctrl-C after the summary.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streamedge.contracts.model_update import parse_model_update
from streamedge.contracts.reading import Reading
from streamedge.demo import data as demo_data
from streamedge.demo.collect import Collector
from streamedge.demo.link import LinkProxy
from streamedge.demo.stack import Stack, cli, scrape
from streamedge.demo.summary import Timeline, summarise
from streamedge.demo.view import LiveView
from streamedge.errors import StreamedgeError
from streamedge.kafka.broker import LocalBroker
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout, create_topics
from streamedge.registry import ModelRegistry

__all__ = ["DemoConfig", "run_demo"]

CLASSIFIER, FORECASTER = "italy-power", "airline-lstm"
ROUTES = {"power": [CLASSIFIER], "passengers": [FORECASTER]}
_RUN_FOLDERS = ("registry", "italy", "airline", "worker-models", "worker-data", "retrain", "edge")
_GARBAGE = (b"{not json", b'{"device_id": "x", "stream": "power"}',
            b'{"device_id": "m", "stream": "power", "ts": 1, "value": NaN, "seq": 1}', b"\xff\xfe", b"[]")


@dataclass(frozen=True)
class DemoConfig:
    """Where the demo works, how much it streams and trains.

    Attributes:
        quick: few epochs, 300 meters instead of 1,029, a faster edge replay (the test's setting).
        keep_running: after the summary, leave the broker, worker and retrainer up until Ctrl-C.
        edge_rate: edge replay rate, readings/s (0: 20, or 40 when ``quick``).
        phase_timeout_s: bound on each wait for the stack (results, alert, promotion, serving).
    """

    workdir: Path
    data_dir: Path
    state_dir: Path
    port: int = 9092
    web_port: int = 6066
    edge_metrics_port: int = 9108
    quick: bool = False
    keep_running: bool = False
    classifier_epochs: int | None = None
    forecaster_epochs: int | None = None
    retrain_epochs: int | None = None
    edge_rate: float = 0.0
    phase_timeout_s: float = 300.0
    meters: int | None = field(default=None)

    def epochs(self, given: int | None) -> int | None:
        """``given``, else 30 in quick mode, else None (the trainer's default).

        The retrainer trains with at most the promoted version's epochs: 30 lets a candidate
        learn the new level from the airports' history.
        """
        return given if given is not None else (30 if self.quick else None)


def run_demo(config: DemoConfig) -> int:
    """Run the whole demo; prints the live view, the summary and the report's path.

    Returns:
        0 when every check held, else 1.

    Raises:
        KeyboardInterrupt: on Ctrl-C, after every process the demo started was stopped.
        StreamedgeError: a command of the stack failed (its log's last lines in the message).
    """
    work = config.workdir
    work.mkdir(parents=True, exist_ok=True)
    # Every run starts from version 1 of each model: nothing of an earlier run (interrupted or not)
    # is served, promoted or replayed again. The signing keys are kept.
    for folder in _RUN_FOLDERS:
        shutil.rmtree(work / folder, ignore_errors=True)
    broker = LocalBroker(config.state_dir, port=config.port, controller_port=config.port + 1)
    started_broker = not broker.status().running
    print(broker.up().detail, flush=True)
    stack, proxy = Stack(work), LinkProxy(("127.0.0.1", config.port))
    collector: Collector | None = None
    view: LiveView | None = None
    try:
        run = _Run(config, broker, stack, proxy)
        collector = run.collector
        view = run.view
        code = run.all()
        if config.keep_running:
            print(f"\nThe stack keeps running: worker metrics http://127.0.0.1:{config.web_port}/metrics, broker "
                  f"{broker.bootstrap}, topic prefix '{run.layout.prefix}'; Ctrl-C stops it.", flush=True)
            while True:
                time.sleep(3600)
        return code
    finally:
        if view is not None:
            view.stop()
        stack.stop()
        proxy.close()
        if collector is not None:
            collector.stop()
        if started_broker:
            broker.down()


class _Run:
    """One run's state; :meth:`all` goes through the phases."""

    def __init__(self, config: DemoConfig, broker: LocalBroker, stack: Stack, proxy: LinkProxy) -> None:
        self.config, self.stack, self.proxy = config, stack, proxy
        self.work = config.workdir
        self.settings = KafkaSettings(bootstrap_servers=broker.bootstrap, client_id="streamedge-demo")
        run_id = f"{int(time.time())}-{random.randrange(1 << 16):04x}"
        self.layout = TopicLayout(prefix=f"demo-{run_id}.", partitions=6)
        self.app_id = f"demo-{run_id}"
        self.common = ["--bootstrap-servers", broker.bootstrap, "--topic-prefix", self.layout.prefix]
        self.data = demo_data.load(config.data_dir, 300 if config.quick and config.meters is None else config.meters)
        self.sent: dict[tuple[str, int], float] = {}
        self.timeline = Timeline()
        self.garbage = 0
        topics = {"classifications": self.layout.classifications, "forecasts": self.layout.forecasts,
                  "anomalies": self.layout.anomalies, "dead_letters": self.layout.dead_letters,
                  "edge_results": self.layout.edge_results, "retrain_requests": self.layout.retrain_requests,
                  "model_updates": self.layout.model_updates}
        self.topics = topics
        self.collector = Collector(self.settings, list(topics.values()))
        self.view = LiveView(self.collector, topics, self.sent, config.web_port, config.edge_metrics_port, FORECASTER,
                             lambda: proxy.up)
        self.edge_streams = 3
        self.edge_target = 0
        self.edge_expected = 0
        self.keys = {"private": self.work / "keys" / "signing.pem", "public": self.work / "keys" / "public.pem"}
        self.registry = ModelRegistry(self.work / "registry")

    def all(self) -> int:
        create_topics(self.settings, self.layout)
        self._phase("training")
        offline = self._train()
        self.collector.start()
        self.view.start()
        self._phase("starting")
        self._start_stack()
        self._phase("steady")
        self.timeline.start = time.monotonic()
        self._produce(self.data.steady, garbage_every=100)
        forecaster_window = self.registry.manifest(FORECASTER, 1).window
        steady_forecasts = demo_data.AIRPORTS * (demo_data.SHIFT_AT - forecaster_window + 1)
        self._wait("steady results", lambda: len(self._bodies("classifications")) >= len(self.data.labels)
                   and len(self._bodies("forecasts")) >= steady_forecasts
                   and len(self._bodies("dead_letters")) >= self.garbage)
        self._phase("drift")
        self.timeline.shift = time.monotonic()
        self._produce(self.data.drifted)
        self.timeline.alert = self._wait("drift alert", lambda: self._first_at("retrain_requests", _for(FORECASTER)))
        self._phase("retrain")
        self.timeline.promotion = self._wait("promotion", lambda: self._first_at("model_updates", _promotes(FORECASTER)))
        self.timeline.serving = self._wait("serving", lambda: time.monotonic() if scrape(self.config.web_port).get(
            f'streamedge_stream_model_version{{model="{FORECASTER}"}}', 0) >= 2 else None)
        self._phase("after")
        self._produce(self.data.after)
        drifted_forecasts = demo_data.AIRPORTS * (144 - demo_data.SHIFT_AT)
        expected_forecasts = steady_forecasts + drifted_forecasts + 3 * (144 - forecaster_window + 1)
        self._wait("results after the switch", lambda: len(self._bodies("forecasts")) >= expected_forecasts)
        self._phase("edge drain")
        self._wait("edge agent", lambda: time.monotonic() if not self.stack.running("edge") else None)
        time.sleep(2.0)  # the reader's last poll of what the agent sent before it exited
        self._phase("done")
        self.view.stop()
        return summarise(self, offline)

    def _phase(self, name: str) -> None:
        self.view.phase = name
        print(f"-- phase: {name}", flush=True)

    def _bodies(self, kind: str) -> set[str]:
        """Distinct identities arrived on ``kind``'s topic."""
        return {str(a.body.get("idempotency_key", a.offset)) if isinstance(a.body, dict) else str(a.offset)
                for a in self.collector.records(self.topics[kind])}

    def _first_at(self, kind: str, match: Callable[[bytes | None, bytes | None], bool]) -> float | None:
        return next((a.at for a in self.collector.records(self.topics[kind]) if match(a.key, a.value)), None)

    def _wait(self, what: str, done: Callable[[], float | bool | None]) -> float:
        """Poll ``done`` (and the edge link) until it returns a time or True; that time (or now)."""
        deadline = time.monotonic() + self.config.phase_timeout_s
        while time.monotonic() < deadline:
            self._edge_link()
            for name in ("worker", "retrainer"):
                if not self.stack.running(name):
                    raise StreamedgeError(f"the {name} exited while waiting for {what}: {self.stack.log_tail(name)}")
            result = done()
            if result:
                return time.monotonic() if result is True else float(result)
            time.sleep(0.25)
        raise StreamedgeError(f"timed out after {self.config.phase_timeout_s:.0f} s waiting for {what}")

    def _edge_link(self) -> None:
        """Restore the cut link once the device holds ``edge_target`` results in its buffer."""
        if self.proxy.up or not self.view.samples:
            return
        if self.view.samples[-1].edge_buffer >= self.edge_target:
            self.proxy.restore()
            self.timeline.link_restored = time.monotonic()
            self.timeline.buffered_peak = self.view.samples[-1].edge_buffer
            print(f"-- edge link restored with {self.timeline.buffered_peak} results buffered", flush=True)

    def _train(self) -> dict[str, dict[str, object]]:
        config, data, work = self.config, self.config.data_dir, self.work
        if not self.keys["private"].is_file():
            cli("models", "keygen", "--signing-key", str(self.keys["private"]), "--public-key", str(self.keys["public"]),
                log=work / "keygen.log")
        signed = ["--register", str(self.registry.root), "--signing-key", str(self.keys["private"])]
        classifier = ["train", "classifier", "--train", str(data / "ucr" / "ItalyPowerDemand_TRAIN.ts"), "--test",
                      str(data / "ucr" / "ItalyPowerDemand_TEST.ts"), "--out", str(work / "italy"), "--name", CLASSIFIER]
        history = demo_data.write_training_csv(data, work / "airline-1949-1956.csv")
        forecaster = ["train", "forecaster", "--data", str(history), "--column", "Passengers",
                      "--horizon", "12", "--season", "12", "--out", str(work / "airline"), "--name", FORECASTER]
        for args, epochs, name in ((classifier, config.epochs(config.classifier_epochs), "train-classifier"),
                                   (forecaster, config.epochs(config.forecaster_epochs), "train-forecaster")):
            cli(*args, *signed, *(["--epochs", str(epochs)] if epochs else []), log=work / f"{name}.log")
        for name in (CLASSIFIER, FORECASTER):
            version = self.registry.versions(name)[-1]
            cli("models", "promote", name, str(version), "--registry", str(self.registry.root), "--public-key",
                str(self.keys["public"]), "--signing-key", str(self.keys["private"]), *self.common,
                log=work / f"promote-{name}.log")
        return {"italy": json.loads((work / "italy" / "metrics.json").read_text()),
                "airline": json.loads((work / "airline" / "metrics.json").read_text())}

    def _start_stack(self) -> None:
        config, work, public = self.config, self.work, str(self.keys["public"])
        routes = json.dumps(ROUTES)
        self.stack.start("worker", ["stream", "worker", *self.common, "--model-dir", str(work / "worker-models"),
                                    "--public-key", public, "--routes", routes, "--web-port", str(config.web_port)],
                         env={"STREAMEDGE_STREAM_APP_ID": self.app_id,
                              "STREAMEDGE_STREAM_DATA_DIR": str(work / "worker-data"),
                              "STREAMEDGE_STREAM_COMMIT_INTERVAL_S": "0.5",
                              # 12 months of the three airports: the drift rule sees a year of the new level.
                              "STREAMEDGE_STREAM_DRIFT_WINDOW": "36",
                              # Only the drift rule asks here; one request per model for the run.
                              "STREAMEDGE_STREAM_MAE_WINDOW": "1000000",
                              "STREAMEDGE_STREAM_RETRAIN_MIN_INTERVAL_S": "3600"})
        epochs = config.epochs(config.retrain_epochs)
        self.stack.start("retrainer", ["train", "watch", "--registry", str(self.registry.root), "--signing-key",
                                       str(self.keys["private"]), "--public-key", public, "--routes", routes,
                                       "--group-id", f"{self.app_id}-retrainer", "--work-dir", str(work / "retrain"),
                                       # The new level only: the years before the shift teach nothing now.
                                       "--history", str(144 - demo_data.SHIFT_AT), "--no-progress",
                                       # The demo shows drift reaching its one device: no canary stage.
                                       "--promote-to", "all",
                                       *(["--epochs", str(epochs)] if epochs else []), *self.common])
        self._start_edge()
        self._wait("worker /metrics", lambda: bool(scrape(config.web_port)))
        # Faust's own line once the worker has its partitions: readings sent from now on are
        # served at once, so the latencies measure the pipeline, not the worker's start.
        log = work / "worker.log"
        self._wait("worker ready", lambda: "Worker ready" in log.read_text(errors="replace"))

    def _start_edge(self) -> None:
        """Install v1 on a device whose link is cut, and start it replaying Airline from a file."""
        edge = self.work / "edge"
        edge.mkdir(parents=True, exist_ok=True)
        readings = demo_data.edge_readings(self.config.data_dir, "edge-demo", self.edge_streams)
        source = edge / "airline.jsonl"
        source.write_bytes(b"\n".join(r.to_json() for r in readings) + b"\n")
        (edge / "buffer.sqlite").unlink(missing_ok=True)
        window = self.registry.manifest(FORECASTER, 1).window
        self.edge_expected = self.edge_streams * (144 - window + 1)
        self.edge_target = self.edge_expected // 3
        device = ["--model-dir", str(edge / "models"), "--public-key", str(self.keys["public"])]
        cli("edge", "install", str(self.registry.path(FORECASTER, 1)), *device, log=self.work / "edge-install.log")
        self.proxy.cut()
        self.timeline.link_cut = time.monotonic()
        rate = self.config.edge_rate or (40.0 if self.config.quick else 20.0)
        self.stack.start("edge", ["edge", "run", "--device-id", "edge-demo", *device, "--source", "file",
                                  "--source-path", str(source), "--rate", str(rate), "--buffer-path",
                                  str(edge / "buffer.sqlite"), "--metrics-port", str(self.config.edge_metrics_port),
                                  "--model-updates", "false", "--log-format", "text", "--kafka-timeout-s", "10",
                                  "--drain-timeout-s", "120", "--bootstrap-servers", f"127.0.0.1:{self.proxy.port}",
                                  "--topic-prefix", self.layout.prefix])

    def _produce(self, readings: list[Reading], garbage_every: int = 0) -> None:
        """Send ``readings`` keyed by device/stream (plus one garbage record per ``garbage_every``)."""
        from kafka import KafkaProducer

        producer = KafkaProducer(**self.settings.kafka_python_config(), linger_ms=20)
        rng = random.Random(7)
        try:
            for i, reading in enumerate(readings):
                self.sent[(reading.key, reading.seq)] = time.monotonic()
                producer.send(self.layout.readings, key=reading.key.encode(), value=reading.to_json())
                if garbage_every and i % garbage_every == 0:
                    producer.send(self.layout.readings, key=b"garbage", value=rng.choice(_GARBAGE))
                    self.garbage += 1
            producer.flush(timeout=60)
        finally:
            producer.close()


def _for(model: str) -> Callable[[bytes | None, bytes | None], bool]:
    """Matches a retrain request for ``model``."""
    def match(_key: bytes | None, value: bytes | None) -> bool:
        try:
            return bool(json.loads(value or b"null").get("model") == model)
        except (ValueError, AttributeError):
            return False
    return match


def _promotes(model: str) -> Callable[[bytes | None, bytes | None], bool]:
    """Matches a valid model update promoting a version above 1 of ``model``."""
    def match(key: bytes | None, value: bytes | None) -> bool:
        try:
            update = parse_model_update(value, key)
        except StreamedgeError:
            return False
        return update.name == model and update.version >= 2 and update.action == "promote"
    return match
