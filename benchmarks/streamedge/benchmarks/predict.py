"""``streamedge bench predict``: offline scoring of a large CSV, peak RSS and rows per second.

Writes a CSV of ``--rows`` readings (a noisy sine over ``--keys`` interleaved streams, each with
its own ``seq``, one bad cell in every 100,000 rows), then runs ``streamedge predict`` on it in a
child process (TFLite only, as on a device) and records the child's wall time, its peak RSS
(``wait4``'s ``ru_maxrss``) and the rows/s it printed. The model is the tiny forecaster
(:mod:`streamedge.training.tiny`, built here with TensorFlow) unless ``--model`` names one. Peak
RSS is the child's own high-water mark (``VmHWM``), else ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]

_BAD_EVERY = 100_000
# The child prints its own peak RSS (VmHWM, Linux) on exit: wait4's ru_maxrss also counts the
# address space it was forked from before exec, here this process's (with TensorFlow when it
# built the tiny model: about 740 MiB instead of the child's 75).
_CHILD = ("import sys\nfrom streamedge.cli.main import main\ncode = main(sys.argv[1:])\n"
          "try:\n    sys.stderr.write(open('/proc/self/status').read())\nexcept OSError:\n    pass\nsys.exit(code)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``streamedge bench predict``."""
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON figures")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the CSV scored")
    parser.add_argument("--keys", type=int, default=4, help="interleaved streams in the CSV")
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: build the tiny forecaster)")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the CSV and outputs here (default: temp)")


def _write_csv(path: Path, rows: int, keys: int) -> int:
    """The input CSV; returns the number of bad rows written."""
    rng = random.Random(0)
    bad = 0
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["device_id", "seq", "ts", "value"])
        for i in range(rows):
            step = i // keys
            value = f"{10.0 + 3.0 * math.sin(2 * math.pi * step / 16) + rng.gauss(0.0, 0.2):.5f}"
            if i % _BAD_EVERY == _BAD_EVERY - 1:
                value, bad = "not-a-number", bad + 1
            writer.writerow([f"dev-{i % keys}", step, 1.7e9 + i, value])
    return bad


def _score(source: Path, model: Path, target: Path) -> dict[str, Any]:
    """Run ``streamedge predict`` in a child; its wall time, peak RSS and last progress line."""
    command = [sys.executable, "-c", _CHILD, "predict", str(source), "--model", str(model), "--out", str(target)]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert child.stderr is not None
    report = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"streamedge predict failed ({child.returncode}): {report[-2000:]}")
    summary = [line for line in report.splitlines() if " rows (" in line][-1]
    rate = re.search(r"([\d,]+) rows/s", summary)
    own = re.search(r"^VmHWM:\s+(\d+) kB", report, re.MULTILINE)
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(int(own.group(1) if own else usage.ru_maxrss) / 1024, 1),
            "rows_per_s_printed": int(rate.group(1).replace(",", "")) if rate else None, "summary": summary}


def run(args: argparse.Namespace) -> int:
    """Write the CSV, score it, check the output has a row per input row, write the JSON."""
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        work = Path(args.work_dir).resolve() if args.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = args.model
        if model is None:
            from streamedge.training.tiny import build_tiny_models

            print("building the tiny forecaster ...", file=sys.stderr)
            model = build_tiny_models(work / "models").forecaster
        source, target = work / "readings.csv", work / "scored.csv"
        print(f"writing {args.rows:,} rows ...", file=sys.stderr)
        bad = _write_csv(source, args.rows, args.keys)
        print("scoring ...", file=sys.stderr)
        figures = _score(source, model, target)
        with target.open() as handle:
            out_rows = sum(1 for _ in handle) - 1
        result = {"rows": args.rows, "keys": args.keys, "bad_rows_written": bad, "output_rows": out_rows,
                  "input_mib": round(source.stat().st_size / 2**20, 1), **figures,
                  "rows_per_s_wall": round(args.rows / figures["wall_s"])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if out_rows == args.rows else 1
