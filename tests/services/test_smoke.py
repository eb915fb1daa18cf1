"""The smoke test a new model version passes before it serves on a stream worker."""

from __future__ import annotations

import numpy as np
import pytest

from streamedge.contracts.signing import load_public_key
from streamedge.services.errors import ModelRejectedError
from streamedge.services.models import load_model, smoke_test
from streamedge.training.tiny import TINY_WINDOW, TinyModels


@pytest.mark.parametrize("kind", ["forecaster", "classifier"])
def test_a_device_sending_extreme_values_does_not_refuse_every_version(tiny_models: TinyModels, kind: str) -> None:
    model = load_model(getattr(tiny_models, kind), load_public_key(tiny_models.public_key))
    features = model.manifest.n_features
    normal = (10.0 + np.sin(np.arange(TINY_WINDOW, dtype=np.float32)))[:, np.newaxis].repeat(features, axis=1)
    # Readings of 1e300 are valid; the float32 windows a model runs on hold them as infinity.
    extreme = np.full((TINY_WINDOW, features), np.inf, dtype=np.float32)
    assert not np.isfinite(model.predict(extreme[np.newaxis])).all()
    smoke_test(model, [extreme, normal, extreme])
    smoke_test(model, [])  # no history yet: the training mean alone
    with pytest.raises(ModelRejectedError, match="output not finite on any of 2 recent windows"):
        smoke_test(model, [extreme, extreme])
