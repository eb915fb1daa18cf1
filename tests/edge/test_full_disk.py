"""A real full disk (issue 23, item 7): the agent's buffer on a small tmpfs, filled by its own results
while the broker is away, then freed by forwarding once the broker is back.

The agent is a real process, started by ``unshare`` in a mount namespace of its own (with a user
namespace when the test is not root) where a 2 MiB tmpfs is mounted over its buffer folder; the
mount goes when the process ends, and the test sees the disk as ``/proc/<pid>/root/<folder>``.
The broker is the real test broker behind a relay on the agent's bootstrap port: no relay, no
broker. It shows: intake pauses on the full disk (``intake_paused`` 1, write errors counted),
the forwarder deletes what the broker took though the disk is full (the buffer's reserve), intake
resumes, every reading fed is scored, each result arrives once, and the forwarder thread never
restarted.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import consume_results
from tests.services.helpers import free_port

_DISK = "2m"


class _Relay:
    """A TCP relay from ``127.0.0.1:port`` to the broker; the agent's broker is away until it starts."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self._server: socket.socket | None = None

    def start(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = server.accept()
                upstream = socket.create_connection(self.target)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The agent's metrics; none while its endpoint is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _wait(condition: Callable[[], bool], timeout_s: float, what: str, agent: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert agent.poll() is None, f"the agent exited {agent.returncode} while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _namespaced(mount_point: Path) -> list[str]:
    """A command prefix: a mount namespace of its own with a tmpfs over ``mount_point``, then exec."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *user, "--mount", "sh", "-c", f'mount -t tmpfs -o size={_DISK} tmpfs "$0" && exec "$@"',
            str(mount_point)]


def _reading(n: int) -> bytes:
    """Reading ``n`` of one stream: the tiny models' sine, ``seq`` n."""
    value = 10.0 + 3.0 * math.sin(2 * math.pi * n / 16)
    return json.dumps({"device_id": "disk", "stream": "s", "ts": 1.7e9 + n, "value": value, "seq": n}).encode() + b"\n"


class _Feeder:
    """Writes readings to the agent's stdin until stopped (blocking while the agent takes none)."""

    def __init__(self, stdin: object) -> None:
        self.stdin = stdin
        self.fed = 0
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pipe = self.stdin
        assert isinstance(pipe, io.BufferedWriter)
        with contextlib.suppress(BrokenPipeError):
            while not self.stop.is_set():
                pipe.write(b"".join(_reading(n) for n in range(self.fed, self.fed + 64)))
                pipe.flush()
                self.fed += 64

    def finish(self) -> int:
        self.stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the feeder is blocked: the agent takes no readings"
        return self.fed


def test_real_full_disk_pauses_intake_then_resumes_without_resending(
        tmp_path: Path, tiny_models: TinyModels, model_dir: Path, kafka_settings: KafkaSettings) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    layout = TopicLayout(prefix=f"disk{os.getpid()}{time.monotonic_ns() % 10**6}.")
    relay = _Relay(free_port(), ("127.0.0.1", int(kafka_settings.bootstrap_servers.rsplit(":", 1)[1])))
    metrics_port = free_port()
    agent = subprocess.Popen(
        [*_namespaced(disk), sys.executable, "-m", "streamedge.cli.main", "edge", "run", "--device-id", "disk-1",
         "--model-dir", str(model_dir), "--public-key", str(tiny_models.public_key),
         "--buffer-path", str(disk / "buffer.sqlite"), "--buffer-fsync", "false", "--source", "stdin",
         "--metrics-port", str(metrics_port), "--model-updates", "false", "--heartbeat-interval-s", "3600",
         "--log-format", "text", "--bootstrap-servers", f"127.0.0.1:{relay.port}", "--topic-prefix", layout.prefix,
         "--kafka-timeout-s", "2", "--drain-timeout-s", "60"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=(tmp_path / "agent.log").open("wb"),
        env={**os.environ, "STREAMEDGE_HOME": str(tmp_path / "home")})
    seen = Path(f"/proc/{agent.pid}/root{disk}")  # the agent's own view of its tmpfs
    feeder: _Feeder | None = None
    try:
        _wait(lambda: (seen / "buffer.sqlite.reserve").exists(), 60, "the buffer on the tmpfs", agent)
        feeder = _Feeder(agent.stdin)
        metric = lambda name, **labels: _metrics(metrics_port).get((name, tuple(sorted(labels.items()))), 0.0)  # noqa: E731
        _wait(lambda: metric("streamedge_edge_intake_paused") == 1, 120, "intake to pause on the full disk", agent)
        free = os.statvfs(seen)
        assert free.f_bavail * free.f_frsize < 64 * 1024, "the disk is not full"
        assert metric("streamedge_edge_buffer_write_errors_total") >= 1
        paused_at = feeder.fed
        relay.start()  # the broker is back: forwarding frees the buffer's pages
        _wait(lambda: metric("streamedge_edge_intake_paused") == 0 and feeder is not None
              and feeder.fed > paused_at + 512, 120, "intake to resume", agent)
        fed = feeder.finish()
        restarts = metric("streamedge_edge_thread_restarts_total", thread="edge-forwarder")
        assert agent.stdin is not None
        agent.stdin.close()
        assert agent.wait(timeout=120) == 0, (tmp_path / "agent.log").read_text()[-3000:]
    finally:
        if feeder is not None:
            feeder.stop.set()
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        relay.close()
    assert restarts == 0  # the forwarder never crash-looped
    rows = consume_results(kafka_settings, layout.edge_results, expect=fed - 16, timeout_s=60)
    keys = Counter((row["device_id"], row["epoch"], row["seq"]) for row in rows)
    assert max(keys.values()) == 1, "a result was delivered twice"
    scored = sorted(int(row["source_seq"]) for row in rows)
    assert scored == list(range(scored[0], fed)) and scored[0] < 16  # every reading after warm-up, once
