"""MiniRocket as a Keras model: fixed random convolutions, PPV pooling, a ridge head.

MiniRocket (Dempster, Schmidt and Webb, KDD 2021) convolves every series with 84 fixed kernels
of length 9 (weights -1, with 2 at three of the nine positions) at a range of dilations, and
pools each convolution against a few biases into "proportion of positive values" (PPV)
features; a linear classifier on those features is the whole learned part. Nothing is trained
by gradient descent, so a fit takes seconds and repeats exactly for a seed.

The graph is built from builtin layers only, so it converts to every TFLite variant. Per dilation
and padding (``same`` for half of the kernels, ``valid`` for the other half, as MiniRocket
alternates): the window folded into ``dilation`` phases (``ZeroPadding1D`` -> ``Reshape``) ->
``Conv2D((9, 1))`` (the fixed kernels; a fused ReLU6 clips each output to the span of the branch's
biases) -> ``Reshape`` back to time, crop -> the clipped outputs repeated once per bias
(``Concatenate``) -> ``DepthwiseConv1D(1)`` with a fused ReLU6 (``relu6(6 * steepness * (c - bias))``
in clipped units: a step from 0 to 6 just above the bias) -> ``GlobalAveragePooling1D`` -> all
branches concatenated (6x the PPV features) -> ``Dense`` (the ridge head, with the feature
standardisation and the 1/6 folded in) -> softmax.

The layout is chosen for the full-int8 export (issue #10): no ``SPACE_TO_BATCH_ND`` (TFLite has no
XNNPACK int8 kernel for it), kernel weights that are exact in int8 (:data:`_GUARD`), a clip range
with 0 on its int8 grid (:func:`_clip_range`) and a head whose int8 rounding is bias-corrected
(:func:`_bias_correction`). None of them changes a float output.
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
# spanned more than 32 units (BasicMotions: "XNNPACK delegate failed to prepare"). At 100 the gain
# is 0.8 x the span of a branch's biases.
_STEEPNESS: Final = 100.0
_RELU6_TOP: Final = 6.0
_SLOPE: Final = _STEEPNESS * _RELU6_TOP
# int8 weights are quantised symmetrically, one scale per tensor, max |w| / 127: a kernel's -1
# became -63.5 -> -64 beside 2 -> 127, so each kernel summed to -3 instead of 0 and a constant
# stretch of the window (PickupGestureWiimoteZ is flat over a third of its samples) moved its
# features. A guard weight 127 / 126 times the largest sets the scale so that -1 and 2 are exact.
_GUARD: Final = 127.0 / 126.0
# Layout code of the guard channel's copies in the classifier, a feature that is always exactly 6
# (real features have their index, >= 0).
_ONE: Final = -1
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


def _branches(plan: MiniRocketPlan) -> list[tuple[int, str, list[int]]]:
    """``(dilation index, padding, kernels)`` in feature order: dilations ascending, ``same`` then ``valid``."""
    return [(d, padding, [k for k in range(len(_TWOS)) if _padded(d, k) == (padding == "same")])
            for d in range(len(plan.dilations)) for padding in ("same", "valid")]


def _dilated_conv(x: Any, length: int, dilation: int, padding: str, filters: int, name: str) -> tuple[Any, Any]:
    """``(batch, length, channels)`` -> ``(batch, positions, filters)`` relu6 outputs of a dilated length-9 conv.

    Written as a ``Conv2D((9, 1))`` over the series folded into ``dilation`` phases (position
    ``t = row * dilation + phase``), so the dilation needs no ``SPACE_TO_BATCH_ND`` /
    ``BATCH_TO_SPACE_ND`` pair: TensorFlow lowers a dilated ``Conv1D`` to those, TFLite keeps them,
    and their int8 kernels (no XNNPACK) made the int8 model 5x slower than float32. Positions past
    the series end that the folding adds are cropped.
    """
    from keras import layers

    half = (KERNEL_LENGTH - 1) // 2 * dilation
    edge = half if padding == "same" else 0
    extra = (-length) % dilation
    if edge or extra:
        x = layers.ZeroPadding1D((edge, edge + extra), name=f"z{name}")(x)
    rows = (length + 2 * edge + extra) // dilation
    x = layers.Reshape((rows, dilation, x.shape[-1]), name=f"r{name}")(x)
    conv = layers.Conv2D(filters, (KERNEL_LENGTH, 1), activation="relu6", name=f"k{name}")
    x = layers.Reshape(((rows - KERNEL_LENGTH + 1) * dilation, filters), name=f"t{name}")(conv(x))
    if extra:
        x = layers.Cropping1D((0, extra), name=f"c{name}")(x)
    return x, conv


def _clip_range(low: float, high: float) -> tuple[float, float]:
    """``(lo, gain)`` of a clip ``relu6(gain * (c - lo))`` covering ``[low, high]``, with ``c = 0`` on its int8 grid.

    The clipped output is quantised to 255 steps of 6 / 255. A constant stretch of the window
    gives ``c = 0`` exactly, and on such series many biases are 0 too (quantiles of a flat
    stretch): unless 0 falls on a grid point, rounding puts the whole stretch on one side of those
    biases (above them in int8, at them in float), so ``lo`` is a whole number of steps below 0.
    """
    step = (high - low) / 255.0
    if low < 0.0 < high:
        step = (high - low) / 253.0
        low = -math.ceil(-low / step) * step
    return low, _RELU6_TOP / (255.0 * step)


def _step_branch(x: Any, plan: MiniRocketPlan, d: int, padding: str, kernels: list[int],
                 guards: bool) -> tuple[Any, npt.NDArray[np.int64], list[tuple[Any, list[npt.NDArray[np.float32]]]]]:
    """One (dilation, padding) branch: pooled ``relu6`` steps, 6x the PPV features, order (bias, kernel).

    The conv computes each kernel's output clipped to the span of the branch's biases,
    ``relu6(a * (conv_k - lo))``, which changes no feature (below ``lo`` every step is 0, above the
    top bias plus the ramp every step is 1) and gives the int8 model one fine scale for it. The
    clipped outputs are repeated once per bias (``Concatenate``) and a ``DepthwiseConv1D(1)`` takes
    every step, ``relu6(600 * (conv_k - bias_kf))`` written in clipped units; pooling gives 6x PPV.
    (A ``DepthwiseConv1D`` with one output per bias computes the same, but its int8 kernel with a
    depth multiplier ran 2-8x slower than the float one under XNNPACK here.)

    Returns ``(pooled, layout, weights)``: ``layout[i]`` is the branch's feature index of pooled
    output ``i``, or :data:`_ONE` for the guard channel's copies (always exactly 6, in float and in
    int8); ``weights`` are set once the model is built.
    """
    from keras import layers

    taps = np.einsum("kt,kc->tck", _kernel_weights()[kernels], plan.channel_masks[d, kernels])  # (taps, channels, kernels)
    biases = plan.biases[d][kernels].astype(np.float64)  # (kernels, per_kernel)
    n_kernels, per_kernel = biases.shape
    name = f"{plan.dilations[d]}{padding[0]}"
    low, gain = _clip_range(float(biases.min()), float(biases.max()) + 1.0 / _STEEPNESS)
    kernel, bias = taps * gain, np.full(n_kernels, -gain * low)
    if guards:
        # One more filter whose weight sets the int8 scale so that every kernel's -1 and 2 are
        # exact (-63 and 126: each kernel still sums to 0, so a constant stretch gives exactly 0).
        guard = np.zeros((len(taps), plan.n_channels, 1))
        guard[0, 0, 0] = 2 * gain * _GUARD
        kernel, bias = np.concatenate([kernel, guard], axis=2), np.append(bias, 0.0)
    channels = kernel.shape[-1]
    h, conv = _dilated_conv(x, plan.length, plan.dilations[d], padding, channels, name)
    if per_kernel > 1:
        h = layers.Concatenate(name=f"f{name}")([h] * per_kernel)
    step = layers.DepthwiseConv1D(1, activation="relu6", name=f"b{name}")
    pooled = layers.GlobalAveragePooling1D(name=f"p{name}")(step(h))
    slope = _SLOPE / gain
    # The guard's copies get bias 6: their step is exactly 6 (the clipped input is at least 0).
    step_bias = np.full((per_kernel, channels), _RELU6_TOP)
    step_bias[:, :n_kernels] = -_SLOPE * (biases.T - low)
    layout = np.full((per_kernel, channels), _ONE)
    layout[:, :n_kernels] = np.arange(per_kernel * n_kernels).reshape(per_kernel, n_kernels)
    return pooled, layout.reshape(-1), [
        (conv, [kernel[:, np.newaxis].astype(np.float32), bias.astype(np.float32)]),
        (step, [np.full((1, step_bias.size, 1), slope, dtype=np.float32), step_bias.reshape(-1).astype(np.float32)]),
    ]


def _bias_correction(weights: npt.NDArray[np.float64], means: npt.NDArray[np.float64],
                     ones: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """Bias-correct the int8 head (Nagel et al. 2019) without changing a float score.

    The converter rounds the dense kernel to one int8 scale, ``max |w| / 127``. The rounding errors
    of 10,000 weights would cancel on centred inputs, but PPVs are all positive: on ArrowHead they
    shifted one class's score by 0.11 on average and flipped 2 % of the test series (choosing the
    scale so that they cancel still left 0.05 over PickupGestureWiimoteZ's ten classes; one dense
    layer per class, each with its own scale, cost 27 us per class under XNNPACK). The expected
    shift of class ``c`` on the training features' means is ``sum((round(w / s) * s - w) * mean)``.
    It is moved into the bias, and given back to the float model through weights on the features
    that are always 6 (``ones``), each below 0.45 int8 steps: they round to 0 in int8, so only the
    float model adds them (with fewer copies than the shift needs, 1,008 features on
    PickupGestureWiimoteZ, part of it stays). Returns the per-class amount taken off the bias (the
    ``ones`` rows of ``weights`` are set).
    """
    scale = float(np.max(np.abs(weights))) / 127.0
    if scale == 0.0 or not ones.any():
        return np.zeros(weights.shape[1])
    shift = means @ (np.round(weights / scale) * scale - weights)
    per_one = np.clip(shift / (_RELU6_TOP * ones.sum()), -0.45 * scale, 0.45 * scale)
    weights[ones] = per_one
    return np.asarray(per_one * _RELU6_TOP * ones.sum(), dtype=np.float64)


def build_minirocket(plan: MiniRocketPlan, n_classes: int, head: RidgeHead | None = None) -> Any:
    """The Keras model: input ``(batch, length, channels)`` float32, output ``(batch, n_classes)`` softmax.

    Without ``head`` the output is the ``(batch, n_features)`` PPV features in [0, 1] (what the
    head is fitted on), ordered by dilation, then ``same`` before ``valid``, then bias, then kernel.
    With it, the ridge scores (standardisation folded into the dense layer) go through a softmax,
    so the argmax is the ridge classifier's decision. The classifier also carries int8 guards that
    change no float output: one conv filter per branch whose weight makes the kernels' int8 weights
    exact, and its copies (always 6) carry the head's int8 bias correction (:func:`_bias_correction`).
    """
    import keras
    from keras import layers

    guards = head is not None
    inputs = keras.Input((plan.length, plan.n_channels), name="window")
    pooled, layouts, settings = [], [], []
    offset = 0
    for d, padding, kernels in _branches(plan):
        branch, layout, branch_weights = _step_branch(inputs, plan, d, padding, kernels, guards)
        pooled.append(branch)
        layouts.append(np.where(layout >= 0, layout + offset, layout))
        settings.extend(branch_weights)
        offset += len(kernels) * plan.features_per_kernel[d]
    stepped = layers.Concatenate(name="ppv6")(pooled) if len(pooled) > 1 else pooled[0]
    if head is None:
        features = layers.Rescaling(1.0 / _RELU6_TOP, name="features")(stepped)
        model = keras.Model(inputs, features, name="minirocket_features")
    else:
        layout = np.concatenate(layouts)
        real = layout >= 0
        kernel, bias = head.folded()
        # The dense layer reads 6 x PPV: the 1/6 is folded into its weights.
        weights = np.zeros((len(layout), n_classes))
        weights[real] = kernel[layout[real]] / _RELU6_TOP
        means = np.zeros(len(layout))
        means[real] = head.mean[layout[real]] * _RELU6_TOP
        bias = bias - _bias_correction(weights, means, layout == _ONE)
        dense = layers.Dense(n_classes, name="ridge")
        outputs = layers.Softmax(name="probabilities")(dense(stepped))
        model = keras.Model(inputs, outputs, name="minirocket")
        settings.append((dense, [weights.astype(np.float32), bias.astype(np.float32)]))
    for layer, values in settings:
        layer.set_weights(values)
    return model
