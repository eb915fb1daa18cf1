"""Root exceptions shared by every streamedge package.

Each area (edge, services, training) subclasses :class:`StreamedgeError`; where a caller
would naturally catch a builtin, the subclass derives from it too.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ManifestError",
    "RunnerError",
    "SignatureError",
    "StreamedgeError",
    "VerificationError",
]


class StreamedgeError(Exception):
    """Root of every error streamedge raises on purpose."""


class ConfigError(StreamedgeError, ValueError):
    """A setting or command-line value is missing or invalid."""


class ManifestError(StreamedgeError, ValueError):
    """A model manifest is malformed or inconsistent."""


class VerificationError(StreamedgeError):
    """A model artefact failed its integrity check (sha256, signature, shape)."""


class SignatureError(VerificationError):
    """An Ed25519 signature is missing, malformed or does not match."""


class RunnerError(StreamedgeError, RuntimeError):
    """A TFLite model could not be loaded or run."""
