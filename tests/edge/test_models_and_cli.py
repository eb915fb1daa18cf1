"""The local model folder, the edge CLI, import isolation and the systemd unit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streamedge.cli.main import main
from streamedge.contracts.promotion import PromotionLedger
from streamedge.contracts.signing import load_public_key
from streamedge.edge.agent import EdgeAgent
from streamedge.edge.errors import NoModelError
from streamedge.edge.models import ModelStore
from streamedge.edge.settings import EdgeSettings
from streamedge.edge.sources import IteratorSource
from streamedge.errors import SignatureError, VerificationError
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import make_version, other_key, sine_readings, write_jsonl
from tests.streamedge.updates import signed_update

REPO = Path(__file__).resolve().parents[2]


def test_store_activates_rolls_back_and_refuses_tampering(tmp_path: Path, tiny_models: TinyModels) -> None:
    store = ModelStore(tmp_path / "m", load_public_key(tiny_models.public_key))
    store.install(tiny_models.forecaster)
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key)
    store.install(v2)
    assert (store.active_version("tiny-forecaster"), store.previous_version("tiny-forecaster")) == (2, 1)
    assert store.rollback("tiny-forecaster") == 1
    assert (store.active_version("tiny-forecaster"), store.previous_version("tiny-forecaster")) == (1, 2)
    with pytest.raises(SignatureError):
        store.install(make_version(tiny_models.forecaster, tmp_path / "v3", 3, other_key(tmp_path)))
    model_file = store.path("tiny-forecaster", 2) / "model.tflite"
    model_file.write_bytes(model_file.read_bytes()[:-4] + b"evil")
    with pytest.raises(VerificationError, match="sha256"):
        store.activate("tiny-forecaster", 2)
    assert store.active_version("tiny-forecaster") == 1
    with pytest.raises(NoModelError, match="set model_name"):
        ModelStore(tmp_path / "empty", store.public_key).resolve_name("")


def test_agent_never_runs_a_tampered_active_model(tmp_path: Path, tiny_models: TinyModels) -> None:
    store = ModelStore(tmp_path / "m", load_public_key(tiny_models.public_key))
    store.install(tiny_models.forecaster)
    store.install(make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key))
    model_file = store.path("tiny-forecaster", 2) / "model.tflite"
    model_file.write_bytes(b"\0" + model_file.read_bytes()[1:])
    settings = EdgeSettings(model_dir=tmp_path / "m", buffer_path=tmp_path / "b.sqlite", metrics_port=0,
                            model_updates=False, public_key=tiny_models.public_key)
    agent = EdgeAgent(settings, KafkaSettings(), TopicLayout(), IteratorSource([]), store.public_key,
                      CollectorRegistry())
    assert agent.predictor is not None and agent.predictor.version == 1  # fell back to the verified previous
    assert store.active_version("tiny-forecaster") == 1
    agent.outbox.close()


def test_cli_install_status_rollback(tmp_path: Path, tiny_models: TinyModels,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--model-dir", str(tmp_path / "m"), "--public-key", str(tiny_models.public_key)]
    assert main(["edge", "install", str(tiny_models.forecaster), *common]) == 0
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key)
    assert main(["edge", "install", str(v2), *common]) == 0
    capsys.readouterr()
    assert main(["edge", "status", *common]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status == {"model": "tiny-forecaster", "active": 2, "previous": 1, "versions": [1, 2], "promotion": None}
    record = signed_update(v2, tiny_models.signing_key, 4).promotion
    assert record is not None
    PromotionLedger(tmp_path / "m", load_public_key(tiny_models.public_key)).accept(record)
    assert main(["edge", "status", *common]) == 0
    assert json.loads(capsys.readouterr().out)["promotion"] == {"sequence": 4, "version": 2, "action": "promote"}
    assert main(["edge", "rollback", *common]) == 0
    assert "v1 is active" in capsys.readouterr().out
    assert main(["edge", "status", "--public-key", str(tmp_path / "nokey.pem"), "--model-dir", "x"]) == 1
    assert "cannot load trusted public key" in capsys.readouterr().err
    assert main(["edge", "run", "--source", "file", *common]) == 1
    assert "source_path" in capsys.readouterr().err


_ISOLATION = """
import json, sys
from pathlib import Path
import streamedge.edge, streamedge.edge.agent, streamedge.edge.cli, streamedge.edge.sources
from prometheus_client import CollectorRegistry
from streamedge.edge.agent import EdgeAgent
from streamedge.edge.settings import EdgeSettings
from streamedge.edge.sources import IteratorSource, file_payloads
from streamedge.contracts.signing import load_public_key
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
models, key, readings, buffer, port = sys.argv[1:]
settings = EdgeSettings(model_dir=models, public_key=key, buffer_path=buffer, metrics_port=0,
                        model_updates=False, drain_timeout_s=0, kafka_timeout_s=0.5)
agent = EdgeAgent(settings, KafkaSettings(bootstrap_servers="127.0.0.1:" + port), TopicLayout(),
                  IteratorSource(file_payloads(Path(readings))), load_public_key(Path(key)), CollectorRegistry())
agent.run()
results = agent.metrics.registry.get_sample_value("streamedge_edge_results_total", {"task": "forecast"})
heavy = sorted(({m.split(".")[0] for m in sys.modules} | {".".join(m.split(".")[:2]) for m in sys.modules})
               & {"tensorflow", "keras", "faust", "aiokafka", "pandas", "streamedge.services", "streamedge.training",
                  "tf_keras"})
print(json.dumps({"results": results, "runtime": agent.predictor.runner.runtime, "heavy": heavy}))
"""


def test_edge_imports_no_tensorflow_faust_pandas(tmp_path: Path, tiny_models: TinyModels) -> None:
    models = tmp_path / "m"
    ModelStore(models, load_public_key(tiny_models.public_key)).install(tiny_models.forecaster)
    readings = write_jsonl(tmp_path / "r.jsonl", sine_readings(30))
    out = subprocess.run(
        [sys.executable, "-c", _ISOLATION, str(models), str(tiny_models.public_key), str(readings),
         str(tmp_path / "b.sqlite"), "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["results"] == 30 - 8 + 1  # the agent really ran the model
    assert report["runtime"] in ("ai_edge_litert", "tflite_runtime")


def test_metrics_endpoint_serves(tmp_path: Path, model_dir: Path, tiny_models: TinyModels) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    readings = write_jsonl(tmp_path / "r.jsonl", sine_readings(20))
    script = textwrap.dedent(f"""
        import contextlib, sys, threading, time, urllib.request
        from streamedge.cli.main import main
        def scrape():
            for _ in range(100):
                with contextlib.suppress(OSError):  # refused until the agent listens: poll again
                    body = urllib.request.urlopen("http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
                    if "streamedge_edge_results_total" in body:
                        print(body); return
                time.sleep(0.1)
        t = threading.Thread(target=scrape); t.start()
        code = main(["edge", "run", "--model-dir", {str(model_dir)!r}, "--public-key", {str(tiny_models.public_key)!r},
                     "--source", "file", "--source-path", {str(readings)!r}, "--rate", "10",
                     "--buffer-path", {str(tmp_path / "b.sqlite")!r}, "--metrics-port", "{port}",
                     "--model-updates", "false", "--drain-timeout-s", "0", "--kafka-timeout-s", "0.5",
                     "--bootstrap-servers", "127.0.0.1:1"])
        t.join()
        sys.exit(code)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "streamedge_edge_inference_latency_seconds_bucket" in out.stdout
    assert 'streamedge_edge_model_version{model="tiny-forecaster"} 1.0' in out.stdout
    logs = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert any(entry["message"].startswith("serving tiny-forecaster v1") for entry in logs)  # structured logs


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (REPO / "deploy" / "edge" / "streamedge-edge.service").read_text()
    assert "ExecStart=/opt/streamedge/venv/bin/streamedge edge run" in unit
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # no systemd here: check the structure by parsing
        import configparser

        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(unit)
        assert {"Unit", "Service", "Install"} <= set(parser.sections())
        return
    # The real ExecStart binary exists only on a device: point it at this venv's entry point to verify.
    local = tmp_path / "streamedge-edge.service"
    local.write_text(unit.replace("/opt/streamedge/venv/bin/streamedge", str(Path(sys.executable).with_name("streamedge"))))
    result = subprocess.run([analyze, "verify", "--man=no", str(local)], capture_output=True, text=True,
                            env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    assert result.returncode == 0, result.stderr
    assert "streamedge-edge.service" not in result.stderr, result.stderr


def test_python_m_streamedge_edge_reads_stdin(tmp_path: Path, model_dir: Path, tiny_models: TinyModels) -> None:
    lines = b"".join(p + b"\n" for p in sine_readings(12)) + b"not json\n"
    done = subprocess.run(
        [sys.executable, "-m", "streamedge.edge", "--source", "stdin", "--model-dir", str(model_dir), "--public-key",
         str(tiny_models.public_key), "--buffer-path", str(tmp_path / "b.sqlite"), "--metrics-port", "0",
         "--model-updates", "false", "--bootstrap-servers", "127.0.0.1:1", "--kafka-timeout-s", "0.5",
         "--drain-timeout-s", "0"],
        input=lines, cwd=REPO, capture_output=True, timeout=120,
    )
    assert done.returncode == 3  # source ended, broker unreachable: results kept on disk
    assert b'"reason": "bad_json"' in done.stderr
    status = subprocess.run([sys.executable, "-m", "streamedge.edge", "status", "--model-dir", str(model_dir), "--public-key",
                             str(tiny_models.public_key), "--buffer-path", str(tmp_path / "b.sqlite")],
                            cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(status.stdout)["buffer"]["next_seq"] == 12 - 8 + 1
