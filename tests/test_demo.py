"""The main job, end to end on the real broker: the demo with few epochs must hold all its checks."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from streamedge.demo import DemoConfig, run_demo
from streamedge.kafka.broker import LocalBroker
from streamedge.paths import data_dir


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_demo_end_to_end(kafka_broker: LocalBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = DemoConfig(workdir=tmp_path / "demo", data_dir=data_dir(), state_dir=kafka_broker.state_dir,
                        port=kafka_broker.port, classifier_epochs=5, forecaster_epochs=5, web_port=_free_port())
    code = run_demo(config)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "classifications: 1029/1029 series" in out
    assert "demo checks: all held" in out
