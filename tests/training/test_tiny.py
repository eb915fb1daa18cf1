"""The tiny test models are real, signed and runnable by the shared runner."""

from __future__ import annotations

import numpy as np

from streamedge.contracts.runner import TFLiteRunner
from streamedge.contracts.signing import load_public_key, verify_model_dir
from streamedge.training.tiny import TINY_WINDOW, TinyModels


def test_tiny_models_verify_and_run(tiny_models: TinyModels) -> None:
    key = load_public_key(tiny_models.public_key)
    for folder, n_out in ((tiny_models.forecaster, 2), (tiny_models.classifier, 2)):
        manifest, model_path = verify_model_dir(folder, key)
        runner = TFLiteRunner(model_path, manifest)
        out = runner.run(np.zeros((5, TINY_WINDOW, 1), dtype=np.float32))
        assert out.shape == (5, n_out)
        assert np.isfinite(out).all()
