"""The default key cap fits the worker's shipped memory limit (deploy/k8s/stream-worker.yaml)."""

from __future__ import annotations

import json
import subprocess
import sys

from streamedge.services.settings import StreamSettings
from streamedge.training.tiny import TinyModels
from tests.services.helpers import REPO

# The stream worker's memory limit in deploy/k8s/stream-worker.yaml.
_LIMIT_BYTES = 512 * 1024 * 1024
_KEYS = 10_000
# Key state may take this share of the limit; the rest holds the runtime (about 120 MB measured),
# the batches in flight and the fetch buffers (docs/stream.md, "Memory").
_KEY_SHARE = 0.4

# Fills _KEYS keys with full windows and pending forecasts; prints the RSS growth per key.
_MEASURE = """
import json, sys
from pathlib import Path
from prometheus_client import CollectorRegistry
from streamedge.contracts.signing import load_public_key
from streamedge.services.metrics import StreamMetrics
from streamedge.services.models import ModelSet, load_model
from streamedge.services.processor import Processor
from streamedge.services.records import Source
from streamedge.services.settings import StreamSettings
from tests.services.helpers import reading

forecaster, classifier, public, keys = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

key = load_public_key(public)
models = ModelSet()
models.swap(load_model(forecaster, key))
models.swap(load_model(classifier, key))
settings = StreamSettings(routes={"s": ["tiny-forecaster", "tiny-classifier"]})
processor = Processor(settings, models, StreamMetrics(CollectorRegistry()))
processor.process([(reading("warm", s), Source("r", 0, s, 1.7e9 + s, b"warm/s")) for s in range(16)])
before = rss()
for seq in range(12):
    for first in range(0, keys, settings.batch_size):
        processor.process([(reading(f"d{k}", seq), Source("r", 0, seq, 1.7e9 + seq, f"d{k}/s".encode()))
                           for k in range(first, min(keys, first + settings.batch_size))])
print(json.dumps({"per_key": (rss() - before) / keys, "keys": len(processor.store)}))
"""


def test_item8_the_default_key_cap_fits_its_share_of_the_shipped_memory_limit(tiny_models: TinyModels) -> None:
    """Before: 200,000 keys (about 1.25 KB of processor state each here, 3.2 KB in a running worker) in a
    512 MiB container."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(tiny_models.forecaster), str(tiny_models.classifier),
                           str(tiny_models.public_key), str(_KEYS)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["keys"] == _KEYS + 1
    assert StreamSettings().max_keys * measured["per_key"] <= _LIMIT_BYTES * _KEY_SHARE, measured
    print(f"\n{measured['per_key']:.0f} bytes of RSS per key")
