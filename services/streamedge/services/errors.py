"""Errors raised by the stream processors."""

from __future__ import annotations

from streamedge.errors import StreamedgeError

__all__ = ["ModelRejectedError", "ServicesError"]


class ServicesError(StreamedgeError):
    """Root of every error the stream processors raise on purpose."""


class ModelRejectedError(ServicesError):
    """A model version failed verification, loading or its smoke test; the old one keeps serving."""
