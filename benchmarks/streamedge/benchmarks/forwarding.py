"""``streamedge bench forwarding``: the edge forwarder draining a backlog, one message per result vs result blocks.

For each ``--block-sizes`` value and ``--repeats`` times: a fresh SQLite outbox (fsync on, the
agent's default) receives ``--rows`` forecast results, encoded as the agent encodes them
(:func:`~streamedge.contracts.results.encode_result`, about 300 bytes each), in one transaction,
as a backlog after an outage; the agent's :class:`~streamedge.edge.forwarder.Forwarder` (same
producer: idempotent, acks=all) forwards it to the results topic of a real broker. **Wall** is
from waking the forwarder to the last row acknowledged and deleted; the producer is connected
beforehand by one warm-up row, so connecting is not counted. The topic is then read back and
decoded with :func:`~streamedge.contracts.results.decode_results`: messages, bytes, and a check
that the decoded rows equal the buffered rows one by one, in order. Figures: the median wall
of the repeats, rows/s and messages/s, and the speed-up over block size 1.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from streamedge.cli.common import add_kafka_options, kafka_settings
from streamedge.cli.options import option

__all__ = ["add_arguments", "forward_backlog", "run"]

_DEVICE = "bench-edge"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``streamedge bench forwarding``."""
    from streamedge.edge.forwarder import DEFAULT_BLOCK_BYTES

    add_kafka_options(parser)
    option(parser, "--out", type=Path, required=True, help="JSON file to write the figures to")
    option(parser, "--rows", type=int, default=20_000, help="outbox rows (results) forwarded per run")
    option(parser, "--block-sizes", default="1,16,64,256,1024", help="result block sizes (rows per message) to compare")
    option(parser, "--block-bytes", type=int, default=DEFAULT_BLOCK_BYTES, help="byte bound of one result block")
    option(parser, "--repeats", type=int, default=3, help="runs per block size (the median wall is reported)")
    option(parser, "--fsync", type=lambda v: v.lower() in ("1", "true", "yes"), default=True,
           help="outbox synchronous=FULL, as the agent's default --buffer-fsync true")


def _body(i: int) -> dict[str, Any]:
    """A forecast result of a one-feature stream, horizon 2, shaped as the agent commits it."""
    stream = f"s{i % 4}"
    level = round(10.0 + 3.0 * math.sin(2 * math.pi * i / 16), 6)
    return {"key": f"{_DEVICE}/{stream}", "source_seq": 1_000_000 + i, "ts": 1.7e9 + i * 1e-3,
            "model": "airline-lstm", "version": 3,
            "idempotency_key": f"forecast:airline-lstm:{_DEVICE}/{stream}:{1_000_000 + i}",
            "residual": [round(0.01 * (i % 7), 6)], "anomaly": False, "type": "forecast",
            "forecast": [[level], [round(level + 0.5, 6)]], "band": 36.5}


def _end_offsets(consumer: Any, topic: str) -> dict[Any, int]:
    from kafka import TopicPartition

    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    return dict(consumer.end_offsets(partitions))


def _read_back(consumer: Any, start: dict[Any, int], end: dict[Any, int]) -> tuple[list[bytes], int]:
    """The message values between the ``start`` and ``end`` offsets (partition by partition, in
    offset order) and their bytes in all."""
    consumer.assign(list(end))
    for tp, offset in start.items():
        consumer.seek(tp, offset)
    by_partition: dict[int, list[tuple[int, bytes]]] = {tp.partition: [] for tp in end}
    deadline = time.monotonic() + 60
    while any(consumer.position(tp) < end[tp] for tp in end):
        if time.monotonic() > deadline:
            raise TimeoutError("the results topic was not read back within 60 s")
        for tp, records in consumer.poll(timeout_ms=500).items():
            by_partition[tp.partition] += [(r.offset, r.value) for r in records if r.offset < end[tp]]
    values = [value for part in sorted(by_partition) for _, value in sorted(by_partition[part])]
    return values, sum(len(v) for v in values)


def forward_backlog(kafka_config: dict[str, Any], topic: str, rows: int, block_rows: int, block_bytes: int,
                    folder: Path, fsync: bool = True) -> tuple[float, list[bytes]]:
    """Forward a backlog of ``rows`` results from a fresh outbox in ``folder`` with ``block_rows`` per block.

    Returns:
        The wall seconds from waking the forwarder to the last row acknowledged and deleted,
        and the buffered rows' values in order.
    """
    from streamedge.contracts.results import encode_result
    from streamedge.edge.buffer import Outbox
    from streamedge.edge.forwarder import Forwarder

    outbox = Outbox(folder / f"outbox-{uuid.uuid4().hex[:8]}.sqlite", max_bytes=1 << 30, fsync=fsync)
    sent = [0]
    done = threading.Event()
    target = [1]

    def on_sent(count: int, _when: float) -> None:
        sent[0] += count
        if sent[0] >= target[0]:
            done.set()

    forwarder = Forwarder(outbox, kafka_config, timeout_s=10.0, block_rows=block_rows, block_bytes=block_bytes,
                          block_topics=(topic,), on_sent=on_sent)
    key = _DEVICE.encode()
    try:
        forwarder.start()
        # Warm-up: one row connects the producer and fetches the topic's metadata.
        outbox.append(lambda first: [(topic, key, encode_result(_DEVICE, first, _body(-1)))], 1)
        forwarder.wake()
        if not done.wait(60):
            raise TimeoutError(f"the broker did not acknowledge the warm-up row within 60 s ({kafka_config})")
        values: list[bytes] = []

        def build(first: int) -> list[tuple[str, bytes | None, bytes]]:
            values.extend(encode_result(_DEVICE, first + i, _body(i)) for i in range(rows))
            return [(topic, key, value) for value in values]

        done.clear()
        target[0] = 1 + rows
        outbox.append(build, rows)
        started = time.perf_counter()
        forwarder.wake()
        if not done.wait(300):
            raise TimeoutError(f"{rows - sent[0] + 1} rows still unacknowledged after 300 s")
        wall = time.perf_counter() - started
    finally:
        forwarder.stop()
        outbox.close()
    return wall, values


def run(args: argparse.Namespace) -> int:
    """Forward the backlog at every block size, read it back, write the JSON and print a table."""
    from kafka import KafkaConsumer

    from streamedge.contracts.results import decode_results
    from streamedge.kafka.topics import TopicLayout, create_topics

    kafka = kafka_settings(args)
    config = kafka.kafka_python_config()
    sizes = [int(part) for part in str(args.block_sizes).split(",") if part.strip()]
    layout = TopicLayout(prefix=f"benchfwd{uuid.uuid4().hex[:8]}.", partitions=3)
    create_topics(kafka, layout)
    topic = layout.edge_results
    consumer = KafkaConsumer(**config, group_id=None, enable_auto_commit=False)
    report: dict[str, Any] = {"rows": args.rows, "block_bytes": args.block_bytes, "fsync": args.fsync,
                              "repeats": args.repeats, "bootstrap": kafka.bootstrap_servers,
                              "record_crc32c": _crc32c_kind(), "blocks": {}}
    walls: dict[int, list[float]] = {size: [] for size in sizes}
    figures: dict[int, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-forwarding-") as tmp:
            for repeat in range(args.repeats):  # sizes interleaved: a busy spell on the machine hits all alike
                for size in sizes:
                    start = _end_offsets(consumer, topic)
                    wall, values = forward_backlog(config, topic, args.rows, size, args.block_bytes, Path(tmp),
                                                   args.fsync)
                    messages, wire = _read_back(consumer, start, _end_offsets(consumer, topic))
                    rows = [row for value in messages[1:] for row in decode_results(value)]  # [0]: the warm-up row
                    identical = rows == [json.loads(v) for v in values]
                    walls[size].append(wall)
                    print(f"block {size:>5}, run {repeat + 1}: {args.rows} rows in {len(messages) - 1} messages, "
                          f"{wall:.3f} s, rows identical and in order: {'yes' if identical else 'NO'}",
                          file=sys.stderr, flush=True)
                    if not identical:
                        raise AssertionError(f"block size {size}: the decoded rows differ from the buffered rows")
                    figures[size] = {"messages": len(messages) - 1, "bytes_on_wire": wire - len(messages[0]),
                                     "row_bytes_mean": sum(len(v) for v in values) / len(values)}
        for size in sizes:
            median = statistics.median(walls[size])
            report["blocks"][str(size)] = {**figures[size], "wall_s": walls[size], "median_wall_s": median,
                                           "rows_per_s": args.rows / median,
                                           "messages_per_s": figures[size]["messages"] / median}
    finally:
        consumer.close()
    base = report["blocks"].get("1")
    if base is not None:
        for entry in report["blocks"].values():
            entry["speedup_vs_1"] = base["median_wall_s"] / entry["median_wall_s"]
    report["table"] = _table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(report["table"])
    return 0


def _crc32c_kind() -> str:
    """``"c"`` when kafka-python checksums record batches with the ``crc32c`` package, else ``"python"``."""
    from kafka.record import util

    return "c" if getattr(util, "crc32c_c", None) is not None else "python"


def _table(report: dict[str, Any]) -> str:
    lines = [f"{report['rows']} outbox rows (results) forwarded, median of {report['repeats']} "
             f"(kafka-python record CRC32C in {report['record_crc32c']}):", "",
             "| block size | messages | MB on the wire | wall (s) | rows/s | messages/s | speed-up vs 1 |",
             "|---|---|---|---|---|---|---|"]
    for size, f in report["blocks"].items():
        speedup = f"{f['speedup_vs_1']:.1f}x" if "speedup_vs_1" in f else "-"
        lines.append(f"| {size} | {f['messages']} | {f['bytes_on_wire'] / 1e6:.2f} | {f['median_wall_s']:.3f} | "
                     f"{f['rows_per_s']:,.0f} | {f['messages_per_s']:,.0f} | {speedup} |")
    return "\n".join(lines)
