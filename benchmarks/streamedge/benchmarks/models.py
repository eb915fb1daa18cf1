"""``streamedge bench models``: classifier candidates over many UCR/UEA data sets, with a selection protocol.

Every candidate is trained with ``streamedge.training.train_classifier`` exactly as a user's
``streamedge train classifier`` run would be (default flags apart from the candidate's own), on the
official train/test split of each data set, for one or more seeds. The data sets are split in two
before anything runs: the **selection** sets choose the default, the **unseen** sets only report it.

The protocol (fixed in advance): on the selection sets, each candidate's mean Keras accuracy over
seeds is ranked per data set (ties share the mean rank); the lowest mean rank wins, ties broken by
the lower median int8 single-window latency. The unseen rows then show the chosen candidate's
accuracy beside the published FCN, ResNet, InceptionTime and ROCKET figures
(:mod:`streamedge.benchmarks.published`), with its mean rank among them.

Each run's folder under ``--work-dir`` is kept; a run whose ``bench_run.json`` was computed under
the same key (its resolved configuration, the data files' paths and contents, the code version:
:mod:`streamedge.benchmarks.run_cache`) is read back instead of trained again, so invocations with
different candidates can share one folder and a last one computes the table over all of them. A
run computed under another key is trained again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamedge.benchmarks.published import PUBLISHED, SOURCES
from streamedge.benchmarks.run_cache import read_run, run_key, write_run
from streamedge.paths import data_dir, user_state_dir

__all__ = ["SELECTION", "UNSEEN", "add_arguments", "mean_ranks", "run"]

SELECTION = ("GunPoint", "ItalyPowerDemand", "BasicMotions", "ArrowHead")
UNSEEN = ("JapaneseVowels", "PickupGestureWiimoteZ", "Coffee")
# Candidate name -> ClassifierConfig fields (besides the seed).
_CANDIDATES: dict[str, dict[str, Any]] = {
    "minirocket": {"model": "minirocket", "features": 10_000},
    "minirocket-1k": {"model": "minirocket", "features": 1008},
    "fcn": {"model": "fcn"},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``streamedge bench models``."""
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON figures")
    parser.add_argument("--candidates", default="minirocket:3,minirocket-1k:1,fcn:3",
                        help=f"NAME:SEEDS,... from {sorted(_CANDIDATES)} (seeds 0..SEEDS-1)")
    parser.add_argument("--selection", default=",".join(SELECTION), help="data sets that choose the default")
    parser.add_argument("--unseen", default=",".join(UNSEEN), help="data sets that only report it")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with NAME_TRAIN.ts / NAME_TEST.ts (default: the vendored UCR files)")
    parser.add_argument("--work-dir", type=Path, default=user_state_dir() / "bench" / "models",
                        help="one folder per run, kept and reused (default under STREAMEDGE_HOME)")
    parser.add_argument("--features", type=int, default=None, help="override MiniRocket features (toy runs)")
    parser.add_argument("--epochs", type=int, default=None, help="override FCN maximum epochs (toy runs)")


def _parse_candidates(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, seeds = part.partition(":")
        if name not in _CANDIDATES:
            raise ValueError(f"unknown candidate {name!r}; choose from {sorted(_CANDIDATES)}")
        out[name] = int(seeds or 1)
    return out


def _one_run(args: argparse.Namespace, candidate: str, dataset: str, seed: int) -> dict[str, Any]:
    from streamedge.training.classify import train_classifier
    from streamedge.training.config import ClassifierConfig

    folder = args.work_dir / candidate / dataset / f"seed{seed}"
    fields = dict(_CANDIDATES[candidate], seed=seed)
    if args.features is not None and fields["model"] == "minirocket":
        fields["features"] = args.features
    if args.epochs is not None and fields["model"] == "fcn":
        fields["epochs"] = args.epochs
    source = args.data_dir or data_dir() / "ucr"
    files = [source / f"{dataset}_TRAIN.ts", source / f"{dataset}_TEST.ts"]
    key = run_key({"candidate": candidate, "dataset": dataset, "config": ClassifierConfig(**fields).to_dict()}, files)
    cached = read_run(folder, key)
    if cached is not None:
        return cached
    print(f"training {candidate} on {dataset}, seed {seed} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    metrics = train_classifier(files[0], files[1], folder, ClassifierConfig(**fields), progress=False)
    tflite = metrics["tflite"]
    result = {
        "candidate": candidate, "dataset": dataset, "seed": seed,
        "keras_accuracy": metrics["keras"]["accuracy"], "accuracy_ci95": metrics["keras"]["accuracy_ci95"],
        "int8_accuracy": tflite["int8"]["accuracy"], "int8_parity": tflite["int8"]["parity"],
        "float32_bytes": tflite["float32"]["size_bytes"], "int8_bytes": tflite["int8"]["size_bytes"],
        "keras_latency_ms": metrics["keras"]["latency_ms_p50"],
        "int8_latency_ms": tflite["int8"]["latency_ms_p50"],
        "float32_latency_ms": tflite["float32"]["latency_ms_p50"],
        "selected_variant": metrics["selected_variant"],
        "selected_accuracy": tflite[metrics["selected_variant"]]["accuracy"],
        # Every variant, for the int8-against-the-rest columns (runs cached before they were recorded lack it).
        "variants": {v: {"accuracy": r["accuracy"], "size_bytes": r["size_bytes"], "latency_ms": r["latency_ms_p50"],
                         "parity": r["parity"]} for v, r in tflite.items()},
        "selected_latency_ms": tflite[metrics["selected_variant"]]["latency_ms_p50"],
        "fit_seconds": metrics["fit_seconds"], "wall_seconds": time.perf_counter() - started,
        "warnings": metrics["warnings"],
    }
    write_run(folder, key, result)
    return result


def mean_ranks(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{data set: {method: accuracy}}`` -> mean rank per method (1 = best; ties share the mean rank).

    A method is ranked only on the data sets where it has a figure.
    """
    ranks: dict[str, list[float]] = {}
    for per_method in scores.values():
        for method, value in per_method.items():
            ahead = sum(1 for v in per_method.values() if v > value)
            tied = sum(1 for v in per_method.values() if v == value)
            ranks.setdefault(method, []).append(ahead + (tied + 1) / 2)
    return {method: float(np.mean(values)) for method, values in ranks.items()}


def _variant_columns(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean accuracy over seeds, seed-0 size and median latency of each exported variant (when recorded)."""
    recorded = [r["variants"] for r in runs if "variants" in r]
    if not recorded:
        return {}
    return {"variants": {v: {"accuracy_mean": float(np.mean([r[v]["accuracy"] for r in recorded])),
                             "size_bytes": recorded[0][v]["size_bytes"],
                             "latency_ms": float(np.median([r[v]["latency_ms"] for r in recorded])),
                             "refused": sum(r[v]["parity"] != "passed" for r in recorded)}
                         for v in recorded[0]}}


def _row(runs: list[dict[str, Any]], role: str) -> dict[str, Any]:
    keras = [r["keras_accuracy"] for r in runs]
    int8 = [r["int8_accuracy"] for r in runs]
    first = runs[0]
    return {
        "candidate": first["candidate"], "dataset": first["dataset"], "role": role, "seeds": len(runs),
        "keras_mean": float(np.mean(keras)), "keras_std": float(np.std(keras)),
        "keras_min": float(np.min(keras)), "keras_max": float(np.max(keras)),
        "int8_mean": float(np.mean(int8)), "int8_max_drop": float(np.max(np.subtract(keras, int8))),
        "accuracy_ci95_seed0": first["accuracy_ci95"],
        "int8_bytes": first["int8_bytes"], "float32_bytes": first["float32_bytes"],
        "int8_latency_ms": float(np.median([r["int8_latency_ms"] for r in runs])),
        "float32_latency_ms": float(np.median([r["float32_latency_ms"] for r in runs])),
        "keras_latency_ms": float(np.median([r["keras_latency_ms"] for r in runs])),
        "selected_variant": first["selected_variant"],
        "fit_seconds": float(np.median([r["fit_seconds"] for r in runs])),
        "wall_seconds": float(np.median([r["wall_seconds"] for r in runs])),
        "keras_over_int8_latency": float(np.median([r["keras_latency_ms"] / r["int8_latency_ms"] for r in runs])),
        "published": PUBLISHED.get(first["dataset"], {}),
        **_variant_columns(runs),
    }


def run(args: argparse.Namespace) -> int:
    """Train every candidate on every data set and seed, apply the protocol, write the JSON."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    candidates = _parse_candidates(args.candidates)
    selection = [d for d in args.selection.split(",") if d]
    unseen = [d for d in args.unseen.split(",") if d]
    args.work_dir = Path(args.work_dir).resolve()
    rows: list[dict[str, Any]] = []
    for dataset in [*selection, *unseen]:
        role = "selection" if dataset in selection else "unseen"
        for candidate, seeds in candidates.items():
            runs = [_one_run(args, candidate, dataset, seed) for seed in range(seeds)]
            rows.append(_row(runs, role))
            print(json.dumps({k: rows[-1][k] for k in ("candidate", "dataset", "keras_mean", "int8_mean")}),
                  file=sys.stderr, flush=True)

    def table(role: str) -> dict[str, dict[str, float]]:
        return {d: {r["candidate"]: r["keras_mean"] for r in rows if r["dataset"] == d}
                for d in (selection if role == "selection" else unseen)}

    selection_ranks = mean_ranks(table("selection"))
    latency = {c: float(np.median([r["int8_latency_ms"] for r in rows if r["candidate"] == c])) for c in candidates}
    chosen = min(candidates, key=lambda c: (selection_ranks[c], latency[c]))
    unseen_scores = table("unseen")
    with_published = {d: {**{m: v for m, v in PUBLISHED.get(d, {}).items() if v is not None}, **scores}
                      for d, scores in unseen_scores.items()}
    gaps = {c: [scores[c] - PUBLISHED[d]["FCN"] for d, scores in unseen_scores.items()  # type: ignore[operator]
                if PUBLISHED.get(d, {}).get("FCN") is not None] for c in candidates}
    int8_drop = {c: [r["keras_mean"] - r["int8_mean"] for r in rows if r["candidate"] == c] for c in candidates}
    result: dict[str, Any] = {
        "protocol": {"selection": selection, "unseen": unseen,
                     "rule": "lowest mean rank of mean Keras accuracy on the selection sets; ties: lower int8 latency"},
        "candidates": {c: {**_CANDIDATES[c], "seeds": s} for c, s in candidates.items()},
        "choice": {"chosen": chosen, "selection_mean_rank": selection_ranks, "median_int8_latency_ms": latency},
        "unseen": {
            "mean_rank_with_published": mean_ranks(with_published),
            "mean_keras_accuracy": {c: float(np.mean([s[c] for s in unseen_scores.values()])) for c in candidates},
            "mean_gap_to_published_fcn": {c: float(np.mean(g)) if g else None for c, g in gaps.items()},
        },
        "max_int8_drop": {c: float(np.max(v)) for c, v in int8_drop.items()},
        # Issue #10's int8 targets, per candidate: worst drop of one seed against Keras (points),
        # largest int8 / float32 file, smallest Keras / int8 single-window latency.
        "int8_targets": {c: {"max_seed_drop": max(r["int8_max_drop"] for r in rows if r["candidate"] == c),
                             "max_size_ratio": max(r["int8_bytes"] / r["float32_bytes"]
                                                   for r in rows if r["candidate"] == c),
                             "min_keras_over_int8_latency": min(r["keras_over_int8_latency"]
                                                                for r in rows if r["candidate"] == c)}
                         for c in candidates},
        "rows": rows,
        "sources": SOURCES,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"chosen": chosen, **result["unseen"]}, indent=1))
    return 0
