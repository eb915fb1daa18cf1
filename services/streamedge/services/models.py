"""Loaded, verified models: normalise, run micro-batches, de-normalise; swap versions safely.

Every model a worker serves was verified first (:func:`streamedge.contracts.signing.verify_model_dir`:
manifest valid, Ed25519 signature valid, model sha256 matches). A new version is loaded beside the
old one and must pass a smoke test on recent windows (right output shape, finite values) before
:meth:`ModelSet.swap` makes it active; the swap is one dict assignment done between batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from streamedge.contracts.keys import TrustAnchor
from streamedge.contracts.manifest import ModelManifest
from streamedge.contracts.promotion import PromotionLedger
from streamedge.contracts.runner import TFLiteRunner, runtime_model, smoke_failure
from streamedge.contracts.signing import load_verified_model
from streamedge.errors import StreamedgeError
from streamedge.services.errors import ModelRejectedError

__all__ = ["LoadedModel", "ModelSet", "active_version_dir", "load_model"]


@dataclass(frozen=True)
class LoadedModel:
    """One verified model version with its runner and normalisation statistics.

    Attributes:
        manifest: the verified manifest.
        runner: the TFLite runner.
        mean, std: ``(n_features,)`` float32 normalisation statistics.
    """

    manifest: ModelManifest
    runner: TFLiteRunner
    mean: npt.NDArray[np.float32]
    std: npt.NDArray[np.float32]

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def window(self) -> int:
        return self.manifest.window

    def predict(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run raw windows in original units.

        Args:
            windows: ``(batch, window, n_features)`` float32, original units.

        Returns:
            Forecasters: ``(batch, horizon, n_features)`` float32 in original units.
            Classifiers: ``(batch, n_classes)`` float32 probabilities.
        """
        out = self.runner.run((windows - self.mean) / self.std)
        if self.manifest.task == "forecast":
            steps = out.reshape(len(out), self.manifest.horizon, self.manifest.n_features)
            result: npt.NDArray[np.float32] = steps * self.std + self.mean
            return result
        return out

    def residual_std(self) -> float:
        """The validation residual standard deviation (original units) for the anomaly band."""
        std = self.manifest.residual_std()
        if std is None:
            raise ModelRejectedError(f"{self.name} v{self.version}: manifest has no validation_error for anomaly bands")
        return std


def load_model(folder: Path, public_key: TrustAnchor, runtime: str = "auto") -> LoadedModel:
    """Verify and load one model folder, in the variant its manifest names for ``runtime``.

    Raises:
        ModelRejectedError: verification or loading failed (the reason is in the message).
    """
    try:
        manifest, path, verified = load_verified_model(folder, public_key)
        # the runner runs this runtime's variant; the model keeps the signed manifest (its sha256 is the version's)
        resolved, chosen, path, content = runtime_model(manifest, path, verified, runtime)  # type: ignore[arg-type]
        runner = TFLiteRunner(path, chosen, runtime=resolved, model_content=content)
    except (StreamedgeError, OSError, ValueError) as exc:
        raise ModelRejectedError(f"model at {folder} rejected: {exc}") from exc
    mean = np.asarray(manifest.normalisation["mean"], dtype=np.float32)
    std = np.asarray(manifest.normalisation["std"], dtype=np.float32)
    model = LoadedModel(manifest, runner, mean, std)
    if manifest.task == "forecast":
        model.residual_std()
    return model


def active_version_dir(model_dir: Path, name: str, public_key: TrustAnchor) -> Path | None:
    """The folder of the version the last accepted promotion record names, or None.

    After a rollback that is the rolled-back-to version, not the highest one on disk; under a
    staged record, the fleet version. Without
    any accepted record (models installed by hand), the highest ``<model_dir>/<name>/<version>/``.
    A ledger that does not verify with ``public_key`` counts as no record: the folder found is
    still verified before it loads.
    """
    record = PromotionLedger(model_dir, public_key).get(name)
    if record is not None:  # a staged (canary/group) record keeps workers on its fleet version
        return model_dir / name / str(record.fleet_serving)
    base = model_dir / name
    if not base.is_dir():
        return None
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    return base / str(max(versions)) if versions else None


def smoke_test(model: LoadedModel, windows: Sequence[npt.NDArray[np.float32]]) -> None:
    """Run ``model`` on one window at the normalisation mean and on the usable ``windows``.

    The outputs are judged by :func:`~streamedge.contracts.runner.smoke_failure`.

    Raises:
        ModelRejectedError: the run failed, or gave a wrong shape or non-finite values.
    """
    shape = (model.window, model.manifest.n_features)
    mean = np.broadcast_to(model.mean, shape)[np.newaxis].astype(np.float32)
    usable = [w[-model.window :] for w in windows if w.shape[0] >= model.window and w.shape[1] == shape[1]]
    batch = np.concatenate([mean, np.stack(usable)]) if usable else mean
    try:
        out = model.predict(batch)
    except (StreamedgeError, ValueError, RuntimeError) as exc:
        raise ModelRejectedError(f"{model.name} v{model.version} failed its smoke test: {exc}") from exc
    if len(out) != len(batch):
        raise ModelRejectedError(f"{model.name} v{model.version} gave {len(out)} smoke outputs for {len(batch)}")
    failure = smoke_failure(out, model.manifest.task == "classify", atol=1e-2)
    if failure is not None:
        raise ModelRejectedError(f"{model.name} v{model.version}: {failure}")


class ModelSet:
    """The active version of every routed model, keyed by name."""

    def __init__(self) -> None:
        self._active: dict[str, LoadedModel] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._active

    def get(self, name: str) -> LoadedModel | None:
        """The active version of ``name``, or None."""
        return self._active.get(name)

    def items(self) -> list[tuple[str, LoadedModel]]:
        """``(name, model)`` pairs, a snapshot."""
        return list(self._active.items())

    def max_window(self) -> int:
        """The longest window among active models (1 when none is loaded)."""
        return max((m.window for m in self._active.values()), default=1)

    def swap(self, model: LoadedModel, recent: Sequence[npt.NDArray[np.float32]] = ()) -> Literal["loaded"]:
        """Smoke-test ``model`` on ``recent`` windows and make it the active version of its name.

        Raises:
            ModelRejectedError: the smoke test failed or the version changes task or feature count;
                the previous version stays active.
        """
        old = self._active.get(model.name)
        if old is not None and (old.manifest.task, old.manifest.n_features) != (model.manifest.task,
                                                                                model.manifest.n_features):
            raise ModelRejectedError(
                f"{model.name} v{model.version} changes task/features from v{old.version}; deploy it under a new name"
            )
        smoke_test(model, recent)
        self._active[model.name] = model
        return "loaded"

    def describe(self) -> dict[str, Any]:
        """``{name: version}`` of the active models."""
        return {name: m.version for name, m in self._active.items()}
