"""Train, evaluate and export a classifier (MiniRocket or FCN) on labelled series (``.ts`` files)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamedge.training.artifacts import export_variants, reference_stats, write_output
from streamedge.training.config import ClassifierConfig
from streamedge.training.data import LabelledData, load_ts
from streamedge.training.errors import DataError
from streamedge.training.export import accuracy_gate
from streamedge.training.metrics import classification_metrics
from streamedge.training.minirocket import build_minirocket, plan_minirocket
from streamedge.training.models import best_epoch, build_classifier, fit, seed_everything
from streamedge.training.report import plot_confusion, plot_learning_curves, plot_penalty_path, write_index
from streamedge.training.ridge import fit_ridge
from streamedge.training.windowing import Normaliser

__all__ = ["MIN_SELECTION_SERIES", "MIN_SERIES_PER_CLASS", "train_classifier", "stratified_split"]

_log = logging.getLogger(__name__)
# One series per class goes to validation and at least two stay for training.
MIN_SERIES_PER_CLASS: Final = 3
# Full-int8 calibration uses at most this many training windows.
_REPRESENTATIVE: Final = 200
# Fewer series than this in the set that selects the model (FCN: the validation split; MiniRocket:
# leave-one-out over the training set) and one series moves its accuracy by more than 5 points.
MIN_SELECTION_SERIES: Final = 20
# A 95 % test-accuracy interval wider than this many points is reported as a warning.
_WIDE_INTERVAL: Final = 10.0


def stratified_split(
    labels: npt.NDArray[np.int64], fraction: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Indices ``(train, validation)``: about ``fraction`` of each class, at least one, to validation."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = max(1, round(fraction * len(members)))
        val.extend(members[:n_val].tolist())
        train.extend(members[n_val:].tolist())
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(val), dtype=np.int64)


def _check(train: LabelledData, test: LabelledData) -> None:
    counts = {label: train.labels.count(label) for label in train.class_labels}
    present = {k: v for k, v in counts.items() if v > 0}
    if len(present) < 2:
        raise DataError(f"training data has {len(present)} class(es) with series; a classifier needs at least 2")
    small = {k: v for k, v in present.items() if v < MIN_SERIES_PER_CLASS}
    if small:
        raise DataError(
            f"too few training series per class: {small}; each class needs at least {MIN_SERIES_PER_CLASS} "
            "(one is held out for validation)"
        )
    if train.x.shape[2] != test.x.shape[2]:
        raise DataError(f"train has {train.x.shape[2]} channel(s), test has {test.x.shape[2]}")


def _resample_to(data: LabelledData, length: int) -> LabelledData:
    if data.x.shape[1] == length:
        return data
    old = np.linspace(0.0, 1.0, data.x.shape[1])
    new = np.linspace(0.0, 1.0, length)
    x = np.stack([[np.interp(new, old, s[:, c]) for c in range(s.shape[1])] for s in data.x]).transpose(0, 2, 1)
    data.report.notes.append(f"test series resampled from length {data.x.shape[1]} to the training length {length}")
    return LabelledData(x=x.astype(np.float32), labels=data.labels, class_labels=data.class_labels, report=data.report)


def _selection_warning(n: int, what: str) -> str:
    """Warn (log, before training) when the set that selects the model is too small; the text or ``""``."""
    if n >= MIN_SELECTION_SERIES:
        return ""
    warning = (f"{what} has {n} series (fewer than {MIN_SELECTION_SERIES}): one series moves its accuracy by "
               f"{100 / n:.1f} points, so what it selects is noisy")
    _log.warning("%s", warning)
    return warning


def _fit_fcn(x_all: npt.NDArray[np.float32], y_all: npt.NDArray[np.int64], n_classes: int,
             config: ClassifierConfig, progress: bool) -> tuple[Any, dict[str, list[float]], dict[str, Any]]:
    """Early stopping on a stratified validation split, then (``refit``) the same epochs on every series."""
    train_idx, val_idx = stratified_split(y_all, config.val_fraction, config.seed)
    warning = _selection_warning(len(val_idx), "the validation split that chooses the epoch count")
    length, channels = x_all.shape[1], x_all.shape[2]
    seed_everything(config.seed)
    model = build_classifier(length, channels, n_classes, config)
    history = fit(model, (x_all[train_idx], y_all[train_idx]), (x_all[val_idx], y_all[val_idx]), config.epochs,
                  min(config.batch_size, len(train_idx)), config.patience, progress, reduce_lr=True,
                  min_epochs=config.min_epochs)
    chosen_epochs = best_epoch(history, config.min_epochs)
    if config.refit:
        # Early stopping chose the epoch count; the final model learns from every training series.
        seed_everything(config.seed)
        model = build_classifier(length, channels, n_classes, config)
        refit_history = fit(model, (x_all, y_all), None, chosen_epochs, config.batch_size, config.patience,
                            progress, reduce_lr=True)
        history = {**history, **{f"refit_{k}": v for k, v in refit_history.items()}}
    return model, history, {
        "epochs_run": len(history["loss"]), "best_epoch": chosen_epochs, "n_validation": len(val_idx),
        "warning": warning,
    }


def _fit_minirocket(x_all: npt.NDArray[np.float32], y_all: npt.NDArray[np.int64], n_classes: int,
                    config: ClassifierConfig) -> tuple[Any, dict[str, list[float]], dict[str, Any]]:
    """Plan the transform on the training series, fit the ridge head on their features (no split needed)."""
    warning = _selection_warning(len(y_all), "leave-one-out over the training set, which chooses the penalty,")
    seed_everything(config.seed)
    plan = plan_minirocket(x_all, config.features, config.seed)
    features = np.asarray(build_minirocket(plan, n_classes).predict(x_all, batch_size=64, verbose=0))
    head = fit_ridge(features, y_all, n_classes)
    history = {"alpha": list(head.loo_errors), "loo_error": list(head.loo_errors.values())}
    return build_minirocket(plan, n_classes, head), history, {
        "n_features": plan.n_features, "dilations": list(plan.dilations), "ridge_alpha": head.alpha,
        "loo_accuracy": head.loo_accuracy, "n_validation": 0,
        "warning": warning,
    }


def train_classifier(
    train_path: Path,
    test_path: Path,
    out: Path,
    config: ClassifierConfig,
    name: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Load, fit (``config.model``: MiniRocket or FCN), test once, export every TFLite variant.

    Small-data safety: the test accuracy carries its 95 % interval (``accuracy_ci95``), and
    ``metrics.json -> warnings`` (also logged) says when the set that selects the model has
    fewer than :data:`MIN_SELECTION_SERIES` series or the test interval is wider than 10 points.

    Args:
        train_path: training ``.ts`` file.
        test_path: test ``.ts`` file (touched once, after training).
        out: output folder (created; see :mod:`training.artifacts` for its layout).
        config: hyperparameters.
        name: model name; default ``<dataset>-<model>``.
        progress: show progress bars.

    Returns:
        The ``metrics.json`` content.

    Raises:
        DataError: unreadable files, fewer than 3 series per class, mismatched channels.
    """
    train = load_ts(train_path)
    test = load_ts(test_path)
    _check(train, test)
    test = _resample_to(test, train.x.shape[1])
    class_labels = [c for c in train.class_labels if c in set(train.labels)]
    y_all = train.label_indices(class_labels)
    y_test = test.label_indices(class_labels)
    normaliser = Normaliser.fit(train.x)
    x_all = normaliser.transform(train.x)
    x_test = normaliser.transform(test.x)
    out.mkdir(parents=True, exist_ok=True)
    length, channels = train.x.shape[1], train.x.shape[2]
    features = [f"channel_{c}" for c in range(channels)] if channels > 1 else ["value"]

    n_classes = len(class_labels)
    started = time.perf_counter()
    if config.model == "minirocket":
        model, history, fitted = _fit_minirocket(x_all, y_all, n_classes, config)
    else:
        model, history, fitted = _fit_fcn(x_all, y_all, n_classes, config, progress)
    fitted["fit_seconds"] = time.perf_counter() - started
    warnings = [w for w in (fitted.pop("warning"),) if w]
    model.save(out / "model.keras")

    def score(outputs: npt.NDArray[np.float32]) -> dict[str, Any]:
        return classification_metrics(y_test, np.argmax(outputs, axis=1), n_classes)

    keras_metrics = score(np.asarray(model.predict(x_test, verbose=0)))

    rng = np.random.default_rng(config.seed)
    representative = x_all[rng.permutation(len(x_all))[:_REPRESENTATIVE]]
    results, _, keras_ms = export_variants(model, out / "variants", representative, x_test, score,
                                           accuracy_gate(keras_metrics), progress,
                                           per_channel=config.model != "minirocket")
    for r in results:
        if not r.passed:
            print(f"parity gate: variant {r.variant} refused: {r.reason}")
    model_name = name or f"{Path(train_path).stem.removesuffix('_TRAIN')}-{config.model}"
    low, high = keras_metrics["accuracy_ci95"]
    if high - low > _WIDE_INTERVAL:
        warnings.append(f"test accuracy {keras_metrics['accuracy']:.1f} % on {len(y_test)} series: the 95 % interval "
                        f"is {low:.1f}-{high:.1f} %, too wide to rank models that differ by a few points")
        _log.warning("%s", warnings[-1])
    manifest, metrics = write_output(
        out, name=model_name, task="classify", results=results, keras_metrics=keras_metrics, keras_ms=keras_ms,
        extra_metrics={
            "history": history,
            **fitted,
            "warnings": warnings,
            "data": {"train": train.report.to_dict(), "test": test.report.to_dict(),
                     "n_train": len(y_all) - fitted["n_validation"], "n_validation": fitted["n_validation"],
                     "n_test": len(y_test)},
            "class_labels": class_labels,
        },
        manifest_fields={
            "input_shape": [-1, length, channels], "output_shape": [-1, n_classes], "window": length, "horizon": 0,
            "features": features, "normalisation": normaliser.to_manifest(), "class_labels": class_labels,
            "reference_stats": reference_stats(train.x, features),
            "hyperparameters": config.to_dict(),
        },
    )
    report = out / "report"
    report.mkdir(exist_ok=True)
    curve = (plot_penalty_path(history, report / "ridge_penalty.png") if config.model == "minirocket"
             else plot_learning_curves(history, report / "learning_curves.png"))
    images = [curve,
              plot_confusion(keras_metrics["confusion_matrix"], class_labels, "Keras", report / "confusion_keras.png")]
    selected = metrics["selected_variant"]
    images.append(plot_confusion(metrics["tflite"][selected]["confusion_matrix"], class_labels,
                                 f"TFLite {selected}", report / f"confusion_{selected}.png"))
    write_index(report, f"{manifest.name}: classifier report", metrics, images)
    _log.info("wrote %s", json.dumps({"out": str(out), "selected": selected}))
    return metrics
