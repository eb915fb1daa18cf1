"""Issue 21: every headline ratio is the median of alternated repeats with its spread printed. The
rate axis' ratios (README: single readings at 0.935x the Faust pass-through) are computed as one
median over another, with no per-round ratios and no spread in the figures ``bench stream`` writes,
unlike the stream ratios (``NAME``, ``NAME_runs``, ``NAME_spread``)."""

from __future__ import annotations

from streamedge.benchmarks import stream_rate


def test_rate_ratios_carry_their_per_round_spread() -> None:
    blocks = {"1": {"messages_per_s": 2745.0, "readings_per_s": 2745.0},
              "256": {"messages_per_s": 414.0, "readings_per_s": 105977.0}}
    ceilings = {"faust_passthrough": {"1": {"messages_per_s": 2936.0, "readings_per_s": 2936.0},
                                      "256": {"messages_per_s": 505.0, "readings_per_s": 129250.0}}}
    ratios = stream_rate._ratios(blocks, ceilings, "256")
    name = "block_1_pipeline_over_faust_passthrough"
    assert name in ratios
    assert f"{name}_spread" in ratios, f"the headline rate ratio is reported without a spread: {ratios}"
