"""Config precedence (flag > env > file > default) for every setting, unknown keys refused, ``config show``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from streamedge.cli import kafka_cmd
from streamedge.cli.common import kafka_settings
from streamedge.cli.main import main


def _capture_kafka(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []

    def _topics(args: argparse.Namespace) -> int:
        settings = kafka_settings(args)
        seen.append((settings.bootstrap_servers, settings.security_protocol))
        return 0

    monkeypatch.setattr(kafka_cmd, "_topics", _topics)
    return seen


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "streamedge.toml"
    path.write_text(text)
    return path


def test_kafka_table_bootstrap_servers_is_not_overwritten_by_the_flag_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMEDGE_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    seen = _capture_kafka(monkeypatch)
    config = _config(tmp_path, '[kafka]\nbootstrap_servers = "10.0.0.5:9093"\n')
    assert main(["--config", str(config), "kafka", "topics"]) == 0
    monkeypatch.setenv("STREAMEDGE_KAFKA_BOOTSTRAP_SERVERS", "10.0.0.6:9093")
    assert main(["--config", str(config), "kafka", "topics"]) == 0
    assert main(["--config", str(config), "kafka", "topics", "--bootstrap-servers", "10.0.0.7:9093"]) == 0
    assert [s for s, _ in seen] == ["10.0.0.5:9093", "10.0.0.6:9093", "10.0.0.7:9093"]


def test_an_env_var_beats_the_kafka_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _capture_kafka(monkeypatch)
    config = _config(tmp_path, '[kafka]\nsecurity_protocol = "SSL"\n')
    assert main(["--config", str(config), "kafka", "topics"]) == 0
    monkeypatch.setenv("STREAMEDGE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    assert main(["--config", str(config), "kafka", "topics"]) == 0
    assert [p for _, p in seen] == ["SSL", "PLAINTEXT"]


@pytest.mark.parametrize(("text", "message"), [
    ('bootstrap_server = "h:1"\n', "unknown key 'bootstrap_server'; did you mean bootstrap_servers?"),
    ('[routes]\ns = ["m"]\n', "unknown table [routes]; did you mean [stream] routes?"),
    ('[kafka]\nbootstrap = "h:1"\n', "unknown key 'bootstrap' in [kafka]; did you mean [kafka] bootstrap_servers?"),
    ('[stream]\nanomaly = 3\n', "unknown key 'anomaly' in [stream]; did you mean [stream] anomaly_k?"),
])
def test_unknown_keys_and_tables_are_errors_naming_the_nearest_valid_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    assert main(["--config", str(_config(tmp_path, text)), "kafka", "status"]) == 1
    assert message in capsys.readouterr().err


def test_worker_settings_without_a_flag_come_from_the_stream_table_below_env_and_flags(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, '[kafka]\nbootstrap_servers = "10.0.0.5:9093"\n\n'
                               '[stream]\nanomaly_k = 7.5\nclassify_stride = 16\napp_id = "pumps"\nbatch_size = 32\n'
                               'routes = { s = ["pump-lstm"] }\n')
    monkeypatch.setenv("STREAMEDGE_STREAM_CLASSIFY_STRIDE", "8")
    monkeypatch.delenv("STREAMEDGE_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["--config", str(config), "config", "show", "stream", "worker", "--batch-size", "64"]) == 0
    out = capsys.readouterr().out
    assert 'bootstrap_servers = "10.0.0.5:9093"  # file [kafka] bootstrap_servers' in out
    assert "anomaly_k = 7.5  # file [stream] anomaly_k" in out
    assert 'app_id = "pumps"  # file [stream] app_id' in out
    assert "classify_stride = 8  # env STREAMEDGE_STREAM_CLASSIFY_STRIDE" in out
    assert "batch_size = 64  # flag" in out
    assert "routes = {'s': ['pump-lstm']}  # file [stream] routes" in out
    assert "mae_window = 500  # default" in out
    assert main(["--config", str(config), "config", "show", "stream", "worker", "--classify-stride", "4"]) == 0
    assert "classify_stride = 4  # flag" in capsys.readouterr().out


def test_every_worker_setting_is_a_flag_that_reaches_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from streamedge.services.settings import StreamSettings

    with pytest.raises(SystemExit):
        main(["stream", "worker", "--help"])
    text = capsys.readouterr().out
    spelled = {"batch_wait_s": "--batch-wait"}
    assert [f for f in StreamSettings.model_fields if spelled.get(f, "--" + f.replace("_", "-")) not in text] == []
    assert main(["config", "show", "stream", "worker", "--mae-window", "7", "--devices", '["a", "b"]',
                 "--follow-updates", "false", "--shadow", '{"m": 2}']) == 0
    out = capsys.readouterr().out
    for line in ("mae_window = 7  # flag", "devices = ['a', 'b']  # flag", "follow_updates = False  # flag",
                 "shadow = {'m': 2}  # flag"):
        assert line in out
    assert main(["config", "show", "stream", "worker", "--shadow", "{oops"]) == 1
    assert "--shadow is not JSON" in capsys.readouterr().err


def test_relative_paths_in_a_config_file_are_relative_to_its_folder_from_any_working_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "etc" / "streamedge.toml"
    config.parent.mkdir()
    config.write_text('buffer_path = "buf.sqlite"\nmodel_dir = "device-models"\n\n[stream]\ndata_dir = "state"\n')
    monkeypatch.delenv("STREAMEDGE_EDGE_BUFFER_PATH", raising=False)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        assert main(["--config", str(config), "config", "show", "edge", "run"]) == 0
        out = capsys.readouterr().out
        assert f'buffer_path = "{config.parent / "buf.sqlite"}"' in out
        assert f'model_dir = "{config.parent / "device-models"}"' in out
        assert main(["--config", str(config), "config", "show", "stream", "worker", "--public-key", "k.pem"]) == 0
        out = capsys.readouterr().out
        assert f'data_dir = "{config.parent / "state"}"' in out
        assert 'public_key = "k.pem"  # flag' in out  # a flag stays relative to the working folder
