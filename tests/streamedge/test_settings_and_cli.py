"""Kafka security settings, the CLI's env/config precedence, one-line errors, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamedge.cli.main import main
from streamedge.errors import ConfigError
from streamedge.kafka.settings import KafkaSettings


def test_sasl_scram_config_for_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMEDGE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMEDGE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("STREAMEDGE_KAFKA_SASL_USERNAME", "worker")
    monkeypatch.setenv("STREAMEDGE_KAFKA_SASL_PASSWORD", "hunter2-secret")
    settings = KafkaSettings(bootstrap_servers="k1:9093,k2:9093")
    assert "hunter2-secret" not in repr(settings) and "hunter2-secret" not in str(settings.model_dump())
    python_config = settings.kafka_python_config()
    assert python_config["sasl_plain_password"] == "hunter2-secret"
    assert python_config["bootstrap_servers"] == ["k1:9093", "k2:9093"]
    assert python_config["ssl_context"] is not None
    aio_config = settings.aiokafka_config()
    assert (aio_config["security_protocol"], aio_config["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
    credentials = settings.faust_credentials()
    assert credentials.mechanism.value == "SCRAM-SHA-512" and credentials.protocol.value == "SASL_SSL"
    assert settings.faust_broker_url() == "kafka://k1:9093;k2:9093"


def test_sasl_without_password_is_refused() -> None:
    with pytest.raises(ValueError, match="needs sasl_mechanism"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u")
    assert KafkaSettings().faust_credentials() is None


def test_help_lists_env_vars_but_never_secrets(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMEDGE_KAFKA_SASL_PASSWORD", "hunter2-secret")
    with pytest.raises(SystemExit):
        main(["kafka", "topics", "--help"])
    text = capsys.readouterr().out
    assert "STREAMEDGE_KAFKA_BOOTSTRAP_SERVERS" in text and "hunter2-secret" not in text


def test_flag_beats_env_beats_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "streamedge.toml"
    config.write_text('state_dir = "from-config"\nport = 39990\n')
    monkeypatch.setenv("STREAMEDGE_CONFIG", str(config))
    monkeypatch.chdir(tmp_path)
    assert main(["kafka", "status"]) == 1
    assert "not running" in capsys.readouterr().out
    assert (tmp_path / "from-config").exists() is False
    monkeypatch.setenv("STREAMEDGE_STATE_DIR", "from-env")
    args_seen: list[object] = []
    from streamedge.cli import kafka_cmd

    monkeypatch.setattr(kafka_cmd, "_status", lambda args: args_seen.append((args.state_dir, args.port)) or 0)
    assert main(["kafka", "status"]) == 0
    assert main(["kafka", "status", "--state-dir", "from-flag", "--port", "1"]) == 0
    assert args_seen == [(Path("from-env"), 39990), (Path("from-flag"), 1)]


def test_errors_are_one_line_not_tracebacks(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    result = subprocess.run([sys.executable, "-m", "streamedge.cli.main", "--config", str(bad), "kafka", "status"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("streamedge: error: config file") and "Traceback" not in result.stderr
    with pytest.raises(ConfigError, match="cannot read config file"):
        from streamedge.cli.options import load_config

        load_config(tmp_path / "missing.toml")


def test_parser_imports_no_heavy_module() -> None:
    code = ("import sys; from streamedge.cli.main import build_parser; build_parser(); "
            "heavy = [m for m in ('tensorflow', 'faust', 'keras', 'ai_edge_litert', 'tflite_runtime', 'kafka') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_command_whose_area_is_not_installed_says_what_to_install(capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An edge-only install keeps ``streamedge train``: any use, ``--help`` and unknown flags too, names the distribution."""
    from streamedge.cli import main as cli_main

    monkeypatch.setitem(cli_main._AREAS, "streamedge.nowhere.cli", ("streamedge-nowhere", "nowhere"))
    for argv in (["nowhere"], ["nowhere", "--help"], ["nowhere", "run", "--data", "x.csv"]):
        assert cli_main.main(argv) == 1
        assert "'streamedge nowhere' needs the streamedge-nowhere distribution: pip install streamedge-nowhere" \
            in capsys.readouterr().err
