"""ChunkStats and ModelVersion: round trips through bytes, and validation naming the field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from streamkm.group import ChunkStats, ModelVersion, WireError, parse_partition_key, partition_key
from streamkm.group.messages import KIND_SNAPSHOT, KIND_STATS, KIND_VERSION
from streamkm.group.wire import encode
from tests.group.support import raw_stats


def _summarised() -> ChunkStats:
    rng = np.random.default_rng(1)
    return ChunkStats("vectors", "in.topic", 3, 100, 164, 7, 60, np.array([4, 9, 2], np.int64),
                      np.array([20, 0, 40], np.int64), rng.normal(size=(3, 5)), np.array([1.5, 0.0, 2.25]),
                      rng.normal(size=(8, 5)).astype(np.float32), np.empty((0, 5), np.float32), member="m-1")


def _raw() -> ChunkStats:
    return raw_stats(5, np.random.default_rng(2).normal(size=(6, 3)), part=1, end=13, member="w")


def _version() -> ModelVersion:
    rng = np.random.default_rng(3)
    return ModelVersion("vectors", 12, 40, {"a:0": 10, "b.c:3": 0}, rng.normal(size=(3, 2)), np.array([1.0, 2.5, 0.0]),
                        np.array([5, 0, 8], np.int64), 9, 77, dtype="float32", config_hash="abc",
                        counters={"accepted": 12, "duplicate": 3}, summary={"ewm_objective": 0.5, "n_reseeds": 2,
                                                                             "last_center_shift": None},
                        published_at=123.25)


def _assert_same(a, b):
    assert type(a) is type(b)
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray) and x.dtype == y.dtype and x.shape == y.shape, f.name
            assert x.tobytes() == y.tobytes(), f.name
        else:
            assert type(x) is type(y) and x == y, f.name


@pytest.mark.parametrize("make", [_summarised, _raw])
def test_chunk_stats_round_trip(make):
    s = make()
    got = ChunkStats.from_bytes(s.to_bytes())
    assert isinstance(got, ChunkStats), got
    _assert_same(s, got)
    assert got.key == partition_key(s.topic, s.partition)


def test_chunk_stats_properties():
    s, r = _summarised(), _raw()
    assert s.n_points == 60 and r.n_points == 6
    assert s.key == "in.topic:3" and parse_partition_key(s.key) == ("in.topic", 3)
    assert parse_partition_key(partition_key("a:b", 7)) == ("a:b", 7)


def test_empty_raw_chunk_round_trips():
    s = raw_stats(4, np.empty((0, 3)), end=9)
    got = ChunkStats.from_bytes(s.to_bytes())
    assert isinstance(got, ChunkStats) and got.n_points == 0 and got.rows.shape == (0, 3)


def test_model_version_round_trip():
    v = _version()
    got = ModelVersion.from_bytes(v.to_bytes())
    assert isinstance(got, ModelVersion), got
    _assert_same(v, got)
    assert got.same_model(v) and got.is_initialized


def test_uninitialized_version_round_trip():
    v = ModelVersion("vectors", 0, -1, {}, np.empty((0, 0)), np.empty(0), np.empty(0, np.int64), 0, 0)
    got = ModelVersion.from_bytes(v.to_bytes())
    assert isinstance(got, ModelVersion) and not got.is_initialized
    _assert_same(v, got)


def test_same_model_ignores_published_at_only():
    v = _version()
    assert v.same_model(dataclasses.replace(v, published_at=0.0))
    for change in ({"version": 13}, {"stats_offset": 41}, {"offsets": {"a:0": 11, "b.c:3": 0}},
                   {"centers": v.centers + 1e-12}, {"weights": v.weights * 2}, {"ids": np.array([5, 0, 7])},
                   {"next_id": 10}, {"n_seen": 78}, {"counters": {"accepted": 12}}, {"summary": {}}):
        assert not v.same_model(dataclasses.replace(v, **change)), change


@pytest.mark.parametrize("cls,other", [(ChunkStats, KIND_VERSION), (ChunkStats, KIND_SNAPSHOT),
                                       (ModelVersion, KIND_STATS), (ModelVersion, "something_else")])
def test_from_bytes_of_another_kind(cls, other):
    src = _version() if other == KIND_VERSION else _summarised()
    data = encode(other, src.to_state())
    got = cls.from_bytes(data)
    assert isinstance(got, WireError)
    expected = KIND_STATS if cls is ChunkStats else KIND_VERSION
    assert expected in got.reason and other in got.reason


def test_from_bytes_of_the_other_message():
    assert "chunk_stats" in ModelVersion.from_bytes(_summarised().to_bytes()).reason
    assert "model_version" in ChunkStats.from_bytes(_version().to_bytes()).reason


@pytest.mark.parametrize("cls", [ChunkStats, ModelVersion])
@pytest.mark.parametrize("data", [None, b"", b"SKMG", b"garbage" * 5])
def test_from_bytes_of_garbage(cls, data):
    assert isinstance(cls.from_bytes(data), WireError)


def _stats_error(**change) -> str:
    state = _summarised().to_state()
    for k, v in change.items():
        if v is _DROP:
            del state[k]
        else:
            state[k] = v
    got = ChunkStats.from_bytes(encode(KIND_STATS, state))
    assert isinstance(got, WireError), (change, got)
    assert got.reason.startswith("invalid chunk statistics")
    return got.reason


_DROP = object()


@pytest.mark.parametrize("change,words", [
    ({"first_offset": -1}, "first_offset"),
    ({"end_offset": -5}, "end_offset"),
    ({"first_offset": 164}, "empty offset range"),
    ({"end_offset": 99}, "empty offset range"),
    ({"first_offset": 1.5}, "first_offset"),
    ({"first_offset": True}, "first_offset"),
    ({"end_offset": "164"}, "end_offset"),
    ({"partition": -1}, "partition"),
    ({"n_records": -1}, "n_records"),
    ({"base_version": -1}, "base_version"),
    ({"base_version": 0}, "base_version"),
    ({"pipeline": 3}, "pipeline"),
    ({"topic": None}, "topic"),
    ({"pipeline": _DROP}, "pipeline"),
    ({"counts": np.array([1, 2], np.int64)}, "disagree on k"),
    ({"sq_dist_sums": np.zeros(4)}, "disagree on k"),
    ({"sums": np.zeros((2, 5))}, "disagree on k"),
    ({"ids": np.array([1, 2, 3, 4])}, "disagree on k"),
    ({"counts": np.array([1, -1, 0], np.int64)}, "counts"),
    ({"counts": np.array([1, 2**64 - 1, 0], np.uint64)}, "counts"),
    ({"sq_dist_sums": np.array([0.0, -1.0, 0.0])}, "sq_dist_sums"),
    ({"sums": np.array([[np.nan] * 5] * 3)}, "sums"),
    ({"sums": np.full((3, 5), np.inf)}, "sums"),
    ({"sample": np.full((2, 5), np.nan, np.float32)}, "sample"),
    ({"sq_dist_sums": np.array([0.0, np.inf, 0.0])}, "sq_dist_sums"),
    ({"rows": np.ones((2, 5), np.float32)}, "summarised or raw"),
    ({"sample": np.ones((2, 4), np.float32)}, "dimension"),
    ({"ids": np.array([1.0, 2.0, 3.0])}, "ids"),
    ({"ids": np.array([[1, 2, 3]])}, "ids"),
    ({"counts": np.array([1.0, 2.0, 3.0])}, "counts"),
    ({"sums": np.zeros(3)}, "sums"),
    ({"sums": np.zeros((3, 5), np.int64)}, "sums"),
    ({"sample": _DROP}, "sample"),
    ({"rows": _DROP}, "rows"),
])
def test_invalid_chunk_stats_name_the_field(change, words):
    assert words in _stats_error(**change)


@pytest.mark.parametrize("change,words", [
    ({"rows": np.full((2, 3), np.nan, np.float32)}, "rows"),
    ({"rows": np.ones((2, 3), np.float32), "sample": np.ones((1, 4), np.float32)}, "dimension"),
    ({"base_version": -1}, "base_version"),
])
def test_invalid_raw_chunk_stats(change, words):
    state = _raw().to_state()
    state.update(change)
    got = ChunkStats.from_bytes(encode(KIND_STATS, state))
    assert isinstance(got, WireError) and words in got.reason, got


def _version_error(**change) -> str:
    state = _version().to_state()
    state.update(change)
    got = ModelVersion.from_bytes(encode(KIND_VERSION, state))
    assert isinstance(got, WireError), (change, got)
    assert got.reason.startswith("invalid model version")
    return got.reason


@pytest.mark.parametrize("change,words", [
    ({"ids": np.array([5, 0, 5])}, "distinct"),
    ({"ids": np.array([5, 0, 9])}, "next_id"),
    ({"next_id": 8}, "next_id"),
    ({"next_id": -1}, "next_id"),
    ({"ids": np.array([5, 0])}, "ids"),
    ({"weights": np.ones(4)}, "weights"),
    ({"centers": np.zeros(3)}, "centers"),
    ({"centers": np.full((3, 2), np.nan)}, "centers"),
    ({"weights": np.array([1.0, np.inf, 0.0])}, "weights"),
    ({"ids": np.array([5.0, 0.0, 8.0])}, "ids"),
    ({"offsets": {"a:0": -1}}, "offsets"),
    ({"offsets": {"a:0": 1.5}}, "offsets"),
    ({"offsets": {"a:0": True}}, "offsets"),
    ({"offsets": [1]}, "offsets"),
    ({"version": -1}, "version"),
    ({"stats_offset": -2}, "stats_offset"),
    ({"n_seen": -1}, "n_seen"),
    ({"pipeline": None}, "pipeline"),
    ({"dtype": 32}, "dtype"),
    ({"counters": [1]}, "counters"),
    ({"summary": "x"}, "summary"),
])
def test_invalid_model_version_names_the_field(change, words):
    assert words in _version_error(**change)


@pytest.mark.parametrize("counters", [{"accepted": [1]}, {"accepted": None}, {"accepted": 1.5},
                                      {"accepted": True}, {"accepted": "3"}])
def test_non_numeric_counters_are_a_wire_error(counters):
    """At d7cf311 a list/None counter raised TypeError out of from_bytes (int(b), only ValueError caught)."""
    assert "counters" in _version_error(counters=counters)


@pytest.mark.parametrize("dtype", ["garbage", "int8", "complex128", "float16", ""])
def test_unusable_dtype_is_a_wire_error(dtype):
    """At d7cf311 any string passed, and GroupChunker._summarise then failed on the worker."""
    assert "dtype" in _version_error(dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_model_dtypes_are_accepted(dtype):
    v = dataclasses.replace(_version(), dtype=dtype)
    got = ModelVersion.from_bytes(v.to_bytes())
    assert isinstance(got, ModelVersion) and got.dtype == dtype


def test_type_errors_in_validation_are_wire_errors():
    """Anything from_state raises on a decoded tree is a WireError, never an exception."""
    for cls, kind, state in ((ChunkStats, KIND_STATS, _summarised().to_state()),
                             (ModelVersion, KIND_VERSION, _version().to_state())):
        for key in list(state):
            for junk in (None, [1, [2]], {"a": {"b": None}}, "s", 1.5, np.zeros((2, 2, 2))):
                bad = {**state, key: junk}
                got = cls.from_bytes(encode(kind, bad))
                assert isinstance(got, (cls, WireError)), (key, junk)
