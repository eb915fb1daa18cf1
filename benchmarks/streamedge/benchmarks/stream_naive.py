"""The floor: one Keras call per message, the way a first prototype would do it, at its fastest.

A kafka-python consumer keeps per-key windows and, for each full window, runs **the same trained
forecaster** the pipeline serves (its Keras model, saved when the tiny models were built) under
``tf.function`` (the fastest single-window Keras form; ``model.predict`` per call costs several
times more), with the manifest's normalisation; it sends the forecast without waiting for the
acknowledgement and lets the consumer commit in the background. So against the pipeline it
differs in one thing: a Keras call per reading instead of TFLite on micro-batches.
Run as ``python -m streamedge.benchmarks.stream_naive BOOTSTRAP PREFIX MODEL_DIR`` (until killed),
``MODEL_DIR`` holding ``tiny-forecaster/1/manifest.json`` and ``tiny-forecaster.keras``.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Consume until killed."""
    import keras
    import numpy as np
    import tensorflow as tf
    from kafka import KafkaConsumer, KafkaProducer

    from streamedge.contracts.manifest import read_manifest
    from streamedge.contracts.reading import Reading, parse_reading
    from streamedge.kafka.settings import KafkaSettings
    from streamedge.kafka.topics import TopicLayout

    bootstrap, prefix, model_dir = argv[0], argv[1], Path(argv[2])
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    layout = TopicLayout(prefix=prefix)
    manifest = read_manifest(model_dir / "tiny-forecaster" / "1")
    mean, std, window = float(manifest.normalisation["mean"][0]), float(manifest.normalisation["std"][0]), manifest.window
    model = keras.saving.load_model(model_dir / "tiny-forecaster.keras")
    forecast_one = tf.function(lambda x: model(x, training=False))
    forecast_one(tf.zeros((1, window, 1)))  # traced before the clock starts
    consumer = KafkaConsumer(layout.readings, **kafka.kafka_python_config(), group_id=f"{prefix}naive",
                             auto_offset_reset="earliest", enable_auto_commit=True)
    producer = KafkaProducer(**kafka.kafka_python_config())
    windows: dict[str, deque[float]] = {}
    print("ready", flush=True)
    for message in consumer:
        parsed = parse_reading(message.value)
        if not isinstance(parsed, Reading):
            continue
        values = windows.setdefault(parsed.key, deque(maxlen=window))
        values.append(parsed.values[0])
        if len(values) == window:
            x = ((np.asarray(values, dtype=np.float32) - mean) / std)[None, :, None]
            forecast = forecast_one(tf.constant(x)).numpy()[0] * std + mean
            body = {"key": parsed.key, "seq": parsed.seq, "ts": parsed.ts, "forecast": forecast.tolist()}
            producer.send(layout.forecasts, key=message.key, value=json.dumps(body).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
