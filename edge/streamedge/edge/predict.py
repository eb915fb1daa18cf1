"""``streamedge predict``: score table files with a model, through the TFLite runner only.

The model is a folder (``manifest.json`` + the model file) or a registry ``NAME@VERSION``; its
sha256 is always checked, and its signature too when a public key is given. The input is one
``.csv``/``.parquet`` file or a folder of them (each file its own stream of windows); the output
is one file, or a folder with one file per input (same stem, the output format's suffix).
Progress and every bad row's line number go to ``report`` (stderr), never into the results.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TextIO

from streamedge.contracts.manifest import ModelManifest, read_manifest, read_verified_model
from streamedge.contracts.runner import Runtime
from streamedge.edge.offline import ScoreSummary, output_columns, score_rows
from streamedge.edge.offline_io import SUFFIXES, open_reader, open_writer
from streamedge.edge.predictor import Predictor
from streamedge.errors import StreamedgeError

__all__ = ["PredictOptions", "load_model", "predict", "predict_file"]

_REGISTRY_SPEC: Final = re.compile(r"^(?P<name>[^/@\s]+)@(?P<version>[1-9][0-9]*)$")
_PROGRESS_EVERY_S: Final = 1.0
_BAD_SHOWN: Final = 20


@dataclass(frozen=True)
class PredictOptions:
    """How rows are scored (the agent's settings of the same names)."""

    device_id: str = "offline"
    stride: int = 1
    max_keys: int = 10_000
    anomaly_sigmas: float = 4.0
    runtime: Runtime | Literal["auto"] = "auto"


def load_model(spec: str, registry: Path, public_key: Path | None) -> tuple[ModelManifest, Path, bytes]:
    """The verified manifest, path and bytes of a model folder or a registry ``NAME@VERSION``.

    A path that exists is a folder; else ``spec`` must be ``NAME@VERSION`` in ``registry``.

    Raises:
        StreamedgeError: unknown model, bad manifest, sha256 or signature (the reason in the text).
    """
    folder = Path(spec)
    if not folder.exists():
        match = _REGISTRY_SPEC.match(spec)
        if match is None:
            raise StreamedgeError(f"model {spec!r} is neither a folder nor a registry NAME@VERSION")
        from streamedge.registry import ModelRegistry

        folder = ModelRegistry(registry).path(match["name"], int(match["version"]))
    if public_key is not None:
        from streamedge.contracts.signing import load_public_key, load_verified_model

        return load_verified_model(folder, load_public_key(public_key))
    manifest = read_manifest(folder)
    return manifest, folder / manifest.model_file, read_verified_model(manifest, folder)


class _Progress:
    """A progress line on ``stream``, at most once a second: rows, share of the file, rows/s."""

    def __init__(self, stream: TextIO, name: str, fraction: Any) -> None:
        self._stream, self._name, self._fraction = stream, name, fraction
        self.started = self._last = time.monotonic()
        self._tty = bool(getattr(stream, "isatty", lambda: False)())

    def update(self, rows: int) -> None:
        now = time.monotonic()
        if now - self._last < _PROGRESS_EVERY_S:
            return
        self._last = now
        rate = rows / max(now - self.started, 1e-9)
        line = f"{self._name}: {rows:,} rows, {self._fraction() * 100:.0f}%, {rate:,.0f} rows/s"
        self._stream.write(f"\r{line}" if self._tty else f"{line}\n")
        self._stream.flush()

    def done(self, summary: ScoreSummary) -> float:
        elapsed = time.monotonic() - self.started
        end = "\r" if self._tty else ""
        self._stream.write(f"{end}{self._name}: {summary.rows:,} rows ({summary.bad:,} bad, {summary.anomalies:,} "
                           f"anomalies) in {elapsed:.1f} s, {summary.rows / max(elapsed, 1e-9):,.0f} rows/s\n")
        return elapsed


def predict_file(source: Path, target: Path, predictor: Predictor, options: PredictOptions,
                 report: TextIO) -> ScoreSummary:
    """Score one table into ``target``; bad rows are reported on ``report`` with their line number.

    Raises:
        ValueError: the file's header cannot feed the model (no ``ts``, wrong value columns).
    """
    reader = open_reader(source, predictor.manifest.features, options.device_id)
    progress = _Progress(report, source.name, reader.fraction)
    writer = open_writer(target, output_columns(predictor))
    summary = ScoreSummary()
    try:
        for row in score_rows(reader.rows(), predictor, summary, stride=options.stride, max_keys=options.max_keys,
                              on_row=progress.update):
            writer.write(row)
    finally:
        writer.close()
    progress.done(summary)
    for bad in summary.first_bad[:_BAD_SHOWN]:
        report.write(f"{source.name}: line {bad.line}: {bad.reason}\n")
    if summary.bad > _BAD_SHOWN:
        report.write(f"{source.name}: {summary.bad - _BAD_SHOWN:,} more bad rows: see the error column\n")
    return summary


def _inputs(source: Path) -> list[Path]:
    if source.is_dir():
        found = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not found:
            raise StreamedgeError(f"{source} holds no {' or '.join(SUFFIXES)} file")
        return found
    if not source.is_file():
        raise StreamedgeError(f"input {source} does not exist")
    return [source]


def predict(source: Path, out: Path, model: tuple[ModelManifest, Path, bytes], options: PredictOptions,
            report: TextIO, out_format: str | None = None) -> dict[str, ScoreSummary]:
    """Score a file or a folder of files; returns each input's summary by file name.

    Args:
        source: a ``.csv``/``.parquet`` file, or a folder of them.
        out: the output file (for a file) or folder (for a folder, created).
        model: from :func:`load_model`.
        options: scoring options.
        report: where progress and bad rows go.
        out_format: ``.csv`` or ``.parquet`` for a folder's outputs (default: each input's own).
    """
    manifest, path, content = model
    predictor = Predictor(manifest, path, runtime=options.runtime, anomaly_sigmas=options.anomaly_sigmas,
                          content=content)
    inputs = _inputs(source)
    if source.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        targets = [out / f"{p.stem}{out_format or p.suffix.lower()}" for p in inputs]
    else:
        targets = [out]
    clashes = sorted({t.name for t in targets if [u.resolve() for u in targets].count(t.resolve()) > 1})
    if clashes:
        raise ValueError(f"inputs with the same stem would write the same output(s) {clashes}: "
                         "score them into separate folders")
    if any(t.exists() and os.path.samefile(t, s) for t, s in zip(targets, inputs, strict=True)):
        raise ValueError("an output would overwrite its input (the same file under another name)")
    if any(t.resolve() == s.resolve() for t, s in zip(targets, inputs, strict=True)):
        raise StreamedgeError("the output would overwrite an input: choose another --out")
    return {s.name: predict_file(s, t, predictor, options, report) for s, t in zip(inputs, targets, strict=True)}
