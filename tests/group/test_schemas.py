"""The model topic's SKMG layout and JSON header schema, and the model export's schema, against
real messages of the fold (docs/formats.md, "The group model topic")."""

from __future__ import annotations

import copy
import json
import struct
import zlib

import jsonschema
import numpy as np
import pytest

from streamkm.group import GroupModel, ModelVersion
from streamkm.group.export import export_version, load_model
from streamkm.group.messages import KIND_SNAPSHOT
from streamkm.group.wire import encode
from streamkm.schemas import SCHEMAS, load_schema
from tests.group.support import raw_stats, summarised_stats

KW = dict(n_clusters=3, seed=0)
HEAD = struct.Struct("<4sBII")  # as docs/formats.md specifies: magic, format version, header length, CRC-32


def validator(name):
    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def skmg_header(value: bytes) -> tuple[dict, memoryview]:
    """Read a model-topic value by the documented layout alone (no streamkm code)."""
    magic, version, hlen, crc = HEAD.unpack_from(value)
    assert magic == b"SKMG" and version == 1
    assert zlib.crc32(value[HEAD.size:]) == crc
    header = json.loads(value[HEAD.size:HEAD.size + hlen].decode("utf-8"))
    return header, memoryview(value)[HEAD.size + hlen:]


def array(header: dict, payload: memoryview, marker: dict) -> np.ndarray:
    d = header["arrays"][marker["__ndarray__"]]
    dt = np.dtype(d["dtype"])
    count = int(np.prod(d["shape"], dtype=np.int64))
    return np.frombuffer(payload, dtype=dt, count=count, offset=d["offset"]).reshape(d["shape"])


def folded_model() -> GroupModel:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 4)) * 20
    g = GroupModel(pipeline="vectors", model_kwargs=KW, config_hash="0123456789abcdef")
    X = (centers[rng.integers(3, size=60)] + rng.normal(size=(60, 4))).astype(np.float32)
    g.fold(raw_stats(0, X), 0)
    g.fold(raw_stats(0, X[:10], part=1), 1)
    g.fold(raw_stats(0, X[:10]), 2)  # a duplicate
    v = g.version()
    g.fold(summarised_stats(v, 60, X[10:40]), 3)
    return g


def test_the_shipped_schemas_are_valid_draft_2020_12():
    for name in SCHEMAS:
        schema = load_schema(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)
    with pytest.raises(ValueError, match="unknown schema"):
        load_schema("nope")


def test_model_versions_match_the_layout_and_the_schema():
    val = validator("model-topic")
    empty = GroupModel(pipeline="vectors", model_kwargs=KW).version()
    g = folded_model()
    v = g.version(published_at=1732200000.5)
    assert v.is_initialized and v.counters["duplicate"] == 1
    for version in (empty, v):
        header, payload = skmg_header(version.to_bytes())
        val.validate(header)
        tree = header["tree"]
        assert header["kind"] == "model_version"
        assert tree["version"] == version.version and tree["offsets"] == version.offsets
        centers, weights, ids = (array(header, payload, tree[n]) for n in ("centers", "weights", "ids"))
        assert centers.dtype == np.dtype("<f8") and weights.dtype == np.dtype("<f8") and ids.dtype == np.dtype("<i8")
        np.testing.assert_array_equal(centers, version.centers)
        np.testing.assert_array_equal(weights, version.weights)
        np.testing.assert_array_equal(ids, version.ids)
    assert ModelVersion.from_bytes(v.to_bytes()).same_model(v)


def test_reducer_snapshots_match_the_schema():
    g = folded_model()
    # what the reducer publishes under '<pipeline>#snapshot' (service/group.py, _publish)
    snap = encode(KIND_SNAPSHOT, {"pipeline": "vectors", "stats_offset": g.stats_offset_, "state": g.state_dict()})
    header, _ = skmg_header(snap)
    validator("model-topic").validate(header)
    assert header["kind"] == "reducer_snapshot" and header["tree"]["state"]["format"] == "streamkm.group_model"


def _bad_headers(good: dict):
    def edit(fn):
        h = copy.deepcopy(good)
        fn(h)
        return h

    yield "missing field", edit(lambda h: h["tree"].pop("ids"))
    yield "missing summary key", edit(lambda h: h["tree"]["summary"].pop("n_drift"))
    yield "version not an integer", edit(lambda h: h["tree"].__setitem__("version", "3"))
    yield "negative offset", edit(lambda h: h["tree"]["offsets"].__setitem__("t:0", -1))
    yield "offsets key without partition", edit(lambda h: h["tree"]["offsets"].__setitem__("t", 3))
    yield "dtype", edit(lambda h: h["tree"].__setitem__("dtype", "float16"))
    yield "array as a list", edit(lambda h: h["tree"].__setitem__("weights", [1.0, 2.0]))
    yield "unknown kind", edit(lambda h: h.__setitem__("kind", "chunk_stats"))
    yield "array dtype", edit(lambda h: h["arrays"]["a0"].__setitem__("dtype", "O"))
    yield "array without offset", edit(lambda h: h["arrays"]["a0"].pop("offset"))
    yield "extra member", edit(lambda h: h["tree"].__setitem__("extra", 1))


def test_the_model_topic_schema_rejects_malformed_headers():
    val = validator("model-topic")
    header, _ = skmg_header(folded_model().version().to_bytes())
    val.validate(header)
    for what, bad in _bad_headers(header):
        with pytest.raises(jsonschema.ValidationError):
            val.validate(bad)
        assert what


def test_model_exports_match_the_schema(tmp_path):
    val = validator("model-export")
    v = folded_model().version(published_at=1.5)
    npz, meta = export_version(v, tmp_path / "model")
    doc = json.loads(meta.read_text())
    val.validate(doc)
    assert doc["model_version"] == v.version and doc["n_clusters"] == 3 and doc["n_features"] == 4
    assert load_model(tmp_path / "model").model_version_ == v.version
    for bad in ({k: x for k, x in doc.items() if k != "n_features"}, {**doc, "n_clusters": "3"},
                {**doc, "format": "other"}, {**doc, "model_version": 0}, {**doc, "extra": True}):
        with pytest.raises(jsonschema.ValidationError):
            val.validate(bad)
