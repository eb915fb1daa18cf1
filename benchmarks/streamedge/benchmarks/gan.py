"""``streamedge bench gan``: the GAN's discriminative and predictive scores over several runs.

Data sets: the sine benchmark of Yoon et al. 2019 (TimeGAN) and real UCR/UEA sets shipped in
the package (train and test files together: generation needs no labels held out). Each run
trains the GAN with its own seed and scores it once; the JSON holds every run, the mean and
the standard deviation, the train-on-real predictive reference, and TimeGAN's published
figures beside ours. Long: minutes per run on two CPU cores; the tests run it at toy size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

__all__ = ["PUBLISHED", "add_arguments", "run"]

# Yoon, Jarrett, van der Schaar, "Time-series Generative Adversarial Networks", NeurIPS 2019,
# Table 2 (sines: 10,000 windows of 24 steps, 5 features): mean +- std over 10 runs.
PUBLISHED: Final[dict[str, dict[str, float]]] = {
    "sines": {"timegan_discriminative": 0.011, "timegan_discriminative_std": 0.008,
              "timegan_predictive": 0.093, "timegan_predictive_std": 0.019, "original_data_predictive": 0.094},
}
_SCORES: Final = ("discriminative", "predictive", "predictive_real")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``streamedge bench gan``."""
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON figures")
    parser.add_argument("--datasets", default="sines,ItalyPowerDemand,JapaneseVowels",
                        help="'sines' and/or UCR/UEA names shipped in the package, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="GAN trainings (seeds) per data set")
    parser.add_argument("--steps", type=int, default=1000, help="generator updates per training")
    parser.add_argument("--hidden", type=int, default=32, help="convolution width")
    parser.add_argument("--sine-windows", type=int, default=2000, help="windows of the sine data set")
    parser.add_argument("--disc-iterations", type=int, default=2000,
                        help="mini-batches of the discriminative score's classifier (the paper's 2000)")
    parser.add_argument("--pred-iterations", type=int, default=5000,
                        help="mini-batches of the predictive score's predictor (the paper's 5000)")
    parser.add_argument("--tstr", default="ItalyPowerDemand",
                        help="UCR sets for train-on-synthetic/test-on-real with the FCN, comma-separated ('' for none)")
    parser.add_argument("--tstr-epochs", type=int, default=100, help="FCN epochs of the TSTR comparison")
    parser.add_argument("--report-dir", type=Path, default=None,
                        help="write the HTML report (PCA, samples, losses) of each data set's first run here")


def _load(name: str, sine_windows: int) -> Any:
    from streamedge.paths import data_dir
    from streamedge.training.errors import DataError
    from streamedge.training.gan_data import GanData, load_gan_data, sine_data

    if name == "sines":
        return sine_data(sine_windows, seed=0)
    folder = data_dir() / "ucr"
    if not (folder / f"{name}_TRAIN.ts").is_file():
        raise DataError(f"no data set {name!r} in {folder}")
    train, test = (load_gan_data(folder / f"{name}_{part}.ts") for part in ("TRAIN", "TEST"))
    if train.x.shape[1:] != test.x.shape[1:] or train.classes != test.classes:
        return max(train, test, key=lambda d: len(d.x))
    return GanData(np.concatenate([train.x, test.x]), np.concatenate([train.labels, test.labels]), train.classes,
                   train.features)


def _summary(runs: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in _SCORES:
        values = [r[key] for r in runs]
        out[f"{key}_mean"] = round(statistics.fmean(values), 4)
        out[f"{key}_std"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
    return out


def run(args: argparse.Namespace) -> int:
    """Train and score ``--runs`` GANs per data set; the JSON is rewritten after each data set."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from streamedge.errors import ConfigError
    from streamedge.training.gan import GanConfig, train_gan
    from streamedge.training.gan_eval import evaluate_gan, write_gan_report

    if min(args.runs, args.disc_iterations, args.pred_iterations) < 1:
        raise ConfigError("--runs, --disc-iterations and --pred-iterations must be positive")
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    figures: dict[str, Any] = {
        "protocol": {"runs": args.runs, "steps": args.steps, "hidden": args.hidden, "disc_iterations": args.disc_iterations,
                     "pred_iterations": args.pred_iterations,
                     "sine_windows": args.sine_windows, "loss": "WGAN-GP", "n_critic": 5},
        "datasets": {},
    }
    for name in names:
        data = _load(name, args.sine_windows)
        runs = []
        for seed in range(args.runs):
            print(f"{name}: run {seed + 1}/{args.runs} ...", file=sys.stderr)
            started = time.perf_counter()
            trained = train_gan(data, GanConfig(steps=args.steps, hidden=args.hidden, seed=seed), progress=False)
            train_s = time.perf_counter() - started
            scores = evaluate_gan(trained, seed, args.disc_iterations, args.pred_iterations)
            runs.append({**{k: round(v, 4) for k, v in scores.items()}, "seed": seed, "train_s": round(train_s, 1)})
            if seed == 0 and args.report_dir is not None:
                write_gan_report(trained, args.report_dir / name, f"GAN on {name}", {"scores": scores})
        figures["datasets"][name] = {
            "windows": len(data.x), "window": int(data.x.shape[1]), "n_features": int(data.x.shape[2]),
            "classes": len(data.classes), **_summary(runs), "published": PUBLISHED.get(name, {}), "runs": runs,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2))
    for name in [n.strip() for n in args.tstr.split(",") if n.strip()]:
        figures.setdefault("tstr", {})[name] = _tstr(name, args)
        args.out.write_text(json.dumps(figures, indent=2))
    print(json.dumps({n: {k: v for k, v in d.items() if k.endswith(("_mean", "_std"))}
                      for n, d in {**figures["datasets"], **figures.get("tstr", {})}.items()}))
    return 0


def _tstr(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """FCN test accuracy trained on real, synthetic and both, over ``--runs`` seeds."""
    from streamedge.paths import data_dir
    from streamedge.training.gan import GanConfig
    from streamedge.training.gan_data import load_gan_data
    from streamedge.training.gan_tstr import tstr_accuracies

    folder = data_dir() / "ucr"
    train, test = (load_gan_data(folder / f"{name}_{part}.ts") for part in ("TRAIN", "TEST"))
    runs = []
    for seed in range(args.runs):
        print(f"{name} TSTR: run {seed + 1}/{args.runs} ...", file=sys.stderr)
        config = GanConfig(steps=args.steps, hidden=args.hidden, seed=seed)
        runs.append({k: round(v, 4) for k, v in tstr_accuracies(train, test, config, args.tstr_epochs).items()})
    out: dict[str, Any] = {"train_windows": len(train.x), "test_windows": len(test.x), "classifier": "fcn",
                           "epochs": args.tstr_epochs}
    for key in ("trtr", "tstr", "augmented"):
        values = [r[key] for r in runs]
        out[f"{key}_mean"] = round(statistics.fmean(values), 4)
        out[f"{key}_std"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
    out["runs"] = runs
    return out
