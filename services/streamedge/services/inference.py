"""A micro-batch's windows and its one TFLite invoke per model, with no Kafka in sight.

The processor admits each message as a :class:`Job`; :func:`collect_windows` cuts the job's
windows as numpy views of its key's rows (every sample for a forecaster, every
``classify_stride``-th for a classifier, or each ended machine cycle resampled to its window);
:func:`infer` then runs each model once on all its windows of the batch, from every key, and hands
each job its rows (or the reason they failed).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from streamedge.contracts.cycles import Cycle, CycleCutter, fit_cycle
from streamedge.contracts.reading import Reading, ReadingBlock
from streamedge.errors import StreamedgeError
from streamedge.services.metrics import StreamMetrics
from streamedge.services.models import LoadedModel, ModelSet
from streamedge.services.records import Source
from streamedge.services.shadow import ShadowSet
from streamedge.services.windows import Extension

__all__ = ["Job", "Refusal", "collect_windows", "infer"]

# (reason, detail, first offending sample or None)
Refusal = tuple[str, str, int | None]


@dataclass
class Job:
    """One admitted message: a reading block or a single reading, where it came from, and what
    each model made of it.

    ``picks[name]`` are the block's sample indexes with a window for ``name`` (ascending);
    ``windows[name]`` the ``(len(picks), window, n_features)`` float64 views of those windows;
    ``outputs[name]`` the model's rows for them and ``ok[name]`` which rows are finite. A message
    that was a single reading (``single``) takes the per-reading path: ``row[name]`` is its one
    finite output row as plain floats.
    """

    message: Reading | ReadingBlock
    source: Source
    ext: Extension
    models: list[str]
    payload: bytes | None
    picks: dict[str, npt.NDArray[np.intp]] = field(default_factory=dict)
    windows: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    outputs: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)
    ok: dict[str, npt.NDArray[np.bool_]] = field(default_factory=dict)
    row: dict[str, list[Any]] = field(default_factory=dict)
    shadow: dict[str, list[Any]] = field(default_factory=dict)
    failures: dict[str, Refusal] = field(default_factory=dict)
    cycles: list[Cycle] | None = None

    @property
    def single(self) -> Reading | None:
        """The message when it was a single reading (the per-reading path), else None."""
        return self.message if isinstance(self.message, Reading) else None

    @functools.cached_property
    def block(self) -> ReadingBlock:
        """The message as a block (a single reading: a block of one, built only when asked)."""
        message = self.message
        return message if isinstance(message, ReadingBlock) else ReadingBlock.from_reading(message)


# Most float32 window bytes per TFLite invoke: a micro-batch of hostile 4,096-sample blocks
# cut into 150 x 64-feature windows would otherwise need 157 MB per message.
_INVOKE_BYTES = 32 * 1024 * 1024


def _chunks(views: list[npt.NDArray[np.float64]], limit: int) -> list[list[npt.NDArray[np.float64]]]:
    """``views`` (arrays of windows, in order) regrouped into chunks of at most ``limit`` windows."""
    chunks: list[list[npt.NDArray[np.float64]]] = [[]]
    room = limit
    for view in views:
        start = 0
        while start < len(view):
            if room == 0:
                chunks.append([])
                room = limit
            take = min(room, len(view) - start)
            chunks[-1].append(view[start : start + take])
            start, room = start + take, room - take
    return chunks


# The picks of a single reading: its only sample (read-only, shared).
_ONLY = np.zeros(1, dtype=np.intp)
_ONLY.setflags(write=False)


def collect_windows(job: Job, models: ModelSet, classify_stride: int, cycles: CycleCutter | None = None) -> None:
    """Pick the samples with a full window per model and cut their windows as views
    (``job.picks`` and ``job.windows``). With ``cycles`` a classifier gets one window per cycle
    that ends in the job instead: the cycle resampled to its window, picked at the cycle's last
    sample (at sample 0 for a cycle that ended before the job, at a gap)."""
    if cycles is not None and any((m := models.get(name)) is not None and m.manifest.task == "classify"
                                  for name in job.models):
        _collect_cycles(job, models, cycles)
    rows, start = job.ext.rows, job.ext.start
    single = job.single
    if single is not None:
        _collect_one(job, single.seq, models, classify_stride, rows, start)
        return
    n = len(job.block)
    for name in job.models:
        model = models.get(name)
        if model is None or name in job.windows or (job.cycles is not None and model.manifest.task == "classify"):
            continue
        length = model.window
        first = max(0, length - 1 - start)
        step = 1
        if model.manifest.task == "classify" and classify_stride > 1:
            first += -(job.block.seq + first) % classify_stride
            step = classify_stride
        if first >= n:
            continue
        picks = np.arange(first, n, step)
        # Window ending at rows[p] is view[p - length + 1], laid out (features, window).
        view = sliding_window_view(rows, length, axis=0)
        begin = start + first - length + 1
        job.picks[name] = picks
        job.windows[name] = view[begin : begin + step * (len(picks) - 1) + 1 : step].transpose(0, 2, 1)


def _collect_one(job: Job, seq: int, models: ModelSet, classify_stride: int, rows: npt.NDArray[np.float64],
                 start: int) -> None:
    """A single reading's windows: one slice per model (numpy calls cost more than the work)."""
    for name in job.models:
        model = models.get(name)
        if model is None:
            continue
        length = model.window
        if name in job.windows or (job.cycles is not None and model.manifest.task == "classify"):
            continue
        if start + 1 < length or (model.manifest.task == "classify" and seq % classify_stride):
            continue
        job.picks[name] = _ONLY
        job.windows[name] = rows[start + 1 - length : start + 1][np.newaxis]


def _collect_cycles(job: Job, models: ModelSet, cycles: CycleCutter) -> None:
    """The job's ended cycles (``job.cycles``), each resampled into every classifier's window."""
    block = job.block
    job.cycles = cycles.cut(block.key, block.seq, block.ts, block.values)
    if not job.cycles:
        return
    picks = np.array([max(cycle.end, 0) for cycle in job.cycles], dtype=np.intp)
    for name in job.models:
        model = models.get(name)
        if model is not None and model.manifest.task == "classify":
            job.picks[name] = picks
            job.windows[name] = np.stack([fit_cycle(cycle.values, model.window) for cycle in job.cycles])


def infer(jobs: list[Job], models: ModelSet, metrics: StreamMetrics, shadows: ShadowSet | None, emit: bool) -> None:
    """Run each model once on every window ``jobs`` collected for it, and hand each job its rows:
    ``outputs``/``ok`` (blocks) or ``row`` (a single reading), and ``failures[name]`` when the model
    could not run (``inference_error``) or gave NaN or infinity (``non_finite_output``).
    ``emit`` False (a state rebuild) records no inference metrics."""
    for name, model in models.items():
        picked = [job for job in jobs if name in job.windows]
        if not picked:
            continue
        try:
            out, shadow_rows = _run(model, [job.windows[name] for job in picked], metrics, shadows, emit)
        except (StreamedgeError, ValueError, RuntimeError) as exc:
            # A model that cannot run these windows must not stop the stream: the blocks
            # stay in their windows and go to the dead-letter topic with the reason.
            for job in picked:
                job.failures[name] = ("inference_error", f"{name} v{model.version}: {exc}"[:300], None)
            continue
        finite = np.isfinite(out.reshape(len(out), -1)).all(axis=1)
        flags: list[bool] = finite.tolist()
        # One conversion per batch: the per-reading path works on plain floats.
        listed: list[Any] | None = out.tolist() if any(job.single is not None for job in picked) else None
        offset = 0
        for job in picked:
            count = len(job.picks[name])
            if shadow_rows is not None:
                job.shadow[name] = shadow_rows[offset : offset + count]
            if listed is not None and job.single is not None:
                if flags[offset]:
                    job.row[name] = listed[offset]
                else:
                    job.failures[name] = ("non_finite_output", f"{name} v{model.version} gave NaN or infinity", None)
                offset += count
                continue
            ok = finite[offset : offset + count]
            job.outputs[name], job.ok[name] = out[offset : offset + count], ok
            if not all(flags[offset : offset + count]):
                job.failures[name] = ("non_finite_output", f"{name} v{model.version} gave NaN or infinity",
                                      int(job.picks[name][int(np.argmin(ok))]))
            offset += count


def _run(model: LoadedModel, views: list[npt.NDArray[np.float64]], metrics: StreamMetrics,
         shadows: ShadowSet | None, emit: bool) -> tuple[npt.NDArray[np.float32], list[Any] | None]:
    """Run ``model`` on every window in ``views``: one invoke, unless the float32 windows
    would exceed :data:`_INVOKE_BYTES` (hostile blocks of long, wide windows), then one per
    chunk of that size. Returns the outputs in order and the shadow candidate's rows."""
    name = model.name
    per_window = model.window * model.manifest.n_features * 4
    outs: list[npt.NDArray[np.float32]] = []
    shadow_rows: list[Any] | None = [] if shadows is not None and name in shadows else None
    for chunk in _chunks(views, max(1, _INVOKE_BYTES // per_window)):
        with np.errstate(over="ignore"):  # values beyond float32 become inf: non_finite_output
            batch = np.concatenate(chunk, dtype=np.float32)
        began = time.perf_counter()
        out = model.predict(batch)
        if emit:
            metrics.inference_seconds.labels(name).observe(time.perf_counter() - began)
            metrics.batch_size.labels(name).observe(len(batch))
        if shadow_rows is not None and shadows is not None:
            rows = shadows.run(name, batch, out)
            shadow_rows.extend(rows if rows is not None else [None] * len(batch))
        outs.append(out)
    return (outs[0] if len(outs) == 1 else np.concatenate(outs)), shadow_rows
