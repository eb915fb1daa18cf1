"""Any bytes on the readings topic: the processor dead-letters them with a documented reason, never raises."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamedge.contracts.reading import REJECTION_REASONS
from streamedge.services.metrics import WORKER_REASONS
from streamedge.services.processor import Processor
from streamedge.services.records import Source, parse_dead_letter
from tests.services.helpers import reading
from tests.services.hostile import hostile_payloads, known_bad

_TOPICS = {"forecasts", "anomalies", "classifications", "dead_letters"}


def _check_batch(processor: Processor, payloads: list[bytes | None], keys: list[bytes | None]) -> None:
    batch = [(p, Source("r", 0, i, 1.7e9 + i, k)) for i, (p, k) in enumerate(zip(payloads, keys, strict=True))]
    outputs = processor.process(batch)
    assert {o.topic for o in outputs} <= _TOPICS
    for output in outputs:
        assert len(output.value) <= processor.settings.dead_letter_max_bytes
        if output.topic == "dead_letters":
            record, _, _ = parse_dead_letter(output.value)
            assert record["reason"] in (*REJECTION_REASONS, *WORKER_REASONS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(hostile_payloads, min_size=1, max_size=8),
       key=st.one_of(st.none(), st.binary(max_size=2000)))
def test_any_batch_of_bytes_is_answered_or_dead_lettered(make_processor: Callable[..., Processor],
                                                         payloads: list[bytes | None], key: bytes | None) -> None:
    payloads = [reading("d", 0), *payloads, reading("d", 1)]
    keys = [b"d/s", *[key] * (len(payloads) - 2), b"d/s"]
    processor = make_processor()
    _check_batch(processor, payloads, keys)
    state = processor.store.get("d/s")
    assert state is not None and state.last_seq == 1
    # The same bytes replayed by a rebuild after a restart: state only, nothing emitted, no raise.
    rebuilt = make_processor()
    assert rebuilt.process([(p, Source("r", 0, i, 1.7e9 + i, k)) for i, (p, k) in enumerate(zip(payloads, keys,
                                                                                              strict=True))],
                           emit=False) == []
    again = rebuilt.store.get("d/s")
    assert again is not None and again.last_seq == 1


def test_each_measured_hostile_shape_is_dead_lettered_with_a_reason(make_processor: Callable[..., Processor]) -> None:
    processor = make_processor()
    shapes = known_bad()
    outputs = processor.process([(p, Source("r", 0, i, 1.7e9, b"\xff\xfe" * 700)) for i, (_, p) in enumerate(shapes)])
    reasons = [parse_dead_letter(o.value)[0]["reason"] for o in outputs]
    assert reasons == ["bad_json", "bad_json", "too_large", "non_finite", "bad_json", "not_utf8", "not_object",
                       "wrong_type", "too_large"]
    assert all(len(o.value) <= processor.settings.dead_letter_max_bytes for o in outputs)


def test_route_cache_does_not_grow_with_invented_stream_names(make_processor: Callable[..., Processor]) -> None:
    processor = make_processor()
    before = len(processor._routes)
    processor.process([(reading("d", i, stream=f"invented-{i}"), Source("r", 0, i, 1.7e9, f"d/invented-{i}".encode()))
                       for i in range(500)])
    assert processor.metrics.dead_letters.labels("unknown_stream")._value.get() == 500
    assert len(processor._routes) == before
