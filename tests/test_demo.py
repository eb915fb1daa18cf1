"""The demo on the real broker: interrupted partway it leaves no process behind; run again, quick, it holds its checks."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streamedge.demo import DemoConfig, run_demo
from streamedge.demo.collect import Arrival
from streamedge.demo.ledger import edge_order, one_step_errors, tally
from streamedge.demo.link import LinkProxy
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
    """Start ``streamedge demo --quick``, SIGINT it once its whole stack was started; its exit status."""
    args = [sys.executable, "-m", "streamedge.cli.main", "demo", "--quick", "--workdir", str(workdir),
            "--state-dir", str(broker.state_dir), "--port", str(broker.port), "--web-port", str(_free_port()),
            "--edge-metrics-port", str(_free_port())]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        # a hang guard only: on a loaded machine the training before the stack starts can take minutes
        deadline = time.monotonic() + 1200
        pids = workdir / "pids"
        while not (pids.is_file() and pids.read_text().count("\n") == 3) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert pids.is_file() and pids.read_text().count("\n") == 3, log.read_text()[-3000:]  # worker, retrainer, agent
        proc.send_signal(signal.SIGINT)
        return proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()


# Two runs that each train: an interrupted one and a whole quick one (about 3 minutes each here).
@pytest.mark.timeout(2400)
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
    for component in ("classifications", "forecasts", "dead letters"):
        assert re.search(rf"^{component}: expected (\d+), received \1, lost: 0, duplicates: 0$", summary, re.M), summary
    # The forwarder delivers at least once (a pass whose acknowledgement timed out is resent): the
    # reader drops those by sequence number, and every result is there once, in order. Those resends
    # are the only duplicates the summary may count (README, "Nothing lost, said plainly").
    edge = re.search(r"^edge results: expected (\d+), received \1, lost: 0, duplicates: (\d+)$", summary, re.M)
    assert edge, summary
    assert edge and int(edge[1]) > 0, summary
    assert re.search(rf"^in all: lost: 0, duplicates: {edge[2]}$", summary, re.M), summary
    assert "loop closed: yes" in summary
    assert "retrain outcome: promoted" in summary and "worker serves v2 without restart" in summary
    assert "delivered once in order: yes" in summary
    report = Path(re.findall(r"^report: (.+)$", summary, re.M)[0])
    assert report.is_file() and report.read_text().count("<img src='data:image/png;base64,") == 4
    assert _processes_naming(str(workdir)) == []


def _echo_server() -> socket.socket:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(1024), b"")],
                             daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return server


def _round_trip(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"ping")
        try:
            return sock.recv(16)
        except ConnectionResetError:
            return b""


def test_link_proxy_pipes_cuts_and_restores() -> None:
    server = _echo_server()
    proxy = LinkProxy(server.getsockname()[:2])
    try:
        held = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        held.sendall(b"hello")
        assert held.recv(16) == b"hello"
        proxy.cut()
        assert not proxy.up
        assert held.recv(16) == b""  # the open connection is dropped
        assert _round_trip(proxy.port) == b""  # and a new one is closed at once
        assert proxy.refused == 1
        proxy.restore()
        assert _round_trip(proxy.port) == b"ping"
        assert proxy.piped == 2
        held.close()
    finally:
        proxy.close()
        server.close()


def _arrival(offset: int, body: dict[str, object], topic: str = "t") -> Arrival:
    return Arrival(topic, 0, offset, None, None, body, float(offset), 0.0)


def test_ledger_counts_lost_duplicates_and_edge_order() -> None:
    arrivals = [_arrival(0, {"idempotency_key": "a"}), _arrival(1, {"idempotency_key": "b"}),
                _arrival(2, {"idempotency_key": "a"}), _arrival(3, {"idempotency_key": "z"})]
    counted = tally("forecasts", arrivals, {"a", "b", "c"})
    assert (counted.expected, counted.unique, counted.lost, counted.duplicates, counted.extra) == (3, 2, 1, 1, 1)
    assert counted.line() == "forecasts: expected 3, received 2, lost: 1, duplicates: 1, unexpected 1"
    assert tally("dead letters", arrivals[:2], 2).lost == 0
    assert edge_order([_arrival(i, {"seq": 5 + i}) for i in range(4)]) == (4, 0, True)
    assert edge_order([_arrival(0, {"seq": 1}), _arrival(1, {"seq": 3}), _arrival(2, {"seq": 2})]) == (3, 0, False)
    resent = [_arrival(i, {"seq": seq}) for i, seq in enumerate([1, 2, 1, 2, 3])]
    assert edge_order(resent) == (3, 2, True)
    assert edge_order([_arrival(0, {"seq": 1}), _arrival(1, {"seq": 3}), _arrival(2, {"seq": 1})]) == (2, 1, False)
    errors = one_step_errors([_arrival(0, {"key": "k", "seq": 3, "model": {"version": 2}, "forecast": [[10.0]]})],
                             {("k", 4): 12.5})
    assert errors == [("k", 3, 2, 10.0, 12.5)]
