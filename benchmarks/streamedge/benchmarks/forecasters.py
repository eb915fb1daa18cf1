"""``streamedge bench forecasters``: the default LSTM forecaster against what a user would pick instead.

Every series is trained with ``streamedge.training.train_forecaster`` exactly as ``streamedge
train forecaster --horizon H --season M`` would (the CLI's defaults for window and seasonal-lag
input), and scored once on its last ``horizon`` points. On the same points, with the same MASE
scale (in-sample seasonal-naive MAE of the history), the benchmark scores:

- seasonal naive (the last season repeated; naive for season 1);
- statsforecast's ``AutoETS`` and ``AutoTheta`` with ``season_length=M``, fit on the history
  (a requirement of ``streamedge-benchmarks``).

MASE and sMAPE are reported for Keras, the int8 TFLite file and the variant the parity gate and
selection ship. MASE averages ``|error| / scale`` over every test point of every series. Runs
are cached in ``--work-dir`` like ``bench models`` (``bench_run.json``, reused only under the same
key: the resolved configuration, the shortened end, whether the baselines ran, the data file's path
and content, the code version; :mod:`streamedge.benchmarks.run_cache`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamedge.benchmarks.run_cache import read_run, run_key, write_run
from streamedge.paths import data_dir, user_state_dir

__all__ = ["SERIES", "BenchSeries", "add_arguments", "run", "statistical_forecasts"]


@dataclass(frozen=True)
class BenchSeries:
    """One benchmark series: a vendored file (``training/streamedge/data/forecasting``) and how to forecast it.

    ``origins`` > 1: the last ``origins * horizon`` points are scored as consecutive forecasts of
    ``horizon`` steps (rolling origin; the LSTM is trained once, before the first, and reads the
    true readings before each origin; the statistical models are refit at each origin).
    """

    name: str
    file: str
    column: str
    season: int
    horizon: int
    id_column: str | None = None
    role: str = "forecasting"
    origins: int = 1


# Horizons follow the M4 competition where it has one (yearly 6, quarterly 8, weekly 13); monthly
# series keep the 12 the Airline example has always used.
SERIES: tuple[BenchSeries, ...] = (
    BenchSeries("Airline", "Airline.csv", "Passengers", 12, 12),
    BenchSeries("wineind", "wineind.csv", "wine_litres", 12, 12),
    BenchSeries("elec_equip", "elec_equip.csv", "turnover_index", 12, 12),
    BenchSeries("woolyrnq", "woolyrnq.csv", "wool_tonnes", 4, 8),
    BenchSeries("co2", "co2.csv", "co2_ppm", 52, 13),
    BenchSeries("sunspots", "sunspots.csv", "sunspot_activity", 1, 6),
    BenchSeries("lynx", "lynx.csv", "lynx_trappings", 1, 6),
    # Half-hourly demand, weekly season: the last 7 days, one day-ahead forecast a day.
    BenchSeries("taylor", "taylor.csv", "demand_mw", 336, 48, role="long season", origins=7),
    BenchSeries("m1_yearly", "m1_yearly.csv", "value", 1, 6, id_column="series", role="many short series"),
)


# the non-learnt rules reported beside a seasonal-lag series (k of "seasonal naive + mean of the last k differences")
_MEAN_DIFFS = (1, 2, 4, 8, 16, 48)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``streamedge bench forecasters``."""
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON figures")
    parser.add_argument("--series", default=",".join(s.name for s in SERIES),
                        help=f"comma-separated, from {[s.name for s in SERIES]}")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with the series files (default: the vendored training/streamedge/data/forecasting)")
    parser.add_argument("--work-dir", type=Path, default=user_state_dir() / "bench" / "forecasters",
                        help="one folder per run, kept and reused (default under STREAMEDGE_HOME)")
    parser.add_argument("--epochs", type=int, default=None, help="override the maximum epochs (toy runs)")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--no-baselines", action="store_true", help="skip AutoETS and AutoTheta")
    parser.add_argument("--origins", type=int, default=1, metavar="N",
                        help="score every series on at least N rolling origins (the models trained once, before "
                             "the first; AutoETS and AutoTheta refit at each)")
    parser.add_argument("--end-early", type=int, default=0, metavar="N",
                        help="run as if every series ended N readings earlier (selection runs: taylor's week 11 "
                             "is --end-early 336, week 10 --end-early 672; the last week stays unseen)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a ForecasterConfig field (value as JSON), e.g. base_diffs=4; repeatable")


def statistical_forecasts(histories: list[npt.NDArray[np.float64]], horizon: int, season: int
                          ) -> dict[str, npt.NDArray[np.float64] | str]:
    """AutoETS and AutoTheta forecasts, ``(n_series, horizon)`` each, or the error text if a model failed.

    Raises:
        ImportError: statsforecast is missing, with the install hint.
    """
    try:
        from statsforecast.models import AutoETS, AutoTheta
    except ImportError as exc:
        raise ImportError("the forecaster benchmark needs statsforecast: pip install streamedge-benchmarks") from exc
    out: dict[str, npt.NDArray[np.float64] | str] = {}
    for name, make in (("AutoETS", AutoETS), ("AutoTheta", AutoTheta)):
        try:
            out[name] = np.stack([np.asarray(make(season_length=season).forecast(y=h.astype(np.float64), h=horizon)
                                             ["mean"], np.float64) for h in histories])
        except Exception as exc:  # a baseline that cannot fit is reported, not fatal
            out[name] = f"{type(exc).__name__}: {exc}"
    return out


def _config(spec: BenchSeries, epochs: int | None, seed: int, overrides: dict[str, Any] | None = None) -> Any:
    from streamedge.training.forecast import default_config

    # the benchmark scores its own rolling origins (BenchSeries.origins) on one training run
    fields: dict[str, Any] = {"seed": seed, "origins": 1, **(overrides or {})}
    if epochs is not None:
        fields["epochs"] = epochs
    window, recent = fields.pop("window", None), fields.pop("recent", None)
    return default_config(spec.horizon, spec.season, window, recent, **fields)


def _overrides(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (values read as JSON: ``4``, ``[0, 0.5, 1]``) as configuration fields."""
    from streamedge.training.config import ForecasterConfig

    names = {f.name for f in dataclasses.fields(ForecasterConfig)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in names:
            raise ValueError(f"--set takes KEY=VALUE with KEY one of {sorted(names)}, got {pair!r}")
        out[key] = json.loads(value)
    return out


def _run_folder(args: argparse.Namespace, spec: BenchSeries) -> Path:
    """One folder per series, seed, shortened end and configuration override."""
    parts = [f"seed{args.seed}"]
    if args.origins > 1:
        parts.append(f"origins{args.origins}")
    if args.end_early:
        parts.append(f"end-{args.end_early}")
    parts += [f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in sorted(_overrides(args.set).items())]
    folder: Path = args.work_dir / spec.name / "_".join(parts).replace("/", "_")
    return folder


def _scores(actual: npt.NDArray[Any], predicted: npt.NDArray[Any], scale: npt.NDArray[Any]) -> dict[str, float]:
    from streamedge.training.metrics import forecast_metrics

    metrics = forecast_metrics(actual, predicted, scale)
    return {"mase": metrics["mase"], "smape": metrics["smape"], "mae": metrics["mae"]}


def _lstm_forecasts(folder: Path, contexts: npt.NDArray[np.float64]) -> dict[str, npt.NDArray[np.float64]]:
    """Keras, int8 and shipped-variant forecasts ``(n, horizon)`` in original units from ``(n, window)`` contexts."""
    import keras

    from streamedge.contracts.manifest import read_manifest
    from streamedge.contracts.runner import TFLiteRunner

    manifest = read_manifest(folder)
    mean, std = float(manifest.normalisation["mean"][0]), float(manifest.normalisation["std"][0])
    windows = ((contexts - mean) / std)[..., None].astype(np.float32)
    model = keras.saving.load_model(folder / "model.keras")
    outputs = {"lstm_keras": np.asarray(model.predict(windows, verbose=0))}
    for name, path in (("lstm_int8", folder / "variants" / "int8.tflite"), ("lstm_shipped", folder / "model.tflite")):
        outputs[name] = TFLiteRunner(path, manifest, runtime="ai_edge_litert").run(windows)
    return {name: out.astype(np.float64) * std + mean for name, out in outputs.items()}


def _one_series(args: argparse.Namespace, spec: BenchSeries) -> dict[str, Any]:
    from streamedge.training.data import load_table
    from streamedge.training.forecast import train_forecaster
    from streamedge.training.metrics import seasonal_naive_forecast, seasonal_naive_scale
    from streamedge.training.windowing import partition_series

    folder = _run_folder(args, spec)
    config = _config(spec, args.epochs, args.seed, _overrides(args.set))
    source = (args.data_dir or data_dir() / "forecasting") / spec.file
    key = run_key({"spec": asdict(spec), "config": config.to_dict(), "end_early": args.end_early,
                   "baselines": not args.no_baselines, "origins": args.origins}, [source])
    cached = read_run(folder, key)
    if cached is not None:
        return cached
    w, h, m, origins = config.window, config.horizon, config.season, max(spec.origins, args.origins)
    data = load_table(source, [spec.column], spec.id_column)
    if args.end_early:
        data = dataclasses.replace(data, series=[s[: len(s) - args.end_early] for s in data.series])
    # Train once on everything before the first test block; later origins reuse that model.
    cut = (origins - 1) * h
    trimmed = dataclasses.replace(data, series=[s[: len(s) - cut] for s in data.series])
    print(f"training the LSTM on {spec.name} (season {m}, horizon {h}, {origins} origin(s)) ...", file=sys.stderr,
          flush=True)
    started = time.perf_counter()
    metrics = train_forecaster(trimmed, folder, config, name=f"{spec.name}-lstm", progress=False)
    wall = time.perf_counter() - started
    trained, test_only, _ = partition_series([len(s) for s in trimmed.series], w, h, m)
    series = [np.asarray(trimmed.series[i][:, 0], np.float64) for i in sorted(trained + test_only)]
    full = [np.asarray(data.series[i][:, 0], np.float64) for i in sorted(trained + test_only)]
    scale = np.array([seasonal_naive_scale(s[:-h], m) for s in series])
    # one row per (series, origin): origin j forecasts full[len(series) - h + j * h : ... + h]
    starts = [(i, len(series[i]) - h + j * h) for i in range(len(series)) for j in range(origins)]
    actual = np.stack([full[i][t:t + h] for i, t in starts])
    contexts = np.stack([full[i][t - w:t] for i, t in starts])
    row_scale = np.array([scale[i] for i, _ in starts])[:, None]
    forecasts: dict[str, Any] = {"seasonal_naive": seasonal_naive_forecast(contexts[..., None], h, m)[..., 0],
                                 **_lstm_forecasts(folder, contexts)}
    if config.recent:
        from streamedge.training.seasonal_lags import SeasonalLagLayout, seasonal_lag_base

        # the untrained model: what the correction is added to (seasonal naive for base_diffs 0)
        layout = SeasonalLagLayout(w, m, h, config.recent)
        forecasts["lstm_base"] = seasonal_lag_base(contexts[..., None], layout, config.base_diffs)[..., 0]
        # not learnt: seasonal naive plus the mean of the last k seasonal differences
        for k in _MEAN_DIFFS:
            if k <= config.recent:
                forecasts[f"naive_mean_diff_{k}"] = seasonal_lag_base(contexts[..., None], layout, k)[..., 0]
    stat_seconds = 0.0
    if not args.no_baselines:
        stat_started = time.perf_counter()
        for i_origin in range(origins):
            picked = [k for k, (_, t) in enumerate(starts) if k % origins == i_origin]
            for name, forecast in statistical_forecasts([full[i][:t] for i, t in (starts[k] for k in picked)], h, m).items():
                if isinstance(forecast, str):
                    forecasts[name] = forecast
                elif not isinstance(forecasts.get(name, np.empty(0)), str):
                    forecasts.setdefault(name, np.full_like(actual, np.nan))[picked] = forecast
        stat_seconds = time.perf_counter() - stat_started
    methods: dict[str, Any] = {name: f if isinstance(f, str) else _scores(actual, f, row_scale)
                               for name, f in forecasts.items()}
    selected = metrics["selected_variant"]
    methods["lstm_int8"]["parity"] = metrics["tflite"]["int8"]["parity"]
    methods["lstm_shipped"]["variant"] = selected
    result = {
        "series": spec.name, "spec": asdict(spec), "window": w, "recent": config.recent,
        "config": config.to_dict(), "end_early": args.end_early, "correction": metrics["correction"],
        "family": metrics["family"],
        "series_evaluated": len(series), "series_in_file": len(data.series),
        "series_skipped": metrics["data"]["series_skipped"], "series_test_only": metrics["data"]["series_test_only"],
        "test_points": int(actual.size), "epochs_run": metrics["epochs_run"],
        "train_windows": metrics["data"]["train_windows"], "fit_seconds": metrics["fit_seconds"],
        "wall_seconds": wall, "statistical_seconds": stat_seconds,
        "per_series_scaling": metrics["scaling"]["per_series"], "scale_spread": metrics["scaling"]["scale_spread"],
        "first_origin_keras_mase_from_training": metrics["keras"]["mase"],
        "first_origin_naive_mase_from_training": metrics["baselines"]["seasonal_naive"]["mase"],
        "beats_seasonal_naive_first_origin": metrics["beats_seasonal_naive"], "warnings": metrics["warnings"],
        "beats_seasonal_naive": {name: bool(methods[name]["mase"] < methods["seasonal_naive"]["mase"])
                                 for name in ("lstm_keras", "lstm_int8", "lstm_shipped")},
        "methods": methods,
    }
    write_run(folder, key, result)
    return result


def _table(rows: list[dict[str, Any]]) -> str:
    names = ("seasonal_naive", "AutoETS", "AutoTheta", "lstm_keras", "lstm_int8", "lstm_shipped")
    lines = ["| series | " + " | ".join(f"{n} MASE / sMAPE" for n in names) + " | LSTM wall s |",
             "|" + "---|" * (len(names) + 2)]
    for row in rows:
        cells = []
        for name in names:
            value = row["methods"].get(name)
            cells.append(f"{value['mase']:.3f} / {value['smape']:.2f}" if isinstance(value, dict) else "-")
        lines.append(f"| {row['series']} | " + " | ".join(cells) + f" | {row['wall_seconds']:.0f} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Train the LSTM on every chosen series, score it beside the baselines, write the JSON."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    by_name = {s.name: s for s in SERIES}
    chosen = [part.strip() for part in args.series.split(",") if part.strip()]
    unknown = [c for c in chosen if c not in by_name]
    if unknown:
        raise ValueError(f"unknown series {unknown}; choose from {sorted(by_name)}")
    args.work_dir = Path(args.work_dir).resolve()
    rows = [_one_series(args, by_name[name]) for name in chosen]
    lost = {r["series"]: [m for m, beats in r["beats_seasonal_naive"].items() if not beats] for r in rows}
    result = {"rows": rows, "lstm_loses_to_seasonal_naive": {k: v for k, v in lost.items() if v},
              "table": _table(rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["table"])
    return 0
