"""Attack 1: the data check compares only each device's mean, so one enrolled device steers the spread.

Issue 24 asks for "a data check against the current model's training distribution". Admission
checks a device's *mean* against the median device and nothing else. One compromised enrolled
device sends its own, correctly signed readings alternating 275 - 5,000 and 275 + 5,000: its mean is
exactly the fleet's, so it is admitted with its full share, and the admitted data's standard
deviation (the next model's normalisation) goes from 50 to about 2,500, 50 training standard
deviations.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from streamedge.training.admission import AdmissionPolicy, admit
from streamedge.training.data import DataReport, SeriesData


def test_a_device_far_outside_the_training_spread_is_refused_even_with_the_fleets_mean() -> None:
    mean, std = 275.0, 50.0
    champion: Any = SimpleNamespace(normalisation={"mean": [mean], "std": [std]})
    rng = np.random.default_rng(0)
    honest = [rng.normal(mean, std, (300, 1)).astype(np.float32) for _ in range(3)]
    swing = np.where(np.arange(300) % 2 == 0, mean - 5000.0, mean + 5000.0).reshape(300, 1).astype(np.float32)
    data = SeriesData([*honest, swing], ["d0/s", "d1/s", "d2/s", "d3/s"], ["value"], DataReport())
    admission = admit(data, champion, AdmissionPolicy(frozenset({"d0", "d1", "d2", "d3"})))
    learnt = np.concatenate(admission.data.series)
    assert "d3" in admission.refused, (f"d3 (mean {mean:.0f}, spread 5,000) admitted: the admitted std is "
                                       f"{float(learnt.std()):.0f}, the champion's {std:.0f}")
    assert float(learnt.std()) < 4 * std
