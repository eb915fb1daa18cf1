"""Issue 23 item 13 / docs *Observability*: "A metrics port that cannot be bound (taken, an unknown host)
is logged as an ERROR and the agent scores without the endpoint: monitoring never stops scoring".
A metrics host whose name cannot even be looked up (a DNS label over 63 characters) stops the agent."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from streamedge.cli.main import main
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import sine_readings


def test_an_unresolvable_metrics_host_does_not_stop_scoring(tmp_path: Path, tiny_models: TinyModels,
                                                            model_dir: Path) -> None:
    readings = tmp_path / "r.jsonl"
    readings.write_bytes(b"".join(p + b"\n" for p in sine_readings(20)))
    try:
        code = main(["edge", "run", "--source", "file", "--source-path", str(readings), "--model-dir",
                     str(model_dir), "--public-key", str(tiny_models.public_key), "--buffer-path",
                     str(tmp_path / "b.sqlite"), "--metrics-port", "39631", "--metrics-host", "m" * 64 + ".local",
                     "--model-updates", "false", "--kafka-timeout-s", "0.5", "--drain-timeout-s", "0",
                     "--bootstrap-servers", "127.0.0.1:9", "--log-format", "text"])
    except Exception as exc:
        raise AssertionError(f"the agent stopped: {type(exc).__name__}: {exc}") from exc
    assert code == 3, f"exit {code}"
    db = sqlite3.connect(tmp_path / "b.sqlite")
    try:
        assert db.execute("SELECT COUNT(*) FROM outbox WHERE topic LIKE '%edge-results'").fetchone()[0] > 0
    finally:
        db.close()
