"""Training: load series, fit LSTM forecasters and CNN classifiers, export TFLite, report.

Heavy imports (TensorFlow, matplotlib) happen inside the functions that need them, so
importing this package is cheap.
"""

from __future__ import annotations

from training.errors import DataError, ExportError, TrainingError

__all__ = ["DataError", "ExportError", "TrainingError"]
