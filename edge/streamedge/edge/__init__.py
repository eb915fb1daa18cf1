"""The edge agent: TFLite inference on a device, store-and-forward to Kafka, safe model updates.

Depends only on numpy, a TFLite interpreter, kafka-python, prometheus-client, pydantic and
cryptography (the ``edge`` extra); never on TensorFlow, Faust, pandas, ``services`` or ``training``.
"""

from __future__ import annotations

from streamedge.edge.errors import EdgeError, ModelRejectedError
from streamedge.edge.settings import EdgeSettings

__all__ = ["EdgeError", "EdgeSettings", "ModelRejectedError"]
