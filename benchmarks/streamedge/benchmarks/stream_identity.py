"""``bench stream``: what the per-device identity check on readings costs the worker.

Every reading is sent signed (``streamedge-auth`` header, :func:`streamedge.contracts.identity.sign_message`)
in both contenders, so the bytes on the wire are the same; only the check differs: the worker
runs with an enrolment file (``identity_on``: each reading's MAC is verified against its
device's key) or without (``identity_off``). Single readings (one per message), the headline
batch size, alternated rounds (off, on, off, on, ...): the ratio is the median of the per-round
ratios, spread beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["compare"]


def compare(bench: Any, pipeline: Callable[..., Any], batch: int, keys: int, per_key: int, expected: int,
            repeats: int) -> dict[str, Any]:
    """Throughput with the identity check on and off; ``identity_on_over_off`` is the headline ratio."""
    from streamedge.contracts.identity import enrol

    enrolment = bench.work / f"enrolment-{keys}"
    enrolment.unlink(missing_ok=True)
    bench.device_keys = {f"dev{k}": enrol(enrolment, f"dev{k}") for k in range(keys)}
    runs: dict[str, list[dict[str, Any]]] = {"identity_off": [], "identity_on": []}
    try:
        for round_ in range(max(1, repeats)):
            for name, start in (("identity_off", pipeline(batch)), ("identity_on", pipeline(batch, enrolment=enrolment))):
                layout = bench.layout()
                bench.fill(layout, keys, per_key)
                runs[name].append(bench.measure(f"{name} (round {round_ + 1})", layout, start, expected, keys, per_key))
    finally:
        bench.device_keys = None
    per_round = sorted(round(on["throughput_per_s"] / off["throughput_per_s"], 3)
                       for on, off in zip(runs["identity_on"], runs["identity_off"], strict=True))
    median = per_round[len(per_round) // 2] if len(per_round) % 2 else round(
        (per_round[len(per_round) // 2 - 1] + per_round[len(per_round) // 2]) / 2, 3)
    print(f"identity_on_over_off: median {median} over {len(per_round)} round(s), spread {per_round[0]}-{per_round[-1]}",
          flush=True)
    return {"batch_size": batch, "single_readings": True, "identity_on_over_off": median,
            "identity_on_over_off_runs": per_round,
            "runs_throughput_per_s": {name: [r["throughput_per_s"] for r in rs] for name, rs in runs.items()}}
