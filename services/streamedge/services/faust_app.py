"""Entry point for the plain Faust CLI: ``faust -A streamedge.services.faust_app worker -l info``.

Importing this module does nothing; the ``app`` attribute is built on first access (PEP 562)
from ``STREAMEDGE_STREAM_*`` and ``STREAMEDGE_KAFKA_*`` env vars.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]

# Declared for type checkers and ``__all__``; the value comes from ``__getattr__`` on first access.
app: Any


def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(name)
    from streamedge.cli.common import build_settings
    from streamedge.kafka.settings import KafkaSettings
    from streamedge.services.app import StreamWorker
    from streamedge.services.settings import StreamSettings

    worker = StreamWorker(build_settings(StreamSettings, "stream"), build_settings(KafkaSettings, "Kafka"))
    worker.prepare()
    built = worker.create_app()
    globals()["app"] = built
    return built
