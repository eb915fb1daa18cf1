"""Installed like a library: every distribution of the workspace builds a wheel that installs only
under the ``streamedge`` namespace; the edge one alone makes a device; the whole set runs the CLI.

Builds a wheel of each folder (``core``, ``edge``, ``services``, ``training``, ``benchmarks``, ``demo``
and the root), then, each in a fresh virtualenv outside the repository, from a temporary folder whose
own ``edge/``, ``services/`` and ``training/`` folders must not matter:

- ``streamedge-edge`` alone: pip resolves no TensorFlow, Keras, Faust, aiokafka or pandas; the agent
  serves a signed model read from stdin; ``streamedge train`` says which distribution to install;
- the whole set (the root ``streamedge``): ``--help``, ``kafka up`` of a broker of its own, a short
  ``bench stream`` against it (whose figures are checked), and ``kafka down``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from streamedge.contracts.signing import load_public_key
from streamedge.edge.models import ModelStore
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import sine_readings
from tests.services.helpers import free_port

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("core", "edge", "services", "training", "benchmarks", "demo", ".")
# A device may never resolve these (the packaging enforces the rule; the import tests are the second guard).
NOT_ON_A_DEVICE = {"tensorflow", "tensorflow-cpu", "keras", "tf-keras", "faust-streaming", "aiokafka", "pandas"}


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float, expect: int = 0) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == expect, f"{cmd[:3]} exited {done.returncode}: {done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _only_streamedge(names: list[str]) -> list[str]:
    """The names that are neither under the namespace, a dist-info, nor the console script."""
    return [n for n in names
            if not (n.startswith(("streamedge/", "streamedge-", "streamedge_"))
                    or n in ("../../../bin/streamedge", "../../bin/streamedge"))]


def _build_wheels(tmp_path: Path, env: dict[str, str]) -> dict[str, Path]:
    """One wheel per workspace folder, built from a copy (stale build/ files must not leak in)."""
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", ".streamedge", "build", "dist", "runs",
                                                                "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"))
    dist = tmp_path / "dist"
    # The line README and docs/edge.md give, run in the checkout's root as written there.
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist),
          *(f"./{folder}" if folder != "." else "." for folder in FOLDERS)], source, env, 900)
    wheels = {w.name.split("-")[0].replace("_", "-"): w for w in dist.glob("*.whl")}
    assert sorted(wheels) == sorted(["streamedge", *(f"streamedge-{f}" for f in FOLDERS if f != ".")])
    return wheels


def _venv(path: Path, env: dict[str, str]) -> Path:
    _run([sys.executable, "-m", "venv", str(path)], path.parent, env, 300)
    return path / "bin"


def _installed(bin_dir: Path, env: dict[str, str]) -> set[str]:
    listed = json.loads(_run([str(bin_dir / "pip"), "list", "--format=json"], bin_dir, env, 120))
    return {entry["name"].lower().replace("_", "-") for entry in listed}


def _user_folder(tmp_path: Path) -> Path:
    """A user's folder with common package names in it, and no repository anywhere near."""
    work = tmp_path / "user"
    for shadow in ("edge", "services", "training", "benchmarks", "data"):
        (work / shadow).mkdir(parents=True)
        (work / shadow / "__init__.py").write_text("raise ImportError('shadowed')\n")
    return work


@pytest.mark.timeout(2400)
def test_every_wheel_installs_one_namespace_the_edge_one_alone_makes_a_device(tmp_path: Path,
                                                                              tiny_models: TinyModels) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    wheels = _build_wheels(tmp_path, env)
    contents = {name: zipfile.ZipFile(wheel).namelist() for name, wheel in wheels.items()}
    for name, names in contents.items():
        assert _only_streamedge(names) == [], name
        assert "streamedge/__init__.py" not in names, f"{name}: the namespace has no __init__ (PEP 420)"
    for name, expected in {"streamedge-core": {"streamedge/contracts/runner.py", "streamedge/kafka/pom.xml",
                                               "streamedge/cli/main.py", "streamedge/simulate/run.py",
                                               # `streamedge monitor config` writes these from the wheel.
                                               "streamedge/monitor/recipes/alerts.yml",
                                               "streamedge/monitor/recipes/dashboards/streamedge-stream.json",
                                               "streamedge/monitor/recipes/dashboards/streamedge-edge-fleet.json"},
                           "streamedge-edge": {"streamedge/edge/agent.py", "streamedge/edge/py.typed"},
                           "streamedge-services": {"streamedge/services/app.py"},
                           "streamedge-training": {"streamedge/training/cli.py", "streamedge/data/ucr/GunPoint_TRAIN.ts"},
                           "streamedge-benchmarks": {"streamedge/benchmarks/stream.py"},
                           "streamedge-demo": {"streamedge/demo/run.py"}}.items():
        assert expected <= set(contents[name]), name
    assert not any(n.startswith("streamedge/") for n in contents["streamedge"]), "the root distribution holds no code"

    work = _user_folder(tmp_path)
    links = ["--find-links", str(next(iter(wheels.values())).parent)]

    # A device: one pip install of the edge distribution.
    device = _venv(tmp_path / "device", env)
    _run([str(device / "pip"), "install", "--quiet", *links, "streamedge-edge"], tmp_path, env, 900)
    installed = _installed(device, env)
    assert {"streamedge-edge", "streamedge-core", "ai-edge-litert"} <= installed
    assert installed & NOT_ON_A_DEVICE == set(), sorted(installed)
    assert not installed & {"streamedge-services", "streamedge-training", "streamedge-benchmarks", "streamedge-demo"}
    record = next((tmp_path / "device" / "lib").glob("python*/site-packages/streamedge_edge-*.dist-info/RECORD"))
    assert _only_streamedge([line.split(",")[0] for line in record.read_text().splitlines()]) == []

    models = tmp_path / "device-models"
    ModelStore(models, load_public_key(tiny_models.public_key)).install(tiny_models.forecaster)
    device_env = {**env, "STREAMEDGE_HOME": str(tmp_path / "device-home"), "PATH": f"{device}:{env.get('PATH', '')}"}
    cli = str(device / "streamedge")
    agent = subprocess.run(
        [cli, "edge", "run", "--source", "stdin", "--model-dir", str(models), "--public-key", str(tiny_models.public_key),
         "--buffer-path", "buffer.sqlite", "--metrics-port", "0", "--model-updates", "false",
         "--bootstrap-servers", "127.0.0.1:1", "--kafka-timeout-s", "0.5", "--drain-timeout-s", "0"],
        input=b"".join(p + b"\n" for p in sine_readings(12)), cwd=work, env=device_env, capture_output=True, timeout=300)
    assert agent.returncode == 3, agent.stderr[-3000:]  # source ended, broker unreachable: results kept on disk
    status = _run([cli, "edge", "status", "--model-dir", str(models), "--public-key", str(tiny_models.public_key),
                   "--buffer-path", "buffer.sqlite"], work, device_env, 120)
    assert json.loads(status)["buffer"]["next_seq"] == 12 - 8 + 1  # the agent really served the model
    for absent in (["train", "forecaster"], ["train", "--help"], ["stream", "worker", "--help"], ["bench", "edge"]):
        refused = _run([cli, *absent], work, device_env, 120, expect=1)
        assert "distribution: pip install streamedge-" in refused, refused

    # The whole set: the root distribution pins every folder's.
    full = _venv(tmp_path / "full", env)
    _run([str(full / "pip"), "install", "--quiet", *links, "streamedge"], tmp_path, env, 1500)
    assert {f"streamedge-{f}" for f in FOLDERS if f != "."} <= _installed(full, env)
    cli = str(full / "streamedge")
    home = tmp_path / "home"
    user_env = {**env, "STREAMEDGE_HOME": str(home), "PATH": f"{full}:{env.get('PATH', '')}"}
    assert "bench" in _run([cli, "--help"], work, user_env, 120)

    port = free_port()
    broker = [f"--port={port}", f"--controller-port={free_port()}"]
    _run([cli, "kafka", "up", *broker], work, user_env, 600)
    try:
        assert (home / "kafka" / "broker.pid").is_file(), "the broker's state belongs under STREAMEDGE_HOME"
        _run([cli, "bench", "stream", "--bootstrap-servers", f"127.0.0.1:{port}", "--messages", "600", "--keys", "10",
              "--batch-sizes", "64", "--extra-strides", "", "--latency-seconds", "1", "--naive-messages", "5",
              "--active-keys", "50", "--out", "stream.json"], work, user_env, 900)
    finally:
        _run([cli, "kafka", "down", *broker], work, user_env, 120)
    figures = json.loads((work / "stream.json").read_text())
    for run in ("passthrough", "pipeline", "naive_keras"):
        assert {"throughput_per_s", "p50_ms", "p99_ms", "rss_mb"} <= figures[run].keys()
        assert figures[run]["throughput_per_s"] > 0 and figures[run]["rss_mb"] > 0
    assert figures["ratios"]["pipeline_over_passthrough"] > 0
    assert figures["ratios"]["pipeline_over_naive"] > 0
    assert figures["processing_guarantee"]["exactly_once"]["throughput_per_s"] > 0
    assert (home / "bench" / "stream").is_dir(), "bench scratch belongs under STREAMEDGE_HOME"
