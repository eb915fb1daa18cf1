"""``streamedge train classifier|forecaster``: fit, evaluate and export a model folder.

Light module: TensorFlow is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from streamedge.cli.common import add_kafka_options, add_table_options, kafka_settings
from streamedge.cli.options import option
from streamedge.errors import ConfigError
from streamedge.paths import user_state_dir
from streamedge.training.config import CLASSIFIER_MODELS, FORECASTER_MODELS
from streamedge.training.gan_cli import register_gan

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``train`` command group."""
    parser = subparsers.add_parser("train", help="train a model, export TFLite variants, write a report")
    commands = parser.add_subparsers(dest="train_command", metavar="MODEL", required=True)

    clf = commands.add_parser("classifier", help="MiniRocket or FCN classifier on UCR/UEA .ts files",
                              description="Train a classifier (default MiniRocket); the test file is used once, "
                                          "at the end.")
    option(clf, "--train", type=Path, required=True, env="STREAMEDGE_TRAIN_TRAIN", help="training .ts file")
    option(clf, "--test", type=Path, required=True, env="STREAMEDGE_TRAIN_TEST", help="test .ts file")
    option(clf, "--model", choices=CLASSIFIER_MODELS, default=None, env="STREAMEDGE_TRAIN_MODEL",
           help="minirocket (default: fixed random convolutions + ridge head) or fcn (trained CNN)")
    option(clf, "--features", type=int, default=None, env="STREAMEDGE_TRAIN_FEATURES",
           help="MiniRocket features (default 10000, the paper's, chosen by the bench models protocol; 1008 is 3-8x faster)")
    option(clf, "--augment-with", type=Path, default=None, env="STREAMEDGE_TRAIN_AUGMENT_WITH",
           help="'streamedge train gan' folder: top up small classes with synthetic windows")
    option(clf, "--augment-ratio", type=float, default=1.0, env="STREAMEDGE_TRAIN_AUGMENT_RATIO",
           help="with --augment-with: every class is topped up to this times the largest class's count")
    _common(clf)
    clf.set_defaults(handler=_classifier)

    fc = commands.add_parser("forecaster", help="LSTM or linear forecaster on a CSV/TSV table",
                             description="Train forecasters (an LSTM and a linear model over the window by default) "
                                         "and keep the one best on validation, never worse than seasonal naive there; "
                                         "the last ORIGINS x HORIZON points of every series are the test set, scored "
                                         "from ORIGINS rolling origins; everything before is training and validation.")
    # Not required=True: argparse would ignore a value that came from the env var or config file.
    source = fc.add_mutually_exclusive_group()
    option(source, "--data", type=Path, default=None, env="STREAMEDGE_TRAIN_DATA", help="CSV/TSV file")
    option(source, "--from-topic", default=None, env="STREAMEDGE_TRAIN_FROM_TOPIC",
           help="replay history from this Kafka readings topic instead (one series per device/stream key)")
    option(fc, "--keys", default=None, env="STREAMEDGE_TRAIN_KEYS",
           help="with --from-topic: only these device/stream keys, comma-separated")
    add_kafka_options(fc)
    option(fc, "--column", default=None, env="STREAMEDGE_TRAIN_COLUMN",
           help="feature column(s), comma-separated; default every numeric column")
    option(fc, "--id-column", default=None, env="STREAMEDGE_TRAIN_ID_COLUMN",
           help="series id column (long format: one global model across the series); default device_id if present")
    add_table_options(fc, "STREAMEDGE_TRAIN")
    option(fc, "--horizon", type=int, required=True, env="STREAMEDGE_TRAIN_HORIZON", help="forecast steps")
    option(fc, "--season", type=int, required=True, env="STREAMEDGE_TRAIN_SEASON",
           help="season length in readings (1 if none)")
    option(fc, "--window", type=int, default=None, env="STREAMEDGE_TRAIN_WINDOW",
           help="input window; default max(3 * season, 2 * horizon, 8), or two seasons with --recent")
    option(fc, "--recent", type=int, default=None, env="STREAMEDGE_TRAIN_RECENT",
           help="seasonal-lag input: the LSTM reads this many recent readings, the head the forecast hours one "
                "and two seasons back; default min(season, max(2 * horizon, 8)) for seasons over 48, else 0 "
                "(the LSTM reads window - season readings)")
    option(fc, "--units", type=int, default=None, env="STREAMEDGE_TRAIN_UNITS", help="LSTM units (default 32)")
    option(fc, "--model", choices=FORECASTER_MODELS, default=None, env="STREAMEDGE_TRAIN_MODEL",
           help="auto (default: train the LSTM and the linear model, keep the better on validation), lstm or linear")
    option(fc, "--origins", type=int, default=None, env="STREAMEDGE_TRAIN_ORIGINS",
           help="rolling test origins, each HORIZON points (default 3); figures are reported per origin, "
                "with mean and spread")
    option(fc, "--base-diffs", type=int, default=None, env="STREAMEDGE_TRAIN_BASE_DIFFS",
           help="seasonal-lag input: the base is seasonal naive plus the mean of the last N seasonal differences "
                "(default 4; 0: seasonal naive)")
    option(fc, "--correction-scales", default=None, env="STREAMEDGE_TRAIN_CORRECTION_SCALES",
           help="seasonal-lag input: after training, scale the LSTM's correction by whichever of these factors "
                "(comma-separated, 0 to 1) scores best on validation; default 0 (ship the base), '0,1' lets the "
                "trained correction compete")
    option(fc, "--per-series-scaling", choices=("auto", "on", "off"), default="auto",
           env="STREAMEDGE_TRAIN_PER_SERIES_SCALING",
           help="scale every window by its own level and step size inside the model (one global model over "
                "series of very different scales); auto: on when the series' MASE scales differ over 100x. "
                "The manifest records the decision and retraining reuses it")
    _common(fc)
    fc.set_defaults(handler=_forecaster)
    _register_study(commands)
    _register_watch(commands)
    register_gan(commands)


def _register_study(commands: Any) -> None:
    study = commands.add_parser(
        "lstm-conversions", help="measure the ways to convert a trained LSTM forecaster to TFLite",
        description="Convert a trained forecaster unrolled (shipped), as a fixed-batch WHILE loop, with the "
                    "default converter and with SELECT_TF_OPS; report size, runtime loads, latency, parity.")
    option(study, "--model-dir", type=Path, required=True, env="STREAMEDGE_TRAIN_MODEL_DIR",
           help="output folder of 'streamedge train forecaster'")
    option(study, "--data", type=Path, required=True, env="STREAMEDGE_TRAIN_DATA", help="CSV/TSV it was trained on")
    option(study, "--column", default=None, env="STREAMEDGE_TRAIN_COLUMN", help="feature column(s), comma-separated")
    option(study, "--id-column", default=None, env="STREAMEDGE_TRAIN_ID_COLUMN", help="series id column")
    option(study, "--json", type=Path, default=None, env="STREAMEDGE_TRAIN_JSON", help="also write the figures here")
    study.set_defaults(handler=_lstm_conversions)


def _register_watch(commands: Any) -> None:
    watch = commands.add_parser(
        "watch", help="retrainer service: answer retrain requests with validated, promoted models",
        description="Consume the retrain-requests topic in a consumer group; for a forecaster, replay recent "
                    "history of its routed streams, retrain with the active version's hyperparameters, gate "
                    "(TFLite parity, champion/challenger on held-out newest readings), register, promote and "
                    "announce on the model-updates topic. Classifier requests are recorded as needing labels.")
    option(watch, "--registry", type=Path, required=True, env="STREAMEDGE_TRAIN_REGISTRY", help="model registry folder")
    option(watch, "--signing-key", type=Path, required=True, env="STREAMEDGE_TRAIN_SIGNING_KEY",
           help="Ed25519 private key (PEM) for new versions")
    option(watch, "--public-key", type=Path, required=True, env="STREAMEDGE_TRAIN_PUBLIC_KEY",
           help="Ed25519 public key (PEM) the active versions are verified with")
    option(watch, "--routes", required=True, env="STREAMEDGE_TRAIN_ROUTES",
           help='stream name -> model names, JSON, as the stream worker takes it: {"s": ["m"]}')
    option(watch, "--history", type=int, default=2000, env="STREAMEDGE_TRAIN_HISTORY",
           help="newest readings replayed per device/stream key")
    option(watch, "--holdout-fraction", type=float, default=0.2, env="STREAMEDGE_TRAIN_HOLDOUT_FRACTION",
           help="newest share of each key held out for the champion/challenger comparison")
    option(watch, "--min-improvement", type=float, default=0.02, env="STREAMEDGE_TRAIN_MIN_IMPROVEMENT",
           help="relative held-out MAE improvement over the active version needed to promote")
    option(watch, "--min-interval-s", type=float, default=600.0, env="STREAMEDGE_TRAIN_MIN_INTERVAL_S",
           help="at most one retrain per model per interval, seconds")
    option(watch, "--epochs", type=int, default=None, env="STREAMEDGE_TRAIN_EPOCHS",
           help="cap on the stored maximum epochs")
    option(watch, "--promote-to", default="canary:10", env="STREAMEDGE_TRAIN_PROMOTE_TO",
           help="rollout target of an automatic promotion: canary:<pct>, group:<name> or all (widen a canary "
                "with 'models promote' once 'models watch-canary' judged it)")
    option(watch, "--enrolment", type=Path, default=None, env="STREAMEDGE_TRAIN_ENROLMENT",
           help="enrolment file ('edge enrol'): learn only from readings of enrolled devices, each signed by the "
                "device it names (default: any device, signed or not)")
    option(watch, "--devices", default="", env="STREAMEDGE_TRAIN_DEVICES",
           help="the stream worker's device allow-list: comma-separated fnmatch patterns; readings of other "
                "devices are not learnt from (default: every device)")
    option(watch, "--max-device-share", type=float, default=0.5, env="STREAMEDGE_TRAIN_MAX_DEVICE_SHARE",
           help="largest share of the training readings one device may hold")
    option(watch, "--outlier-stds", type=float, default=4.0, env="STREAMEDGE_TRAIN_OUTLIER_STDS",
           help="refuse a device whose mean is this many training standard deviations from the median device")
    option(watch, "--group-id", default="streamedge-retrainer", env="STREAMEDGE_TRAIN_GROUP_ID",
           help="Kafka consumer group")
    option(watch, "--work-dir", type=Path, default=user_state_dir() / "retrain",
           env="STREAMEDGE_TRAIN_WORK_DIR", help="scratch folder for candidates; default under STREAMEDGE_HOME")
    option(watch, "--max-requests", type=int, default=None, env="STREAMEDGE_TRAIN_MAX_REQUESTS",
           help="exit after handling this many requests (default: run until interrupted)")
    option(watch, "--metrics-port", type=int, default=0, env="STREAMEDGE_TRAIN_METRICS_PORT",
           help="serve Prometheus /metrics on this port (0: off)")
    option(watch, "--no-progress", action="store_true", env="STREAMEDGE_TRAIN_NO_PROGRESS", help="hide progress bars")
    add_kafka_options(watch)
    watch.set_defaults(handler=_watch)


def _watch(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    import json

    from prometheus_client import CollectorRegistry, start_http_server

    from streamedge.cli.common import topic_layout
    from streamedge.contracts.identity import load_enrolment
    from streamedge.contracts.signing import load_private_key, load_public_key
    from streamedge.registry import ModelRegistry
    from streamedge.training.admission import AdmissionPolicy
    from streamedge.training.retrain import Retrainer, RetrainMetrics, RetrainPolicy, serve

    try:
        routes = json.loads(args.routes)
    except ValueError as exc:
        raise ConfigError(f"--routes is not JSON: {exc}") from exc
    if not isinstance(routes, dict) or not all(
            isinstance(v, list) and all(isinstance(n, str) for n in v) for v in routes.values()):
        raise ConfigError('--routes must map stream names to lists of model names, e.g. {"s": ["m"]}')
    enrolment = load_enrolment(args.enrolment) if args.enrolment else None
    try:
        admission = AdmissionPolicy(enrolment.devices if enrolment else None, args.max_device_share,
                                    args.outlier_stds, enrolment, tuple(_split(args.devices) or ()))
        policy = RetrainPolicy(history=args.history, holdout_fraction=args.holdout_fraction,
                               min_improvement=args.min_improvement, min_interval_s=args.min_interval_s,
                               epochs=args.epochs, admission=admission, promote_to=args.promote_to)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    registry = CollectorRegistry()
    if args.metrics_port:
        start_http_server(args.metrics_port, registry=registry)
    retrainer = Retrainer(ModelRegistry(args.registry), load_private_key(args.signing_key),
                          load_public_key(args.public_key), kafka_settings(args), topic_layout(args), routes,
                          args.work_dir, policy, RetrainMetrics(registry), progress=not args.no_progress)
    try:
        outcomes = serve(retrainer, args.group_id, max_requests=args.max_requests)
    except KeyboardInterrupt:
        return 0
    for outcome in outcomes:
        print(json.dumps(outcome.to_dict()))
    return 0


def _lstm_conversions(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    import dataclasses
    import json

    import keras
    import numpy as np

    from streamedge.contracts.manifest import read_manifest
    from streamedge.training.config import ForecasterConfig
    from streamedge.training.data import load_table
    from streamedge.training.lstm_conversions import compare_conversions
    from streamedge.training.windowing import make_windows

    manifest = read_manifest(args.model_dir)
    names = {f.name for f in dataclasses.fields(ForecasterConfig)}
    config = ForecasterConfig(**{k: v for k, v in manifest.hyperparameters.items() if k in names})
    data = load_table(args.data, _split(args.column), args.id_column)
    mean, std = np.array(manifest.normalisation["mean"]), np.array(manifest.normalisation["std"])
    windows = np.concatenate([make_windows((s - mean) / std, config.window, 0)[0] for s in data.series])[-200:]
    model = keras.saving.load_model(args.model_dir / "model.keras")
    results = compare_conversions(model, config, len(manifest.features), windows.astype(np.float32),
                                  args.model_dir / "conversions")
    for name, entry in results.items():
        if not entry["converted"]:
            print(f"  {name:<18} conversion failed: {entry['error']}")
            continue
        loads = ", ".join(f"{k}: {v[:60]}" for k, v in entry["runtimes"].items())
        speed = entry.get("latency_ms_p50")
        print(f"  {name:<18} size={entry['size_bytes']}B  p50={speed if speed is None else round(speed, 4)}ms  "
              f"max|diff|={entry.get('max_abs_diff', entry.get('run_error'))}  [{loads}]")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    option(parser, "--out", type=Path, required=True, env="STREAMEDGE_TRAIN_OUT", help="output folder")
    option(parser, "--epochs", type=int, default=None, env="STREAMEDGE_TRAIN_EPOCHS",
           help="maximum epochs (FCN / LSTM; default 300, early stopping usually ends sooner)")
    option(parser, "--seed", type=int, default=0, env="STREAMEDGE_TRAIN_SEED", help="random seed")
    option(parser, "--name", default=None, env="STREAMEDGE_TRAIN_NAME",
           help="model name (default: <data file>-<model> / -lstm)")
    option(parser, "--no-progress", action="store_true", env="STREAMEDGE_TRAIN_NO_PROGRESS",
           help="hide progress bars")
    option(parser, "--register", type=Path, default=None, env="STREAMEDGE_TRAIN_REGISTER",
           help="model registry folder: add the result as a new signed version")
    option(parser, "--signing-key", type=Path, default=None, env="STREAMEDGE_TRAIN_SIGNING_KEY",
           help="Ed25519 private key (PEM) used with --register")


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ log lines would bury the progress bars and the summary; even its ERROR lines
    # on a normal run are noise (tf.data's "NodeDef mentions attribute use_unbounded_threadpool"),
    # and a real failure surfaces as a Python exception. TF_CPP_MIN_LOG_LEVEL=0 brings them back.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # The Python side logs every SavedModel written during export at INFO.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


def _overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _classifier(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from streamedge.training.classify import train_classifier
    from streamedge.training.config import ClassifierConfig

    if args.register is not None and args.signing_key is None:
        raise ValueError("--register needs --signing-key")
    config = ClassifierConfig(**_overrides(args, ("model", "features", "epochs", "seed")))
    train = args.train
    if args.augment_with is not None:
        from streamedge.training.gan_augment import augment_ts

        train, added = augment_ts(args.train, args.augment_with, args.out, args.augment_ratio, args.seed or 0)
        print(f"augmented with synthetic windows per class: {added['synthetic']}")
    metrics = train_classifier(train, args.test, args.out, config, name=args.name,
                               progress=not args.no_progress)
    _summary(metrics, ("accuracy", "f1_macro"), args.out)
    return _maybe_register(args)


def _forecaster(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from streamedge.training.forecast import default_config, train_forecaster

    if args.register is not None and args.signing_key is None:
        raise ValueError("--register needs --signing-key")
    if (args.data is None) == (args.from_topic is None):
        raise ConfigError("give exactly one of --data FILE or --from-topic TOPIC")
    fields = _overrides(args, ("epochs", "seed", "units", "base_diffs", "model", "origins"))
    fields["per_series_scaling"] = {"auto": None, "on": True, "off": False}[args.per_series_scaling]
    if args.correction_scales is not None:
        fields["correction_scales"] = tuple(float(f) for f in _split(args.correction_scales) or [])
    config = default_config(args.horizon, args.season, args.window, args.recent, **fields)
    columns = _split(args.column)
    data: Any = args.data
    name = args.name
    if args.data is not None:
        from streamedge.training.data import load_table

        data = load_table(args.data, columns, args.id_column, args.time_column, args.time_unit)
        print(data.report.notes[0])
        name = name or f"{args.data.stem}-lstm"
    if args.from_topic is not None:
        from streamedge.training.kafka_source import replay_topic

        data = replay_topic(kafka_settings(args), args.from_topic, keys=_split(args.keys))
        print(f"replayed {sum(len(s) for s in data.series)} readings of {len(data.series)} series from "
              f"{args.from_topic}")
    metrics = train_forecaster(data, args.out, config, columns=columns, id_column=args.id_column,
                               name=name, progress=not args.no_progress,
                               fit_window=args.window is None and args.origins is None)
    _summary(metrics, ("mae", "rmse", "mape", "mase"), args.out)
    _origins_summary(metrics)
    return _maybe_register(args)


def _origins_summary(metrics: dict[str, Any]) -> None:
    """MASE over the rolling origins (mean and spread) and which model ships, as the report has them."""
    origins = metrics["origins"]
    for label, figures in origins.items():
        if label != "count":
            per = ", ".join(f"{v:.3f}" for v in figures["mase"])
            print(f"  {label:<25}MASE over {origins['count']} origins: mean {figures['mase_mean']:.4f} "
                  f"std {figures['mase_std']:.4f} ({per})")
    family = metrics["family"]
    print(f"ships: {family['ships']} ({family['why']})")


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _summary(metrics: dict[str, Any], keys: tuple[str, ...], out: Path) -> None:
    def row(label: str, values: dict[str, Any]) -> str:
        cells = "  ".join(f"{k}={values[k]:.4g}" for k in keys if isinstance(values.get(k), int | float))
        extra = ""
        if "size_bytes" in values:
            extra = f"  size={values['size_bytes']}B  p50={values['latency_ms_p50']:.4f}ms  {values['parity']}"
        return f"  {label:<25}{cells}{extra}"

    print(f"keras latency p50 {metrics['keras']['latency_ms_p50']:.4f} ms (tf.function)")
    print(row("keras", metrics["keras"]))
    for variant, values in metrics["tflite"].items():
        print(row(f"tflite {variant}", values))
    for name, values in metrics.get("baselines", {}).items():
        print(row(f"baseline {name}", values))
    if "accuracy_ci95" in metrics["keras"]:
        low, high = metrics["keras"]["accuracy_ci95"]
        print(f"keras test accuracy 95 % interval: {low:.1f}-{high:.1f} % ({metrics['data']['n_test']} series)")
    for warning in metrics.get("warnings", []):
        print(f"warning: {warning}")
    print(f"selected variant: {metrics['selected_variant']}; wrote {out} (report: {out / 'report' / 'index.html'})")


def _maybe_register(args: argparse.Namespace) -> int:
    if args.register is None:
        return 0
    from streamedge.contracts.signing import load_private_key
    from streamedge.registry import ModelRegistry

    manifest = ModelRegistry(args.register).add(args.out, load_private_key(args.signing_key))
    print(f"registered {manifest.name} version {manifest.version} in {args.register}")
    return 0
