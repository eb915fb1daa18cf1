"""Load check for one edge runtime, run as ``python -m streamedge.training._probe RUNTIME MODEL`` in a child.

Each runtime runs in its own process: two TFLite runtimes in one process can clash over their
native libraries, and a runtime that crashes on a model must not take the trainer down. Prints
one JSON object: ``{"status": "ok", "latency_ms_p50": ...}`` or ``{"status": "<error>"}``.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

__all__ = ["probe"]

_RUNS = 200


def probe(runtime: str, model_path: str) -> dict[str, object]:
    """Load ``model_path`` with ``runtime``, run a batch of 2 and time single windows."""
    from streamedge.contracts.runner import TFLiteRunner

    try:
        runner = TFLiteRunner(model_path, runtime=runtime)  # type: ignore[arg-type]
        rng = np.random.default_rng(0)
        windows = rng.standard_normal((2, runner.window, runner.n_features)).astype(np.float32)
        out = runner.run(windows)
        if out.shape != (2, runner.n_outputs) or not np.all(np.isfinite(out)):
            return {"status": f"bad output {out.shape}"}
        one = windows[:1]
        runner.run(one)
        times = []
        for _ in range(_RUNS):
            start = time.perf_counter()
            runner.run(one)
            times.append(time.perf_counter() - start)
    except Exception as exc:  # report any load/run failure as the runtime's status
        return {"status": f"{type(exc).__name__}: {exc}".strip()[:300]}
    return {"status": "ok", "latency_ms_p50": float(np.median(times) * 1e3)}


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1], sys.argv[2])))
