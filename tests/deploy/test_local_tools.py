"""deploy/local/install-system-deps.sh and the compose sensor simulator (deploy/compose/sensors.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from streamedge.contracts.reading import Reading, parse_reading
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from tests.deploy.helpers import DEPLOY, REPO
from tests.services.helpers import consume_until

_SCRIPT = DEPLOY / "local" / "install-system-deps.sh"
# What the script itself runs besides the tools it checks for.
_BASICS = ("bash", "sed", "head", "cut", "id", "printf", "env")


def _fake_path(tmp_path: Path, tools: dict[str, str | None]) -> str:
    """A PATH folder with the basic utilities plus ``tools`` (name -> real binary, or script text)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in _BASICS:
        real = shutil.which(name)
        assert real, name
        (folder / name).symlink_to(real)
    for name, body in tools.items():
        if body is None:
            real = shutil.which(name)
            assert real, name
            (folder / name).symlink_to(real)
        else:
            (folder / name).write_text(body)
            (folder / name).chmod(0o755)
    return str(folder)


def _run(path: str | None = None, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(["bash", str(_SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def test_install_script_is_quick_and_silent_when_everything_is_present() -> None:
    first, second = _run(), _run()
    assert first.returncode == 0 == second.returncode, first.stderr
    assert re.match(r"system deps ok: prometheus, version \S+, java (\d+), Apache Maven", first.stdout), first.stdout
    assert int(re.findall(r"java (\d+)", first.stdout)[0]) >= 17
    assert first.stdout == second.stdout  # idempotent: nothing installed, same report


def test_install_script_prints_the_exact_command_for_what_is_missing(tmp_path: Path) -> None:
    java8 = '#!/bin/sh\necho \'openjdk version "1.8.0_392"\' >&2\n'
    path = _fake_path(tmp_path, {"java": java8, "mvn": None})
    out = _run(path, "--check")
    assert out.returncode == 1
    assert "missing: prometheus/promtool not found" in out.stderr
    assert "java 8 found, need 17+" in out.stderr
    assert ("sudo sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            "--no-install-recommends prometheus openjdk-17-jre-headless'") in out.stderr
    assert "installing" not in out.stdout  # --check never installs, even as root


def test_sensor_simulator_produces_keyed_readings_and_some_garbage(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tmp_path: Path) -> None:
    layout = make_topics(3)
    alive = tmp_path / "alive"
    env = {**os.environ, "STREAMEDGE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers}
    out = subprocess.run([sys.executable, str(DEPLOY / "compose" / "sensors.py"), "--topic", layout.readings,
                          "--devices", "4", "--rate", "0", "--total", "200", "--garbage-every", "50",
                          "--alive-file", str(alive)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "stopped after 200 readings" in out.stderr and alive.exists()
    messages = consume_until(kafka_settings, [layout.readings], lambda ms: len(ms) >= 204, timeout=60)
    parsed = [(m.key, parse_reading(m.value)) for m in messages]
    readings = [(key, r) for key, r in parsed if isinstance(r, Reading)]
    assert len(readings) == 200 and len(parsed) - len(readings) == 4
    assert all(key == r.key.encode() for key, r in readings)
    per_key: dict[str, list[int]] = {r.key: [] for _, r in readings}
    for _, r in readings:
        per_key[r.key].append(r.seq)
    assert sorted(per_key) == [f"sim-{i}/signal" for i in range(4)]
    assert all(sorted(seqs) == list(range(50)) for seqs in per_key.values())
    assert {r.stream for _, r in readings} == {"signal"} and {r.device_id for _, r in readings} == {
        f"sim-{i}" for i in range(4)}
