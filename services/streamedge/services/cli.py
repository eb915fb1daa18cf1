"""``streamedge stream worker|replay|export-dlq|replay-dlq``: the stream processor, recorded files
replayed as reading blocks, and dead letters.

Light module: Faust, aiokafka and the TFLite runtime are imported only inside handlers.
Every worker setting (:class:`services.settings.StreamSettings`) is a flag of ``stream worker``, an
env var ``STREAMEDGE_STREAM_<FIELD>`` and a ``[stream]`` config key: the most used flags are written
out below, the rest are generated from the settings model (``--<field>``, JSON for lists and maps).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from streamedge.cli.common import add_kafka_options, add_table_options, build_settings, kafka_settings, topic_layout
from streamedge.cli.options import config_table, option, table_values

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``stream`` command group."""
    parser = subparsers.add_parser("stream", help="run the Faust stream processor; export and replay dead letters")
    commands = parser.add_subparsers(dest="stream_command", metavar="ACTION", required=True)

    worker = commands.add_parser("worker", help="consume readings, run the models, produce results (Ctrl-C stops)")
    add_kafka_options(worker)
    option(worker, "--model-dir", type=Path, default=None, env="STREAMEDGE_STREAM_MODEL_DIR",
           help="installed models, <dir>/<name>/<version>/")
    option(worker, "--public-key", type=Path, default=None, env="STREAMEDGE_STREAM_PUBLIC_KEY",
           help="trusted Ed25519 public key (PEM)")
    option(worker, "--routes", default=None, env="STREAMEDGE_STREAM_ROUTES",
           help='JSON: stream name -> model names, e.g. \'{"vibration": ["pump-lstm"]}\' ("*" = any stream)')
    option(worker, "--batch-size", type=int, default=None, env="STREAMEDGE_STREAM_BATCH_SIZE",
           help="most readings per micro-batch")
    option(worker, "--batch-wait", type=float, default=None, env="STREAMEDGE_STREAM_BATCH_WAIT_S",
           help="longest wait for a micro-batch, seconds")
    option(worker, "--web-port", type=int, default=None, env="STREAMEDGE_STREAM_WEB_PORT",
           help="HTTP port serving /metrics")
    option(worker, "--web-host", default=None, env="STREAMEDGE_STREAM_WEB_HOST",
           help="address the HTTP server binds (0.0.0.0 in a container)")
    option(worker, "--processing-guarantee", choices=("at_least_once", "exactly_once"), default=None,
           env="STREAMEDGE_STREAM_PROCESSING_GUARANTEE",
           help="at_least_once (default; duplicates after a crash, dropped by idempotency key) or "
                "exactly_once (Kafka transactions; read results with isolation_level=read_committed)")
    option(worker, "--app-id", default=None, env="STREAMEDGE_STREAM_APP_ID",
           help="Faust app id, also the consumer group (default streamedge-stream)")
    option(worker, "--classify-stride", type=int, default=None, env="STREAMEDGE_STREAM_CLASSIFY_STRIDE",
           help="classify the window ending at seq when seq %% stride == 0 (default 1: every reading)")
    option(worker, "--cycle", choices=("none", "marker", "gap", "period"), default=None,
           env="STREAMEDGE_STREAM_CYCLE",
           help="classify once per machine cycle: cycles end at a reading whose last value (the marker) is "
                "non-zero, at a time gap, or every N readings (default none: a window per reading)")
    option(worker, "--cycle-gap-s", type=float, default=None, env="STREAMEDGE_STREAM_CYCLE_GAP_S",
           help="--cycle gap: seconds between readings that end a cycle")
    option(worker, "--cycle-period", type=int, default=None, env="STREAMEDGE_STREAM_CYCLE_PERIOD",
           help="--cycle period: readings per cycle, aligned on seq")
    option(worker, "--anomaly-k", type=float, default=None, env="STREAMEDGE_STREAM_ANOMALY_K",
           help="anomaly when |actual - forecast| > k x the validation residual std (default 4)")
    _add_setting_flags(worker)
    config_table(worker, "stream", _stream_fields, "STREAMEDGE_STREAM_")
    worker.set_defaults(handler=_worker, show_settings=_show_stream_settings)

    blocks = commands.add_parser("replay", help="replay a .csv or .ts file into the readings topic as reading blocks")
    add_kafka_options(blocks)
    option(blocks, "--file", type=Path, required=True,
           help=".csv/.tsv reading table (docs/quickstart.md: time, device and feature columns) or UCR/UEA .ts file")
    option(blocks, "--device", default="replay", help="device id when the file has no device column (.ts series i: "
                                                      "<device>-<i>)")
    option(blocks, "--id-column", default=None, help="device column of a long-format file (default device_id if present)")
    option(blocks, "--columns", default=None, help="feature columns, comma-separated (default every numeric column "
                                                   "that is not the time, device, seq or stream column)")
    add_table_options(blocks, "STREAMEDGE_REPLAY")
    numbering = blocks.add_mutually_exclusive_group()
    option(numbering, "--seq-start", type=int, default=None,
           help="seq of every device's first sample (default 0)")
    option(numbering, "--continue", dest="continue_seq", action="store_true", default=False,
           help="go on from each device's last seq in the readings topic (a follow-up file for the same devices)")
    option(blocks, "--stream", dest="stream_name", default="s", help="stream name of every key")
    option(blocks, "--block-size", type=int, default=256, help="samples per message (1: single readings)")
    option(blocks, "--period", type=float, default=1.0, help="seconds between samples without a ts column")
    option(blocks, "--start-ts", type=float, default=None, help="time of the first sample, seconds (default: now)")
    option(blocks, "--dry-run", action="store_true", default=False, help="count the messages, produce nothing")
    blocks.set_defaults(handler=_replay_file)

    export = commands.add_parser("export-dlq", help="write dead letters as JSON lines to fix by hand")
    add_kafka_options(export)
    option(export, "--out", type=Path, required=True, help="JSON-lines file to write")
    option(export, "--reason", action="append", default=None, help="only this reason (repeatable)")
    export.set_defaults(handler=_export)

    replay = commands.add_parser("replay-dlq", help="validate and re-inject dead letters into the readings topic")
    add_kafka_options(replay)
    option(replay, "--from-file", type=Path, default=None,
           help="exported file whose records carry a 'fixed' reading; default: originals from the topic")
    option(replay, "--reason", action="append", default=None, help="only this reason (repeatable)")
    option(replay, "--include-unfixed", action="store_true", default=False,
           help="with --from-file, also re-inject records without a fix")
    option(replay, "--dry-run", action="store_true", default=False, help="validate and count, produce nothing")
    replay.set_defaults(handler=_replay)


_FLAG_FIELDS = (("model_dir", "model_dir"), ("public_key", "public_key"), ("batch_size", "batch_size"),
                ("batch_wait", "batch_wait_s"), ("web_port", "web_port"), ("web_host", "web_host"),
                ("processing_guarantee", "processing_guarantee"), ("app_id", "app_id"),
                ("classify_stride", "classify_stride"), ("cycle", "cycle"), ("cycle_gap_s", "cycle_gap_s"),
                ("cycle_period", "cycle_period"), ("anomaly_k", "anomaly_k"), ("routes", "routes"),
                ("topic_prefix", "topic_prefix"))


def _generated_fields() -> list[str]:
    """Worker settings without a hand-written flag above: each gets ``--<field>`` from the settings model."""
    from streamedge.services.settings import StreamSettings

    named = {field for _, field in _FLAG_FIELDS}
    return [field for field in StreamSettings.model_fields if field not in named]


def _add_setting_flags(worker: argparse.ArgumentParser) -> None:
    from streamedge.services.settings import StreamSettings

    for field in _generated_fields():
        info = StreamSettings.model_fields[field]
        default = info.get_default(call_default_factory=True)
        shown = f" (default: {json.dumps(default) if isinstance(default, dict | list) else default})"
        kind = " (JSON)" if _is_json(field) else ""
        option(worker, f"--{field.replace('_', '-')}", dest=field, default=None, metavar="VALUE",
               env=f"STREAMEDGE_STREAM_{field.upper()}",
               help=f"{info.description or 'worker setting ' + field + ', see docs/stream.md'}{kind}{shown}")


def _is_json(field: str) -> bool:
    from streamedge.services.settings import StreamSettings

    default = StreamSettings.model_fields[field].get_default(call_default_factory=True)
    return isinstance(default, dict | list)


def _stream_fields() -> tuple[str, ...]:
    """``[stream]`` config keys: every worker setting but the topic prefix, which is the shared flat key."""
    from streamedge.services.settings import StreamSettings

    return tuple(f for f in StreamSettings.model_fields if f != "topic_prefix")


def _show_stream_settings(args: argparse.Namespace, sources: dict[str, str]) -> list[tuple[str, Any, str]]:
    """``config show`` rows of the worker's effective settings: ``(field, value, source)``."""
    import os

    settings = _stream_settings(args)
    table = args.config_data.get("stream", {})
    by_field = {field: sources.get(flag, "default") for flag, field in _FLAG_FIELDS}
    by_field.update({field: sources.get(field, "default") for field in _generated_fields()})
    rows = []
    for field in type(settings).model_fields:
        env = f"STREAMEDGE_STREAM_{field.upper()}"
        source = by_field.get(field, "default")
        if source == "default":
            source = f"env {env}" if env in os.environ else f"file [stream] {field}" if field in table else "default"
        rows.append((field, getattr(settings, field), source))
    return rows


def _stream_settings(args: argparse.Namespace) -> Any:
    from streamedge.errors import ConfigError
    from streamedge.services.settings import StreamSettings

    # Precedence: flag > env > file > default. Flags (and their env vars) are the overrides below;
    # table_values drops file values an env var overrides, since init arguments beat env vars.
    overrides: dict[str, Any] = table_values(args.config_data, "stream", "STREAMEDGE_STREAM_")
    overrides["topic_prefix"] = args.topic_prefix
    for flag, field in _FLAG_FIELDS[:-2]:
        if getattr(args, flag) is not None:
            overrides[field] = getattr(args, flag)
    for field in _generated_fields():
        value = getattr(args, field)
        if value is not None and _is_json(field):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ConfigError(f"--{field.replace('_', '-')} is not JSON: {exc}") from exc
        if value is not None:
            overrides[field] = value
    if args.routes is not None:
        try:
            overrides["routes"] = json.loads(args.routes)
        except ValueError as exc:
            raise ConfigError(f"--routes is not JSON: {exc}") from exc
    return build_settings(StreamSettings, "stream", **overrides)


def _worker(args: argparse.Namespace) -> int:
    import faust

    from streamedge.services.app import StreamWorker

    worker = StreamWorker(_stream_settings(args), kafka_settings(args))
    worker.prepare()
    app = worker.create_app()
    faust.Worker(app, loglevel=args.log_level, quiet=True).execute_from_commandline()
    return 0


def _replay_file(args: argparse.Namespace) -> int:
    import sys
    import time

    from kafka.errors import KafkaError

    from streamedge.services.replay import ReplayFileError, TableOptions, block_payloads, check_payload, read_series
    from streamedge.services.replay_topic import last_seqs, require_topic

    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    table = TableOptions(args.time_column, args.id_column, tuple(columns) if columns else None, args.time_unit)
    series, how = read_series(args.file, args.device, table)
    print(how)
    start = time.time() if args.start_ts is None else args.start_ts
    kafka, topic = kafka_settings(args), topic_layout(args).readings
    producer = None
    if not args.dry_run or args.continue_seq:
        require_topic(kafka, topic)
    if (args.continue_seq or args.seq_start is not None) and any(s.seq is not None for s in series):
        print(f"{args.file} has a seq column: its seqs are kept, drop --seq-start/--continue", file=sys.stderr)
        return 2
    keys = list(dict.fromkeys(f"{s.device_id}/{s.stream or args.stream_name}" for s in series))
    if args.continue_seq:
        found = last_seqs(kafka, topic, keys)
        first_seq = {k: found.get(k, 0) for k in keys}
        print("continuing at seq " + ", ".join(f"{k.rsplit('/', 1)[0]}: {n}" for k, n in first_seq.items()))
    else:
        first_seq = dict.fromkeys(keys, args.seq_start or 0)
    try:
        payloads = list(block_payloads(series, args.stream_name, args.block_size, start, args.period, first_seq))
        for _, value in payloads:
            check_payload(value)
    except ReplayFileError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 1
    if not args.dry_run:
        from kafka import KafkaProducer

        producer = KafkaProducer(**kafka.kafka_python_config(), acks="all", linger_ms=5)
    count = 0
    futures = []
    failed: list[Exception] = []
    try:
        for key, value in payloads:
            if producer is not None:
                futures.append(producer.send(topic, key=key, value=value))
            count += 1
        if producer is not None:
            producer.flush(timeout=60)
        # flush() returns once every send is done, delivered or failed: only a future tells which.
        for future in futures:
            try:
                future.get(timeout=30)
            except KafkaError as exc:
                failed.append(exc)
    finally:
        if producer is not None:
            producer.close(timeout=30)
    samples = sum(len(s.values) for s in series)
    verb = "would produce" if args.dry_run else "produced"
    print(f"{verb} {count - len(failed)} message(s): {samples} samples of {len(series)} series in blocks of "
          f"{args.block_size}")
    if failed:
        print(f"{len(failed)} of {count} message(s) failed, first: {type(failed[0]).__name__}: {failed[0]}",
              file=sys.stderr)
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    from streamedge.services.dlq import export_dead_letters, read_dead_letters

    scan = read_dead_letters(kafka_settings(args), topic_layout(args), args.reason or ())
    count = export_dead_letters(scan.letters, args.out)
    print(f"exported {count} dead letter(s) to {args.out}; {scan.unreadable} unreadable message(s) skipped")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from streamedge.services.dlq import read_dead_letters, records_from_file, replay

    kafka, layout = kafka_settings(args), topic_layout(args)
    reasons = set(args.reason or ())
    if args.from_file is not None:
        letters = [d for d in records_from_file(args.from_file) if not reasons or d.record.get("reason") in reasons]
        include_unfixed = args.include_unfixed
    else:
        scan = read_dead_letters(kafka, layout, reasons)
        letters, include_unfixed = scan.letters, True
        if scan.unreadable:
            print(f"skipped {scan.unreadable} message(s) that are not dead letters")
    report = replay(kafka, layout, letters, include_unfixed, dry_run=args.dry_run)
    verb = "would re-inject" if args.dry_run else "re-injected"
    print(f"{verb} {report.produced}, still invalid {report.invalid}, without a fix {report.skipped}, "
          f"truncated without a fix {report.truncated}")
    return 1 if report.invalid or report.truncated else 0
