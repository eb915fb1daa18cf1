"""Attack 1: the data check measures a device against the median device, not the champion's data.

Issue 24 asks for "a data check against the current model's training distribution". With two
enrolled devices (the fewest the default 50 % share admits) the median device is their midpoint,
so one compromised device whose own, correctly signed readings sit 7 training standard deviations
from everything the champion learnt is only 3.5 from the "median": it is admitted, keeps its full
half of the training set and moves the next model's normalisation mean by 3.5 standard deviations.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from streamedge.training.admission import AdmissionPolicy, admit
from streamedge.training.data import DataReport, SeriesData


def test_a_device_seven_training_stds_off_is_refused_with_two_devices() -> None:
    mean, std = 275.0, 50.0
    champion: Any = SimpleNamespace(normalisation={"mean": [mean], "std": [std]})
    honest = np.full((300, 1), mean, dtype=np.float32)
    hostile = np.full((300, 1), mean + 7 * std, dtype=np.float32)  # its own readings, signed with its own key
    data = SeriesData([honest, hostile], ["d0/s", "d1/s"], ["value"], DataReport())
    admission = admit(data, champion, AdmissionPolicy(frozenset({"d0", "d1"})))
    learnt = float(np.concatenate(admission.data.series).mean()) if admission.data.series else mean
    assert "d1" in admission.refused, f"d1, 7 training stds off, admitted; admitted mean {learnt:.0f} (champion {mean:.0f})"
    assert abs(learnt - mean) <= 4 * std
