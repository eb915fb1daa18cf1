"""``bench edge``'s cold start: both servers' clocks stop at the return of their first inference after a fresh load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from streamedge.benchmarks.edge import _process_figures
from streamedge.contracts.signing import generate_keypair
from streamedge.training.tiny import TINY_WINDOW, build_tiny_model


def test_edge_and_tensorflow_cold_starts_each_end_at_their_first_inference(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys" / "signing.pem", tmp_path / "keys" / "public.pem")
    folder = build_tiny_model("forecaster", tmp_path / "tiny", tmp_path / "keys" / "signing.pem",
                              keras_file=tmp_path / "tiny.keras")
    manifest = json.loads((folder / "manifest.json").read_text())
    built = {"files": {"lstm": {"float32": str(folder / "model.tflite")}}, "window": TINY_WINDOW,
             "horizon": manifest["horizon"], "mean": manifest["normalisation"]["mean"][0],
             "std": manifest["normalisation"]["std"][0], "airline": np.sin(np.arange(40) / 3).astype(np.float32),
             "lstm_keras": str(tmp_path / "tiny.keras")}
    readings = 100
    process = _process_figures(tmp_path / "work", built, runs=1, readings=readings)
    for server in ("edge_agent", "tensorflow"):
        summary = process[server]
        run = summary["runs"][0]
        # the clock stopped at the first window's result, not after a chunk of readings
        assert (run["readings_to_first_inference"], run["results_at_first_inference"]) == (TINY_WINDOW, 1), server
        assert 0 < run["load_s"] < run["cold_start_s"], server
        assert 0 < run["first_call_s"] <= run["cold_start_s"] - run["load_s"], server
        assert summary["results"] == readings - TINY_WINDOW + 1, server
        assert summary["cold_start_s"] == round(run["cold_start_s"], 4)
