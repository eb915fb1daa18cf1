"""Selection per runtime: the manifest names each runtime's variant; agent, worker and predict run it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streamedge.contracts.manifest import ModelManifest, file_sha256, read_manifest, write_manifest
from streamedge.contracts.runner import runtime_model
from streamedge.contracts.signing import load_private_key, load_public_key, sign_manifest, verify_manifest_signature
from streamedge.edge.models import ModelStore
from streamedge.errors import ManifestError, SignatureError, VerificationError
from streamedge.training.export import VariantResult, select_variant
from streamedge.training.tiny import TinyModels, build_tiny_model

REPO = Path(__file__).resolve().parents[2]


def _with_variant(tiny_models: TinyModels, tmp_path: Path) -> Path:
    """The tiny forecaster whose manifest names another model (a second seed) for tflite_runtime, signed."""
    other = build_tiny_model("forecaster", tmp_path / "other", tiny_models.signing_key, seed=1)
    folder = tmp_path / "with-variant"
    shutil.copytree(tiny_models.forecaster, folder)
    shutil.copyfile(other / "model.tflite", folder / "model-tflite_runtime.tflite")
    variant = {"model_file": "model-tflite_runtime.tflite", "sha256": file_sha256(folder / "model-tflite_runtime.tflite"),
               "quantization": "float32", "input_dtype": "float32"}
    manifest = read_manifest(folder).replace(runtime_variants={"tflite_runtime": variant}, signature=None)
    write_manifest(sign_manifest(manifest, load_private_key(tiny_models.signing_key)), folder)
    return folder


_PROBE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    from streamedge.contracts.runner import TFLiteRunner
    from streamedge.contracts.signing import load_public_key
    from streamedge.edge.models import ModelStore
    from streamedge.edge.predictor import Predictor
    from streamedge.services.models import load_model
    root, key, runtime = Path(sys.argv[1]), load_public_key(Path(sys.argv[2])), sys.argv[3]
    store = ModelStore(root, key)
    manifest, path, content = store.load("tiny-forecaster", 1)
    window = np.linspace(7, 13, 8, dtype=np.float32).reshape(1, 8, 1)
    agent = Predictor(manifest, path, runtime=runtime, content=content)
    worker = load_model(path.parent, key, runtime)
    files = {name: TFLiteRunner(path.parent / name, runtime=runtime).run(agent.normalise(window)).tolist()
             for name in ("model.tflite", "model-tflite_runtime.tflite")}
    # both keep the signed manifest (a staged record names the version by its sha256), whatever file runs
    same = agent.manifest == manifest and worker.manifest == manifest
    print(json.dumps({"agent_file": agent.runner.model_path.name, "worker_file": worker.runner.model_path.name,
                      "signed_manifest_kept": same,
                      "agent": agent.runner.run(agent.normalise(window)).tolist(),
                      "worker": worker.runner.run(agent.normalise(window)).tolist(), "files": files}))
""")


def test_each_runtime_runs_the_variant_its_manifest_names(tiny_models: TinyModels, tmp_path: Path) -> None:
    root = tmp_path / "device"
    ModelStore(root, load_public_key(tiny_models.public_key)).install(_with_variant(tiny_models, tmp_path))
    assert (root / "tiny-forecaster" / "1" / "model-tflite_runtime.tflite").is_file()  # installed with it
    picked = {}
    for runtime in ("ai_edge_litert", "tflite_runtime"):  # one runtime per process: two may clash
        done = subprocess.run([sys.executable, "-c", _PROBE, str(root), str(tiny_models.public_key), runtime],
                              capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
        assert done.returncode == 0, done.stderr
        picked[runtime] = json.loads(done.stdout.strip().splitlines()[-1])
    litert, tflite = picked["ai_edge_litert"], picked["tflite_runtime"]
    assert litert["signed_manifest_kept"] and tflite["signed_manifest_kept"]
    assert litert["agent_file"] == litert["worker_file"] == "model.tflite"
    assert tflite["agent_file"] == tflite["worker_file"] == "model-tflite_runtime.tflite"
    assert litert["agent"] == litert["worker"] == litert["files"]["model.tflite"]
    assert tflite["agent"] == tflite["worker"] == tflite["files"]["model-tflite_runtime.tflite"]
    assert tflite["files"]["model.tflite"] != tflite["files"]["model-tflite_runtime.tflite"]  # two different models


def test_old_manifests_load_and_verify_and_the_variants_are_signed(tiny_models: TinyModels, tmp_path: Path) -> None:
    key = load_public_key(tiny_models.public_key)
    raw = json.loads((tiny_models.forecaster / "manifest.json").read_text())
    raw.pop("runtime_variants")  # a manifest written before the field existed
    old = ModelManifest.from_dict(raw)
    verify_manifest_signature(old, key)
    assert old.runtime_variants == {} and old.for_runtime("tflite_runtime") is old
    assert b"runtime_variants" not in old.signing_payload()
    folder = _with_variant(tiny_models, tmp_path)
    signed = read_manifest(folder)
    verify_manifest_signature(signed, key)
    forged = signed.replace(runtime_variants={"tflite_runtime": {**signed.runtime_variants["tflite_runtime"],
                                                                 "sha256": "0" * 64}})
    with pytest.raises(SignatureError):
        verify_manifest_signature(forged, key)
    with pytest.raises(ManifestError, match="model_file must be a plain file name"):
        signed.replace(runtime_variants={"tflite_runtime": {**signed.runtime_variants["tflite_runtime"],
                                                            "model_file": "../evil.tflite"}})


def test_a_variant_file_is_checked_and_a_missing_one_falls_back_to_the_default(tiny_models: TinyModels,
                                                                               tmp_path: Path) -> None:
    folder = _with_variant(tiny_models, tmp_path)
    manifest = read_manifest(folder)
    content = (folder / "model.tflite").read_bytes()
    runtime, chosen, path, _ = runtime_model(manifest, folder / "model.tflite", content, "tflite_runtime")
    assert (runtime, path.name, chosen.sha256) == ("tflite_runtime", "model-tflite_runtime.tflite",
                                                   manifest.runtime_variants["tflite_runtime"]["sha256"])
    variant = folder / "model-tflite_runtime.tflite"
    variant.write_bytes(variant.read_bytes()[:-4] + b"evil")
    with pytest.raises(VerificationError, match="sha256"):
        runtime_model(manifest, folder / "model.tflite", content, "tflite_runtime")
    variant.unlink()  # fetched over the network with the default file only
    _, chosen, path, same = runtime_model(manifest, folder / "model.tflite", content, "tflite_runtime")
    assert (chosen, path.name, same) == (manifest, "model.tflite", content)


def _result(variant: str, size: int, litert_ms: float, tflite_ms: float) -> VariantResult:
    return VariantResult(variant=variant, path=Path(f"{variant}.tflite"), size_bytes=size, latency_ms_p50=litert_ms,
                         runtimes={"ai_edge_litert": "ok", "tflite_runtime": "ok"},
                         runtime_latency_ms_p50={"ai_edge_litert": litert_ms, "tflite_runtime": tflite_ms},
                         passed=True)


def test_each_runtime_gets_the_variant_that_is_fast_under_it() -> None:
    # MiniRocket's figures (issue 26): int8 is the smallest and fast enough under ai-edge-litert,
    # but 15.1 ms against float32's 2.27 ms under tflite-runtime.
    results = [_result("float32", 400_000, 1.0, 2.27), _result("int8", 120_000, 1.2, 15.1)]
    assert select_variant(results)[0] == "int8"
    assert select_variant(results, "ai_edge_litert")[0] == "int8"
    assert select_variant(results, "tflite_runtime")[0] == "float32"
    broken = [_result("float32", 400_000, 1.0, 2.27), _result("int8", 120_000, 1.2, 1.0)]
    broken[1].runtimes["tflite_runtime"] = "RuntimeError: op not found"
    assert select_variant(broken, "tflite_runtime")[0] == "float32"
