"""The cache of finished benchmark runs (``bench models``, ``bench forecasters``): reused only when nothing changed.

A run's ``bench_run.json`` stores its result with the key it was computed under: every input that
changes the result (the benchmark passes its resolved configuration, data file paths and other
flags), the content hash of each data file, and the code version (the ``streamedge-training`` and
``streamedge-benchmarks`` versions plus a hash of the trainer's, the shared contracts' and this
package's sources). A cached run whose key differs in anything, or that has no key, is stale: it
is computed again and overwritten, never reported.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["RUN_FILE", "code_version", "file_digest", "read_run", "run_key", "source_digest", "write_run"]

RUN_FILE = "bench_run.json"
# The packages whose code decides a benchmark run's figures.
_SOURCE_PACKAGES = ("streamedge.training", "streamedge.contracts", "streamedge.benchmarks")
_DISTRIBUTIONS = ("streamedge-training", "streamedge-benchmarks")


def _package_folder(name: str) -> Path:
    import importlib

    module = importlib.import_module(name)
    return Path(next(iter(module.__path__)))


@cache
def code_version() -> str:
    """``streamedge-training==V streamedge-benchmarks==V sha256:H``, H over the sources that compute a run."""
    versions = []
    for dist in _DISTRIBUTIONS:
        try:
            versions.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist}==unknown")
    return f"{' '.join(versions)} sha256:{source_digest([_package_folder(p) for p in _SOURCE_PACKAGES])}"


def source_digest(folders: list[Path]) -> str:
    """16 hex digits of sha256 over every ``.py`` file under ``folders`` (relative names and bytes)."""
    digest = hashlib.sha256()
    for index, folder in enumerate(folders):
        for path in sorted(folder.rglob("*.py")):
            digest.update(f"{index}/{path.relative_to(folder).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """sha256 of a data file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_key(inputs: dict[str, Any], data_files: list[Path]) -> dict[str, Any]:
    """The cache key: ``inputs`` (JSON values), each data file's resolved path and hash, and :func:`code_version`."""
    return {
        "inputs": json.loads(json.dumps(inputs, sort_keys=True, default=str)),
        "data": {str(Path(p).resolve()): file_digest(p) for p in data_files},
        "code": code_version(),
    }


def read_run(folder: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached result in ``folder`` if it was computed under ``key``; None when absent or stale."""
    path = folder / RUN_FILE
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("cache_key") != key:
        return None
    result: dict[str, Any] = stored["result"]
    return result


def write_run(folder: Path, key: dict[str, Any], result: dict[str, Any]) -> None:
    """Store ``result`` with the key it was computed under."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_FILE).write_text(json.dumps({"cache_key": key, "result": result}, indent=1) + "\n")
