"""Frozen hyperparameters for both model families, saved beside every exported model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CLASSIFIER_MODELS", "FORECASTER_MODELS", "ClassifierConfig", "ForecasterConfig"]

CLASSIFIER_MODELS: tuple[str, ...] = ("minirocket", "fcn")
# "auto" trains every learned candidate and keeps the one best on validation (training.forecast).
FORECASTER_MODELS: tuple[str, ...] = ("auto", "lstm", "linear")


@dataclass(frozen=True)
class ClassifierConfig:
    """The classifier: MiniRocket (the default) or an FCN-style 1-D CNN.

    MiniRocket (Dempster et al. 2021): fixed random convolutions pooled into ``features`` PPV
    features, a ridge head with its penalty chosen by leave-one-out error; nothing else applies
    to it except ``seed``. FCN (Wang et al. 2017; Fawaz et al. 2019): trained by gradient
    descent with the remaining fields. The default was chosen by the protocol in docs/training.md.

    Attributes:
        model: ``"minirocket"`` or ``"fcn"``.
        features: MiniRocket feature count (rounded down to a multiple of 84). The paper's 10,000
            won the selection protocol against 1,008 and the FCN once ArrowHead joined the
            selection sets (docs/training.md, "Choosing the default classifier"); 1,008 is
            3-8x faster per window (float32) for a fraction of a point.
        filters: filters per conv block.
        kernels: kernel size per conv block (same length as ``filters``).
        epochs: maximum epochs; early stopping on validation loss usually ends sooner.
        batch_size: mini-batch size (FCN used 16).
        learning_rate: Adam learning rate; halved on validation-loss plateaus.
        patience: epochs without validation-loss improvement before stopping.
        min_epochs: epochs before early stopping starts watching (validation loss on a few
            series is noisy early on).
        val_fraction: stratified share of the training series held out for early stopping.
        refit: after early stopping picked the epoch count on the validation split, train a
            fresh model on every training series for that many epochs (UCR training sets are
            small; holding 20 % out of the final model costs accuracy).
        seed: seeds Python, numpy and TensorFlow for repeatable runs.
    """

    model: Literal["minirocket", "fcn"] = "minirocket"
    features: int = 10_000
    filters: tuple[int, ...] = (128, 256, 128)
    kernels: tuple[int, ...] = (8, 5, 3)
    epochs: int = 300
    batch_size: int = 16
    learning_rate: float = 1e-3
    patience: int = 50
    min_epochs: int = 50
    val_fraction: float = 0.2
    refit: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.filters) != len(self.kernels) or not self.filters:
            raise ValueError(f"filters {self.filters} and kernels {self.kernels} need the same non-zero length")
        _positive(self, ("epochs", "batch_size", "patience", "features"))
        if self.model not in CLASSIFIER_MODELS:
            raise ValueError(f"model must be one of {CLASSIFIER_MODELS}, got {self.model!r}")
        if self.features < 84:
            raise ValueError(f"features must be at least 84 (one per MiniRocket kernel), got {self.features}")
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class ForecasterConfig:
    """A forecaster that learns a correction to the seasonal-naive forecast: an LSTM, or a linear map.

    The network sees the last ``window - season`` readings and their seasonal differences
    (``x[t] - x[t - season]``); its dense head adds ``horizon * n_features`` corrections to the
    seasonal-naive forecast taken from the input window. All of this is inside the model, so
    the exported TFLite file maps a normalised window to a normalised forecast.

    Attributes:
        window: input readings per window; must exceed ``season``.
        horizon: forecast steps.
        season: season length in readings (1 = no seasonality: naive = last value).
        units: LSTM units.
        epochs: maximum epochs.
        batch_size: mini-batch size.
        learning_rate: Adam learning rate.
        patience: early-stopping patience in epochs.
        val_fraction: share of each series' latest training windows held out for early stopping.
        seed: seeds Python, numpy and TensorFlow.
        recent: 0 for the classic input (the LSTM reads ``window - season`` readings); otherwise
            the LSTM reads this many recent readings and the head the seasonal lags
            (needs ``recent + season <= window`` and ``horizon <= season``).
        base_diffs: seasonal-lag input only: the forecast the correction is added to is seasonal
            naive plus the mean of the last ``base_diffs`` seasonal differences
            ``x[t - j] - x[t - j - season]`` (0: seasonal naive; at most ``recent``).
        correction_scales: after training, the correction is multiplied by whichever of these
            factors scores best on the validation windows (0 ships the base alone; ties go to the
            smaller factor); empty keeps the trained correction as it is.
        model: ``"lstm"``, ``"linear"`` (a linear map of the window, NLinear style) or ``"auto"``
            (train both, keep the one with the lower validation error; the saved
            hyperparameters hold the one kept).
        origins: rolling test origins: the last ``origins * horizon`` readings of each series
            are the test set, scored as ``origins`` consecutive forecasts from the true
            history before each (no refit); every figure is reported per origin, with the
            mean and spread.
        per_series_scaling: scale every window by its own statistics inside the model; ``None``
            decides from the data (on when the series' MASE scales differ more than
            ``forecast.MAX_SCALE_SPREAD``). The saved hyperparameters hold the decision taken, so
            a retrain from them makes the same one.
    """

    window: int = 36
    horizon: int = 12
    season: int = 12
    units: int = 32
    epochs: int = 300
    batch_size: int = 16
    learning_rate: float = 3e-3
    patience: int = 40
    val_fraction: float = 0.15
    seed: int = 0
    recent: int = 0
    base_diffs: int = 0
    correction_scales: tuple[float, ...] = ()
    per_series_scaling: bool | None = None
    model: str = "lstm"
    origins: int = 1

    def __post_init__(self) -> None:
        _positive(self, ("window", "horizon", "season", "units", "epochs", "batch_size", "patience", "origins"))
        if self.model not in FORECASTER_MODELS:
            raise ValueError(f"model must be one of {FORECASTER_MODELS}, got {self.model!r}")
        # a manifest read back from JSON holds a list
        object.__setattr__(self, "correction_scales", tuple(float(f) for f in self.correction_scales))
        if not isinstance(self.base_diffs, int) or not 0 <= self.base_diffs <= self.recent:
            raise ValueError(f"base_diffs must be an integer from 0 to recent ({self.recent}), got {self.base_diffs!r}")
        if self.per_series_scaling not in (None, True, False):
            raise ValueError(f"per_series_scaling must be true, false or null, got {self.per_series_scaling!r}")
        if any(not 0.0 <= f <= 1.0 for f in self.correction_scales):
            raise ValueError(f"correction_scales must lie in [0, 1], got {self.correction_scales}")
        if self.season >= self.window:
            raise ValueError(f"window ({self.window}) must be longer than season ({self.season})")
        if not isinstance(self.recent, int) or self.recent < 0:
            raise ValueError(f"recent must be a non-negative integer, got {self.recent!r}")
        if self.recent and (self.recent + self.season > self.window or self.horizon > self.season):
            raise ValueError(f"seasonal-lag input needs recent ({self.recent}) + season ({self.season}) <= window "
                             f"({self.window}) and horizon ({self.horizon}) <= season")
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _positive(config: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
