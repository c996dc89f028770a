"""Output records: the JSON Schema against real pipeline outputs (per-worker, group, sequence),
malformed records rejected, and the binary format round-tripped through the real codec."""

from __future__ import annotations

import collections
import json
import struct

import jsonschema
import numpy as np
import pytest

from streamkm.codec import HEADER_SIZE, MAGIC, VERSION, decode_vectors, encode_binary, encode_event_json, encode_json
from streamkm.config import load_settings
from streamkm.group import ChunkStats, GroupModel, ModelVersion
from streamkm.group.chunker import GroupChunker
from streamkm.pipeline import SequencePipeline, VectorPipeline, build_pipelines
from streamkm.pipeline.output import (
    DTYPE_FLOAT64,
    LAYOUT_VECTORS,
    LAYOUT_WINDOWS,
    VECTOR_COLUMNS,
    WINDOW_COLUMNS,
    decode_output,
    encode_rows,
)
from streamkm.schemas import load_schema
from tests.helpers.data import blobs

Rec = collections.namedtuple("Rec", "topic partition offset key value headers timestamp")

KW = dict(n_clusters=3, seed=0)
SKMV_HEADER = struct.Struct("<4sBBHII")  # the codec's header, as docs/formats.md specifies it


@pytest.fixture(scope="module")
def validator():
    schema = load_schema("output")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def vector_records(n=120, d=4, seed=0, topic="in"):
    """One-row JSON and binary records on two partitions, and multi-row binary records
    (split across chunks by a batch_rows that does not divide them)."""
    X = blobs(n, d=d, seed=seed)
    recs = []
    offs = {0: 0, 1: 0}
    i = 0
    while i < len(X):
        part = (i // 7) % 2
        if i % 13 == 5 and i + 5 <= len(X):  # a 5-row record
            value, rows = encode_binary(X[i:i + 5]), 5
        else:
            value, rows = (encode_binary(X[i:i + 1]) if i % 3 else encode_json(X[i])), 1
        recs.append(Rec(topic, part, offs[part], f"k{i}".encode(), value, (), 0))
        offs[part] += 1
        i += rows
    return X, recs


def run(p, recs, step=17):
    outs = []
    for i in range(0, len(recs), step):
        outs += p.process([r for r in recs[i:i + step] if r.partition == 0]).outputs
        outs += p.process([r for r in recs[i:i + step] if r.partition == 1]).outputs
    outs += p.flush().outputs
    return outs


def test_schema_accepts_every_per_worker_output_and_the_rows_add_up(validator):
    X, recs = vector_records()
    p = VectorPipeline(model_kwargs=KW, topic="in", batch_rows=16)
    outs = run(p, recs)
    vals = [json.loads(o.value) for o in outs]
    for v in vals:
        validator.validate(v)
    shapes = {"cluster" in v for v in vals}
    assert shapes == {True, False}, "both the one-row and the segment form were exercised"
    segs = [v for v in vals if "clusters" in v]
    assert any(v["row"] > 0 for v in segs), "a multi-row record was split across chunks"
    for v in segs:
        assert len(v["clusters"]) == len(v["sq_distances"])
    # every row of every record has exactly one assignment, keyed by the record's key
    rows = collections.Counter()
    for o, v in zip(outs, vals, strict=True):
        rec = next(r for r in recs if (r.partition, r.offset) == (v["partition"], v["offset"]))
        assert o.key == rec.key and v["topic"] == "in"
        for j in range(len(v.get("clusters", [0]))):
            rows[(v["partition"], v["offset"], v.get("row", 0) + j)] += 1
    assert sum(rows.values()) == len(X) and set(rows.values()) == {1}
    assert max(v["model_version"] for v in vals) == p.model.n_batches_


def test_schema_accepts_outputs_of_an_uninitialized_model(validator):
    # a flush before init_threshold rows: cluster -1, sq_distance null (both forms)
    p = VectorPipeline(model_kwargs=dict(n_clusters=3, init_size=500, seed=0), batch_rows=16)
    X = blobs(4)
    outs = p.process([Rec("in", 0, 0, b"a", encode_json(X[0]), (), 0),
                      Rec("in", 0, 1, b"b", encode_binary(X[1:4]), (), 0)]).outputs + p.flush().outputs
    vals = [json.loads(o.value) for o in outs]
    assert vals[0]["cluster"] == -1 and vals[0]["sq_distance"] is None
    assert vals[1]["clusters"] == [-1, -1, -1] and vals[1]["sq_distances"] == [None] * 3
    for v in vals:
        validator.validate(v)


def _group_pipeline(version=None, output_format="json"):
    ch = GroupChunker(pipeline="vectors", batch_rows=16, member="w")
    ch.set_topic("in")
    ch.reset("in", 0, 0)
    ch.reset("in", 1, 0)
    ch.version = version
    return VectorPipeline(model_kwargs=KW, topic="in", batch_rows=16, core=ch, output_format=output_format), ch


def _first_version(recs):
    """Outputs of a group pipeline before any version, and the version their statistics fold into."""
    p, _ = _group_pipeline()
    first = p.process([r for r in recs[:30] if r.partition == 0])
    g = GroupModel(pipeline="vectors", model_kwargs=KW)
    for st in first.stats:
        g.fold(ChunkStats.from_bytes(st.to_bytes()), 0)
    v = ModelVersion.from_bytes(g.version().to_bytes())
    assert isinstance(v, ModelVersion) and v.is_initialized
    return first.outputs, v


def test_schema_accepts_group_model_outputs_before_and_after_the_first_version(validator):
    X, recs = vector_records(seed=1)
    before, v = _first_version(recs)
    assert before and all(json.loads(o.value)["model_version"] == 0 for o in before)
    p, _ = _group_pipeline(v)
    after = [json.loads(o.value) for o in run(p, recs)]
    for val in [json.loads(o.value) for o in before] + after:
        validator.validate(val)
    ids = {c for val in after for c in val.get("clusters", [val.get("cluster")])}
    assert ids <= set(v.ids.tolist()) and {val["model_version"] for val in after} == {v.version}


def _events(n_keys=6, per_key=16, d=3, seed=0):
    rng = np.random.default_rng(seed)
    recs, off = [], 0
    for t in range(per_key):
        for k in range(n_keys):
            recs.append(Rec("ev", 0, off, None, encode_event_json(f"user-{k}", float(t), rng.normal(size=d)), (), 0))
            off += 1
    return recs


def _seq(output_format="json"):
    from streamkm.sequence.lstm import LSTMEncoder

    return SequencePipeline(encoder=LSTMEncoder(3, 6, seed=0), windower_kwargs={"kind": "tumbling", "size": 8},
                            model_kwargs=KW, batch_rows=4, output_format=output_format)


def test_schema_accepts_every_sequence_output(validator):
    p = _seq()
    outs = run(p, _events(), step=40)
    assert len(outs) == 6 * 16 // 8
    for o in outs:
        v = json.loads(o.value)
        validator.validate(v)
        assert o.key.startswith(b"user-") and v["length"] == 8


VALID = {"model_version": 3, "topic": "in", "partition": 0, "offset": 7, "cluster": 1, "sq_distance": 0.5}


@pytest.mark.parametrize("bad", [
    {k: v for k, v in VALID.items() if k != "cluster"},  # missing field
    {k: v for k, v in VALID.items() if k != "topic"},
    {**VALID, "cluster": "1"},  # wrong types
    {**VALID, "cluster": 1.5},
    {**VALID, "offset": -1},
    {**VALID, "sq_distance": "0.5"},
    {**VALID, "sq_distance": -1.0},
    {**VALID, "model_version": None},
    {**VALID, "cluster": -1},  # no cluster, but a distance
    {**VALID, "extra": 1},  # not a field of any shape
    {**VALID, "clusters": [1]},  # two shapes mixed
    {"model_version": 3, "topic": "in", "partition": 0, "offset": 7, "row": 0, "clusters": [], "sq_distances": []},
    {"model_version": 3, "topic": "in", "partition": 0, "offset": 7, "row": 0, "clusters": [1, "2"],
     "sq_distances": [0.1, 0.2]},
    {"cluster": 1, "sq_distance": 0.5, "model_version": 3, "window_end_ts": "t", "length": 8},
    {"cluster": 1, "sq_distance": 0.5, "model_version": 3, "window_end_ts": 1.0, "length": 0},
    [VALID],
])
def test_schema_rejects_malformed_outputs(validator, bad):
    validator.validate(VALID)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)


# ---------------------------------------------------------------------- binary
def test_binary_outputs_carry_exactly_what_the_json_outputs_carry(validator):
    X, recs = vector_records(seed=2)
    js = run(VectorPipeline(model_kwargs=KW, topic="in", batch_rows=16), recs)
    bn = run(VectorPipeline(model_kwargs=KW, topic="in", batch_rows=16, output_format="binary"), recs)
    assert [o.key for o in bn] == [o.key for o in js]
    for b, j in zip(bn, js, strict=True):
        got = decode_output(b.value)
        validator.validate({**got, "topic": "in"})
        assert {**got, "topic": "in"} == json.loads(j.value) == decode_output(j.value)
        # the header is the codec's SKMV header with dtype 2 (float64) and the layout in the flags
        magic, version, dtype, flags, n, d = SKMV_HEADER.unpack_from(b.value)
        assert (magic, version, dtype, flags, d) == (MAGIC, VERSION, DTYPE_FLOAT64, LAYOUT_VECTORS,
                                                     len(VECTOR_COLUMNS))
        assert len(b.value) == HEADER_SIZE + 8 * n * d
        rows = np.frombuffer(b.value, "<f8", offset=HEADER_SIZE).reshape(n, d)
        assert rows[0, VECTOR_COLUMNS.index("offset")] == json.loads(j.value)["offset"]


def test_binary_group_outputs_and_sequence_outputs_round_trip(validator):
    X, recs = vector_records(seed=3)
    _, v = _first_version(recs)
    js = run(_group_pipeline(v)[0], recs)
    bn = run(_group_pipeline(v, output_format="binary")[0], recs)
    assert len(bn) == len(js) > 0
    for b, j in zip(bn, js, strict=True):
        assert b.key == j.key and {**decode_output(b.value), "topic": "in"} == json.loads(j.value)
    seq_j, seq_b = run(_seq(), _events(), step=40), run(_seq("binary"), _events(), step=40)
    assert len(seq_b) == len(seq_j) > 0
    for b, j in zip(seq_b, seq_j, strict=True):
        assert SKMV_HEADER.unpack_from(b.value)[3] == LAYOUT_WINDOWS
        assert b.key == j.key and decode_output(b.value) == json.loads(j.value)
        validator.validate(decode_output(b.value))


def test_the_input_decoder_refuses_binary_outputs_as_dtype_errors():
    # An extension of SKMV, not a vector record: fed back as input it is dead-lettered.
    rec = encode_rows(LAYOUT_VECTORS, np.array([[1.0, 0.25, 3.0, 0.0, 7.0, 0.0]]))
    batch = decode_vectors([rec, encode_binary([[1.0, 2.0]])], fmt="auto", dim=None)
    assert [(i, e.reason) for i, e in batch.errors] == [(0, "dtype")]
    assert batch.X.shape == (1, 2)


def test_binary_encoding_is_exact_for_large_integers_and_null_distances():
    big = 2**52 + 1  # beyond float32, exact in float64
    rows = np.array([[5.0, np.nan, float(big), 2.0, float(big), 3.0], [6.0, 1.5, float(big), 2.0, float(big), 4.0]])
    got = decode_output(encode_rows(LAYOUT_VECTORS, rows))
    assert got == {"model_version": big, "partition": 2, "offset": big, "row": 3, "clusters": [5, 6],
                   "sq_distances": [None, 1.5]}
    w = decode_output(encode_rows(LAYOUT_WINDOWS, np.array([[-1.0, np.nan, 0.0, 1732200000.25, 8.0]])))
    assert w == {"cluster": -1, "sq_distance": None, "model_version": 0, "window_end_ts": 1732200000.25, "length": 8}
    assert len(WINDOW_COLUMNS) == 5


@pytest.mark.parametrize("mutate, match", [
    (lambda b: b[:HEADER_SIZE - 1], "shorter"),
    (lambda b: b[:-8], "record has"),
    (lambda b: b[:4] + bytes([2]) + b[5:], "version 2"),
    (lambda b: b[:5] + bytes([1]) + b[6:], "dtype code 1"),
    (lambda b: b[:6] + struct.pack("<H", 9) + b[8:], "layout 9"),
    (lambda b: b"{not json", "nor JSON"),
    (lambda b: b"[1, 2]", "object"),
])
def test_decode_output_names_what_is_wrong(mutate, match):
    good = encode_rows(LAYOUT_VECTORS, np.array([[1.0, 0.25, 3.0, 0.0, 7.0, 0.0]]))
    decode_output(good)
    with pytest.raises(ValueError, match=match):
        decode_output(mutate(good))


def test_output_format_setting_reaches_both_pipelines(tmp_path):
    from streamkm.sequence.lstm import LSTMEncoder

    LSTMEncoder(3, 6, seed=0).save(tmp_path / "w.npz")
    env = {"STREAMKM_KAFKA__VECTORS_TOPIC": "v", "STREAMKM_KAFKA__EVENTS_TOPIC": "e",
           "STREAMKM_SEQUENCE__ENABLED": "true", "STREAMKM_SEQUENCE__LSTM_PATH": str(tmp_path / "w.npz"),
           "STREAMKM_OUTPUT__TOPIC": "out"}
    assert load_settings(env=env).output.format == "json"
    pipes = build_pipelines(load_settings(env={**env, "STREAMKM_OUTPUT__FORMAT": "binary"}))
    assert {name: p.output_format for name, p in pipes.items()} == {"vectors": "binary", "sequence": "binary"}
    with pytest.raises(Exception, match="output.format"):
        load_settings(env={**env, "STREAMKM_OUTPUT__FORMAT": "avro"})
    with pytest.raises(ValueError, match="'json' or 'binary'"):
        VectorPipeline(model_kwargs=KW, output_format="avro")
