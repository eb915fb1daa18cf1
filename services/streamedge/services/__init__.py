"""Stream processors: Faust workers that apply the models to Kafka readings in real time.

Never imports TensorFlow or the trainer: a worker runs TFLite only.
"""

from __future__ import annotations

from streamedge.services.errors import ModelRejectedError, ServicesError
from streamedge.services.settings import StreamSettings

__all__ = ["ModelRejectedError", "ServicesError", "StreamSettings"]
