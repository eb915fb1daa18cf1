"""Training: load series, fit LSTM forecasters and CNN classifiers, export TFLite, report.

Heavy imports (TensorFlow, matplotlib) happen inside the functions that need them, so
importing this package is cheap.
"""

from __future__ import annotations

from streamedge.training.classify import train_classifier
from streamedge.training.config import ClassifierConfig, ForecasterConfig
from streamedge.training.errors import DataError, ExportError, TrainingError
from streamedge.training.forecast import train_forecaster

__all__ = [
    "ClassifierConfig",
    "DataError",
    "ExportError",
    "ForecasterConfig",
    "TrainingError",
    "train_classifier",
    "train_forecaster",
]
