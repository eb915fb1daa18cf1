"""docs/quickstart.md, executed as written: its ``sh`` blocks, in order, in one shell, on the test broker.

The environment stands in for what a reader sets up once: the broker address, a fresh topic
prefix and state folder, two training epochs, free ports. A block that fails fails the test with
the shell's output.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from streamedge.kafka.settings import KafkaSettings
from tests.services.helpers import free_port

DOC = Path(__file__).resolve().parent.parent / "docs" / "quickstart.md"


def _shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_the_quickstart_runs_as_written(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    blocks = _shell_blocks(DOC.read_text())
    assert len(blocks) >= 6
    tag = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "STREAMEDGE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "STREAMEDGE_TOPIC_PREFIX": f"qs{tag}.",
        "STREAMEDGE_HOME": str(tmp_path / "home"),
        "STREAMEDGE_TRAIN_EPOCHS": "2",
        "STREAMEDGE_STREAM_APP_ID": f"quickstart-{tag}",
        "STREAMEDGE_STREAM_WEB_PORT": str(free_port()),
        "STREAMEDGE_EDGE_METRICS_PORT": "0",
        "STREAMEDGE_EDGE_LOG_FORMAT": "text",
    }
    process = subprocess.Popen(["bash", "-e", "-c", "\n".join(blocks)], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = process.communicate(timeout=900)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 0, out[-6000:]
    assert "pumps.csv: time column 'timestamp' (ISO 8601, detected); device column 'device_id'; " \
           "features ['vibration', 'temperature']" in out
    forecasts = [line for line in out.splitlines() if line.startswith("forecast_block  pump-")]
    assert len(forecasts) == 3, out[-6000:]
    assert '"device_id":"pump-2"' in out
    assert "batch_size = 64  # flag" in out
    # Three machine cycles, three classifications: one per cycle, at each cycle's last reading.
    (cycles,) = [line for line in out.splitlines() if line.startswith("classification_block  press-1/press")]
    assert '"sample_indexes":[24,49,74],"labels":["ok","worn","ok"]' in cycles, cycles
    # Training prints its results, not TensorFlow's internal log lines.
    assert "NodeDef mentions attribute" not in out and "Assets written to" not in out
    edge = [line for line in out.splitlines() if (line.startswith("forecast") and "gateway-1" in line)
            or line.startswith("edge-results")]
    assert edge, out[-6000:]
    # The monitoring recipe was written and the fleet exporter saw the device's heartbeats.
    assert "agents: gateway-1=127.0.0.1:9108" in out
    assert (tmp_path / "monitor" / "prometheus.yml").is_file()
    assert sorted(p.name for p in (tmp_path / "monitor" / "grafana" / "dashboards").iterdir()) == \
        ["streamedge-edge-fleet.json", "streamedge-stream.json"]
    assert "streamedge_fleet_devices 1.0" in out
    assert 'streamedge_fleet_model_version{device="gateway-1",model="pumps-lstm"} 1.0' in out
