"""Issue 25: ``stream replay --continue`` resumes each device's numbering from the readings topic;
third-party log noise is filtered to what an operator must see.

- ``--continue`` for a device with nothing on the topic yet (the first file, or a new device in a
  follow-up file whose key lands on an empty partition) waits out a 30 s consumer timeout before
  replaying anything.
- Every ``--continue`` run prints kafka-python's "group_id is None: disabling auto-commit" WARNING.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from streamedge.cli.main import main
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout

_FILE = "timestamp,device_id,v\n2026-03-01T00:00:00Z,p1,1\n2026-03-01T00:00:01Z,p1,2\n"


def test_continue_on_a_device_with_no_history_does_not_stall(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tmp_path: Path) -> None:
    layout = make_topics(3)
    path = tmp_path / "pump.csv"
    path.write_text(_FILE)
    started = time.monotonic()
    assert main(["stream", "replay", "--bootstrap-servers", kafka_settings.bootstrap_servers,
                 "--topic-prefix", layout.prefix, "--file", str(path), "--continue"]) == 0
    took = time.monotonic() - started
    assert took < 20.0, f"--continue on an empty topic took {took:.1f} s"


def test_continue_prints_no_third_party_warning(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tmp_path: Path) -> None:
    layout = make_topics(1)
    path = tmp_path / "pump.csv"
    path.write_text(_FILE)
    common = [sys.executable, "-c", "import sys; from streamedge.cli.main import main; sys.exit(main(sys.argv[1:]))",
              "stream", "replay", "--bootstrap-servers", kafka_settings.bootstrap_servers,
              "--topic-prefix", layout.prefix, "--file", str(path)]
    assert subprocess.run(common, capture_output=True, timeout=120).returncode == 0  # history for p1
    run = subprocess.run([*common, "--continue"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "kafka.coordinator" not in run.stderr, run.stderr
