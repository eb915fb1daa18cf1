"""Installed like a library: the wheel holds only ``streamedge``, and its commands work from any folder.

Builds the wheel, installs it with the ``stream`` and ``train`` extras into a fresh virtualenv
outside the repository, and runs the CLI from a temporary folder whose own ``edge/``,
``services/`` and ``training/`` folders must not matter: ``--help``, ``kafka up`` of a broker of its
own, a short ``bench stream`` against it (whose figures are checked), and ``kafka down``.
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

from tests.services.helpers import free_port

REPO = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{cmd[:3]} exited {done.returncode}: {done.stderr[-3000:]}"
    return done.stdout


def _only_streamedge(names: list[str]) -> list[str]:
    """The names that are neither the package, its dist-info, nor the console script."""
    return [n for n in names
            if not (n.startswith(("streamedge/", "streamedge-")) or n in ("../../../bin/streamedge", "../../bin/streamedge"))]


@pytest.mark.timeout(1500)
def test_wheel_installs_one_namespace_and_runs_from_any_folder(tmp_path: Path) -> None:
    # Built from a copy: setuptools builds in the source tree, and stale build/ files must not leak in.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", ".streamedge", "build", "dist", "runs",
                                                                "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"))
    dist = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(source)],
         tmp_path, env, 600)
    (wheel,) = dist.glob("streamedge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert _only_streamedge(names) == []
    assert {"streamedge/edge/agent.py", "streamedge/services/app.py", "streamedge/training/cli.py",
            "streamedge/benchmarks/stream.py", "streamedge/data/ucr/GunPoint_TRAIN.ts",
            "streamedge/kafka/pom.xml"} <= set(names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env, 300)
    _run([str(venv / "bin" / "pip"), "install", "--quiet", f"{wheel}[stream,train]"], tmp_path, env, 1200)
    record = next((venv / "lib").glob("python*/site-packages/streamedge-*.dist-info/RECORD")).read_text()
    assert _only_streamedge([line.split(",")[0] for line in record.splitlines()]) == []

    # A user's folder with common package names in it, and no repository anywhere near.
    work = tmp_path / "user"
    for shadow in ("edge", "services", "training", "benchmarks", "data"):
        (work / shadow).mkdir(parents=True)
        (work / shadow / "__init__.py").write_text("raise ImportError('shadowed')\n")
    cli = str(venv / "bin" / "streamedge")
    home = tmp_path / "home"
    user_env = {**env, "STREAMEDGE_HOME": str(home), "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"}
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
