"""The edge chaos test, short form: random device faults lose no reading and reuse no result key.

The bench form (``streamedge bench edge-chaos --faults 200``) runs the same operations longer.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from streamedge.benchmarks.edge_chaos import FAULTS, ChaosRun, chaos
from streamedge.training.tiny import TinyModels


def test_edge_chaos_short_form_loses_nothing(model_dir: Path, tiny_models: TinyModels, tmp_path: Path) -> None:
    report = chaos(model_dir, tiny_models.public_key, faults=2 * len(FAULTS), seed=23, work=tmp_path)
    assert set(report["faults_by_kind"]) == set(FAULTS)  # every kind exercised
    assert report["lost"] == 0 and report["conflicting_duplicates"] == 0
    assert report["results"] > 0 and report["counted_by_reason"]["not_utf8"] > 0


def test_edge_chaos_state_machine(model_dir: Path, tiny_models: TinyModels, tmp_path: Path) -> None:
    runs = iter(range(1_000_000))

    class Device(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            work = tmp_path / f"run{next(runs)}"
            work.mkdir()
            self.run = ChaosRun(model_dir, tiny_models.public_key, work, random.Random(0))
            self.faults: Counter[str] = Counter()

        @rule(n=st.integers(min_value=1, max_value=30))
        def readings(self, n: int) -> None:
            self.run.feed(self.run.readings(n))
            self.run.deliver()

        @rule(kind=st.sampled_from(FAULTS))
        def fault(self, kind: str) -> None:
            self.run.fault(kind)
            self.faults[kind] += 1

        def teardown(self) -> None:
            report = self.run.report(self.faults)
            assert report["lost"] == 0, report
            assert report["conflicting_duplicates"] == 0, report

    run_state_machine_as_test(Device, settings=settings(max_examples=6, stateful_step_count=12, deadline=None,
                                                        derandomize=True))
