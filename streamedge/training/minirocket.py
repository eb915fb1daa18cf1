"""MiniRocket as a Keras model: fixed random convolutions, PPV pooling, a ridge head.

MiniRocket (Dempster, Schmidt and Webb, KDD 2021) convolves every series with 84 fixed kernels
of length 9 (weights -1, with 2 at three of the nine positions) at a range of dilations, and
pools each convolution against a few biases into "proportion of positive values" (PPV)
features; a linear classifier on those features is the whole learned part. Nothing is trained
by gradient descent, so a fit takes seconds and repeats exactly for a seed.

The graph is built from builtin layers only, so it converts to every TFLite variant:
``Conv1D`` (the kernels of one dilation, ``same`` padding for half of them and ``valid`` for the
other half, as MiniRocket alternates) -> ``DepthwiseConv1D`` with kernel 1, one output per
bias and a fused ReLU6 (``relu6(6 * steepness * (c - bias))``: a step from 0 to 6 just above the bias)
-> ``GlobalAveragePooling1D`` -> concatenated, divided by 6 (the PPV features) -> ``Dense`` (the ridge head,
feature standardisation folded in) -> softmax.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamedge.training.ridge import RidgeHead

__all__ = ["KERNEL_LENGTH", "MiniRocketPlan", "build_minirocket", "plan_minirocket"]

KERNEL_LENGTH: Final = 9
# The 84 kernels: weight 2 at each choice of 3 of the 9 positions, -1 elsewhere (they sum to 0,
# so a constant offset of the input never changes a feature).
_TWOS: Final = tuple(itertools.combinations(range(KERNEL_LENGTH), 3))
_MAX_DILATIONS_PER_KERNEL: Final = 32
# The step's slope: outputs within 1 / 100 (normalised units) above a bias are partial, the rest 0
# or 1. Steeper did not fit int8: the depthwise op's gain (input scale x weight scale / output scale)
# must stay below 256 for XNNPACK, and at slope 1000 it passed 256 once the convolution outputs
# spanned more than 32 units (BasicMotions: "XNNPACK delegate failed to prepare").
_STEEPNESS: Final = 100.0
_RELU6_TOP: Final = 6.0
_GOLDEN: Final = (math.sqrt(5.0) + 1.0) / 2.0


@dataclass(frozen=True)
class MiniRocketPlan:
    """Everything random or data-derived about the transform, fixed before the head is fitted.

    Attributes:
        length: series length the plan was fitted for.
        n_channels: input channels.
        dilations: one entry per dilation, ascending.
        features_per_kernel: biases (features) per kernel at each dilation.
        channel_masks: ``(n_dilations, 84, n_channels)`` 0/1 float32, the channels each kernel sums.
        biases: per dilation, ``(84, features_per_kernel[d])`` float32.
    """

    length: int
    n_channels: int
    dilations: tuple[int, ...]
    features_per_kernel: tuple[int, ...]
    channel_masks: npt.NDArray[np.float32]
    biases: tuple[npt.NDArray[np.float32], ...]

    @property
    def n_features(self) -> int:
        """Number of PPV features (``84 * sum(features_per_kernel)``)."""
        return len(_TWOS) * sum(self.features_per_kernel)


def _kernel_weights() -> npt.NDArray[np.float32]:
    weights = -np.ones((len(_TWOS), KERNEL_LENGTH), dtype=np.float32)
    for k, twos in enumerate(_TWOS):
        weights[k, list(twos)] = 2.0
    return weights


def _dilations(length: int, n_features: int) -> tuple[list[int], list[int]]:
    per_kernel = max(1, n_features // len(_TWOS))
    n_dilations = min(per_kernel, _MAX_DILATIONS_PER_KERNEL)
    max_exponent = math.log2(max(1.0, (length - 1) / (KERNEL_LENGTH - 1)))
    values, counts = np.unique(np.floor(np.logspace(0, max_exponent, n_dilations, base=2)).astype(np.int64),
                               return_counts=True)
    features = (counts * (per_kernel / n_dilations)).astype(np.int64)
    for i in range(per_kernel - int(features.sum())):
        features[i % len(features)] += 1
    return [int(v) for v in values], [int(f) for f in features]


def _same_convolution(series: npt.NDArray[np.float32], weights: npt.NDArray[np.float32], dilation: int,
                      mask: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``(length,)`` output of one kernel over the masked channels of one ``(length, channels)`` series."""
    length = series.shape[0]
    pad = (KERNEL_LENGTH - 1) // 2 * dilation
    summed = np.pad(series @ mask, (pad, pad))
    out = np.zeros(length, dtype=np.float32)
    for tap, weight in enumerate(weights):
        out += weight * summed[tap * dilation: tap * dilation + length]
    return out


def plan_minirocket(x: npt.NDArray[np.float32], n_features: int, seed: int) -> MiniRocketPlan:
    """Choose dilations, channel subsets and biases from training series, as MiniRocket does.

    Each kernel's biases are quantiles (a low-discrepancy sequence of levels) of its ``same``-padded
    output on one randomly chosen training series.

    Args:
        x: ``(n, length, channels)`` float32 normalised training series.
        n_features: wanted feature count (rounded down to a multiple of 84; at least 84).
        seed: seeds the choice of series and channels.
    """
    rng = np.random.default_rng(seed)
    n, length, channels = x.shape
    dilations, per_kernel = _dilations(length, n_features)
    weights = _kernel_weights()
    max_channels = min(channels, KERNEL_LENGTH)
    masks = np.zeros((len(dilations), len(_TWOS), channels), dtype=np.float32)
    for d, k in itertools.product(range(len(dilations)), range(len(_TWOS))):
        count = int(2 ** rng.uniform(0, math.log2(max_channels + 1)))
        masks[d, k, rng.choice(channels, size=min(max(count, 1), channels), replace=False)] = 1.0
    biases: list[npt.NDArray[np.float32]] = []
    levels_used = 0
    for d, dilation in enumerate(dilations):
        levels = np.array([((levels_used + i + 1) * _GOLDEN) % 1.0 for i in range(len(_TWOS) * per_kernel[d])])
        levels_used += len(levels)
        levels = levels.reshape(len(_TWOS), per_kernel[d])
        rows = np.empty((len(_TWOS), per_kernel[d]), dtype=np.float32)
        for k in range(len(_TWOS)):
            output = _same_convolution(x[rng.integers(n)], weights[k], dilation, masks[d, k])
            rows[k] = np.quantile(output, levels[k])
        biases.append(rows)
    return MiniRocketPlan(length=length, n_channels=channels, dilations=tuple(dilations),
                          features_per_kernel=tuple(per_kernel), channel_masks=masks, biases=tuple(biases))


def _padded(d: int, k: int) -> bool:
    # MiniRocket alternates zero padding over (dilation, kernel) pairs: half the features see the
    # series edges, half only positions where the whole dilated kernel fits.
    return (d + k) % 2 == 0


def _branch(inputs: Any, plan: MiniRocketPlan, d: int, kernels: list[int], padding: str) -> Any:
    from keras import layers

    weights = _kernel_weights()
    dilation, per_kernel = plan.dilations[d], plan.features_per_kernel[d]
    conv = layers.Conv1D(len(kernels), KERNEL_LENGTH, dilation_rate=dilation, padding=padding, use_bias=False,
                         trainable=False, name=f"kernels_d{dilation}_{padding}")
    # ReLU6 fused into the depthwise op (TFLite has no fused 0-1 clip; a separate MINIMUM made the
    # int8 model 7x slower): a step from 0 to 6, rescaled to a proportion after pooling.
    step = layers.DepthwiseConv1D(1, depth_multiplier=per_kernel, activation="relu6", trainable=False,
                                  name=f"biases_d{dilation}_{padding}")
    h = step(conv(inputs))
    # Conv1D kernel (taps, channels, filters): each chosen kernel on its own subset of channels.
    conv.set_weights([np.einsum("kt,kc->tck", weights[kernels], plan.channel_masks[d, kernels]).astype(np.float32)])
    # Depthwise output k * per_kernel + f = relu6(6 * steepness * (conv_k - bias_kf)): after the
    # division by 6, a ramp from 0 to 1 over 1 / steepness above the bias.
    slope = _STEEPNESS * _RELU6_TOP
    step.set_weights([np.full((1, len(kernels), per_kernel), slope, dtype=np.float32),
                      (-slope * plan.biases[d][kernels]).reshape(-1).astype(np.float32)])
    return layers.GlobalAveragePooling1D(name=f"ppv_d{dilation}_{padding}")(h)


def build_minirocket(plan: MiniRocketPlan, n_classes: int, head: RidgeHead | None = None) -> Any:
    """The Keras model: input ``(batch, length, channels)`` float32, output ``(batch, n_classes)`` softmax.

    Without ``head`` the output is the ``(batch, n_features)`` PPV features in [0, 1] (what the
    head is fitted on); with it, the ridge scores (standardisation folded into the dense layer)
    go through a softmax, so the argmax is the ridge classifier's decision.
    """
    import keras
    from keras import layers

    inputs = keras.Input((plan.length, plan.n_channels), name="window")
    pooled = []
    for d in range(len(plan.dilations)):
        for padding in ("same", "valid"):
            kernels = [k for k in range(len(_TWOS)) if _padded(d, k) == (padding == "same")]
            pooled.append(_branch(inputs, plan, d, kernels, padding))
    stepped = layers.Concatenate(name="ppv_times_6")(pooled) if len(pooled) > 1 else pooled[0]
    features = layers.Rescaling(1.0 / _RELU6_TOP, name="features")(stepped)
    if head is None:
        return keras.Model(inputs, features, name="minirocket_features")
    dense = layers.Dense(n_classes, name="ridge")
    outputs = layers.Softmax(name="probabilities")(dense(features))
    weights, bias = head.folded()
    dense.set_weights([weights, bias])
    return keras.Model(inputs, outputs, name="minirocket_classifier")

