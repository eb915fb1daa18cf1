"""Contracts shared by edge, services and training: readings, manifests, the TFLite runner.

Imports only numpy and cryptography; the interpreter is imported when a runner is built.
"""

from __future__ import annotations

from streamedge.contracts.manifest import ModelManifest, read_manifest, write_manifest
from streamedge.contracts.reading import Reading, Rejection, parse_reading
from streamedge.contracts.runner import TFLiteRunner

__all__ = ["ModelManifest", "Reading", "Rejection", "TFLiteRunner", "parse_reading", "read_manifest", "write_manifest"]
