"""The floor: one Keras call per model per message, the way a first prototype would do it, at its fastest.

A kafka-python consumer keeps per-key windows and, for each full window, runs **the same trained
models** the pipeline serves on every reading (its routes: the tiny forecaster and the tiny
classifier, their Keras models saved when the tiny models were built) under ``tf.function`` (the
fastest single-window Keras form; ``model.predict`` per call costs several times more), with each
manifest's normalisation; it sends the forecast and the classification without waiting for the
acknowledgement and lets the consumer commit in the background. It keeps no residual state, so it
emits no anomalies. Transport differs from the pipeline's: kafka-python (synchronous poll loop,
background send) here, Faust over aiokafka there, so the pipeline/naive ratio holds the transport
effect as well as a Keras call per reading against TFLite on micro-batches (the pass-through
ratio measures the Faust transport on its own).
Run as ``python -m streamedge.benchmarks.stream_naive BOOTSTRAP PREFIX MODEL_DIR`` (until killed),
``MODEL_DIR`` holding ``tiny-forecaster/1/manifest.json``, ``tiny-forecaster.keras``,
``tiny-classifier/1/manifest.json`` and ``tiny-classifier.keras``.
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
    models = []  # (manifest, traced single-window call, output topic)
    for name, topic in (("tiny-forecaster", layout.forecasts), ("tiny-classifier", layout.classifications)):
        manifest = read_manifest(model_dir / name / "1")
        model = keras.saving.load_model(model_dir / f"{name}.keras")
        call = tf.function(lambda x, model=model: model(x, training=False))
        call(tf.zeros((1, manifest.window, 1)))  # traced before the clock starts
        models.append((manifest, call, topic))
    window = max(manifest.window for manifest, _, _ in models)
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
        for manifest, call, topic in models:
            if len(values) < manifest.window:
                continue
            mean, std = float(manifest.normalisation["mean"][0]), float(manifest.normalisation["std"][0])
            x = ((np.asarray(values, dtype=np.float32)[-manifest.window:] - mean) / std)[None, :, None]
            out = call(tf.constant(x)).numpy()[0]
            body: dict[str, object] = {"key": parsed.key, "seq": parsed.seq, "ts": parsed.ts}
            if manifest.class_labels:
                body["label"] = manifest.class_labels[int(np.argmax(out))]
            else:
                body["forecast"] = (out * std + mean).tolist()
            producer.send(topic, key=message.key, value=json.dumps(body).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
