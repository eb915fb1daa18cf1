"""Manifest validation, signatures, the registry and the verified model fetch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from streamedge.cli.main import main
from streamedge.contracts.manifest import ModelManifest, read_manifest, write_manifest
from streamedge.contracts.model_update import ModelUpdate, fetch_model, parse_model_update
from streamedge.contracts.promotion import verify_record
from streamedge.contracts.signing import generate_keypair, load_private_key, load_public_key, verify_model_dir
from streamedge.errors import ManifestError, SignatureError, VerificationError
from streamedge.registry import ModelRegistry, RegistryError
from streamedge.training.tiny import TinyModels


def test_manifest_round_trip(tiny_models: TinyModels, tmp_path: Path) -> None:
    manifest = read_manifest(tiny_models.forecaster)
    write_manifest(manifest, tmp_path)
    assert read_manifest(tmp_path) == manifest


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task": "regress"}, "task must be one of"),
        ({"window": 0}, "window must be a positive integer"),
        ({"input_shape": [-1, 9, 1]}, "input_shape"),
        ({"output_shape": [-1, 3]}, "output_shape"),
        ({"normalisation": {"mean": [0.0], "std": [0.0]}}, "std must be positive"),
        ({"model_file": "../evil.tflite"}, "plain file name"),
        ({"sha256": "abc"}, "sha256"),
    ],
)
def test_manifest_rejects_inconsistency(tiny_models: TinyModels, change: dict[str, object], message: str) -> None:
    data = read_manifest(tiny_models.forecaster).to_dict() | change
    with pytest.raises(ManifestError, match=message):
        ModelManifest.from_dict(data)


def test_manifest_rejects_missing_and_unknown_fields(tiny_models: TinyModels) -> None:
    data = read_manifest(tiny_models.forecaster).to_dict()
    with pytest.raises(ManifestError, match="unknown field"):
        ModelManifest.from_dict(data | {"colour": "red"})
    data.pop("window")
    with pytest.raises(ManifestError, match="lacks field"):
        ModelManifest.from_dict(data)


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def test_tampered_model_file_fails_verification(tiny_models: TinyModels, tmp_path: Path) -> None:
    folder = _copy(tiny_models.classifier, tmp_path)
    with (folder / "model.tflite").open("ab") as handle:
        handle.write(b"\x00")
    with pytest.raises(VerificationError, match="sha256"):
        verify_model_dir(folder, load_public_key(tiny_models.public_key))


def test_tampered_manifest_and_wrong_key_fail(tiny_models: TinyModels, tmp_path: Path) -> None:
    folder = _copy(tiny_models.classifier, tmp_path)
    data = json.loads((folder / "manifest.json").read_text())
    data["class_labels"] = ["shaky", "calm"]
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(SignatureError, match="does not match"):
        verify_model_dir(folder, load_public_key(tiny_models.public_key))
    generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    with pytest.raises(SignatureError, match="does not match"):
        verify_model_dir(tiny_models.classifier, load_public_key(tmp_path / "other.pub"))


def test_registry_versions_promote_rollback(tiny_models: TinyModels, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    key = load_private_key(tiny_models.signing_key)
    first = registry.add(tiny_models.forecaster, key)
    second = registry.add(tiny_models.forecaster, key)
    assert (first.version, second.version) == (1, 2)
    assert registry.names() == ["tiny-forecaster"]
    public = load_public_key(tiny_models.public_key)
    assert registry.verify("tiny-forecaster", 2, public).version == 2
    with pytest.raises(RegistryError, match="no earlier promoted version"):
        registry.rollback("tiny-forecaster", key)
    first_update = registry.promote("tiny-forecaster", 1, key)
    update = registry.promote("tiny-forecaster", 2, key)
    assert registry.active_version("tiny-forecaster") == 2 and update.version == 2
    back = registry.rollback("tiny-forecaster", key)
    assert (back.version, back.action, registry.active_version("tiny-forecaster")) == (1, "rollback", 1)
    # Every promotion and rollback is its own signed record with a sequence that only grows.
    records = [u.promotion for u in (first_update, update, back)]
    assert [(r.sequence, r.version, r.action) for r in records if r] == [(1, 1, "promote"), (2, 2, "promote"),
                                                                          (3, 1, "rollback")]
    for record in records:
        assert record is not None
        verify_record(record, public)
    assert registry.record("tiny-forecaster") == back.promotion
    unsigned = ModelRegistry(tmp_path / "registry").promote("tiny-forecaster", 2)
    assert unsigned.promotion is not None and unsigned.promotion.signature is None
    assert unsigned.promotion.sequence == 4
    with pytest.raises(RegistryError, match="no version 7"):
        registry.path("tiny-forecaster", 7)


def test_models_verify_cli_reports_tampering(tiny_models: TinyModels, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "registry"
    common = ["--registry", str(root)]
    assert main(["models", "add", str(tiny_models.classifier), *common, "--signing-key", str(tiny_models.signing_key)]) == 0
    verify = ["models", "verify", "tiny-classifier", *common, "--public-key", str(tiny_models.public_key)]
    assert main(verify) == 0
    with (root / "tiny-classifier" / "1" / "model.tflite").open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\x42")
    capsys.readouterr()
    assert main(verify) == 1
    assert "sha256" in capsys.readouterr().out
    manifest_path = root / "tiny-classifier" / "1" / "manifest.json"
    manifest_path.write_text(manifest_path.read_text().replace('"window": 8', '"window": 9'))
    assert main(verify) == 1
    assert "input_shape" in capsys.readouterr().out


def test_fetch_model_installs_verified_copy_and_refuses_tampering(tiny_models: TinyModels, tmp_path: Path) -> None:
    key = load_private_key(tiny_models.signing_key)
    registry = ModelRegistry(tmp_path / "registry", key)
    registry.add(tiny_models.forecaster, key)
    message = registry.promote("tiny-forecaster", 1, inline=False)
    update = parse_model_update(message.to_json(), message.key)
    assert update.inline is None and update.uri.startswith("file://")
    public = load_public_key(tiny_models.public_key)
    installed, fresh = fetch_model(update, tmp_path / "device", public)
    assert installed == tmp_path / "device" / "tiny-forecaster" / "1" and fresh
    assert read_manifest(installed) == update.manifest
    assert fetch_model(update, tmp_path / "device", public) == (installed, False)

    registry.add(tiny_models.forecaster, key)
    tampered = registry.promote("tiny-forecaster", 2, inline=False)
    with (Path(tampered.uri.removeprefix("file://")) / "model.tflite").open("ab") as handle:
        handle.write(b"junk")
    with pytest.raises(VerificationError, match="sha256"):
        fetch_model(tampered, tmp_path / "device", public)
    inline = registry.announcement("tiny-forecaster")
    assert inline.inline is not None
    with pytest.raises(VerificationError, match="sha256"):
        fetch_model(inline, tmp_path / "device", public)
    assert sorted(p.name for p in (tmp_path / "device" / "tiny-forecaster").iterdir()) == ["1"]

    forged = ModelUpdate(update.name, update.version, update.uri, update.manifest.replace(signature=None))
    with pytest.raises(SignatureError, match="unsigned"):
        fetch_model(forged, tmp_path / "other-device", public)


def test_parse_model_update_rejects_garbage(tiny_models: TinyModels) -> None:
    with pytest.raises(ManifestError, match="not JSON"):
        parse_model_update(b"\x00garbage", b"x")
    with pytest.raises(ManifestError, match="lacks field"):
        parse_model_update(b'{"name": "x"}', b"x")
    manifest = read_manifest(tiny_models.forecaster)
    body = json.loads(ModelUpdate(manifest.name, 1, "file:///nowhere", manifest).to_json())
    body["version"] = 5
    with pytest.raises(ManifestError, match="but its manifest is"):
        parse_model_update(json.dumps(body).encode(), manifest.name.encode())


def test_models_promote_and_serve_cli(tiny_models: TinyModels, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "registry"
    keys = ["--public-key", str(tiny_models.public_key), "--signing-key", str(tiny_models.signing_key)]
    assert main(["models", "add", str(tiny_models.forecaster), "--registry", str(root),
                 "--signing-key", str(tiny_models.signing_key)]) == 0
    assert main(["models", "promote", "tiny-forecaster", "1", "--registry", str(root), *keys, "--no-publish",
                 "--serve-url", "https://registry.example:8765"]) == 0
    record = ModelRegistry(root).record("tiny-forecaster")
    assert record is not None and record.sequence == 1
    verify_record(record, load_public_key(tiny_models.public_key))
    announced = ModelRegistry(root).announcement("tiny-forecaster", "https://registry.example:8765", inline=False)
    assert announced.uri == "https://registry.example:8765/models/tiny-forecaster/1/"
    with pytest.raises(SystemExit):  # no signing key: a usage error, nothing promoted
        main(["models", "promote", "tiny-forecaster", "1", "--registry", str(root), "--no-publish",
              "--public-key", str(tiny_models.public_key)])
    assert ModelRegistry(root).record("tiny-forecaster") == record
    (tmp_path / "empty-token").write_text("\n")
    capsys.readouterr()
    assert main(["models", "serve", "--registry", str(root), "--port", "0",
                 "--token-file", str(tmp_path / "empty-token")]) == 1
    assert "is empty" in capsys.readouterr().err
