"""Errors raised by the stream processors."""

from __future__ import annotations

from streamedge.errors import StreamedgeError

__all__ = ["FetchFailedError", "ModelRejectedError", "ServicesError"]


class ServicesError(StreamedgeError):
    """Root of every error the stream processors raise on purpose."""


class ModelRejectedError(ServicesError):
    """A model version failed verification, loading or its smoke test; the old one keeps serving."""


class FetchFailedError(ModelRejectedError):
    """The announced model could not be fetched (the registry or the link failed); tried again later."""
