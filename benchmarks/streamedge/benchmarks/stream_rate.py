"""The rate axis of ``streamedge bench stream``: reading blocks of 1, 16, 256, 1024 samples.

For each block size, on a fresh topic layout: the readings are produced first as blocks (a block
of one is a single reading), the full pipeline (forecast on every sample, classification every
``window / 2`` samples) drains them, and readings/s and messages/s are read from its results'
create timestamps (results carry the samples they cover). At the headline size, readings are
then produced at half that rate, each block's last sample stamped with its send time, for the
end-to-end latency (result create time minus last sample time).

Three ceilings on the same bytes, in the same run (single readings and headline blocks):

- ``faust_passthrough``: the Faust agent that decodes, re-encodes and produces each message;
- ``aiokafka_loop``: a raw aiokafka consume-produce loop doing the same decode and re-encode;
- ``kafka_consumer_perf``: the broker's own ``org.apache.kafka.tools.ConsumerPerformance`` (from
  the pinned kafka-tools jar) reading the readings topic: the broker's physical ceiling here.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamedge.cli.options import option

__all__ = ["add_arguments", "rate_axis"]

_WINDOW = 8
_PERIOD_S = 1e-3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the rate axis."""
    option(parser, "--block-sizes", default="1,16,256,1024", help="reading block sizes of the rate axis")
    option(parser, "--headline-block", type=int, default=256, help="block size measured for latency too")
    option(parser, "--block-readings", type=int, default=400_000, help="readings per block-size run (blocks > 1)")
    option(parser, "--repeats", type=int, default=1,
           help="runs of each rate-axis measurement and of the headline contenders (pass-through, pipeline, "
                "exactly-once, naive Keras), in alternation; medians and spreads are reported (make bench uses 3)")
    option(parser, "--rate-only", action="store_true", default=False,
           help="run only the rate axis and its ceilings")


def _samples(record: dict[str, Any]) -> int:
    """Readings one output message covers: a block result, a re-encoded block, or one reading."""
    if "samples" in record:
        return int(record["samples"])
    values = record.get("values")
    return len(values) if isinstance(values, list) else 1


def _payload(device: str, first: int, count: int, ts0: float, period: float, single: bool) -> bytes:
    seqs = list(range(first, first + count))
    values = [10.0 + 3.0 * math.sin(2 * math.pi * s / 16) for s in seqs]
    if single:
        body: dict[str, Any] = {"device_id": device, "stream": "s", "ts": ts0, "value": values[0], "seq": first}
    else:
        body = {"device_id": device, "stream": "s", "seq": first, "ts": ts0, "period": period, "values": values}
    return json.dumps(body, separators=(",", ":")).encode()


class _Rate:
    def __init__(self, bench: Any, args: argparse.Namespace, pipeline: Callable[..., Any], python: str,
                 env: dict[str, str], logs: Path) -> None:
        self.bench, self.args, self.pipeline, self.python, self.env, self.logs = bench, args, pipeline, python, env, logs
        # The ceilings take the same micro-batch as the pipeline they are compared with (--batch-sizes' last).
        self._batch = str(args.batch_sizes).split(",")[-1].strip()

    def fill(self, layout: Any, keys: int, per_key: int, size: int) -> int:
        """Produce ``per_key`` readings per key in blocks of ``size``; returns the message count."""
        start, sent = time.time() - 1000, 0
        for first in range(0, per_key, size):
            count = min(size, per_key - first)
            for k in range(keys):
                payload = _payload(f"dev{k}", first, count, start + first * _PERIOD_S, _PERIOD_S, size == 1)
                self.bench.producer.send(layout.readings, key=f"dev{k}/s".encode(), value=payload)
                sent += 1
        self.bench.producer.flush()
        return sent

    def paced(self, layout: Any, keys: int, first_seq: int, size: int, rate: float, seconds: float) -> int:
        """Readings at ``rate``/s in blocks of ``size``, round-robin over keys; each block's last sample
        is stamped with its send time. Returns the readings sent."""
        period = keys / rate  # each key gets rate / keys readings per second
        sent, began = 0, time.time()
        while time.time() - began < seconds:
            due = int((time.time() - began) * rate)
            while sent < due:
                message = sent // size
                k, seq = message % keys, first_seq + message // keys * size
                now = time.time()
                payload = _payload(f"dev{k}", seq, size, now - (size - 1) * period, period, size == 1)
                self.bench.producer.send(layout.readings, key=f"dev{k}/s".encode(), value=payload)
                sent += size
            self.bench.producer.flush()
            time.sleep(0.005)
        return sent

    def drain(self, name: str, layout: Any, start: Callable[[Any], subprocess.Popen[bytes]], expected: int,
              latency: tuple[int, int, int] | None = None) -> dict[str, Any]:
        """Throughput over a backlog (readings/s and messages/s), then optionally a half-rate latency run."""
        from streamedge.processes import stop_process

        proc = start(layout)
        try:
            results = self.bench.collect(layout.forecasts, expected, timeout=900, proc=proc)
            stamped = sorted((t, _samples(record)) for t, record in results)
            span = stamped[-1][0] - stamped[0][0] if len(stamped) > 1 else math.nan
            readings = sum(n for _, n in stamped[1:])
            out: dict[str, Any] = {
                "readings_per_s": round(readings / span, 1) if span > 0 else math.nan,
                "messages_per_s": round((len(stamped) - 1) / span, 1) if span > 0 else math.nan,
                "results": len(stamped), "readings": sum(n for _, n in stamped)}
            if latency is not None:
                keys, first_seq, size = latency
                rate = max(1.0, out["readings_per_s"] / 2)
                since = time.time()
                sent = self.paced(layout, keys, first_seq, size, rate, self.args.latency_seconds)
                late = self.bench.collect(layout.forecasts, -(-sent // size), since=since, proc=proc,
                                          timeout=self.args.latency_seconds * 4 + 30)
                lat = sorted((t - record["ts"]) * 1000 for t, record in late if record["ts"] >= since)
                out.update(latency_rate_per_s=round(rate, 1), latency_samples=len(lat),
                           p50_ms=round(lat[len(lat) // 2], 2) if lat else math.nan,
                           p99_ms=round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2) if lat else math.nan)
            print(f"{name:34s} {out}", flush=True)
            return out
        finally:
            stop_process(proc, timeout=30)

    def passthrough(self, layout: Any) -> subprocess.Popen[bytes]:
        cmd = [self.python, "-m", "streamedge.benchmarks.stream_passthrough", self.bench.kafka.bootstrap_servers,
               layout.prefix, f"{layout.prefix}app", self._batch, str(self.args.batch_wait),
               str(self.bench.work / "faust" / layout.prefix)]
        return subprocess.Popen(cmd, env=self.env, stdout=(self.logs / "passthrough.log").open("ab"),
                                stderr=subprocess.STDOUT)

    def aiokafka_loop(self, layout: Any) -> subprocess.Popen[bytes]:
        cmd = [self.python, "-m", "streamedge.benchmarks.stream_aiokafka", self.bench.kafka.bootstrap_servers,
               layout.prefix, f"{layout.prefix}loop", self._batch]
        return subprocess.Popen(cmd, env=self.env, stdout=(self.logs / "aiokafka-loop.log").open("ab"),
                                stderr=subprocess.STDOUT)

    def consumer_perf(self, layout: Any, messages: int, readings: int) -> dict[str, Any]:
        """The broker's own consumer performance tool on the readings topic."""
        import shutil

        from streamedge.kafka.broker import LocalBroker

        libs = LocalBroker(self.bench.work / "kafka-tools").fetch_jars()
        java = shutil.which("java") or "java"
        cmd = [java, "-Xmx512m", "-cp", f"{libs}/*", "org.apache.kafka.tools.ConsumerPerformance",
               "--bootstrap-server", self.bench.kafka.bootstrap_servers, "--topic", layout.readings,
               "--messages", str(messages), "--group", f"perf-{uuid.uuid4().hex[:8]}", "--timeout", "30000"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
        fields = [line for line in done.stdout.splitlines() if line and line[0].isdigit()][-1].split(", ")
        # start, end, MB, MB/s, messages, messages/s, rebalance ms, fetch ms, fetch MB/s, fetch messages/s
        per_s = float(fields[9])
        out = {"messages_per_s": round(per_s, 1), "readings_per_s": round(per_s * readings / messages, 1),
               "mb_per_s": round(float(fields[8]), 2), "messages": int(fields[4])}
        print(f"{'kafka consumer perf':34s} {out}", flush=True)
        return out


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median readings/s, plus every run's readings/s and messages/s in run order
    (``runs_readings_per_s``, ``runs_messages_per_s``: round i of one contender ran beside round i of the others)."""
    ordered = sorted(runs, key=lambda run: float(run["readings_per_s"]))
    return {**ordered[(len(ordered) - 1) // 2], "runs_readings_per_s": [run["readings_per_s"] for run in runs],
            "runs_messages_per_s": [run["messages_per_s"] for run in runs]}


def ratio_figures(name: str, top: list[float], bottom: list[float]) -> dict[str, Any]:
    """``{name: median of the per-round ratios top[i] / bottom[i], name_runs: each round's (sorted),
    name_spread: [min, max]}``: a ratio of alternated rounds, never a ratio of two medians."""
    per_round = sorted(round(a / b, 3) for a, b in zip(top, bottom, strict=True))
    middle = len(per_round) // 2
    median = per_round[middle] if len(per_round) % 2 else round((per_round[middle - 1] + per_round[middle]) / 2, 3)
    print(f"{name}: median {median} over {len(per_round)} alternated round(s), spread {per_round[0]}-{per_round[-1]}",
          flush=True)
    return {name: median, f"{name}_runs": per_round, f"{name}_spread": [per_round[0], per_round[-1]]}


def rate_axis(bench: Any, args: argparse.Namespace, pipeline: Callable[..., Any], python: str, env: dict[str, str],
              logs: Path) -> dict[str, Any]:
    """Run the block sizes and the three ceilings, each ``--repeats`` times in alternation (the
    median run is reported: a shared machine's load moves every figure); returns
    ``{"blocks": ..., "ceilings": ..., "rate_ratios": ...}``."""
    rate = _Rate(bench, args, pipeline, python, env, logs)
    keys = args.keys
    sizes = [int(b) for b in str(args.block_sizes).split(",") if b.strip()]
    stride = max(1, _WINDOW // 2)
    batch = int(str(args.batch_sizes).split(",")[-1])
    blocks: dict[str, Any] = {}
    ceilings: dict[str, Any] = {"faust_passthrough": {}, "aiokafka_loop": {}, "kafka_consumer_perf": {}}
    for size in sizes:
        total = args.messages if size == 1 else args.block_readings
        per_key = max(_WINDOW + size, total // keys // size * size)
        ceiling = size in (1, args.headline_block)
        runs: dict[str, list[dict[str, Any]]] = {"pipeline": [], **{name: [] for name in ceilings}}
        messages = 0
        for _ in range(args.repeats):
            layout = bench.layout()
            messages = rate.fill(layout, keys, per_key, size)
            expected = keys * (per_key - _WINDOW + 1) if size < _WINDOW else messages
            if ceiling:  # before the pipeline: the topic holds exactly the filled messages
                runs["kafka_consumer_perf"].append(rate.consumer_perf(layout, messages, keys * per_key))
            latency = (keys, per_key, size) if size == args.headline_block else None
            runs["pipeline"].append(rate.drain(f"pipeline block={size}", layout, pipeline(batch, stride=stride),
                                               expected, latency))
            if ceiling:
                for name, start in (("faust_passthrough", rate.passthrough), ("aiokafka_loop", rate.aiokafka_loop)):
                    layout = bench.layout()
                    rate.fill(layout, keys, per_key, size)
                    runs[name].append(rate.drain(f"{name} block={size}", layout, start, messages))
        blocks[str(size)] = {"block_size": size, "classify_stride": stride, "messages": messages,
                             **_median(runs["pipeline"])}
        for name in ceilings:
            if runs[name]:
                ceilings[name][str(size)] = _median(runs[name])
    for figures in ceilings.values():
        if "1" in figures:
            figures["messages_per_s"] = figures["1"]["messages_per_s"]
    return {"blocks": blocks, "ceilings": ceilings, "rate_ratios": _ratios(blocks, ceilings, str(args.headline_block))}


def _ratios(blocks: dict[str, Any], ceilings: dict[str, Any], headline: str) -> dict[str, Any]:
    """Each pipeline figure over each ceiling's, at block size 1 (messages/s) and at the headline size:
    per alternated round, with the median and spread (:func:`ratio_figures`)."""
    ratios: dict[str, Any] = {}
    for name, figures in ceilings.items():
        for size, unit in (("1", "messages_per_s"), (headline, "readings_per_s")):
            if size in blocks and size in figures and all(figures[size][f"runs_{unit}"]):
                ratios.update(ratio_figures(f"block_{size}_pipeline_over_{name}", blocks[size][f"runs_{unit}"],
                                            figures[size][f"runs_{unit}"]))
    return ratios
