"""``streamedge bench anomalies``: the shipped anomaly detector on labelled series, against a rolling z-score.

For each labelled series (``training/streamedge/data/anomaly``: a ``data`` column and a 0/1 ``label``):

1. the history before ``train_end = min(T // 2, first labelled reading)`` trains a one-step
   forecaster with the CLI's defaults (``streamedge train forecaster --horizon 1 --season M``),
   so no anomaly is seen in training; a model folder already in ``--work-dir`` trained on the
   same history is reused;
2. every reading from ``train_end`` on is scored as the stream worker scores it: the shipped
   TFLite variant forecasts it from the ``window`` readings before it, and its residual goes, in
   order, through the detector every part runs (:mod:`streamedge.contracts.anomaly`, warm-up
   threshold ``k``); its alarms are the flags;
3. for comparison, the fixed band the worker used before (``|actual - forecast| > k *
   residual_std``) on the same residuals, and the baseline ``|x[t] - mean| > k * std`` over the
   ``season`` readings before ``t``;
4. all are scored point-wise and event-wise (:mod:`training.detection_metrics`) on the same
   readings, for each ``k``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamedge.paths import data_dir, user_state_dir

__all__ = ["LABELLED", "LabelledSeries", "add_arguments", "run"]


@dataclass(frozen=True)
class LabelledSeries:
    """A labelled anomaly series: file, season (readings per cycle) and where it comes from."""

    name: str
    file: str
    season: int
    source: str


# Seasons: the autocorrelation peak of the training half (303 readings per heartbeat in the ECG
# excerpt, 24 for the hourly Yahoo series).
LABELLED: tuple[LabelledSeries, ...] = (
    LabelledSeries("mitdb", "mitdb.csv", 303, "sktime 1.2.0 datasets/data/mitdb (ECG excerpt, one labelled segment)"),
    LabelledSeries("yahoo", "yahoo.csv", 24, "sktime 1.2.0 datasets/data/yahoo (7 labelled point anomalies)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``streamedge bench anomalies``."""
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON figures")
    parser.add_argument("--series", default=",".join(s.name for s in LABELLED),
                        help=f"comma-separated, from {[s.name for s in LABELLED]}")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with the labelled files (default: the vendored training/streamedge/data/anomaly)")
    parser.add_argument("--work-dir", type=Path, default=user_state_dir() / "bench" / "anomalies",
                        help="one forecaster folder per series (default under STREAMEDGE_HOME)")
    parser.add_argument("--k", default="3,4", help="band half-widths in standard deviations, comma-separated "
                                                    "(4 is the stream worker's and edge agent's default)")
    parser.add_argument("--epochs", type=int, default=None, help="override the maximum epochs (toy runs)")
    parser.add_argument("--season", type=int, default=None, help="override every series' season (toy runs)")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--select", action="store_true",
                        help="instead: the grid on synthetic series that chose the detector's defaults "
                             "(benchmarks/anomaly_selection.py)")


def _read(path: Path) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int8]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return (np.array([float(r["data"]) for r in rows]), np.array([int(r["label"]) for r in rows], dtype=np.int8))


def _forecast_all(folder: Path, series: npt.NDArray[np.float64], start: int) -> tuple[npt.NDArray[np.float64], Any]:
    """One-step forecasts of ``series[start:]`` by the shipped model, and its manifest."""
    from streamedge.contracts.manifest import read_manifest
    from streamedge.contracts.runner import TFLiteRunner

    manifest = read_manifest(folder)
    runner = TFLiteRunner(folder / "model.tflite", manifest, runtime="ai_edge_litert")
    mean = float(manifest.normalisation["mean"][0])
    std = float(manifest.normalisation["std"][0])
    window = manifest.window
    index = np.arange(start, len(series))[:, None] - window + np.arange(window)[None, :]
    windows = ((series[index] - mean) / std)[..., None].astype(np.float32)
    outputs = np.concatenate([runner.run(windows[i:i + 256]) for i in range(0, len(windows), 256)])
    if manifest.residual_std() is None:
        raise ValueError(f"{folder}: the manifest has no validation_error")
    return outputs[:, 0].astype(np.float64) * std + mean, manifest


def _one_series(args: argparse.Namespace, spec: LabelledSeries, ks: list[float]) -> dict[str, Any]:
    from streamedge.contracts.anomaly import AnomalyDetector, DetectorConfig
    from streamedge.training.config import ForecasterConfig
    from streamedge.training.detection_metrics import (
        event_scores,
        point_scores,
        residual_flags,
        rolling_zscore_flags,
    )
    from streamedge.training.forecast import default_recent, default_window, train_forecaster

    if args.season is not None:
        spec = dataclasses.replace(spec, season=args.season)
    series, labels = _read((args.data_dir or data_dir() / "anomaly") / spec.file)
    first = int(np.argmax(labels)) if labels.any() else len(series)
    train_end = min(len(series) // 2, first)
    folder = args.work_dir / spec.name / f"seed{args.seed}"
    folder.mkdir(parents=True, exist_ok=True)
    train_csv = folder / "train.csv"
    history = "value\n" + "\n".join(repr(float(v)) for v in series[:train_end]) + "\n"
    reuse = (folder / "model" / "metrics.json").is_file() and train_csv.is_file() and train_csv.read_text() == history
    train_csv.write_text(history)
    recent = default_recent(spec.season, 1)
    fields: dict[str, Any] = {"window": default_window(spec.season, 1, recent), "horizon": 1, "season": spec.season,
                              "recent": recent, "seed": args.seed}
    if args.epochs is not None:
        fields["epochs"] = args.epochs
    config = ForecasterConfig(**fields)
    started = time.perf_counter()
    if reuse:
        print(f"reusing the one-step forecaster of {spec.name} in {folder}", file=sys.stderr, flush=True)
        metrics = json.loads((folder / "model" / "metrics.json").read_text())
    else:
        print(f"training the one-step forecaster on {spec.name} ...", file=sys.stderr, flush=True)
        metrics = train_forecaster(train_csv, folder / "model", config, name=f"{spec.name}-anomaly", progress=False)
    wall = time.perf_counter() - started
    forecast, manifest = _forecast_all(folder / "model", series, train_end)
    residual_std = float(manifest.residual_std())
    actual, truth = series[train_end:], labels[train_end:]
    zscore_all = {k: rolling_zscore_flags(series, spec.season, k)[train_end:] for k in ks}
    detectors: dict[str, Any] = {}
    for k in ks:
        detector = AnomalyDetector(residual_std, manifest.normalisation["std"], spec.season, config=DetectorConfig(k=k))
        verdicts = detector.run(detector.new_state(), (actual - forecast)[:, None])
        alarms = np.array([v is not None and v.alarm for v in verdicts])
        for name, flags in (("detector", alarms), ("fixed_band (before)", residual_flags(actual, forecast, residual_std, k)),
                            ("rolling_zscore", zscore_all[k])):
            detectors[f"{name} k={k:g}"] = {"point": point_scores(truth, flags), "event": event_scores(truth, flags)}
    return {
        "series": spec.name, "spec": asdict(spec), "length": len(series), "train_end": train_end,
        "test_readings": len(actual), "labelled_in_test": int(truth.sum()), "window": config.window,
        "recent": config.recent, "residual_std": residual_std, "shipped_variant": metrics["selected_variant"],
        "forecaster_wall_seconds": wall, "reused_forecaster": reuse,
        "one_step_mae_test": float(np.mean(np.abs(actual - forecast))),
        "detectors": detectors,
    }


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| series | detector | point P / R / F1 | event P / R / F1 | events found | alarms |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        for name, scores in row["detectors"].items():
            p, e = scores["point"], scores["event"]
            lines.append(f"| {row['series']} | {name} | {p['precision']:.2f} / {p['recall']:.2f} / {p['f1']:.2f} | "
                         f"{e['precision']:.2f} / {e['recall']:.2f} / {e['f1']:.2f} | "
                         f"{e['events_found']}/{e['events']} | {e['alarms']} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Train, score both detectors on every chosen series, write the JSON."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.select:
        from streamedge.benchmarks.anomaly_selection import select

        selection = select()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(selection, indent=2) + "\n")
        for row in selection["grid"]:
            print(f"span {row['span']} floor {row['floor']:g} gap {row['gap']}: mean event F1 "
                  f"{row['mean_event_f1']:.3f}, worst {row['worst_event_f1']:.3f}")
        return 0
    by_name = {s.name: s for s in LABELLED}
    chosen = [part.strip() for part in args.series.split(",") if part.strip()]
    unknown = [c for c in chosen if c not in by_name]
    if unknown:
        raise ValueError(f"unknown series {unknown}; choose from {sorted(by_name)}")
    ks = [float(k) for k in args.k.split(",") if k.strip()]
    args.work_dir = Path(args.work_dir).resolve()
    rows = [_one_series(args, by_name[name], ks) for name in chosen]
    result = {"rows": rows, "table": _table(rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["table"])
    return 0
