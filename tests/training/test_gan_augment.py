"""``--augment-with``: small classes topped up from a GAN generator, written as a loadable .ts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamedge.paths import data_dir
from streamedge.training.data import load_ts
from streamedge.training.errors import DataError
from streamedge.training.gan import GanConfig, export_generator, train_gan
from streamedge.training.gan_augment import augment_ts
from streamedge.training.gan_data import load_gan_data

TRAIN = data_dir() / "ucr" / "ItalyPowerDemand_TRAIN.ts"


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gan-ipd")
    data = load_gan_data(TRAIN)
    export_generator(train_gan(data, GanConfig(noise_dim=2, hidden=4, steps=3, n_critic=1, seed=1), progress=False),
                     folder)
    return folder


def test_classes_are_topped_up_to_the_ratio(generator: Path, tmp_path: Path) -> None:
    path, added = augment_ts(TRAIN, generator, tmp_path, ratio=2.0, seed=3)
    real = load_ts(TRAIN)
    augmented = load_ts(path)
    largest = max(real.labels.count(c) for c in real.class_labels)
    assert {c: augmented.labels.count(c) for c in real.class_labels} == {c: 2 * largest for c in real.class_labels}
    np.testing.assert_allclose(augmented.x[: len(real.x)], real.x, rtol=1e-6, atol=1e-6)
    assert path.name == TRAIN.name and augmented.class_labels == real.class_labels
    assert json.loads((tmp_path / "augmentation.json").read_text())["synthetic"] == added["synthetic"]


def test_a_generator_that_does_not_fit_is_refused(generator: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="windows"):
        augment_ts(data_dir() / "ucr" / "GunPoint_TRAIN.ts", generator, tmp_path)
    with pytest.raises(DataError, match="ratio"):
        augment_ts(TRAIN, generator, tmp_path, ratio=0.0)
