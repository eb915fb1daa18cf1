"""``streamedge bench stream``: pass-through Faust agent vs the full pipeline vs per-message Keras (same trained model).

On a real broker, each contender runs as its own process on a fresh topic layout:

- **throughput**: ``--messages`` readings (``--keys`` keys) are produced first, then the worker
  starts and drains them; throughput = results / (last result time - first result time), result
  time being the result message's create timestamp (set when the worker sends it);
- **latency**: readings are then produced at half that peak rate for ``--latency-seconds``, each
  stamped with its send time as event time; latency = result timestamp - event time (p50, p99);
- **RSS**: the worker's resident set size (``/proc/<pid>/status``) after the run.

The pass-through, the pipeline, the exactly-once pipeline and the naive floor run in alternation,
``--repeats`` rounds; each headline ratio is the median of the per-round ratios, with its spread.
The full pipeline is also run at each ``--batch-sizes`` (the micro-batching trade-off), and once
with ``--active-keys`` keys, twice over, to show RSS does not grow with stream length. Heavy
imports (TensorFlow for the model fixtures and the naive floor, Kafka clients) happen in ``run``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from streamedge.benchmarks import stream_identity, stream_rate
from streamedge.cli.common import add_kafka_options, kafka_settings
from streamedge.cli.options import option
from streamedge.kafka.cluster import free_ports
from streamedge.paths import user_state_dir
from streamedge.processes import stop_process

__all__ = ["add_arguments", "run", "serves_metrics", "tiny_model_dir"]

_WINDOW = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``streamedge bench stream``."""
    add_kafka_options(parser)
    option(parser, "--messages", type=int, default=20_000, help="readings per throughput run")
    option(parser, "--out", type=Path, required=True, help="JSON file to write the figures to")
    option(parser, "--keys", type=int, default=100, help="distinct device/stream keys")
    option(parser, "--batch-sizes", default="32,256", help="micro-batch sizes to compare (the last is the headline)")
    option(parser, "--extra-strides", default="4",
           help="classification strides also run at the last batch size (the headline uses stride 1)")
    option(parser, "--batch-wait", type=float, default=0.02, help="micro-batch wait, seconds")
    option(parser, "--latency-seconds", type=float, default=6.0, help="duration of each half-rate latency run")
    option(parser, "--naive-messages", type=int, default=None,
           help="readings for the per-message Keras floor (default: --messages over --keys keys, the pipeline's data)")
    option(parser, "--active-keys", type=int, default=10_000, help="keys for the bounded-memory run")
    option(parser, "--work-dir", type=Path, default=user_state_dir() / "bench" / "stream",
           help="scratch folder; default under STREAMEDGE_HOME")
    stream_rate.add_arguments(parser)
    option(parser, "--identity-only", action="store_true", default=False,
           help="measure only the reading identity check (worker with --enrolment on vs off, alternated)")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.kafka = kafka_settings(args)
        self.work = Path(args.work_dir).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        from kafka import KafkaProducer

        self.producer = KafkaProducer(**self.kafka.kafka_python_config(), linger_ms=2, batch_size=256 * 1024)
        # device id -> its enrolled key: while set, every reading is sent signed (streamedge-auth header).
        self.device_keys: dict[str, bytes] | None = None

    def send(self, topic: str, device: str, body: dict[str, Any]) -> None:
        """One reading of ``device``, signed by its key while :attr:`device_keys` is set."""
        from streamedge.contracts.identity import sign_message

        value = json.dumps(body).encode()
        headers = sign_message(value, self.device_keys[device]) if self.device_keys is not None else None
        self.producer.send(topic, key=f"{device}/s".encode(), value=value, headers=headers)

    def layout(self) -> Any:
        from streamedge.kafka.topics import TopicLayout, create_topics

        layout = TopicLayout(prefix=f"bench{uuid.uuid4().hex[:8]}.", partitions=3)
        create_topics(self.kafka, layout)
        return layout

    def fill(self, layout: Any, keys: int, per_key: int, first_seq: int = 0) -> int:
        now = time.time()
        for seq in range(first_seq, first_seq + per_key):
            for k in range(keys):
                value = 10.0 + 3.0 * math.sin(2 * math.pi * seq / 16)
                body = {"device_id": f"dev{k}", "stream": "s", "ts": now - 1000 + seq * 1e-3, "value": value,
                        "seq": seq}
                self.send(layout.readings, f"dev{k}", body)
        self.producer.flush()
        return keys * per_key

    def paced(self, layout: Any, keys: int, first_seq: int, rate: float, seconds: float) -> int:
        """Send readings at ``rate``/s, round-robin over keys, ts = send time; returns the count."""
        sent, start = 0, time.time()
        seq = first_seq
        while time.time() - start < seconds:
            due = int((time.time() - start) * rate)
            while sent < due:
                k = sent % keys
                if k == 0 and sent:
                    seq += 1
                body = {"device_id": f"dev{k}", "stream": "s", "ts": time.time(),
                        "value": 10.0 + 3.0 * math.sin(2 * math.pi * seq / 16), "seq": seq}
                self.send(layout.readings, f"dev{k}", body)
                sent += 1
            self.producer.flush()
            time.sleep(0.005)
        return sent

    def collect(self, topic: str, expected: int, timeout: float, since: float = 0.0,
                proc: subprocess.Popen[bytes] | None = None) -> list[tuple[float, dict[str, Any]]]:
        """``(result timestamp s, record)`` of results created at/after ``since``, until ``expected`` or timeout."""
        from kafka import KafkaConsumer

        # read_committed: an exactly-once worker's results count once their transaction committed.
        consumer = KafkaConsumer(topic, **self.kafka.kafka_python_config(), group_id=None,
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 isolation_level="read_committed")
        found: list[tuple[float, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout
        try:
            while len(found) < expected and time.monotonic() < deadline:
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"the worker under test exited with {proc.returncode}; see its log")
                for records in consumer.poll(timeout_ms=500).values():
                    for m in records:
                        if m.timestamp / 1000 >= since:
                            found.append((m.timestamp / 1000, json.loads(m.value)))
            return found
        finally:
            consumer.close()

    def measure(self, name: str, layout: Any, start: Any, expected: int, keys: int,
                per_key: int) -> dict[str, Any]:
        """Drain the backlog (throughput), then a half-rate run (latency), for one contender."""
        proc = start(layout)
        try:
            results = self.collect(layout.forecasts, expected, timeout=600, proc=proc)
            stamps = sorted(t for t, _ in results)
            span = stamps[-1] - stamps[0] if len(stamps) > 1 else math.nan
            throughput = (len(stamps) - 1) / span if span and span > 0 else math.nan
            rss_backlog = _rss_mb(proc.pid)
            rate = max(1.0, throughput / 2)
            since = time.time()
            seconds = self.args.latency_seconds
            sent = self.paced(layout, keys, per_key, rate, seconds)
            late = self.collect(layout.forecasts, sent, timeout=seconds * 4 + 30, since=since, proc=proc)
            latencies = [(t - rec["ts"]) * 1000 for t, rec in late if rec["ts"] >= since]
            out = {"throughput_per_s": round(throughput, 1), "p50_ms": round(_percentile(latencies, 0.5), 2),
                   "p99_ms": round(_percentile(latencies, 0.99), 2), "rss_mb": round(max(rss_backlog,
                                                                                      _rss_mb(proc.pid)), 1),
                   "results": len(stamps), "latency_rate_per_s": round(rate, 1), "latency_samples": len(latencies)}
            print(f"{name:28s} {out}", flush=True)
            return out
        finally:
            stop_process(proc, timeout=30)


def tiny_model_dir(work: Path) -> tuple[Path, Path]:
    """``(model_dir, public_key)``: the tiny forecaster and classifier installed as version 1 under
    ``work/models`` (built once: Dense forecaster, CNN classifier, float32 TFLite, signed), and the
    forecaster's trained Keras model as ``work/models/tiny-forecaster.keras`` (the naive floor's)."""
    from streamedge.contracts.signing import generate_keypair
    from streamedge.training.tiny import build_tiny_model

    root = work / "models"
    if not (root / "tiny-forecaster.keras").is_file():
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        keys = work / "tiny" / "keys"
        generate_keypair(keys / "signing.pem", keys / "public.pem")
        build_tiny_model("forecaster", root / "tiny-forecaster" / "1", keys / "signing.pem",
                         keras_file=work / "tiny" / "tiny-forecaster.keras")
        build_tiny_model("classifier", root / "tiny-classifier" / "1", keys / "signing.pem")
        shutil.copy(keys / "public.pem", root / "public.pem")
        shutil.copy(work / "tiny" / "tiny-forecaster.keras", root / "tiny-forecaster.keras")
    return root, root / "public.pem"


def serves_metrics(port: int) -> bool:
    """Whether a worker answers on ``127.0.0.1:port/metrics`` yet (not yet is normal while starting)."""
    import urllib.request

    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return False
    return True


def _spawn(cmd: list[str], env: dict[str, str], log: Path, ready: str | None = None,
           port: int | None = None) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[2]} exited: {log.read_text()[-2000:]}")
        if (port is not None and serves_metrics(port)) or (port is None and ready is not None
                                                              and ready in log.read_text()):
            return proc
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{cmd[2]} did not start: {log.read_text()[-2000:]}")


def run(args: argparse.Namespace) -> int:
    """Run every contender and write the JSON figures; returns 0."""
    bench = _Bench(args)
    model_dir, public_key = tiny_model_dir(bench.work)
    env = dict(os.environ)
    python = sys.executable
    n, keys = args.messages, args.keys
    per_key = max(_WINDOW + 1, n // keys)
    expected = keys * (per_key - _WINDOW + 1)
    logs = bench.work / "logs"
    logs.mkdir(exist_ok=True)
    batch_sizes = [int(b) for b in str(args.batch_sizes).split(",")]
    routes = json.dumps({"s": ["tiny-forecaster", "tiny-classifier"]})

    def pipeline(batch: int, stride: int = 1, guarantee: str = "at_least_once",
                 enrolment: Path | None = None) -> Any:
        def _start(layout: Any) -> subprocess.Popen[bytes]:
            # a port free now: a fixed one may be another benchmark's worker, which would answer the readiness probe
            port = free_ports(1)
            checks = {"STREAMEDGE_STREAM_ENROLMENT": str(enrolment)} if enrolment is not None else {}
            worker_env = {**env, **checks, "STREAMEDGE_STREAM_APP_ID": f"{layout.prefix}app",
                          "STREAMEDGE_STREAM_DATA_DIR": str(bench.work / "faust"),
                          "STREAMEDGE_STREAM_BATCH_WAIT_S": str(args.batch_wait),
                          "STREAMEDGE_STREAM_CLASSIFY_STRIDE": str(stride),
                          "STREAMEDGE_STREAM_PROCESSING_GUARANTEE": guarantee}
            cmd = [python, "-m", "streamedge.cli.main", "--log-level", "WARNING", "stream", "worker",
                   "--bootstrap-servers", bench.kafka.bootstrap_servers, "--topic-prefix", layout.prefix,
                   "--model-dir", str(model_dir), "--public-key", str(public_key), "--routes", routes,
                   "--batch-size", str(batch), "--web-port", str(port)]
            return _spawn(cmd, worker_env, logs / f"pipeline-{batch}.log", port=port)

        return _start

    def passthrough(layout: Any, mode: str = "plain") -> subprocess.Popen[bytes]:
        cmd = [python, "-m", "streamedge.benchmarks.stream_passthrough", bench.kafka.bootstrap_servers, layout.prefix,
               f"{layout.prefix}app", str(batch_sizes[-1]), str(args.batch_wait), str(bench.work / "faust" / layout.prefix),
               mode]
        # No readiness signal: the throughput clock starts at its first result anyway.
        return subprocess.Popen(cmd, env=env, stdout=(logs / "passthrough.log").open("ab"),
                                stderr=subprocess.STDOUT)

    def naive(layout: Any) -> subprocess.Popen[bytes]:
        cmd = [python, "-m", "streamedge.benchmarks.stream_naive", bench.kafka.bootstrap_servers, layout.prefix,
               str(model_dir)]
        return _spawn(cmd, env, logs / "naive.log", ready="ready")

    report: dict[str, Any] = {"messages": keys * per_key, "keys": keys, "window": _WINDOW,
                              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                          "platform": platform.platform()}}
    if args.identity_only:
        report["identity"] = stream_identity.compare(bench, pipeline, batch_sizes[-1], keys, per_key, expected,
                                                     args.repeats)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"identity check -> {args.out}")
        return 0
    report.update(stream_rate.rate_axis(bench, args, pipeline, python, env, logs))
    if args.rate_only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"rate axis -> {args.out}")
        return 0
    # The headline contenders in alternation, --repeats times (A B C D A B C D ...): the load of a shared
    # machine moves every figure, so each ratio is the median of the per-round ratios, spread beside it.
    headline = batch_sizes[-1]
    naive_keys = keys if args.naive_messages is None else min(keys, 10)
    naive_per_key = per_key if args.naive_messages is None else max(_WINDOW + 1, args.naive_messages // naive_keys + _WINDOW - 1)
    # (name, start, keys, readings per key, results expected)
    contenders = (("passthrough", passthrough, keys, per_key, keys * per_key),
                  ("pipeline", pipeline(headline), keys, per_key, expected),
                  ("exactly_once", pipeline(headline, guarantee="exactly_once"), keys, per_key, expected),
                  ("naive_keras", naive, naive_keys, naive_per_key, naive_keys * (naive_per_key - _WINDOW + 1)))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in contenders}
    for round_ in range(max(1, args.repeats)):
        for name, start, n_keys, n_per_key, want in contenders:
            layout = bench.layout()
            bench.fill(layout, n_keys, n_per_key)
            runs[name].append(bench.measure(f"{name} (round {round_ + 1})", layout, start, want, n_keys, n_per_key))
    report["passthrough"] = _median_run(runs["passthrough"])
    layout = bench.layout()
    bench.fill(layout, keys, per_key)
    report["passthrough_with_changelog_table"] = bench.measure(
        "passthrough + changelog table", layout, lambda lay: passthrough(lay, "table"), keys * per_key, keys, per_key)

    tradeoff = []
    strides = [int(x) for x in str(args.extra_strides).split(",") if x.strip()]
    configs = [(b, 1) for b in batch_sizes[:-1]] + [(headline, x) for x in strides]
    for batch, stride in configs:
        layout = bench.layout()
        bench.fill(layout, keys, per_key)
        figures = bench.measure(f"pipeline batch={batch} stride={stride}", layout, pipeline(batch, stride=stride),
                                expected, keys, per_key)
        tradeoff.append({"batch_size": batch, "batch_wait_s": args.batch_wait, "classify_stride": stride, **figures})
    tradeoff.append({"batch_size": headline, "batch_wait_s": args.batch_wait, "classify_stride": 1,
                     **_median_run(runs["pipeline"])})
    report["pipeline"] = {**tradeoff[-1]}
    report["batch_tradeoff"] = tradeoff
    report["processing_guarantee"] = {
        "at_least_once": report["pipeline"], "exactly_once": _median_run(runs["exactly_once"]),
        **_ratio("exactly_once_over_at_least_once", runs["exactly_once"], runs["pipeline"])}

    report["naive_keras"] = _median_run(runs["naive_keras"])
    report["active_keys"] = _active_keys(bench, pipeline(batch_sizes[-1]), args.active_keys)
    report["identity"] = stream_identity.compare(bench, pipeline, batch_sizes[-1], keys, per_key, expected,
                                                 args.repeats)
    report["ratios"] = {**_ratio("pipeline_over_passthrough", runs["pipeline"], runs["passthrough"]),
                        **_ratio("pipeline_over_naive", runs["pipeline"], runs["naive_keras"])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratios"]), f"-> {args.out}")
    return 0


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (the lower middle one of an even count), with every run's figure."""
    ordered = sorted(runs, key=lambda r: r["throughput_per_s"])
    return {**ordered[(len(ordered) - 1) // 2], "runs_throughput_per_s": [r["throughput_per_s"] for r in runs]}


def _ratio(name: str, top: list[dict[str, Any]], bottom: list[dict[str, Any]]) -> dict[str, Any]:
    """``{name: median of the per-round throughput ratios, name_runs: each round's, name_spread: [min, max]}``."""
    per_round = sorted(round(a["throughput_per_s"] / b["throughput_per_s"], 3) for a, b in zip(top, bottom, strict=True))
    median = per_round[len(per_round) // 2] if len(per_round) % 2 else round(
        (per_round[len(per_round) // 2 - 1] + per_round[len(per_round) // 2]) / 2, 3)
    print(f"{name}: median {median} over {len(per_round)} alternated round(s), spread {per_round[0]}-{per_round[-1]}",
          flush=True)
    return {name: median, f"{name}_runs": per_round, f"{name}_spread": [per_round[0], per_round[-1]]}


def _active_keys(bench: _Bench, start: Any, keys: int) -> dict[str, Any]:
    """RSS with ``keys`` active keys after one, two and three full windows per key."""
    layout = bench.layout()
    proc = start(layout)
    try:
        figures: dict[str, Any] = {"keys": keys}
        for rounds in (1, 2, 3):
            bench.fill(layout, keys, _WINDOW, first_seq=(rounds - 1) * _WINDOW)
            want = keys * (_WINDOW * rounds - _WINDOW + 1)
            got = bench.collect(layout.forecasts, want, timeout=300)
            figures[f"rss_mb_after_{rounds * _WINDOW}_readings_per_key"] = round(_rss_mb(proc.pid), 1)
            figures[f"forecasts_after_round_{rounds}"] = len(got)
        print(f"{'active keys':28s} {figures}", flush=True)
        return figures
    finally:
        stop_process(proc, timeout=30)
