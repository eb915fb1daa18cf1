"""The demo on the real broker: interrupted partway it leaves no process behind; run again, quick, it holds its checks."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamedge.demo import DemoConfig, run_demo
from streamedge.kafka.broker import LocalBroker
from streamedge.paths import data_dir

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _processes_naming(text: str) -> list[str]:
    """Command lines of the running processes that mention ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def _interrupt_partway(workdir: Path, broker: LocalBroker, log: Path) -> int:
    """Start ``streamedge demo --quick``, SIGINT it once its whole stack runs; its exit status."""
    args = [sys.executable, "-m", "streamedge.cli.main", "demo", "--quick", "--workdir", str(workdir),
            "--state-dir", str(broker.state_dir), "--port", str(broker.port), "--web-port", str(_free_port()),
            "--edge-metrics-port", str(_free_port())]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 300
        while "-- phase: steady" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert (workdir / "pids").read_text().count("\n") == 3  # worker, retrainer and edge agent run
        proc.send_signal(signal.SIGINT)
        return proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_demo_interrupted_then_quick_run_holds_every_check(
        kafka_broker: LocalBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workdir = tmp_path / "demo"
    log = tmp_path / "interrupted.log"
    assert _interrupt_partway(workdir, kafka_broker, log) == 130, log.read_text()[-3000:]
    assert "every process the demo started was stopped" in log.read_text()
    assert _processes_naming(str(workdir)) == []
    assert (workdir / "pids").read_text() == ""

    config = DemoConfig(workdir=workdir, data_dir=data_dir(), state_dir=kafka_broker.state_dir, port=kafka_broker.port,
                        web_port=_free_port(), edge_metrics_port=_free_port(), quick=True)
    code = run_demo(config)
    out = capsys.readouterr().out
    summary = out[out.index("== streamedge demo summary =="):]
    assert code == 0, summary
    assert "demo checks: all held" in summary
    assert re.search(r"^in all: lost: 0, duplicates: 0$", summary, re.M), summary
    for component in ("classifications", "forecasts", "dead letters", "edge results"):
        assert re.search(rf"^{component}: expected (\d+), received \1, lost: 0, duplicates: 0$", summary, re.M), summary
    assert "loop closed: yes" in summary
    assert "retrain outcome: promoted" in summary and "worker serves v2 without restart" in summary
    assert "delivered once in order: yes" in summary
    report = Path(re.findall(r"^report: (.+)$", summary, re.M)[0])
    assert report.is_file() and report.read_text().count("<img src='data:image/png;base64,") == 4
    assert _processes_naming(str(workdir)) == []
