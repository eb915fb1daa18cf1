"""Helpers for the stream processor tests: readings, installed model folders, a worker process."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.processes import stop_process

REPO = Path(__file__).resolve().parents[2]


def sine(seq: int) -> float:
    """The tiny models' training signal (period 16 around 10), without noise."""
    return 10.0 + 3.0 * math.sin(2 * math.pi * seq / 16)


def reading(device: str, seq: int, value: float | list[float] | None = None, stream: str = "s",
            ts: float | None = None) -> bytes:
    """One wire-format reading; ``ts`` defaults to ``1.7e9 + seq``."""
    body = {"device_id": device, "stream": stream, "ts": 1.7e9 + seq if ts is None else ts,
            "value": sine(seq) if value is None else value, "seq": seq}
    return json.dumps(body).encode()


def key_of(payload: bytes | None) -> bytes:
    """The Kafka key a producer gives ``payload``: ``<device_id>/<stream>`` when it names them, else ``k``."""
    try:
        body = json.loads(payload or b"")
        return f"{body['device_id']}/{body['stream']}".encode()
    except (ValueError, TypeError, KeyError, UnicodeEncodeError):
        return b"k"


def install(model_dir: Path, source: Path, name: str, version: int = 1) -> Path:
    """Copy a signed model folder to ``model_dir/<name>/<version>/``."""
    target = model_dir / name / str(version)
    shutil.copytree(source, target)
    return target


def committed_offsets(kafka: KafkaSettings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of ``topic`` (absent: nothing committed)."""
    from kafka import KafkaConsumer, TopicPartition

    reader = KafkaConsumer(**kafka.kafka_python_config(), group_id=group, enable_auto_commit=False)
    try:
        found = {p: reader.committed(TopicPartition(topic, p)) for p in reader.partitions_for_topic(topic) or ()}
    finally:
        reader.close()
    return {partition: offset for partition, offset in found.items() if offset is not None}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class WorkerProcess:
    """``streamedge stream worker`` as a child process, logging to a file."""

    def __init__(self, kafka: KafkaSettings, layout: TopicLayout, model_dir: Path, public_key: Path,
                 routes: dict[str, list[str]], log: Path, app_id: str, **settings: Any) -> None:
        self.port = free_port()
        self.log = log
        env = dict(os.environ)
        env.update({
            "STREAMEDGE_STREAM_APP_ID": app_id,
            "STREAMEDGE_STREAM_DATA_DIR": str(log.parent / "faust-data"),
            "STREAMEDGE_STREAM_COMMIT_INTERVAL_S": "0.5",
        })
        env.update({f"STREAMEDGE_STREAM_{k.upper()}": str(v) for k, v in settings.items()})
        self.cmd = [sys.executable, "-m", "streamedge.cli.main", "stream", "worker",
                    "--bootstrap-servers", kafka.bootstrap_servers, "--topic-prefix", layout.prefix,
                    "--model-dir", str(model_dir), "--public-key", str(public_key),
                    "--routes", json.dumps(routes), "--web-port", str(self.port)]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
        return self

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
            return text

    def sample(self, name: str, labels: str = "") -> float | None:
        """One sample value from /metrics, or None when the series is absent."""
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in self.metrics().splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return None

    def metric(self, name: str, labels: str = "") -> float:
        """One sample value from /metrics.

        Raises:
            LookupError: the series is absent (a typo or a series never created is not a zero).
        """
        value = self.sample(name, labels)
        if value is None:
            raise LookupError(f"no series {name}{{{labels}}} on /metrics of the worker on port {self.port}")
        return value

    def health(self) -> tuple[int, dict[str, Any]]:
        """``(status, body)`` of the worker's ``/health``."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                self.metrics()
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"worker not ready: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)


def produce(kafka: KafkaSettings, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Send ``(key, value)`` pairs and wait for every acknowledgement; returns the count."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**kafka.kafka_python_config(), linger_ms=5)
    count = 0
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value)
            count += 1
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=30)
    return count


def consume_until(kafka: KafkaSettings, topics: list[str], done: Callable[[list[Any]], bool],
                  timeout: float = 90.0) -> list[Any]:
    """Read ``topics`` from the beginning until ``done(messages)`` or the timeout."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(*topics, **kafka.kafka_python_config(), group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False)
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done(found):
            for records in consumer.poll(timeout_ms=500).values():
                found.extend(records)
        return found
    finally:
        consumer.close()
