"""The offsets book: the resume rule and the absorb-once / no-gap filter."""

import collections

import pytest
from aiokafka import TopicPartition

from streamkm.service.offsets import OffsetBook, format_offsets, parse_offsets

Rec = collections.namedtuple("Rec", "offset")
TP = TopicPartition("t", 0)


def recs(*offsets):
    return [Rec(o) for o in offsets]


def test_resume_is_the_max_of_own_and_committed():
    book = OffsetBook()
    assert book.resume_target(TP, None) is None
    assert book.resume_target(TP, 7) == 7
    book.next[TP] = 10
    assert book.resume_target(TP, 7) == 10  # own checkpoint ahead: a crash between checkpoint and commit
    assert book.resume_target(TP, 12) == 12  # another member went further


def test_records_below_the_next_offset_are_never_absorbed_twice():
    book = OffsetBook()
    book.next[TP] = 5
    assert [r.offset for r in book.absorbable(TP, recs(3, 4, 5, 6), stale=False)] == [5, 6]
    assert book.absorbable(TP, recs(3, 4), stale=False) == []


def test_a_stale_batch_that_would_leave_a_gap_is_refused():
    book = OffsetBook()
    book.next[TP] = 5
    assert book.absorbable(TP, recs(8, 9), stale=True) is None  # caller seeks back to 5
    assert [r.offset for r in book.absorbable(TP, recs(8, 9), stale=False)] == [8, 9]
    assert [r.offset for r in book.absorbable(TP, recs(5, 6), stale=True)] == [5, 6]


def test_committable_only_assigned_and_restore_filters_topics():
    book = OffsetBook()
    book.restore({"t:0": 4, "t:1": 9, "other:0": 3}, topics=["t"])
    assert book.next == {TopicPartition("t", 0): 4, TopicPartition("t", 1): 9}
    book.assigned = {TopicPartition("t", 1)}
    assert book.committable() == {TopicPartition("t", 1): 9}
    book.forget([TopicPartition("t", 1)])
    assert book.formatted() == {"t:0": 4}


def test_offset_encoding_roundtrip_and_errors():
    offs = {TopicPartition("a.b:c", 2): 5, TopicPartition("x", 0): 1}
    assert format_offsets(offs) == {"a.b:c:2": 5, "x:0": 1}
    assert parse_offsets(format_offsets(offs)) == offs
    with pytest.raises(ValueError, match="bad offset key"):
        parse_offsets({"nocolon": 1})
