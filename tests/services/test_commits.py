"""The delivered watermark: what the worker commits (the real consumer and broker: test_no_loss.py)."""

from __future__ import annotations

from streamedge.services.commits import Ticket, Watermarks

_TP = ("r", 0)


def _batch(marks: Watermarks, partition: int, offsets: range) -> Ticket:
    return marks.consumed(("r", partition, offset) for offset in offsets)


def test_item1_a_held_batch_bounds_the_watermark_until_it_is_delivered() -> None:
    marks = Watermarks()
    first, held, later = _batch(marks, 0, range(0, 20)), _batch(marks, 0, range(20, 21)), _batch(marks, 0,
                                                                                                 range(21, 31))
    assert marks.committable(_TP) is None
    marks.delivered(first)
    assert marks.committable(_TP) == 20
    marks.delivered(later)
    assert marks.committable(_TP) == 20, "offset 20 is held: nothing past it is committable"
    marks.delivered(held)
    assert marks.committable(_TP) == 31


def test_item1_a_held_first_batch_commits_nothing_even_with_nothing_committed_before() -> None:
    marks = Watermarks()
    held, later = _batch(marks, 0, range(0, 5)), _batch(marks, 0, range(5, 10))
    marks.delivered(later)
    assert marks.committable(_TP) is None
    assert list(marks.partitions()) == []
    marks.delivered(held)
    assert list(marks.partitions()) == [_TP] and marks.committable(_TP) == 10


def test_item1_partitions_are_independent_and_one_batch_may_span_several() -> None:
    marks = Watermarks()
    mixed = marks.consumed([("r", 0, 7), ("r", 1, 3), ("r", 0, 8), ("r", 1, 4)])
    other = _batch(marks, 1, range(5, 6))
    marks.delivered(other)
    assert marks.committable(("r", 1)) is None
    marks.delivered(mixed)
    assert (marks.committable(("r", 0)), marks.committable(("r", 1))) == (9, 6)


def test_item1_a_newly_assigned_partition_forgets_batches_of_its_previous_ownership() -> None:
    marks = Watermarks()
    stale = _batch(marks, 0, range(0, 10))
    marks.forget(_TP)
    fresh = _batch(marks, 0, range(50, 60))
    marks.delivered(fresh)
    assert marks.committable(_TP) == 60
    marks.delivered(stale)
    assert marks.committable(_TP) == 60
