"""The training package's exceptions: one root, specific subclasses."""

from __future__ import annotations

from streamedge.errors import StreamedgeError

__all__ = ["DataError", "ExportError", "TrainingError"]


class TrainingError(StreamedgeError, ValueError):
    """Root of every error the trainer raises on purpose."""


class DataError(TrainingError):
    """Training data is unreadable, malformed or too small for the requested model."""


class ExportError(TrainingError):
    """A Keras model could not be converted to, or checked as, TFLite."""
