"""``streamedge bench chaos``: a seeded fault-injection run through a local 3-broker cluster.

It starts its own cluster (:class:`~streamedge.kafka.cluster.LocalCluster`, replication 3,
``min.insync.replicas=2``), the topic layout on it, and ``--workers`` stream workers in one
group (tiny forecaster + classifier on every reading). Readings from ``--devices`` devices are
produced (``acks=all``) in ``faults + 1`` segments; each fault begins a little after its segment
starts, so it always lands mid-stream, and ends once the segment is sent:

=================  =============================================  ==============================
kind               begins with                                    ends with
=================  =============================================  ==============================
worker_sigkill     SIGKILL of a worker                            a replacement worker
worker_join        a new worker joins the group (rebalance)       (it stays)
worker_leave       SIGTERM of a worker (rebalance)                (one fewer)
broker_sigkill     SIGKILL of a node; waits for its partitions'   the node restarted
                   leaders to move to the others
broker_sigstop     SIGSTOP of a node for longer than the          SIGCONT
                   workers' session timeout
poison             hostile bytes on the readings topic (invalid   (they must be dead-lettered)
                   UTF-8, 100 KB of ``[``, a 400-digit number,
                   wrong types, empty)
write_refused      the forecasts topic's ``max.message.bytes``    the limit restored once a worker
                   set to 100: the broker refuses every forecast  retried a refused send (held
                                                                  batches are then delivered)
=================  =============================================  ==============================

Not covered (see docs/stream.md, "Refusals"): a missing output topic (the cluster creates topics
on demand, so it is no refusal here), a denied ACL (the cluster is PLAINTEXT), and compressed
bombs (the Kafka client decompresses a batch whole before the worker sees it: no bound yet).

The plan is drawn from ``--seed``: the first faults are every kind once in a shuffled order, the
rest are drawn at random; targets (which worker, which node) come from the same generator, so a
run repeats. Afterwards every node is brought back and every expected result is looked up by
idempotency key with a ``read_committed`` reader (:mod:`streamedge.benchmarks.chaos_check`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Final

from streamedge.benchmarks.stream import serves_metrics
from streamedge.cli.options import option
from streamedge.kafka.cluster import free_ports
from streamedge.paths import user_state_dir
from streamedge.processes import stop_process

__all__ = ["FAULT_KINDS", "add_arguments", "plan_faults", "run"]

FAULT_KINDS: Final = ("worker_sigkill", "worker_join", "worker_leave", "broker_sigkill", "broker_sigstop", "poison",
                      "write_refused")
# The broker's default message.max.bytes, restored on the forecasts topic after write_refused.
_MAX_MESSAGE_BYTES = 1_048_588
_MODELS: Final = {"forecast": "tiny-forecaster", "classification": "tiny-classifier"}
_WINDOW: Final = 8
_STREAM: Final = "s"
# The workers' group session timeout (the smallest the worker accepts): a paused broker outlives it.
_SESSION_TIMEOUT_S: Final = 6.0
_PAUSE_S: Final = _SESSION_TIMEOUT_S + 2.0
_MAX_WORKERS: Final = 4
_POISON: Final = (b"\xff\xfe\xfd not UTF-8", b"[" * 100_000,
                  b'{"device_id": "d0", "stream": "s", "ts": 1, "value": 1' + b"0" * 400 + b', "seq": 1}',
                  b'{"device_id": 5, "stream": ["s"], "ts": "now", "value": {}, "seq": -1}', b"")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``streamedge bench chaos``."""
    option(parser, "--faults", type=int, default=20, help="faults to inject")
    option(parser, "--out", type=Path, required=True, help="JSON file to write the figures to")
    option(parser, "--seed", type=int, default=7, help="seed of the fault plan and its targets")
    option(parser, "--readings", type=int, default=20_000, help="readings to stream (all devices together)")
    option(parser, "--devices", type=int, default=50, help="devices (one key each)")
    option(parser, "--kinds", default=",".join(FAULT_KINDS), help="fault kinds to draw from, comma-separated")
    option(parser, "--workers", type=int, default=2, help="workers in the group at the start")
    option(parser, "--processing-guarantee", choices=("at_least_once", "exactly_once"), default="at_least_once",
           help="the workers' processing guarantee")
    option(parser, "--segment-seconds", type=float, default=2.0, help="time to send one segment of the stream")
    option(parser, "--settle-timeout", type=float, default=240.0,
           help="longest wait for every result after the last fault, seconds")
    option(parser, "--port", type=int, default=0, help="client port of node 1 (0: six free ports are found)")
    option(parser, "--libs-dir", type=Path, default=None, help="broker jars fetched before (default: fetched once)")
    option(parser, "--work-dir", type=Path, default=user_state_dir() / "bench" / "chaos",
           help="scratch folder (cluster, workers, logs); default under STREAMEDGE_HOME")


def plan_faults(faults: int, kinds: list[str], seed: int, workers: int) -> list[str]:
    """The fault sequence: every kind once (shuffled), then random draws.

    A ``worker_leave`` that would leave no worker becomes a ``worker_join``, and a join beyond
    ``_MAX_WORKERS`` a leave, so the plan depends on ``seed`` alone.
    """
    unknown = sorted(set(kinds) - set(FAULT_KINDS))
    if unknown or not kinds:
        raise ValueError(f"unknown fault kind(s) {unknown}; known: {', '.join(FAULT_KINDS)}")
    rng = random.Random(seed)
    first = list(kinds)
    rng.shuffle(first)
    drawn = first[:faults] + [rng.choice(kinds) for _ in range(faults - len(first))]
    plan: list[str] = []
    for kind in drawn:
        if kind == "worker_leave" and workers <= 1:
            kind = "worker_join"
        elif kind == "worker_join" and workers >= _MAX_WORKERS:
            kind = "worker_leave"
        workers += {"worker_join": 1, "worker_leave": -1}.get(kind, 0)
        plan.append(kind)
    return plan


class _Workers:
    """The stream workers of the run, one group; each logs to its own file."""

    def __init__(self, bootstrap: str, prefix: str, model_dir: Path, public_key: Path, guarantee: str,
                 work: Path) -> None:
        self.work = work
        self.cmd = [sys.executable, "-m", "streamedge.cli.main", "--log-level", "WARNING", "stream", "worker",
                    "--bootstrap-servers", bootstrap, "--topic-prefix", prefix, "--model-dir", str(model_dir),
                    "--public-key", str(public_key), "--routes", json.dumps({_STREAM: sorted(_MODELS.values())})]
        self.env = {**os.environ, "STREAMEDGE_STREAM_APP_ID": f"{prefix}app",
                    "STREAMEDGE_STREAM_COMMIT_INTERVAL_S": "0.5",
                    "STREAMEDGE_STREAM_SESSION_TIMEOUT_S": str(_SESSION_TIMEOUT_S),
                    "STREAMEDGE_STREAM_PROCESSING_GUARANTEE": guarantee,
                    # A worker that cannot deliver a batch for this long exits non-zero (its own
                    # rule); the run restarts it, as a supervisor would. Longer than a pause.
                    "STREAMEDGE_STREAM_UNHEALTHY_AFTER_S": "20", "STREAMEDGE_STREAM_EXIT_AFTER_S": "45"}
        self.live: list[tuple[subprocess.Popen[bytes], int]] = []
        self.started = 0
        self.unexpected_exits: list[int] = []

    def start(self, timeout: float = 120.0) -> None:
        port = free_ports(1)
        self.started += 1
        log = self.work / f"worker-{self.started}.log"
        env = {**self.env, "STREAMEDGE_STREAM_DATA_DIR": str(self.work / f"faust-{self.started}")}
        proc = subprocess.Popen([*self.cmd, "--web-port", str(port)], env=env, stdout=log.open("ab"),
                                stderr=subprocess.STDOUT)
        self.live.append((proc, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}: {log.read_text()[-2000:]}")
            if serves_metrics(port):
                return
            time.sleep(0.3)
        raise RuntimeError(f"worker not ready within {timeout:.0f} s: {log.read_text()[-2000:]}")

    def supervise(self) -> None:
        """Replace workers that exited on their own (counted in ``unexpected_exits``), as a supervisor would."""
        for proc, port in list(self.live):
            if proc.poll() is not None:
                self.unexpected_exits.append(proc.returncode)
                self.live.remove((proc, port))
                self.start()

    def send_retries(self) -> float:
        """Sends the live workers retried so far (``streamedge_stream_send_retries_total``, summed)."""
        import urllib.request

        total = 0.0
        for _, port in self.live:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:  # a worker starting or stopping: its count is not there to add
                continue
            total += sum(float(line.split()[-1]) for line in text.splitlines()
                         if line.startswith("streamedge_stream_send_retries_total "))
        return total

    def kill(self, index: int) -> None:
        proc, _ = self.live.pop(index % len(self.live))
        proc.kill()
        proc.wait(timeout=30)

    def leave(self, index: int) -> None:
        proc, _ = self.live.pop(index % len(self.live))
        stop_process(proc, timeout=30)

    def stop_all(self) -> None:
        for proc, _ in self.live:
            stop_process(proc, timeout=30)
        self.live = []


def _reading(device: str, seq: int, t0: float) -> bytes:
    value = 10.0 + 3.0 * math.sin(2 * math.pi * seq / 16)
    return json.dumps({"device_id": device, "stream": _STREAM, "ts": t0 + seq * 0.01, "value": value,
                       "seq": seq}).encode()


class _Segment(threading.Thread):
    """Send ``seq`` in ``[first, last)`` for every device, paced over ``seconds``; waits for every ack."""

    def __init__(self, producer: Any, topic: str, devices: list[str], first: int, last: int, seconds: float,
                 t0: float) -> None:
        super().__init__(daemon=True)
        self.args = (producer, topic, devices, first, last, seconds, t0)
        self.error: BaseException | None = None

    def run(self) -> None:
        producer, topic, devices, first, last, seconds, t0 = self.args
        try:
            steps = max(1, last - first)
            for seq in range(first, last):
                for device in devices:
                    producer.send(topic, key=f"{device}/{_STREAM}".encode(), value=_reading(device, seq, t0))
                time.sleep(seconds / steps)
            producer.flush(timeout=300)
        except BaseException as exc:  # reported by join_or_raise in the main thread
            self.error = exc

    def join_or_raise(self) -> None:
        self.join()
        if self.error is not None:
            raise RuntimeError(f"producing readings failed: {self.error!r}") from self.error


def _leaders(bootstrap: str, topic: str, attempts: int = 20) -> dict[int, int]:
    """Partition -> leader node id of ``topic`` (-1 while it has none), asked of ``bootstrap``.

    A node that died a moment ago may still be in the client's metadata: a request routed to it
    fails, and is asked again (another node answers) up to ``attempts`` times.
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    for attempt in range(attempts):
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="streamedge-chaos-admin")
            try:
                described = admin.describe_topics([topic])
            finally:
                admin.close()
            return {int(p["partition_index"]): int(p["leader_id"]) for p in described[0]["partitions"]}
        except KafkaError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable: the last attempt returns or raises")


class _Run:
    """One chaos run: cluster, topics, workers, producer, faults, and the accounting."""

    def __init__(self, args: argparse.Namespace) -> None:
        from streamedge.benchmarks.stream import tiny_model_dir
        from streamedge.kafka.cluster import LocalCluster
        from streamedge.kafka.settings import KafkaSettings
        from streamedge.kafka.topics import TopicLayout

        self.args = args
        self.rng = random.Random(args.seed)
        self.work = Path(args.work_dir).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        model_dir, public_key = tiny_model_dir(self.work)
        port = args.port or free_ports(6)
        self.cluster = LocalCluster(self.work / f"cluster-{port}", brokers=3, port=port, libs_dir=args.libs_dir)
        self.kafka = KafkaSettings(bootstrap_servers=self.cluster.bootstrap, client_id="streamedge-chaos")
        self.layout = TopicLayout(prefix=f"chaos{uuid.uuid4().hex[:8]}.", partitions=6)
        self.workers = _Workers(self.cluster.bootstrap, self.layout.prefix, model_dir, public_key,
                                args.processing_guarantee, self.work)
        self.producer: Any = None
        self.poison: list[tuple[int, int]] = []
        self.log: list[dict[str, Any]] = []

    def open(self) -> None:
        """Start the cluster, create the topics and the producer, start ``--workers`` workers."""
        from kafka import KafkaProducer

        from streamedge.kafka.topics import create_topics

        self.cluster.up()
        create_topics(self.kafka, self.layout, replication_factor=3)
        self.producer = KafkaProducer(**self.kafka.kafka_python_config(), acks="all", linger_ms=5,
                                      request_timeout_ms=15_000)
        for _ in range(self.args.workers):
            self.workers.start()

    def begin(self, kind: str) -> dict[str, Any]:
        """Start fault ``kind``; returns its log entry (``end`` completes it)."""
        entry: dict[str, Any] = {"kind": kind}
        if kind == "worker_sigkill":
            entry["worker"] = self.rng.randrange(len(self.workers.live))
            self.workers.kill(entry["worker"])
        elif kind == "worker_join":
            self.workers.start()
        elif kind == "worker_leave":
            entry["worker"] = self.rng.randrange(len(self.workers.live))
            self.workers.leave(entry["worker"])
        elif kind == "broker_sigkill":
            entry["node"] = node = self.rng.randint(1, 3)
            before = _leaders(self._live_bootstrap(), self.layout.readings)
            self.cluster.kill(node)
            entry["leaders_moved"] = self._await_leaders_off(node, before)
        elif kind == "broker_sigstop":
            entry["node"] = self.rng.randint(1, 3)
            entry["paused_s"] = _PAUSE_S
            self.cluster.pause(entry["node"])
            entry["_resume_at"] = time.monotonic() + _PAUSE_S
        elif kind == "poison":
            futures = [self.producer.send(self.layout.readings, key=f"dev{self.rng.randrange(1000)}/{_STREAM}".encode(),
                                          value=payload) for payload in _POISON]
            self.poison += [(m.partition, m.offset) for m in (f.get(timeout=120) for f in futures)]
            entry["messages"] = len(_POISON)
        elif kind == "write_refused":
            entry["_retries_before"] = self.workers.send_retries()
            self._forecast_limit(100)
        return entry

    def end(self, entry: dict[str, Any]) -> None:
        """Complete a fault: restart, resume or replace what it took away."""
        kind = entry["kind"]
        if kind == "worker_sigkill":
            self.workers.start()
        elif kind == "broker_sigkill":
            self.cluster.restart(entry["node"])
        elif kind == "broker_sigstop":
            time.sleep(max(0.0, entry.pop("_resume_at") - time.monotonic()))
            self.cluster.resume(entry["node"])
        elif kind == "write_refused":
            # Lifted only once a worker saw a refusal (or after 60 s): the fault must have bitten.
            before, deadline = entry.pop("_retries_before"), time.monotonic() + 60.0
            while self.workers.send_retries() <= before and time.monotonic() < deadline:
                time.sleep(0.3)
            entry["send_retries"] = self.workers.send_retries() - before
            self._forecast_limit(_MAX_MESSAGE_BYTES)

    def _forecast_limit(self, max_bytes: int) -> None:
        """Set the forecasts topic's ``max.message.bytes`` (100 refuses every forecast)."""
        from kafka import KafkaAdminClient
        from kafka.admin import ConfigResource, ConfigResourceType

        config = {**self.kafka.kafka_python_config(), "bootstrap_servers": self._live_bootstrap().split(",")}
        admin = KafkaAdminClient(**config)
        try:
            admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, self.layout.forecasts,
                                                configs={"max.message.bytes": str(max_bytes)})])
        finally:
            admin.close()

    def _await_leaders_off(self, node: int, before: dict[int, int], timeout: float = 60.0) -> int:
        """Wait until no readings partition is led by ``node``; returns how many it led before."""
        led = [p for p, leader in before.items() if leader == node]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = _leaders(self._live_bootstrap(), self.layout.readings)
            if all(now.get(p, -1) not in (node, -1) for p in led):
                return len(led)
            time.sleep(0.5)
        raise RuntimeError(f"partitions {led} still had no leader {timeout:.0f} s after node {node} was killed")

    def _live_bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.cluster.nodes if node.pid is not None)

    def stream(self, plan: list[str], devices: list[str], seqs: int) -> None:
        """Produce the readings in ``len(plan) + 1`` segments with one fault in each but the last."""
        t0 = time.time()
        bounds = [round(i * seqs / (len(plan) + 1)) for i in range(len(plan) + 2)]
        started = time.monotonic()
        for i, first in enumerate(bounds[:-1]):
            segment = _Segment(self.producer, self.layout.readings, devices, first, bounds[i + 1],
                               self.args.segment_seconds, t0)
            segment.start()
            entry: dict[str, Any] | None = None
            if i < len(plan):
                time.sleep(self.args.segment_seconds / 3)
                entry = {"at_s": round(time.monotonic() - started, 1), **self.begin(plan[i])}
            segment.join_or_raise()
            if entry is not None:
                self.end(entry)
                self.log.append(entry)
                print(f"fault {len(self.log)}/{len(plan)}: {entry}", flush=True)
            self.workers.supervise()

    def results(self, expected: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Results (forecasts, classifications) until every expected reading and model is seen, then
        dead letters."""
        from kafka import KafkaConsumer

        from streamedge.services.records import reading_of

        def read(topics: list[str], done: Any, timeout: float) -> list[dict[str, Any]]:
            consumer = KafkaConsumer(*topics, **self.kafka.kafka_python_config(), group_id=None,
                                     auto_offset_reset="earliest", enable_auto_commit=False,
                                     isolation_level="read_committed")
            found: list[dict[str, Any]] = []
            deadline = time.monotonic() + timeout
            try:
                quiet = 0
                while time.monotonic() < deadline and quiet < 6:
                    batch = [json.loads(m.value) for records in consumer.poll(timeout_ms=500).values()
                             for m in records]
                    found += batch
                    self.workers.supervise()
                    # Once complete, a few empty polls more let late copies (duplicates) arrive.
                    quiet = quiet + 1 if done(found) and not batch else 0
                return found
            finally:
                consumer.close()

        seen: set[str] = set()
        counted = 0

        def complete(found: list[dict[str, Any]]) -> bool:
            nonlocal counted
            for r in found[counted:]:
                try:
                    seen.add(reading_of(str(r.get("idempotency_key"))))
                except ValueError:  # no "@<partition>:<offset>": not a stream worker's result
                    continue
            counted = len(found)
            return expected <= seen

        results = read([self.layout.forecasts, self.layout.classifications], complete, self.args.settle_timeout)
        letters = read([self.layout.dead_letters], lambda found: True, 30.0)
        return results, letters

    def worker_topic_replicas(self) -> int:
        """The fewest replicas of any topic the workers' Faust app created for itself (its
        leader-election topic): on this cluster it must be 3, like the layout's topics."""
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(**self.kafka.kafka_python_config())
        try:
            own = [name for name in admin.list_topics() if name.startswith(f"{self.layout.prefix}app-")]
            described = admin.describe_topics(own) if own else []
        finally:
            admin.close()
        counts = [len(p["replica_nodes"]) for topic in described for p in topic["partitions"]]
        return min(counts) if counts else 0

    def close(self) -> None:
        """Stop the workers, the producer and the cluster, whatever ``open`` got to."""
        try:
            self.workers.stop_all()
            if self.producer is not None:
                self.producer.close(timeout=30)
        finally:
            self.cluster.down()


def run(args: argparse.Namespace) -> int:
    """Run the chaos benchmark and write its JSON; returns 0 when nothing was lost, else 1."""
    import logging

    from streamedge.benchmarks.chaos_check import expected_keys, tally

    # Clients log every refused connection while a node is down; that is the point of the run.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    kinds = [k.strip() for k in str(args.kinds).split(",") if k.strip()]
    plan = plan_faults(args.faults, kinds, args.seed, args.workers)
    devices = [f"dev{i}" for i in range(args.devices)]
    seqs = max(_WINDOW + len(plan) + 1, args.readings // max(1, args.devices))
    started = time.monotonic()
    chaos = _Run(args)
    try:
        chaos.open()
        chaos.stream(plan, devices, seqs)
        chaos.cluster.up()
        chaos.workers.supervise()
        expected = expected_keys(devices, _STREAM, seqs, _WINDOW, _MODELS)
        results, letters = chaos.results(set(expected))
        figures = tally(expected, results)
        worker_topic_replicas = chaos.worker_topic_replicas()
    finally:
        chaos.close()
    poison = set(chaos.poison)
    lettered = {(int(d["source"]["partition"]), int(d["source"]["offset"])) for d in letters if "source" in d}
    report: dict[str, Any] = {
        "faults": len(plan), "readings": len(devices) * seqs, "devices": len(devices), "seed": args.seed,
        "processing_guarantee": args.processing_guarantee,
        "lost": figures.lost, "duplicates": figures.duplicates,
        "duplicates_after_dedup": figures.duplicates_after_dedup, "conflicting_keys": figures.conflicting_keys,
        "faults_by_kind": dict(sorted(Counter(plan).items())),
        "lost_results": figures.lost_results, "expected_results": figures.expected_results,
        "results_seen": figures.results_seen, "missing_examples": figures.missing_examples,
        "poison_sent": len(poison), "poison_dead_lettered": len(poison & lettered),
        "valid_readings_dead_lettered": len(lettered - poison),
        "leaders_moved": sum(int(e.get("leaders_moved", 0)) for e in chaos.log),
        "worker_topic_replicas": worker_topic_replicas,
        "worker_crashes": len(chaos.workers.unexpected_exits),
        "elapsed_s": round(time.monotonic() - started, 1), "fault_log": chaos.log,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("faults", "readings", "lost", "duplicates", "duplicates_after_dedup",
                                             "conflicting_keys", "faults_by_kind")}), f"-> {args.out}")
    return 0 if report["lost"] == 0 else 1
