"""Load generation: realistic readings for a simulated fleet, sent to Kafka at a set rate.

Core code (no TensorFlow, no Faust): values come from built-in sines, a replayed table or a
GAN generator run through the shared TFLite runner.
"""

from __future__ import annotations

from streamedge.simulate.run import SimulationReport, simulate
from streamedge.simulate.settings import SimulateSettings

__all__ = ["SimulateSettings", "SimulationReport", "simulate"]
