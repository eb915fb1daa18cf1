"""``streamedge train gan``: train the conditional GAN, export its TFLite generator, report.

Light module: TensorFlow is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from streamedge.cli.options import option

__all__ = ["register_gan"]


def register_gan(commands: Any) -> None:
    """Add ``train gan`` to the ``train`` command group."""
    gan = commands.add_parser(
        "gan", help="conditional time-series GAN (WGAN-GP); TFLite generator for 'streamedge simulate'",
        description="Train a conditional WGAN-GP on windows of a .ts file (conditioned on class) or a CSV/TSV "
                    "table (conditioned on --condition), export the generator to TFLite behind a parity gate, "
                    "score it (discriminative and predictive scores) and write metrics.json and index.html.")
    option(gan, "--data", type=Path, required=True, env="STREAMEDGE_TRAIN_DATA", help=".ts file or CSV/TSV table")
    option(gan, "--out", type=Path, required=True, env="STREAMEDGE_TRAIN_OUT", help="output folder")
    option(gan, "--condition", default=None, env="STREAMEDGE_TRAIN_CONDITION",
           help="table column whose value conditions each window (long format); .ts files use their classes")
    option(gan, "--window", type=int, default=None, env="STREAMEDGE_TRAIN_WINDOW", help="rows per window (tables)")
    option(gan, "--steps", type=int, default=1500, env="STREAMEDGE_TRAIN_STEPS", help="generator updates")
    option(gan, "--noise-dim", type=int, default=8, env="STREAMEDGE_TRAIN_NOISE_DIM", help="noise channels per step")
    option(gan, "--hidden", type=int, default=32, env="STREAMEDGE_TRAIN_HIDDEN", help="convolution width")
    option(gan, "--disc-iterations", type=int, default=2000, env="STREAMEDGE_TRAIN_DISC_ITERATIONS",
           help="mini-batches of the discriminative score's classifier (the paper's 2000)")
    option(gan, "--pred-iterations", type=int, default=5000, env="STREAMEDGE_TRAIN_PRED_ITERATIONS",
           help="mini-batches of the predictive score's predictor (the paper's 5000)")
    option(gan, "--seed", type=int, default=0, env="STREAMEDGE_TRAIN_SEED", help="random seed")
    option(gan, "--no-progress", action="store_true", env="STREAMEDGE_TRAIN_NO_PROGRESS", help="hide progress bars")
    gan.set_defaults(handler=_gan)


def _gan(args: argparse.Namespace) -> int:
    from streamedge.errors import ConfigError
    from streamedge.training.gan import GanConfig, export_generator, train_gan
    from streamedge.training.gan_data import load_gan_data
    from streamedge.training.gan_eval import evaluate_gan, write_gan_report

    try:
        config = GanConfig(noise_dim=args.noise_dim, hidden=args.hidden, steps=args.steps, seed=args.seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if args.disc_iterations < 1 or args.pred_iterations < 1:
        raise ConfigError("--disc-iterations and --pred-iterations must be positive")
    data = load_gan_data(args.data, args.condition, args.window)
    args.out.mkdir(parents=True, exist_ok=True)
    trained = train_gan(data, config, args.out, progress=not args.no_progress)
    parity = export_generator(trained, args.out)
    scores = evaluate_gan(trained, args.seed, args.disc_iterations, args.pred_iterations)
    metrics: dict[str, Any] = {"task": "generate", "data": args.data.name, "windows": len(data.x),
                               "window": int(data.x.shape[1]), "n_features": int(data.x.shape[2]),
                               "classes": data.classes, "scores": scores, "tflite": parity}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_gan_report(trained, args.out, f"GAN on {args.data.name}", metrics, args.seed)
    print(json.dumps({"out": str(args.out), **scores, "parity_max_abs_diff": parity["max_abs_diff"]}))
    return 0
