"""The cache of finished benchmark runs (``bench models``, ``bench forecasters``): reused only when nothing changed.

A run's ``bench_run.json`` stores its result with the key it was computed under: every input that
changes the result (the benchmark passes its resolved configuration, data file paths and other
flags), the content hash of each data file, and the code version: the versions of the streamedge
distributions and of the third-party packages that compute or time a run (TensorFlow, Keras,
NumPy, tflite-runtime, ai-edge-litert, statsforecast, scikit-learn), and a hash of the sources of
every streamedge module a run can execute (:func:`source_files`). A cached run whose key differs
in anything, or that has no key, is stale: it is computed again and overwritten, never reported.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["RUN_FILE", "code_version", "file_digest", "read_run", "run_key", "source_digest", "source_files",
           "write_run"]

RUN_FILE = "bench_run.json"
# Whole packages: their modules also run as child processes (the trainer's runtime probe), not only by import.
_SOURCE_PACKAGES = ("streamedge.training", "streamedge.contracts", "streamedge.benchmarks")
# Import names whose installed distributions' versions change a run's figures: its results or its timings.
_PACKAGES = ("tensorflow", "keras", "numpy", "tflite_runtime", "ai_edge_litert", "statsforecast", "sklearn")
_DISTRIBUTIONS = ("streamedge-core", "streamedge-training", "streamedge-benchmarks")


@cache
def code_version() -> str:
    """``NAME==V ... sha256:H``: the streamedge distributions' versions, the version of each
    distribution providing one of ``_PACKAGES`` (``NAME==absent`` when none does; TensorFlow can be
    ``tensorflow`` or ``tensorflow-cpu``), and H over :func:`source_files`."""
    providers = metadata.packages_distributions()
    names = [*_DISTRIBUTIONS, *(dist for package in _PACKAGES for dist in sorted(set(providers.get(package, []))))]
    versions = [f"{package}==absent" for package in _PACKAGES if not providers.get(package)]
    for dist in names:
        try:
            versions.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist}==absent")
    return f"{' '.join(sorted(versions))} sha256:{_digest(source_files())}"


def source_files() -> dict[str, Path]:
    """The sources a cached run can execute, by module name.

    Every module of ``_SOURCE_PACKAGES``, and every ``streamedge`` module they import, followed
    through imports of imports (absolute and relative, at any depth of the file, the importing
    packages' ``__init__`` included): shared modules such as ``streamedge.timing`` (every latency
    figure) and ``streamedge.errors``. Located without importing them.
    """
    found: dict[str, Path] = {}
    pending = [name for package in _SOURCE_PACKAGES for name in _package_modules(package)]
    while pending:
        name = pending.pop()
        path = _module_file(name)
        if name in found or path is None:
            continue
        found[name] = path
        pending += _imports(name, path)
    return found


@cache
def _top_level(name: str) -> tuple[Path | None, Path | None]:
    """``(file, folder)`` of a ``streamedge.X`` module or package (only the namespace is imported)."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None, None
    file = Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    locations = list(spec.submodule_search_locations or [])
    return file, Path(locations[0]) if locations else None


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != "streamedge":
        return None
    file, folder = _top_level(".".join(parts[:2]))
    if len(parts) == 2:
        return file
    if folder is None:  # a name imported from a module, not a submodule
        return None
    for path in (folder.joinpath(*parts[2:]).with_suffix(".py"), folder.joinpath(*parts[2:], "__init__.py")):
        if path.is_file():
            return path
    return None


def _package_modules(package: str) -> list[str]:
    folder = _top_level(package)[1]
    assert folder is not None, package
    return [".".join([package, *path.relative_to(folder).with_suffix("").parts]).removesuffix(".__init__")
            for path in sorted(folder.rglob("*.py"))]


def _imports(name: str, path: Path) -> list[str]:
    """The ``streamedge`` modules ``name`` (at ``path``) imports: each named module, every package above
    it, and ``from X import y``'s ``X.y`` (a submodule, when there is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    named: list[str] = []
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            named += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            named += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    out = []
    for module in named:
        parts = module.split(".")
        if parts[0] == "streamedge":
            out += [".".join(parts[:i]) for i in range(2, len(parts) + 1)]
    return out


def _digest(files: dict[str, Path]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0".encode())
        digest.update(files[name].read_bytes())
    return digest.hexdigest()[:16]


def source_digest(folders: list[Path]) -> str:
    """16 hex digits of sha256 over every ``.py`` file under ``folders`` (relative names and bytes)."""
    return _digest({f"{index}/{path.relative_to(folder).as_posix()}": path
                    for index, folder in enumerate(folders) for path in sorted(folder.rglob("*.py"))})


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
