"""``streamedge simulate``: drive the readings topic with a simulated fleet.

Light module: kafka-python and the TFLite runner are imported only when the command runs. The
last line printed is the run's report as one JSON object (rate sustained, counts by kind).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from streamedge.cli.common import add_kafka_options, build_settings, kafka_settings, topic_layout
from streamedge.cli.options import option

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``simulate`` command."""
    text = "send readings of N simulated devices to the readings topic at a set rate, with faults"
    parser = subparsers.add_parser(
        "simulate", help=text,
        description=text + ". The last line is a JSON report: readings, messages, samples by kind (normal, "
                           "drifted, anomalies), malformed messages by reason, delivered, failed, sustained rate.")
    option(parser, "--devices", type=int, default=10, help="simulated devices, one stream each")
    option(parser, "--rate", type=float, default=1000.0, help="readings per second over all devices (0: unpaced)")
    option(parser, "--count", type=int, default=None, help="readings to send in all")
    option(parser, "--duration", type=float, default=None, help="seconds to run (when --count is not given)")
    option(parser, "--block-size", type=int, default=1, help="samples per message (>1 sends reading blocks)")
    source = parser.add_mutually_exclusive_group()
    option(source, "--generator", type=Path, default=None, help="'streamedge train gan' output folder to sample from")
    option(source, "--replay", type=Path, default=None, help="CSV/TSV table whose numeric columns are replayed")
    option(parser, "--features", type=int, default=1, help="values per sample of the built-in sine source")
    option(parser, "--drift-at", type=float, default=None, help="event-time seconds after which every sample drifts")
    option(parser, "--drift-shift", type=float, default=3.0, help="drift level shift, in units of the source's scale")
    option(parser, "--anomalies", type=float, default=0.0, help="probability that a sample is a spike")
    option(parser, "--garbage", type=float, default=0.0, help="probability of a malformed message after a good one")
    option(parser, "--seed", type=int, default=0, help="random seed: same settings, same bytes")
    option(parser, "--start-ts", type=float, default=None, help="event time of the first samples (default: now)")
    option(parser, "--stream", default="signal", help="stream name of every device")
    option(parser, "--out", type=Path, default=None, help="also write the JSON report here")
    option(parser, "--enrolment", type=Path, default=None,
           help="enrolment file ('edge enrol'): sign each enrolled device's messages with its key, as the device "
                "would (streamedge-auth header)")
    add_kafka_options(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from streamedge.simulate import SimulateSettings, simulate

    settings = build_settings(
        SimulateSettings, "simulate", devices=args.devices, rate=args.rate, count=args.count,
        duration_s=args.duration, block_size=args.block_size, generator=args.generator, replay=args.replay,
        n_features=args.features, drift_at_s=args.drift_at, drift_shift=args.drift_shift, anomalies=args.anomalies,
        garbage=args.garbage, seed=args.seed, start_ts=args.start_ts, stream=args.stream)
    from streamedge.contracts.identity import load_enrolment

    device_keys = load_enrolment(args.enrolment).keys if args.enrolment is not None else None
    report = simulate(kafka_settings(args), topic_layout(args).readings, settings, device_keys=device_keys)
    line = json.dumps(report.to_dict())
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")
    print(line)
    return 0 if report.failed == 0 else 1
