"""``streamedge bench edge-chaos``: random device faults against one edge agent; every reading accounted for.

A seeded run feeds readings of a few streams to a real :class:`~streamedge.edge.agent.EdgeAgent`
(real SQLite buffer, real TFLite model) and, between batches, applies one random fault:

- ``sigkill`` (the agent dropped without closing anything) and ``sigterm`` (closed), then restarted;
- ``broker_down`` / ``broker_up``: the buffer is not / is read out and emptied (delivery);
- ``disk_full`` / ``disk_free``: the buffer's SQLite page limit set to what it holds / lifted;
- ``clock_forward`` / ``clock_back``: the agent restarted with the wall clock decades ahead or at 1970;
- ``buffer_deleted`` (stopped, or while running) and ``buffer_corrupted`` (its header overwritten);
- ``shape_change``: windows of another width left in the buffer, as by a model of another shape;
- ``seq_reset``: a stream's counter starts again at 0; ``hostile_lines``: bad bytes, oversized
  lines, wrong fields and a burst of new ids.

Delivery is modelled at the buffer, where the forwarder takes rows (the forwarder and the
broker are tested apart, with real brokers): a row read out is delivered. At the end the broker
is up and the buffer is read out. Every reading fed is then either delivered as a result, or
counted under a named reason: a rejection (``readings_total{outcome}``), ``warmup`` (accepted
while its window filled: no result is due), ``buffer_dropped`` (the size or age bound),
``buffer_lost`` (committed results in a buffer deleted while stopped, or quarantined as corrupt).
``lost`` is what none of these explain; ``conflicting_duplicates`` counts result keys
``(device_id, epoch, seq)`` delivered twice with different content. ``idempotency_key_reuse``
counts idempotency keys delivered for two different readings: a stream whose counter restarted
and whose buffer (with the window that knew of the restart) was then lost numbers its readings
in stream epoch 0 again (docs/edge.md, "Results").
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

__all__ = ["FAULTS", "ChaosRun", "add_arguments", "chaos", "run"]

FAULTS = ("sigkill", "sigterm", "broker_down", "broker_up", "disk_full", "disk_free", "clock_forward", "clock_back",
          "buffer_deleted", "buffer_deleted_running", "buffer_corrupted", "shape_change", "seq_reset", "hostile_lines")
_STREAMS = 3
_BATCH = 24
_WINDOW_KEYS = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's flags."""
    parser.add_argument("--faults", type=int, default=200, help="random faults to apply (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="device model folder with a one-feature forecaster (default: a tiny one is trained)")
    parser.add_argument("--public-key", type=Path, default=None, help="its trusted public key")


class ChaosRun:
    """One chaos run's state: the agent of the moment, what was fed, what was delivered."""

    def __init__(self, model_dir: Path, public_key: Path, work: Path, rng: random.Random) -> None:
        self.model_dir, self.public_key, self.work, self.rng = model_dir, public_key, work, rng
        self.buffer = work / "buffer.sqlite"
        self.fed = 0
        self.counted: Counter[str] = Counter()
        self.delivered: dict[tuple[str, str, int], bytes] = {}
        self.by_idempotency: dict[str, bytes] = {}
        self.conflicts = 0
        self.reused = 0
        self.broker_up = True
        self.disk_full = False
        self.clock = 0.0  # wall-clock offset the next agent starts under
        self.seq = [0] * _STREAMS
        self.ts = 1.7e9
        self.flood = 0
        self.agent: Any = None
        self._start()

    def _start(self) -> None:
        from prometheus_client import CollectorRegistry

        from streamedge.contracts.signing import load_public_key
        from streamedge.edge.agent import EdgeAgent
        from streamedge.edge.settings import EdgeSettings
        from streamedge.edge.sources import IteratorSource
        from streamedge.kafka.settings import KafkaSettings
        from streamedge.kafka.topics import TopicLayout

        settings = EdgeSettings(device_id="chaos-1", model_dir=self.model_dir, public_key=self.public_key,
                                buffer_path=self.buffer, metrics_port=0, model_updates=False, buffer_fsync=False,
                                heartbeat_interval_s=3600, max_keys=_WINDOW_KEYS, log_format="text")
        real_time = time.time
        with mock.patch("time.time", lambda: real_time() + self.clock):
            self.agent = EdgeAgent(settings, KafkaSettings(bootstrap_servers="127.0.0.1:9"), TopicLayout(),
                                   IteratorSource([]), load_public_key(self.public_key), CollectorRegistry())

    def _stop(self, clean: bool) -> None:
        self._tally()
        if clean:
            self.agent.outbox.close()
        else:
            self.agent.outbox._db.close()  # nothing saved at close: what a SIGKILL leaves

    def _tally(self) -> None:
        """Add the agent's counters to the run's (each agent counts from zero)."""
        registry = self.agent.metrics.registry
        for metric in registry.collect():
            for sample in metric.samples:
                if sample.name == "streamedge_edge_readings_total":
                    self.counted[f"rejected:{sample.labels['outcome']}"] += int(sample.value)
                elif sample.name == "streamedge_edge_results_total":
                    self.counted["results"] += int(sample.value)
                elif sample.name == "streamedge_edge_buffer_dropped_total":
                    self.counted["buffer_dropped"] += int(sample.value)

    def restart(self, clean: bool) -> None:
        self._stop(clean)
        self._start()

    def deliver(self) -> None:
        """Read the buffer out (the broker acknowledges everything), checking every key."""
        if not self.broker_up:
            return
        outbox = self.agent.outbox
        while rows := outbox.peek(512):
            for row in rows:
                if not row.topic.endswith("edge-results"):
                    continue
                result = json.loads(row.value)
                key = (result["device_id"], result["epoch"], result["seq"])
                body = {k: v for k, v in result.items() if k not in ("seq", "epoch")}
                content = json.dumps(body, sort_keys=True).encode()
                if self.delivered.get(key, row.value) != row.value:
                    self.conflicts += 1
                if self.by_idempotency.get(result["idempotency_key"], content) != content:
                    self.reused += 1
                self.delivered[key] = row.value
                self.by_idempotency[result["idempotency_key"]] = content
            try:
                outbox.delete_through(rows[-1].id)
            except OSError:  # a full disk: delivered, deleted once there is room
                return

    def feed(self, payloads: list[bytes]) -> None:
        self.fed += len(payloads)
        self.agent.process(payloads)
        self.settle()

    def settle(self) -> None:
        """While the disk is full the batch waits; the run frees it (as an operator would) if need be."""
        if self.agent._backlog is not None:
            self.set_disk(full=False)
            self.agent._work()

    def readings(self, n: int) -> list[bytes]:
        out = []
        for _ in range(n):
            stream = self.rng.randrange(_STREAMS)
            self.ts += 0.5
            value = 10.0 + 3.0 * ((self.seq[stream] % 16) / 8 - 1)
            out.append(json.dumps({"device_id": "chaos-1", "stream": f"s{stream}", "ts": self.ts, "value": value,
                                   "seq": self.seq[stream]}).encode())
            self.seq[stream] += 1
        return out

    def set_disk(self, full: bool) -> None:
        db = self.agent.outbox._db
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
        db.execute(f"PRAGMA max_page_count={pages if full else 1073741823}")
        self.disk_full = full

    def lose_buffer(self) -> None:
        """The committed results still in the buffer are lost with it: count them."""
        depth = sum(1 for row in self.agent.outbox.peek(1_000_000) if row.topic.endswith("edge-results"))
        self.counted["buffer_lost"] += depth

    def fault(self, kind: str) -> None:
        run = {
            "sigkill": lambda: self.restart(clean=False),
            "sigterm": lambda: self.restart(clean=True),
            "broker_down": lambda: setattr(self, "broker_up", False),
            "broker_up": lambda: setattr(self, "broker_up", True),
            "disk_full": lambda: self.set_disk(full=True),
            "disk_free": lambda: self.set_disk(full=False),
            "clock_forward": lambda: self._clock(+30 * 365 * 86400.0),
            "clock_back": lambda: self._clock(-time.time() + 60.0),
            "buffer_deleted": self._deleted_stopped,
            "buffer_deleted_running": self._deleted_running,
            "buffer_corrupted": self._corrupted,
            "shape_change": self._shape_change,
            "seq_reset": self._seq_reset,
            "hostile_lines": self._hostile,
        }[kind]
        run()

    def _clock(self, offset: float) -> None:
        self.clock = offset
        self.restart(clean=True)

    def _deleted_stopped(self) -> None:
        self.lose_buffer()
        self._stop(clean=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.buffer}{suffix}").unlink(missing_ok=True)
        self.disk_full = False
        self._start()

    def _deleted_running(self) -> None:
        self.buffer.unlink()
        self.agent._last_check = 0.0
        self.agent._housekeeping()
        self.disk_full = False

    def _corrupted(self) -> None:
        self.lose_buffer()
        self._stop(clean=True)
        for suffix in ("-wal", "-shm"):
            Path(f"{self.buffer}{suffix}").unlink(missing_ok=True)
        data = bytearray(self.buffer.read_bytes())
        data[:16] = b"not a database!!"
        self.buffer.write_bytes(bytes(data))
        self.disk_full = False
        self._start()

    def _shape_change(self) -> None:
        windows = [(f"chaos-1/s{i}", self.seq[i] - 1, json.dumps([[1.0, 2.0]] * 8)) for i in range(_STREAMS)]
        self.agent.outbox.append(lambda first: [], 0, windows=windows)
        self.restart(clean=True)

    def _seq_reset(self) -> None:
        self.seq[self.rng.randrange(_STREAMS)] = 0

    def _hostile(self) -> None:
        self.flood += 1
        lines = [b"\xff\xfe\xfd", b"{" * 70_000, b'{"device_id": "x"}', b"[1, 2, 3]",
                 *[json.dumps({"device_id": f"flood-{self.flood}-{i}", "stream": "s", "ts": self.ts, "value": 1.0,
                               "seq": 0}).encode() for i in range(2 * _WINDOW_KEYS)]]
        self.feed(lines)

    def report(self, faults: Counter[str]) -> dict[str, Any]:
        self.set_disk(full=False)
        self.broker_up = True
        self.deliver()
        self._stop(clean=True)
        results = self.counted.pop("results")
        rejected = {k.split(":", 1)[1]: v for k, v in self.counted.items() if k.startswith("rejected:") and v}
        accepted = rejected.pop("accepted", 0)
        by_reason = {**rejected, "warmup": accepted - results, "buffer_dropped": self.counted["buffer_dropped"],
                     "buffer_lost": self.counted["buffer_lost"]}
        explained = len(self.delivered) + sum(by_reason.values())
        return {"faults": sum(faults.values()), "faults_by_kind": dict(sorted(faults.items())), "readings": self.fed,
                "results": len(self.delivered), "lost": self.fed - explained,
                "conflicting_duplicates": self.conflicts, "idempotency_key_reuse": self.reused,
                "counted_by_reason": by_reason}


def chaos(model_dir: Path, public_key: Path, faults: int, seed: int, work: Path) -> dict[str, Any]:
    """Run ``faults`` seeded random faults (every kind at least once when ``faults`` allows); the report."""
    rng = random.Random(seed)
    state = ChaosRun(model_dir, public_key, work, rng)
    kinds = list(FAULTS) + [rng.choice(FAULTS) for _ in range(max(0, faults - len(FAULTS)))]
    rng.shuffle(kinds)
    done: Counter[str] = Counter()
    for kind in kinds[:faults]:
        state.feed(state.readings(rng.randrange(1, _BATCH)))
        state.deliver()
        state.fault(kind)
        done[kind] += 1
    state.feed(state.readings(_BATCH))
    return state.report(done)


@contextmanager
def _model(args: argparse.Namespace) -> Iterator[tuple[Path, Path]]:
    if args.model_dir is not None and args.public_key is not None:
        yield args.model_dir, args.public_key
        return
    from streamedge.contracts.signing import load_public_key
    from streamedge.edge.models import ModelStore
    from streamedge.training.tiny import build_tiny_models

    with tempfile.TemporaryDirectory() as folder:
        tiny = build_tiny_models(Path(folder) / "tiny")
        ModelStore(Path(folder) / "models", load_public_key(tiny.public_key)).install(tiny.forecaster)
        yield Path(folder) / "models", tiny.public_key


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> int:
    """Run the benchmark; 0 when nothing was lost and no key conflicts."""
    import logging

    logging.getLogger("streamedge.edge").setLevel(logging.CRITICAL)  # thousands of counted faults
    with _model(args) as (model_dir, public_key), tempfile.TemporaryDirectory() as work:
        report = chaos(model_dir, public_key, args.faults, args.seed, Path(work))
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    log(text)
    return 0 if report["lost"] == 0 and report["conflicting_duplicates"] == 0 else 1
