"""streamedge: streaming time-series inference from Kafka to edge devices.

This package is the lowest layer: the shared contracts (:mod:`streamedge.contracts`), Kafka
client settings and the local broker (:mod:`streamedge.kafka`) and the CLI
(:mod:`streamedge.cli`). It imports nothing heavy; the areas live in the top-level packages
``edge``, ``services`` and ``training``.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
