"""Train on synthetic, test on real (TSTR) for the FCN classifier, beside train on real (TRTR)
and train on real plus synthetic (augmentation), all scored on a real test set.

The GAN learns from the real training series only (conditioned on their classes); the
synthetic set keeps the real class balance, ``multiplier`` times as many windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamedge.training.config import ClassifierConfig
from streamedge.training.gan import GanConfig, sample, train_gan
from streamedge.training.gan_data import GanData

__all__ = ["tstr_accuracies"]


def _fcn_accuracy(x: Any, y: Any, test: GanData, config: ClassifierConfig) -> float:
    from streamedge.training.models import build_classifier, fit, seed_everything

    seed_everything(config.seed)
    model = build_classifier(x.shape[1], x.shape[2], len(test.classes), config)
    fit(model, (x, y), None, config.epochs, config.batch_size, config.patience, progress=False, reduce_lr=True)
    predicted = np.argmax(np.asarray(model.predict(test.x, batch_size=256, verbose=0)), axis=1)
    return float(np.mean(predicted == test.labels))


def tstr_accuracies(train: GanData, test: GanData, gan: GanConfig, epochs: int, multiplier: int = 1) -> dict[str, float]:
    """Test-set accuracy of the FCN trained on real (``trtr``), synthetic (``tstr``) and both
    (``augmented``) training windows. ``train`` and ``test`` share ``classes``."""
    config = ClassifierConfig(model="fcn", epochs=epochs, patience=epochs, seed=gan.seed)
    trained = train_gan(train, gan, progress=False)
    labels = np.tile(train.labels, multiplier)
    synthetic = sample(trained, labels, gan.seed)
    return {
        "trtr": _fcn_accuracy(train.x, train.labels, test, config),
        "tstr": _fcn_accuracy(synthetic, labels, test, config),
        "augmented": _fcn_accuracy(np.concatenate([train.x, synthetic]), np.concatenate([train.labels, labels]), test,
                                   config),
    }
