"""Errors raised by the edge agent; all derive from :class:`EdgeError`."""

from __future__ import annotations

from streamedge.errors import StreamedgeError, VerificationError

__all__ = ["EdgeError", "ModelRejectedError", "NoModelError", "NonFiniteOutputError", "OutboxError", "SourceError"]


class EdgeError(StreamedgeError):
    """Root of every error the edge agent raises on purpose."""


class SourceError(EdgeError, OSError):
    """A reading source could not be opened or read (missing file, bad CSV header, ...)."""


class NoModelError(EdgeError, LookupError):
    """The local model folder holds no usable version of the model."""


class ModelRejectedError(EdgeError, VerificationError):
    """A candidate model was refused (verification, shape check or smoke test); ``reason`` says why.

    Attributes:
        reason: a short code safe as a metric label (``"verification"``, ``"shape"``,
            ``"load"``, ``"smoke_test"``, ``"not_installed"``: a staged record's fleet version
            is not on this device).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class NonFiniteOutputError(EdgeError, ValueError):
    """The model returned NaN or infinity for a window (e.g. readings far outside its training range)."""


class OutboxError(EdgeError, OSError):
    """The on-disk result buffer could not be opened or written."""
