"""Which replayed readings a retrain may learn from: enrolled devices, bounded influence, a data check.

Readings reach the retrainer from devices that share one Kafka credential, so a series key
(``device/stream``) says nothing about who wrote it. Before any training,
:func:`admit` applies, per device (the part of the key before ``/``):

1. **enrolment**: with an enrolment (:mod:`streamedge.contracts.identity`) only enrolled device
   ids are kept; readings of invented ids are refused;
2. **data check**: each device's mean, per feature, is compared with the median of the devices'
   means in units of the current model's training spread (its ``normalisation.std``); a device
   more than ``outlier_stds`` away is refused. A fleet-wide shift moves the median and is
   admitted (that is what drift retraining is for); one device far from the rest is not;
3. **bounded influence**: no device keeps more than ``max_device_share`` of the admitted
   readings; a device above it keeps only its newest readings up to the share. With fewer
   devices than ``1 / max_device_share`` no share can hold, and nothing is admitted.

What was refused is returned with the reason, for the retrain's log and provenance.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from streamedge.contracts.identity import Enrolment
from streamedge.contracts.manifest import ModelManifest
from streamedge.training.data import SeriesData

__all__ = ["Admission", "AdmissionPolicy", "admit"]


@dataclass(frozen=True)
class AdmissionPolicy:
    """The admission rules (see the module docstring).

    Attributes:
        enrolled: device ids admitted; None admits every device id (no enrolment: anyone holding
            the device credential can add data).
        max_device_share: largest share of the admitted readings one device may hold, in (0, 1].
        outlier_stds: a device whose mean is further than this many training standard
            deviations from the median device is refused.
        enrolment: the enrolled devices' keys: when given, the replay keeps only readings signed
            by the device they name (:func:`streamedge.training.kafka_source.replay_topic`), so an
            enrolled device cannot write readings under another's id.
        devices: the stream worker's device allow-list (``fnmatch`` patterns; empty allows every
            device): readings of other devices, which the worker dead-letters as
            ``unknown_device``, are left out of the replay itself.
    """

    enrolled: frozenset[str] | None = None
    max_device_share: float = 0.5
    outlier_stds: float = 4.0
    enrolment: Enrolment | None = None
    devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 < self.max_device_share <= 1.0 or not self.outlier_stds > 0:
            raise ValueError("max_device_share must be in (0, 1] and outlier_stds > 0")


@dataclass(frozen=True)
class Admission:
    """What :func:`admit` kept.

    Attributes:
        data: the admitted series (capped devices keep their newest readings).
        refused: device id -> why none of its readings were admitted.
        capped: device id -> readings left out to bound its share.
    """

    data: SeriesData
    refused: dict[str, str] = field(default_factory=dict)
    capped: dict[str, int] = field(default_factory=dict)

    def max_share(self) -> float:
        """The largest share of the admitted readings one device holds (0 with none admitted)."""
        per_device: dict[str, int] = {}
        for key, series in zip(self.data.ids, self.data.series, strict=True):
            per_device[_device(key)] = per_device.get(_device(key), 0) + len(series)
        total = sum(per_device.values())
        return max(per_device.values()) / total if total else 0.0


def _device(key: str) -> str:
    return key.split("/", 1)[0]


def admit(data: SeriesData, champion: ModelManifest, policy: AdmissionPolicy) -> Admission:
    """Apply enrolment, the data check and the share bound to replayed ``data`` (see the module docstring)."""
    refused: dict[str, str] = {}
    by_device: dict[str, list[int]] = {}
    for index, key in enumerate(data.ids):
        device = _device(key)
        if policy.enrolled is not None and device not in policy.enrolled:
            refused[device] = "not enrolled"
            continue
        by_device.setdefault(device, []).append(index)
    std = np.asarray(champion.normalisation["std"], dtype=np.float64)
    means = {d: np.concatenate([data.series[i] for i in idx]).astype(np.float64).mean(axis=0)
             for d, idx in by_device.items()}
    if means:
        median = np.median(np.stack(list(means.values())), axis=0)
        for device, mean in means.items():
            distance = float(np.max(np.abs(mean - median) / std))
            if distance > policy.outlier_stds:
                refused[device] = (f"mean {distance:.1f} training standard deviations from the median device "
                                   f"(limit {policy.outlier_stds:g})")
                del by_device[device]
    needed = math.ceil(1.0 / policy.max_device_share - 1e-9)
    if by_device and len(by_device) < needed:
        for device in by_device:
            refused[device] = (f"only {len(by_device)} device(s) left: at least {needed} are needed so that none "
                               f"holds more than {policy.max_device_share:.0%} of the readings")
        by_device = {}
    counts = {d: sum(len(data.series[i]) for i in idx) for d, idx in by_device.items()}
    cap = _share_cap(list(counts.values()), policy.max_device_share)
    series, ids = [], []
    capped: dict[str, int] = {}
    for device, indexes in by_device.items():
        keep = min(1.0, cap / counts[device]) if counts[device] else 1.0
        for i in indexes:
            kept = data.series[i][len(data.series[i]) - int(len(data.series[i]) * keep):]
            if len(kept) < len(data.series[i]):
                capped[device] = capped.get(device, 0) + len(data.series[i]) - len(kept)
            series.append(kept)
            ids.append(data.ids[i])
    return Admission(dataclasses.replace(data, series=series, ids=ids), refused, capped)


def _share_cap(counts: list[int], share: float) -> int:
    """The largest per-device cap ``c`` with ``c <= share * sum(min(n, c))`` (water-filling)."""
    low, high = 0, max(counts, default=0)
    while low < high:
        middle = (low + high + 1) // 2
        if middle <= share * sum(min(n, middle) for n in counts):
            low = middle
        else:
            high = middle - 1
    return low
