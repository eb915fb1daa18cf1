"""Published test accuracies (percent) of the deep and random-kernel baselines, with their sources.

Each figure is the mean over the runs the authors published for the official train/test split,
read from the result files in the authors' repositories. ``None`` where no published figure was
found (BasicMotions is in none of these result files; InceptionTime and ROCKET published no
JapaneseVowels figure there).
"""

from __future__ import annotations

from typing import Final

__all__ = ["PUBLISHED", "SOURCES"]

SOURCES: Final = {
    "FCN": "Fawaz et al. 2019, 'Deep learning for time series classification: a review', DMKD 33(4); "
           "github.com/hfawaz/dl-4-tsc results/results-uea.csv (UCR 2015, mean of 10 runs), "
           "results/results-mts.csv (JapaneseVowels, 10 runs), results/results-ucr-128.csv "
           "(PickupGestureWiimoteZ, 5 runs)",
    "ResNet": "same paper and files as FCN",
    "InceptionTime": "Fawaz et al. 2020, 'InceptionTime: finding AlexNet for time series classification', "
                     "DMKD 34(6); github.com/hfawaz/InceptionTime results-InceptionTime-128.csv (ensemble of 5)",
    "ROCKET": "Dempster et al. 2020, 'ROCKET: exceptionally fast and accurate time series classification "
              "using random convolutional kernels', DMKD 34(5); github.com/angus924/rocket "
              "results/results_ucr.csv (mean of 10 runs, official split)",
}

PUBLISHED: Final[dict[str, dict[str, float | None]]] = {
    "GunPoint": {"FCN": 100.0, "ResNet": 99.07, "InceptionTime": 100.0, "ROCKET": 100.0},
    "ItalyPowerDemand": {"FCN": 96.10, "ResNet": 96.30, "InceptionTime": 96.50, "ROCKET": 96.96},
    "BasicMotions": {"FCN": None, "ResNet": None, "InceptionTime": None, "ROCKET": None},
    "JapaneseVowels": {"FCN": 99.30, "ResNet": 99.16, "InceptionTime": None, "ROCKET": None},
    "PickupGestureWiimoteZ": {"FCN": 74.40, "ResNet": 70.40, "InceptionTime": 76.00, "ROCKET": 83.00},
    "Coffee": {"FCN": 100.0, "ResNet": 100.0, "InceptionTime": 100.0, "ROCKET": 100.0},
    "ArrowHead": {"FCN": 84.29, "ResNet": 84.46, "InceptionTime": 84.57, "ROCKET": 81.43},
}
