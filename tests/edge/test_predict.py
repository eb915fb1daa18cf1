"""``streamedge predict``: offline scoring gives the edge agent's results, row for row, without TensorFlow."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streamedge.cli.main import main
from streamedge.contracts.signing import load_private_key
from streamedge.contracts.table import SAMPLE_ROWS
from streamedge.edge.sources import IteratorSource, file_payloads
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.registry import ModelRegistry
from streamedge.training.tiny import TinyModels

REPO = Path(__file__).resolve().parents[2]


def _write_csv(path: Path, n: int, bad: dict[int, str], spike_at: int | None = None, keys: int = 1,
               with_seq: bool = True) -> Path:
    """``n`` rows of a sine (the tiny models' signal) over ``keys`` interleaved devices, each with its own
    ``seq`` (unless ``with_seq`` is False); row ``i in bad`` gets that value cell."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["device_id", "seq", "ts", "value"] if with_seq else ["device_id", "ts", "value"])
        for i in range(n):
            value = 10.0 + 3.0 * math.sin(2 * math.pi * (i // keys) / 16) + (25.0 if i == spike_at else 0.0)
            seq = [i // keys] if with_seq else []
            writer.writerow([f"dev-{i % keys}", *seq, 1.7e9 + i, bad.get(i, f"{value:.6f}")])
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _agent_results(make_agent: Callable[..., Any], kafka: KafkaSettings, source: Path, model_dir: Path | None,
                   tmp_path: Path, **overrides: Any) -> dict[tuple[str, int], dict[str, Any]]:
    """The agent's results for the rows of ``source`` (its own file source), by (key, source_seq)."""
    extra = {"model_dir": model_dir} if model_dir is not None else {}
    agent = make_agent(IteratorSource([]), kafka, TopicLayout(prefix="predict."),
                       buffer_path=tmp_path / "agent.sqlite", **extra, **overrides)
    assert agent.process(list(file_payloads(source))) > 0
    results = [json.loads(row.value) for row in agent.outbox.peek(100_000)]
    agent.outbox.close()
    return {(r["key"], r["source_seq"]): r for r in results}


def test_predict_gives_the_agents_forecasts_and_anomalies_for_the_same_rows(
        make_agent: Callable[..., Any], kafka_settings: KafkaSettings, tiny_models: TinyModels, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    bad = {5: "nan", 30: "hot", 41: ""}
    source = _write_csv(tmp_path / "readings.csv", 120, bad, spike_at=70, keys=2)
    out = tmp_path / "scored.csv"
    assert main(["predict", str(source), "--model", str(tiny_models.forecaster), "--out", str(out)]) == 0
    rows = _read_csv(out)
    assert [int(r["line"]) for r in rows] == list(range(2, 122))  # one output row per input row, in order
    agent = _agent_results(make_agent, kafka_settings, source, None, tmp_path)
    scored = {(r["key"], (int(r["line"]) - 2) // 2): r for r in rows if r["forecast"]}
    assert scored.keys() == agent.keys()
    for at, row in scored.items():
        assert json.loads(row["forecast"]) == agent[at]["forecast"]
        assert (row["anomaly"] or None) == (None if agent[at]["anomaly"] is None else str(int(agent[at]["anomaly"])))
        assert (row["model"], int(row["version"])) == (agent[at]["model"], agent[at]["version"])
    spike = scored[("dev-0/csv", 35)]
    assert spike["anomaly"] == "1" and float(spike["anomaly_score"]) > 1  # smoothed error over its threshold
    assert sum(r["anomaly"] == "1" for r in rows) == sum(bool(r["anomaly"]) for r in agent.values())
    errors = {int(r["line"]) - 2: r["error"] for r in rows if r["error"]}
    assert sorted(errors) == sorted(bad)
    assert errors[5].startswith("non_finite") and errors[30].startswith("wrong_type")
    report = capsys.readouterr().err
    for index in bad:
        assert f"readings.csv: line {index + 2}: " in report
    assert "120 rows (3 bad" in report and "rows/s" in report


def test_predict_gives_the_agents_classes_with_a_stride(
        make_agent: Callable[..., Any], kafka_settings: KafkaSettings, tiny_models: TinyModels, tmp_path: Path) -> None:
    from streamedge.contracts.signing import load_public_key
    from streamedge.edge.models import ModelStore

    source = _write_csv(tmp_path / "readings.csv", 60, {12: "x"})
    out = tmp_path / "classes.csv"
    assert main(["predict", str(source), "--model", str(tiny_models.classifier), "--out", str(out),
                 "--stride", "3"]) == 0
    rows = _read_csv(out)
    model_dir = tmp_path / "classifier-store"
    ModelStore(model_dir, load_public_key(tiny_models.public_key)).install(tiny_models.classifier)
    agent = _agent_results(make_agent, kafka_settings, source, model_dir, tmp_path, stride=3)
    scored = {(r["key"], int(r["line"]) - 2): r for r in rows if r["class"]}
    assert scored.keys() == agent.keys() and len(scored) > 10
    for at, row in scored.items():
        assert row["class"] == agent[at]["label"]
        assert json.loads(row["probabilities"]) == agent[at]["probabilities"]
    assert "forecast" not in rows[0]


def test_predict_runs_without_tensorflow_and_reads_a_registry_version(tiny_models: TinyModels, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    ModelRegistry(registry).add(tiny_models.forecaster, load_private_key(tiny_models.signing_key))
    source = _write_csv(tmp_path / "in.csv", 40, {3: "1e999"})
    out = tmp_path / "out.csv"
    script = (
        "import sys\n"
        "from streamedge.cli.main import main\n"
        f"code = main(['predict', {str(source)!r}, '--model', 'tiny-forecaster@1', '--registry', {str(registry)!r},"
        f" '--public-key', {str(tiny_models.public_key)!r}, '--out', {str(out)!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'pandas'))\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout
    assert "in.csv: line 5: non_finite" in done.stderr
    rows = _read_csv(out)
    assert len(rows) == 40 and {r["version"] for r in rows} == {"1"}
    assert sum(bool(r["forecast"]) for r in rows) == 40 - 1 - 7  # one bad row; the first 7 fill the window


def test_predict_refuses_a_tampered_model_and_an_unknown_version(tiny_models: TinyModels, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    source = _write_csv(tmp_path / "in.csv", 20, {})
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_models.forecaster, tampered)
    model_file = tampered / "model.tflite"
    model_file.write_bytes(model_file.read_bytes()[:-4] + b"evil")
    assert main(["predict", str(source), "--model", str(tampered), "--out", str(tmp_path / "o.csv")]) == 1
    assert "sha256" in capsys.readouterr().err
    assert main(["predict", str(source), "--model", "nope@3", "--registry", str(tmp_path / "reg"),
                 "--out", str(tmp_path / "o.csv")]) == 1
    assert "no version 3" in capsys.readouterr().err
    wrong = tmp_path / "wide.csv"
    wrong.write_text("ts,a,b\n1700000000,1,2\n")
    assert main(["predict", str(wrong), "--model", str(tiny_models.forecaster), "--out", str(tmp_path / "o.csv")]) == 1
    assert "the model takes 1 value(s)" in capsys.readouterr().err


def test_predict_scores_a_folder_of_csv_and_parquet(tiny_models: TinyModels, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "inputs"
    folder.mkdir()
    first = _write_csv(folder / "a.csv", 30, {})
    table = pa.table({"ts": [1.7e9 + i for i in range(30)],
                      "value": [float(f"{10.0 + 3.0 * math.sin(2 * math.pi * i / 16):.6f}") for i in range(30)]})
    pq.write_table(table, folder / "b.parquet")
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "outputs"
    assert main(["predict", str(folder), "--model", str(tiny_models.forecaster), "--out", str(out),
                 "--out-format", ".parquet"]) == 0
    a, b = pq.read_table(out / "a.parquet").to_pylist(), pq.read_table(out / "b.parquet").to_pylist()
    assert len(a) == len(b) == 30 and sorted(p.name for p in out.iterdir()) == ["a.parquet", "b.parquet"]
    # the same values read from CSV and from Parquet give the same forecasts
    assert [r["forecast"] for r in a] == [r["forecast"] for r in b]
    assert a[7]["forecast"] and a[6]["forecast"] is None and b[0]["line"] == 2
    csv_out = tmp_path / "a_scored.csv"
    assert main(["predict", str(first), "--model", str(tiny_models.forecaster), "--out", str(csv_out)]) == 0
    assert [r["forecast"] or None for r in _read_csv(csv_out)] == [r["forecast"] for r in a]


def test_predict_reads_an_iso_timestamp_file_like_the_trainer(tiny_models: TinyModels, tmp_path: Path) -> None:
    """The quickstart's file shape (ISO ``timestamp``, ``device_id``, values) is scored row for row, no errors."""
    source = tmp_path / "pumps.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "device_id", "value"])
        for i in range(40):
            writer.writerow([f"2026-03-01T{i // 60:02d}:{i % 60:02d}:00Z", "pump-1",
                             f"{10.0 + 3.0 * math.sin(2 * math.pi * i / 16):.6f}"])
    out = tmp_path / "out.csv"
    assert main(["predict", str(source), "--model", str(tiny_models.forecaster), "--out", str(out)]) == 0
    rows = _read_csv(out)
    assert len(rows) == 40
    assert [r for r in rows if r.get("error")] == []


def test_a_table_without_seq_is_scored_alike_by_predict_and_the_agent_and_its_spike_flagged(
        make_agent: Callable[..., Any], kafka_settings: KafkaSettings, tiny_models: TinyModels, tmp_path: Path) -> None:
    """Before: the agent numbered such rows by their time in microseconds, so no reading followed the
    last one by one, no residual was ever scored and the spike raised no alarm, while predict flagged it."""
    source = _write_csv(tmp_path / "readings.csv", 120, {}, spike_at=70, keys=2, with_seq=False)
    out = tmp_path / "scored.csv"
    assert main(["predict", str(source), "--model", str(tiny_models.forecaster), "--out", str(out)]) == 0
    rows = _read_csv(out)
    agent = _agent_results(make_agent, kafka_settings, source, None, tmp_path)
    assert len([r for r in rows if r["forecast"]]) == len(agent) > 0
    assert rows[70]["anomaly"] == "1"
    assert sum(r["anomaly"] == "1" for r in rows) == sum(bool(r["anomaly"]) for r in agent.values()) >= 1


def test_predict_takes_a_bad_line_as_one_bad_row_and_refuses_outputs_that_clash(
        tiny_models: TinyModels, tmp_path: Path) -> None:
    """Before: a 10 MB line ended the run with a csv field-limit traceback; a.csv and a.parquet in one
    folder wrote the same a.csv, the second silently replacing the first's results."""
    source = _write_csv(tmp_path / "readings.csv", 40, {})
    lines = source.read_bytes().splitlines(keepends=True)
    lines.insert(21, b"dev-0,19.5,1700000019.5," + b"9" * 10_000_000 + b"\n")
    lines.insert(30, b"dev-0,27.5,1700000027.5,\xff\xfe\n")
    source.write_bytes(b"".join(lines))
    out = tmp_path / "scored.csv"
    assert main(["predict", str(source), "--model", str(tiny_models.forecaster), "--out", str(out)]) == 0
    errors = {int(r["line"]): r["error"] for r in _read_csv(out) if r["error"]}
    assert errors[22].startswith("too_large") and errors[31].startswith("not_utf8")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv").write_bytes(source.read_bytes())
    (folder / "a.parquet").write_bytes(b"")  # refused before any file is read
    assert main(["predict", str(folder), "--model", str(tiny_models.forecaster), "--out", str(tmp_path / "o"),
                 "--out-format", ".csv"]) == 1
    assert not (tmp_path / "o" / "a.csv").exists()


def test_predict_and_the_agent_accept_and_reject_the_same_rows(
        make_agent: Callable[..., Any], kafka_settings: KafkaSettings, tiny_models: TinyModels, tmp_path: Path) -> None:
    """Before: predict read CSV by its own row rule (a ``ts`` column in epoch seconds only, blank-cell
    lines as bad rows), so a table the agent serves (ISO times under ``timestamp``) failed whole."""
    def at(second: int) -> str:
        return (datetime(2024, 3, 1, 10, tzinfo=UTC) + timedelta(seconds=second)).isoformat()

    # The hostile rows come after the rows both read to decide the layout.
    good = SAMPLE_ROWS + 100
    lines = ["device_id,timestamp,value"]
    lines += [f"dev-0,{at(i)},{10.0 + 3.0 * math.sin(2 * math.pi * i / 16):.6f}" for i in range(good)]
    hostile = {5: f"dev-0,{at(4)},hot", 9: ",,", 12: f"dev-0,{at(11)},", 15: "dev-0,not a time,11.0",
               18: f"dev-0,{at(17)},inf", 21: "dev-0,1,2,3", 30: f"dev-0,{at(29)},\"unterminated"}
    for offset in sorted(hostile, reverse=True):
        lines.insert(SAMPLE_ROWS + 20 + offset, hostile[offset])
    source = tmp_path / "hostile.csv"
    source.write_bytes("\n".join(lines).encode() + f"\ndev-0,{at(good)},".encode() + b"\xff\xfe\n"
                      + f"dev-0,{at(good + 1)},".encode() + b"9" * 2_000_000 + b"\n")
    out = tmp_path / "scored.csv"
    assert main(["predict", str(source), "--model", str(tiny_models.forecaster), "--out", str(out)]) == 0
    rows = _read_csv(out)
    predicted = Counter(r["error"].split(":")[0] for r in rows if r["error"])
    predicted["accepted"] = sum(not r["error"] for r in rows)

    agent = make_agent(IteratorSource([]), kafka_settings, TopicLayout(prefix="hostile."),
                       buffer_path=tmp_path / "agent.sqlite")
    agent.process(list(file_payloads(source)))
    agent.outbox.close()
    counted = {s.labels["outcome"]: s.value for m in agent.metrics.registry.collect()
               if m.name == "streamedge_edge_readings" for s in m.samples if s.name.endswith("_total") and s.value}
    assert dict(predicted) == counted
    assert predicted["accepted"] == good and sum(predicted.values()) == len(rows)
    assert {"wrong_type", "non_finite", "not_utf8", "too_large"} <= predicted.keys()
