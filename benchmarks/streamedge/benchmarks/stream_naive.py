"""The floor: one Keras ``model.predict`` per message, the way a first prototype would do it.

A kafka-python consumer keeps per-key windows, calls ``predict`` on each full window, produces
the forecast and commits per message. The Keras model has the tiny forecaster's architecture
(Dense on the flattened window), so its cost per call is the same. Run as
``python -m streamedge.benchmarks.stream_naive BOOTSTRAP PREFIX WINDOW``.
"""

from __future__ import annotations

import json
import sys
from collections import deque

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Consume until killed."""
    import numpy as np
    import tensorflow as tf
    from kafka import KafkaConsumer, KafkaProducer

    from streamedge.contracts.reading import Reading, parse_reading
    from streamedge.kafka.settings import KafkaSettings
    from streamedge.kafka.topics import TopicLayout

    bootstrap, prefix, window = argv[0], argv[1], int(argv[2])
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    layout = TopicLayout(prefix=prefix)
    model = tf.keras.Sequential([tf.keras.Input((window, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(16, activation="relu"), tf.keras.layers.Dense(2)])
    consumer = KafkaConsumer(layout.readings, **kafka.kafka_python_config(), group_id=f"{prefix}naive",
                             auto_offset_reset="earliest", enable_auto_commit=False)
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
            forecast = model.predict(np.asarray(values, dtype=np.float32)[None, :, None], verbose=0)
            body = {"key": parsed.key, "seq": parsed.seq, "ts": parsed.ts, "forecast": forecast[0].tolist()}
            producer.send(layout.forecasts, key=message.key, value=json.dumps(body).encode()).get(timeout=30)
        consumer.commit()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
