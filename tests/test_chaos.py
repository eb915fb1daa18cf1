"""``streamedge bench chaos``: its fault plan and accounting, then a short run on a real 3-broker cluster.

The short run injects every fault kind once (worker SIGKILL, a worker joining and one leaving the
group, broker SIGKILL with leaders moving, broker SIGSTOP past the session timeout, poison
messages) mid-stream through real workers, and checks every reading's results by idempotency key.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from streamedge.benchmarks.chaos import FAULT_KINDS, plan_faults
from streamedge.benchmarks.chaos_check import expected_keys, tally
from streamedge.kafka.broker import LocalBroker
from streamedge.training.tiny import TinyModels

MODELS = {"forecast": "fc", "classification": "cl"}


def _result(kind: str, device: str, seq: int, **body: object) -> dict[str, object]:
    return {"idempotency_key": f"{kind}:{MODELS[kind]}:{device}/s:{seq}@0:{seq}", "produced_at": seq, **body}


def test_plan_covers_every_kind_first_and_repeats_for_a_seed() -> None:
    plan = plan_faults(20, list(FAULT_KINDS), seed=3, workers=2)
    assert sorted(plan[:len(FAULT_KINDS)]) == sorted(FAULT_KINDS)
    assert plan == plan_faults(20, list(FAULT_KINDS), seed=3, workers=2)
    assert plan != plan_faults(20, list(FAULT_KINDS), seed=4, workers=2)
    workers = 2
    for kind in plan:
        workers += {"worker_join": 1, "worker_leave": -1}.get(kind, 0)
        assert 1 <= workers <= 4


def test_plan_never_removes_the_last_worker() -> None:
    assert plan_faults(2, ["worker_leave"], seed=1, workers=1) == ["worker_join", "worker_leave"]


def test_tally_counts_lost_duplicated_and_conflicting_results() -> None:
    expected = expected_keys(["a", "b"], "s", seqs=4, window=3, models=MODELS)
    assert len(expected) == 2 * 2 * 2  # devices x seqs 2..3 x kinds
    results = [_result(k, d, s, forecast=[1.0]) for k in MODELS for d in ("a", "b") for s in (2, 3)]
    results.remove(_result("classification", "b", 3, forecast=[1.0]))  # lost
    results.append(_result("forecast", "a", 2, forecast=[1.0000001]))  # harmless copy
    results.append(_result("forecast", "a", 3, forecast=[2.0]))  # a copy that disagrees
    results.append(_result("forecast", "z", 9, forecast=[0.0]))  # not expected: ignored
    # The same reading sent again under a restarted counter: a new message, a new key.
    results.append({**_result("forecast", "b", 2, forecast=[5.0]), "idempotency_key": "forecast:fc:b/s:2@0:77"})
    figures = tally(expected, results)
    assert (figures.lost, figures.lost_results, figures.duplicates, figures.duplicates_after_dedup) == (1, 1, 3, 2)
    assert figures.conflicting_keys == 1  # the copy of a/s:3 that disagrees under the same key
    assert figures.missing_examples == ["classification:cl:b/s:3"]


def test_short_chaos_run_loses_nothing(kafka_broker: LocalBroker, tiny_models: TinyModels, tmp_path: Path) -> None:
    from streamedge.cli.main import main

    work = tmp_path / "chaos"
    shutil.copytree(tiny_models.forecaster, work / "models" / "tiny-forecaster" / "1")
    shutil.copytree(tiny_models.classifier, work / "models" / "tiny-classifier" / "1")
    shutil.copy(tiny_models.public_key, work / "models" / "public.pem")
    out = tmp_path / "chaos.json"
    code = main(["bench", "chaos", "--faults", str(len(FAULT_KINDS)), "--readings", "1200", "--devices", "12",
                 "--segment-seconds", "1.5", "--seed", "7", "--out", str(out), "--work-dir", str(work),
                 "--libs-dir", str(kafka_broker.libs_dir)])
    report = json.loads(out.read_text())
    assert code == 0, report
    assert report["faults_by_kind"] == dict.fromkeys(sorted(FAULT_KINDS), 1)
    assert (report["lost"], report["duplicates_after_dedup"], report["conflicting_keys"]) == (0, 0, 0), \
        report["missing_examples"]
    assert report["results_seen"] >= report["expected_results"] == 2 * 12 * (100 - 8 + 1)
    assert report["poison_dead_lettered"] == report["poison_sent"] == 5
    assert report["valid_readings_dead_lettered"] == 0
    print(f"chaos: {report['faults_by_kind']}, {report['duplicates']} duplicates (dropped by key), "
          f"{report['worker_crashes']} worker exit(s) restarted")
    # The killed broker led partitions of the readings topic; they moved and the stream went on.
    assert report["leaders_moved"] > 0
    # The refused forecasts were refused (and retried) before the limit was restored.
    assert next(e["send_retries"] for e in report["fault_log"] if e["kind"] == "write_refused") > 0
    # The workers' own Faust topic is replicated like the layout's, so no broker is a single point.
    assert report["worker_topic_replicas"] == 3
