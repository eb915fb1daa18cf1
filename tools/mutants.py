"""``make mutants``: apply a fixed list of regressions, one at a time, to a copy of the tree, and check the tests catch each.

Each :class:`Mutant` names source edits (an exact text that must occur once, and what replaces it)
and the test files that must catch it. For each mutant the working tree (tracked files and
untracked ones git does not ignore, so uncommitted work counts) is copied into a temporary
folder, the edits are applied there, and pytest runs the mutant's test files in that copy with the
copy's distribution folders first on ``PYTHONPATH``: the copy's code is what the tests, and every
process they start, import (checked before each run). The working tree is never changed. The test
broker's folder ``.streamedge`` is shared with the copy (a link), so a running test broker is reused.

A mutant is *caught* when its tests fail (pytest exit 1), *missed* when they pass; any other exit
(collection error, timeout) is reported as an error and not counted as caught. Before the mutants,
the union of their test files runs once on an unmutated copy (``--no-baseline`` skips it): a suite
that already fails would make every mutant look caught. The last line reads
``mutants: C caught of N``; the exit status is 0 only when every mutant was caught.

Usage: ``python -m tools.mutants [--only NAME ...] [--list] [--no-baseline]`` from the repository root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MUTANTS", "QUICK", "Mutant", "apply", "check_fits", "copy_tree", "main", "run_one"]

REPO = Path(__file__).resolve().parent.parent
# The distribution folders that hold the streamedge namespace, in the order they go on PYTHONPATH.
FOLDERS = ("core", "edge", "services", "training", "benchmarks", "demo")
# One module per folder: where each resolves in the copy is checked before its tests run.
_PROBES = ("streamedge.contracts.promotion", "streamedge.edge", "streamedge.services.delivery",
           "streamedge.training.artifacts", "streamedge.benchmarks.run_cache", "streamedge.demo")
_TIMEOUT_S = 1200


@dataclass(frozen=True)
class Mutant:
    """A named regression: ``edits`` are ``(path, old, new)`` with ``old`` occurring exactly once in ``path``."""

    name: str
    edits: tuple[tuple[str, str, str], ...]
    tests: tuple[str, ...]


_ARTIFACTS = "training/streamedge/training/artifacts.py"
_EXPORT = "training/streamedge/training/export.py"
_GATE_TESTS = ("tests/training/test_parity_gates.py",)
_TRAINER_GATE_TESTS = ("tests/training/test_trainer_gates.py",)
_BENCH_FORECASTERS = "benchmarks/streamedge/benchmarks/forecasters.py"
_RUN_CACHE = "benchmarks/streamedge/benchmarks/run_cache.py"
_BENCH_CACHE_TESTS = (
    "tests/test_bench_forecasters.py::test_bench_forecasters_recomputes_a_cached_run_under_other_epochs_data_origins_end_or_baselines",)

MUTANTS: tuple[Mutant, ...] = (
    Mutant("exactly-once forced off",
           (("services/streamedge/services/app.py", "processing_guarantee=s.processing_guarantee,",
             'processing_guarantee="at_least_once",'),
            ("services/streamedge/services/app.py", 'if s.processing_guarantee == "exactly_once":\n            transactional',
             "if False:\n            transactional")),
           ("tests/services/test_exactly_once.py",)),
    Mutant("downgrade check loosened (one sequence back is taken as new)",
           (("core/streamedge/contracts/promotion.py", "if accepted is None or record.sequence > accepted.sequence:",
             "if accepted is None or record.sequence >= accepted.sequence - 1:"),),
           ("tests/streamedge/test_rollout.py",)),
    Mutant("promotion records not persisted",
           (("core/streamedge/contracts/promotion.py",
             '"""Persist ``record`` as the highest accepted for its model (a lower one is ignored)."""',
             '"""Persist ``record`` as the highest accepted for its model (a lower one is ignored)."""\n        return'),),
           ("tests/streamedge/test_rollout.py",)),
    Mutant("failed sends dropped",
           (("services/streamedge/services/delivery.py", "messages = [message for message, _ in failed]",
             "messages = []"),),
           ("tests/services/test_delivery.py",)),
    Mutant("parity gate ignored (only load errors refuse a variant)",
           ((_ARTIFACTS, "result.reason = load_error or gate(result.metrics)", "result.reason = load_error"),),
           _GATE_TESTS),
    Mutant("load failure ignored (a variant the edge runtime cannot load ships)",
           ((_ARTIFACTS, "result.reason = load_error or gate(result.metrics)", "result.reason = gate(result.metrics)"),),
           ("tests/training/test_export_refusals.py",)),
    Mutant("accuracy gate loosened (5 points instead of 1)",
           ((_EXPORT, "MAX_ACCURACY_DROP: Final = 1.0", "MAX_ACCURACY_DROP: Final = 5.0"),),
           _GATE_TESTS),
    Mutant("accuracy gate off by one (refuses a loss of exactly the allowed point)",
           ((_EXPORT, "if drop > MAX_ACCURACY_DROP else", "if drop >= MAX_ACCURACY_DROP else"),),
           _GATE_TESTS),
    Mutant("MAE gate dropped (only MASE checked)",
           ((_EXPORT, 'for key in ("mae", "mase"):', 'for key in ("mase",):'),),
           _GATE_TESTS),
    Mutant("MASE gate dropped (only MAE checked)",
           ((_EXPORT, 'for key in ("mae", "mase"):', 'for key in ("mae",):'),),
           _GATE_TESTS),
    Mutant("MAE gate loosened (9 % instead of 5 %)",
           ((_EXPORT, "MAX_MAE_GROWTH: Final = 0.05", "MAX_MAE_GROWTH: Final = 0.09"),),
           _GATE_TESTS),
    Mutant("a runtime's pick ignores the parity gate",
           ((_EXPORT, "eligible = [r for r in results if r.passed and r.runtimes.get(runtime) == \"ok\"",
             "eligible = [r for r in results if r.runtimes.get(runtime) == \"ok\""),),
           _GATE_TESTS),
    Mutant("classifier trainer hands the export a gate that passes everything",
           (("training/streamedge/training/classify.py", "accuracy_gate(keras_metrics), progress,",
             'lambda metrics: "", progress,'),),
           _TRAINER_GATE_TESTS),
    Mutant("forecaster trainer hands the export a gate that passes everything",
           (("training/streamedge/training/forecast.py", "error_gate(keras_metrics),", 'lambda metrics: "",'),),
           _TRAINER_GATE_TESTS),
    Mutant("bench forecasters reuses a run cached under other --origins",
           ((_BENCH_FORECASTERS, '    if args.origins > 1:\n        parts.append(f"origins{args.origins}")\n', ""),
            (_BENCH_FORECASTERS, '"baselines": not args.no_baselines, "origins": args.origins}',
             '"baselines": not args.no_baselines}')),
           _BENCH_CACHE_TESTS),
    Mutant("bench forecasters reuses a run cached under another --end-early",
           ((_BENCH_FORECASTERS, '    if args.end_early:\n        parts.append(f"end-{args.end_early}")\n', ""),
            (_BENCH_FORECASTERS, '"config": config.to_dict(), "end_early": args.end_early,\n',
             '"config": config.to_dict(),\n')),
           _BENCH_CACHE_TESTS),
    Mutant("bench forecasters reuses a run cached with or without baselines",
           ((_BENCH_FORECASTERS, '"baselines": not args.no_baselines, ', ""),),
           _BENCH_CACHE_TESTS),
    Mutant("bench cache key ignores modules outside the hashed packages (streamedge.timing)",
           ((_RUN_CACHE, "        pending += _imports(name, path)\n", ""),),
           ("tests/test_bench_cache.py",)),
    Mutant("bench cache key ignores the TensorFlow, NumPy and TFLite runtime versions",
           ((_RUN_CACHE, "*(dist for package in _PACKAGES for dist in", "*(dist for package in () for dist in"),
            (_RUN_CACHE, 'versions = [f"{package}==absent" for package in _PACKAGES if not providers.get(package)]',
             "versions: list[str] = []")),
           ("tests/test_bench_cache.py",)),
    Mutant("services import the trainer through a relative import",
           (("services/streamedge/services/processor.py", "import numpy as np\n",
             "import numpy as np\n\nfrom ..training import export as _export  # noqa: F401\n"),),
           ("tests/test_dependency_rules.py",)),
    Mutant("core imports faust",
           (("core/streamedge/contracts/reading.py", "from __future__ import annotations\n",
             "from __future__ import annotations\n\nimport faust  # noqa: F401\n"),),
           ("tests/test_dependency_rules.py",)),
    Mutant("gates pass a variant whose metrics are NaN (every comparison with NaN is false)",
           ((_EXPORT, "        if not math.isfinite(value):\n", "        if False:\n"),),
           _GATE_TESTS),
    Mutant("services load TensorFlow lazily through an aliased import_module",
           (("services/streamedge/services/processor.py", "import numpy as np\n",
             "import numpy as np\nfrom importlib import import_module as _load\n\n\n"
             "def _tensorflow():  # noqa: ANN202\n    return _load(\"tensorflow\")\n"),),
           ("tests/test_dependency_rules.py",)),
    Mutant("bench models reuses a run cached from other data files",
           (("benchmarks/streamedge/benchmarks/models.py", "ClassifierConfig(**fields).to_dict()}, files)",
             "ClassifierConfig(**fields).to_dict()}, [])"),),
           ("tests/test_bench_models.py", "tests/test_bench_cache.py")),
    Mutant("bench forecasters reuses a run cached under other --epochs or --set (config out of the key)",
           ((_BENCH_FORECASTERS, 'key = run_key({"spec": asdict(spec), "config": config.to_dict(), ',
             'key = run_key({"spec": asdict(spec), '),),
           _BENCH_CACHE_TESTS),
    Mutant("bench forecasters reuses a run cached from another data file",
           ((_BENCH_FORECASTERS, '"origins": args.origins}, [source])', '"origins": args.origins}, [])'),),
           _BENCH_CACHE_TESTS),
    Mutant("core's paths imports the training-only data package at module level",
           (("core/streamedge/paths.py", "from streamedge.errors import StreamedgeError\n",
             "import streamedge.data  # noqa: F401\nfrom streamedge.errors import StreamedgeError\n"),),
           ("tests/test_dependency_rules.py",)),
)
# Run by the suite itself (tests/test_mutants.py): quick, and needing no broker.
QUICK = ("parity gate ignored (only load errors refuse a variant)",
         "downgrade check loosened (one sequence back is taken as new)",
         "services import the trainer through a relative import")


def copy_tree(dest: Path) -> None:
    """Copy the working tree's tracked and unignored files into ``dest``; link ``.streamedge`` back."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if not source.is_file():  # deleted in the working tree but still in the index
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    (REPO / ".streamedge").mkdir(exist_ok=True)
    (dest / ".streamedge").symlink_to(REPO / ".streamedge", target_is_directory=True)


def apply(root: Path, mutant: Mutant) -> None:
    """Make ``mutant``'s edits under ``root``.

    Raises:
        ValueError: an edit's text does not occur exactly once (the list no longer fits the code).
    """
    for path, old, new in mutant.edits:
        file = root / path
        text = file.read_text()
        if text.count(old) != 1:
            raise ValueError(f"mutant {mutant.name!r}: {path} holds {text.count(old)} copies of {old!r}, not 1")
        file.write_text(text.replace(old, new))


def check_fits(mutant: Mutant, scratch: Path) -> None:
    """Apply ``mutant`` to copies of the files it edits under ``scratch`` (raises like :func:`apply`)."""
    with tempfile.TemporaryDirectory(dir=scratch) as probe:
        for path, _, _ in mutant.edits:
            (Path(probe) / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / path, Path(probe) / path)
        apply(Path(probe), mutant)


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(root / f) for f in FOLDERS] + [str(root)]
    env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _check_imports_from(root: Path) -> None:
    """Fail unless every probe module resolves inside ``root`` (not in the working tree's editable install)."""
    code = ("import importlib.util, sys\n"
            "for name in sys.argv[1:]:\n"
            "    print(importlib.util.find_spec(name).origin)\n")
    done = subprocess.run([sys.executable, "-c", code, *_PROBES], cwd=root, env=_env(root), capture_output=True,
                          text=True, check=True, timeout=120)
    outside = [line for line in done.stdout.splitlines() if not Path(line).resolve().is_relative_to(root.resolve())]
    if outside:
        raise RuntimeError(f"the copy's tests would import code from outside it: {outside}")


def _pytest(root: Path, tests: Sequence[str], log: Path) -> int:
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    with log.open("w") as out:
        try:
            return subprocess.run(command, cwd=root, env=_env(root), stdout=out, stderr=subprocess.STDOUT,
                                  timeout=_TIMEOUT_S, check=False).returncode
        except subprocess.TimeoutExpired:
            return -1


def _tail(log: Path, lines: int = 3) -> str:
    return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])


def run_one(mutant: Mutant | None, tests: Sequence[str], scratch: Path) -> tuple[int, str]:
    """Copy the tree, apply ``mutant`` (None: unmutated), run ``tests``: ``(pytest exit code, output tail)``."""
    with tempfile.TemporaryDirectory(prefix="mutant-", dir=scratch) as folder:
        root = Path(folder) / "tree"
        copy_tree(root)
        if mutant is not None:
            apply(root, mutant)
        _check_imports_from(root)
        log = Path(folder) / "pytest.log"
        code = _pytest(root, tests, log)
        return code, _tail(log)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mutants", description="apply each regression to a copy of the tree and check its tests catch it")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="run only these (repeatable)")
    parser.add_argument("--list", action="store_true", help="print the mutants and their tests, run nothing")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of their tests")
    args = parser.parse_args(argv)
    unknown = set(args.only) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutant(s) {sorted(unknown)}; --list shows them")
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {', '.join(p for p, _, _ in m.edits)} -> {' '.join(m.tests)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="streamedge-mutants-") as scratch:
        for m in chosen:  # every edit must still fit the code before anything runs
            check_fits(m, Path(scratch))
        if not args.no_baseline:
            tests = sorted({t for m in chosen for t in m.tests})
            code, tail = run_one(None, tests, Path(scratch))
            if code != 0:
                print(f"baseline: the unmutated tree fails its tests (exit {code}): {tail}")
                print(f"mutants: 0 caught of {len(chosen)}")
                return 1
            print(f"baseline: {len(tests)} test file(s) pass on the unmutated tree")
        caught = 0
        for m in chosen:
            started = time.monotonic()
            code, tail = run_one(m, m.tests, Path(scratch))
            verdict = {0: "MISSED", 1: "caught"}.get(code, f"ERROR (exit {code})")
            caught += code == 1
            print(f"{verdict}: {m.name} [{' '.join(m.tests)}] {time.monotonic() - started:.0f} s"
                  + ("" if code == 1 else f": {tail}"), flush=True)
    print(f"mutants: {caught} caught of {len(chosen)}")
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
