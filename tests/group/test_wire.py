"""The group messages' byte format: round trips, and decode returning (never raising) WireError."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamkm.group import wire
from streamkm.group.wire import MAGIC, WIRE_VERSION, WireError, decode, encode
from tests.group.support import equal_trees

_HEAD = struct.Struct("<4sBII")


def _frame(header: bytes | dict, payload: bytes = b"", *, magic: bytes = MAGIC, version: int = WIRE_VERSION,
           hlen: int | None = None) -> bytes:
    """Bytes in the wire layout, built independently of :func:`encode` (valid CRC)."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    body = h + payload
    return _HEAD.pack(magic, version, len(h) if hlen is None else hlen, zlib.crc32(body)) + body


def _tree() -> dict:
    rng = np.random.default_rng(0)
    return {
        "f64": rng.normal(size=(3, 4)),
        "f32": rng.normal(size=(5,)).astype(np.float32),
        "f16": np.array([[1.5, -2.0]], dtype=np.float16),
        "i64": np.array([-(2**62), 0, 2**62 + 7], dtype=np.int64),
        "i8": np.array([-128, 127], dtype=np.int8),
        "u64": np.array([2**64 - 1, 0], dtype=np.uint64),
        "u16": np.arange(6, dtype=np.uint16).reshape(2, 3),
        "bool": np.array([[True, False, True]]),
        "empty2d": np.empty((0, 3), dtype=np.float32),
        "empty1d": np.empty(0, dtype=np.int64),
        "empty_mid": np.empty((2, 0, 3)),
        "cube": np.arange(24, dtype=np.int32).reshape(2, 3, 4),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "strided": np.arange(20.0)[::3],
        "big_endian": np.arange(4, dtype=">f8"),
        "nested": {"a": [1, 2.5, None, True, "x", {"deep": np.ones((2, 2), np.float32)}],
                   "b": {"c": {"d": [np.zeros(1, np.uint8), []]}}, "s": "ünïcode"},
        "scalars": {"int": 2**70, "neg": -3, "float": 1e-300, "np_int": np.int64(5), "np_float": np.float32(0.5)},
        "tuple": (1, np.array([1.0])),
    }


def _expected(tree):
    """What decode should return for *tree*: tuples as lists, NumPy scalars as Python ones, arrays native."""
    if isinstance(tree, np.ndarray):
        return tree.astype(tree.dtype.newbyteorder("="))
    if isinstance(tree, dict):
        return {k: _expected(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_expected(v) for v in tree]
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def _small() -> bytes:
    return encode("chunk_stats", {"x": np.arange(3, dtype=np.float32), "k": [1, "a"], "b": np.array([True])})


# ---------------------------------------------------------------- round trips
def test_round_trip_nested_tree_of_many_dtypes():
    tree = _tree()
    got = decode(encode("some_kind", tree))
    assert not isinstance(got, WireError), got
    kind, state = got
    assert kind == "some_kind"
    assert equal_trees(state, _expected(tree)) == []
    assert state["big_endian"].dtype.byteorder in "=|"  # native on this machine
    np.testing.assert_array_equal(state["big_endian"], np.arange(4.0))
    for name in ("f64", "f32", "bool", "u64", "empty_mid", "cube"):
        assert state[name].flags.writeable and state[name].flags.c_contiguous


def test_decoded_arrays_do_not_alias_the_input():
    data = bytearray(encode("k", {"a": np.arange(4.0)}))
    _, state = decode(bytes(data))
    state["a"][0] = 99.0  # writable copy
    _, again = decode(bytes(data))
    assert again["a"][0] == 0.0


def test_encoding_is_deterministic_and_little_endian():
    a = encode("k", {"x": np.arange(3, dtype=">i4")})
    b = encode("k", {"x": np.arange(3, dtype="<i4")})
    assert a == b
    assert a[:4] == MAGIC and a[4] == WIRE_VERSION
    hlen = struct.unpack_from("<I", a, 5)[0]
    assert a[_HEAD.size + hlen:] == np.arange(3, dtype="<i4").tobytes()


def test_round_trip_0d_and_complex_arrays():
    """0-d arrays stay 0-d (np.ascontiguousarray would make them (1,)); complex arrays decode too."""
    tree = {"z": np.array(3.5), "i": np.array(7, dtype=np.int16), "c": np.array([1 + 2j, -3j]),
            "c64": np.array([[1 + 1j]], dtype=np.complex64)}
    got = decode(encode("k", tree))
    assert not isinstance(got, WireError), got
    assert got[1]["z"].shape == () and got[1]["i"].shape == ()
    assert equal_trees(got[1], _expected(tree)) == []


def test_what_encode_accepts_decode_returns():
    for leaf in (np.array([1 + 2j]), np.array(True), np.empty((0,), np.complex128), np.zeros((1, 0, 2), np.uint32)):
        got = decode(encode("k", {"x": leaf}))
        assert not isinstance(got, WireError), (leaf, got)
        assert equal_trees(got[1], _expected({"x": leaf})) == []


@pytest.mark.parametrize("leaf", [np.array(["a"]), np.array([object()], dtype=object), {1: "int key"}, {1, 2},
                                  b"bytes"])
def test_encode_rejects_leaves_that_need_pickle(leaf):
    with pytest.raises(TypeError):
        encode("k", {"x": leaf})


# ---------------------------------------------------------------- bad bytes
def test_none_and_empty():
    assert isinstance(decode(None), WireError)
    assert isinstance(decode(b""), WireError)


def test_every_truncation_is_a_wire_error():
    data = _small()
    for cut in range(len(data)):
        got = decode(data[:cut])
        assert isinstance(got, WireError), (cut, got)
        assert got.reason and str(got) == got.reason


def test_every_flipped_byte_is_a_wire_error():
    data = _small()
    for i in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[i] ^= mask
            got = decode(bytes(bad))
            assert isinstance(got, WireError), (i, mask)
            if i >= 9:  # in the CRC itself, the header or the payload
                assert "CRC" in got.reason, (i, got)


def test_trailing_byte_fails_the_crc():
    got = decode(_small() + b"\0")
    assert isinstance(got, WireError) and "CRC" in got.reason


def test_wrong_magic():
    data = _small()
    got = decode(b"SKMV" + data[4:])
    assert isinstance(got, WireError) and "magic" in got.reason


@pytest.mark.parametrize("version", [0, 2, 255])
def test_wrong_format_version(version):
    data = bytearray(_small())
    data[4] = version
    got = decode(bytes(data))
    assert isinstance(got, WireError) and "version" in got.reason and str(version) in got.reason


def test_header_length_beyond_the_payload():
    header = {"kind": "k", "tree": {}, "arrays": {}}
    got = decode(_frame(header, hlen=10_000))
    assert isinstance(got, WireError) and "header length" in got.reason
    got = decode(_frame(header, hlen=2**32 - 1))
    assert isinstance(got, WireError) and "header length" in got.reason


def test_frame_helper_matches_encode():
    got = decode(_frame({"kind": "k", "tree": {"x": {"__ndarray__": "a0"}},
                         "arrays": {"a0": {"dtype": "<i2", "shape": [2], "offset": 0}}}, b"\x01\x00\x02\x00"))
    assert got[0] == "k" and got[1]["x"].tolist() == [1, 2]


_A = {"dtype": "<f8", "shape": [2], "offset": 0}


@pytest.mark.parametrize("header,payload,words", [
    (b"\xff\xfe{", b"", "JSON"),
    (b"{not json", b"", "JSON"),
    (b"[1, 2]", b"", "lacks"),
    ({"tree": {}, "arrays": {}}, b"", "lacks"),
    ({"kind": 3, "tree": {}, "arrays": {}}, b"", "lacks"),
    ({"kind": "k", "tree": [], "arrays": {}}, b"", "lacks"),
    ({"kind": "k", "tree": {}, "arrays": []}, b"", "lacks"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {"dtype": "<f8", "offset": 0}}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {"dtype": "<f8", "shape": [2]}}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "dtype": "nope"}}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "dtype": 7}}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "shape": 2}}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "shape": "2"}}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "shape": [2.0]}}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "offset": "x"}}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": [1]}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "dtype": "|O"}}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "dtype": "<U3"}}}, b"\0" * 24, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "dtype": "<M8[s]"}}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "dtype": "V8"}}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "dtype": [["a", "<f8"]]}}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "shape": [-2]}}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "shape": [4, -1]}}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "offset": -1}}}, b"\0" * 16, "'a0'"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": _A}}, b"\0" * 15, "exceed"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "offset": 1}}}, b"\0" * 16, "exceed"),
    ({"kind": "k", "tree": {}, "arrays": {"a0": {**_A, "offset": 10**30}}}, b"\0" * 16, "exceed"),
    ({"kind": "k", "tree": {"x": {"__ndarray__": "a1"}}, "arrays": {"a0": _A}}, b"\0" * 16, "missing"),
    ({"kind": "k", "tree": {"x": [{"__ndarray__": ["a0"]}]}, "arrays": {"a0": _A}}, b"\0" * 16, "missing"),
])
def test_malformed_headers_are_wire_errors(header, payload, words):
    got = decode(_frame(header, payload))
    assert isinstance(got, WireError), got
    assert words in got.reason, got.reason


def test_array_description_without_dtype_is_a_wire_error():
    header = {"kind": "k", "tree": {"x": {"__ndarray__": "a0"}}, "arrays": {"a0": {"shape": [2], "offset": 0}}}
    assert isinstance(decode(_frame(header, b"\0" * 16)), WireError)


@pytest.mark.parametrize("header", [
    pytest.param(b'{"kind":"k","tree":{},"arrays":{"a0":{"dtype":"<f8","shape":[1e400],"offset":0}}}',
                 id="infinite-shape"),
    pytest.param(b'{"kind":"k","tree":{},"arrays":{"a0":{"dtype":"<f8","shape":[1],"offset":1e400}}}',
                 id="infinite-offset"),
    pytest.param(json.dumps({"kind": "k", "tree": {}, "arrays": {"a0": {"dtype": "<f8", "shape": [10**30],
                                                                         "offset": 0}}}).encode(),
                 id="shape-above-int64"),
    pytest.param(json.dumps({"kind": "k", "tree": {}, "arrays": {"a0": {"dtype": "<f8", "shape": [2**32, 2**32],
                                                                         "offset": 0}}}).encode(),
                 id="shape-product-overflows-int64"),
    pytest.param(b'{"kind":"k","arrays":{},"tree":{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
                 id="deeply-nested-json"),
    pytest.param(b'{"kind":"k","arrays":{},"tree":' + b'{"x":' * 50_000 + b"1" + b"}" * 50_000 + b"}",
                 id="deeply-nested-tree"),
    pytest.param(json.dumps({"kind": "k", "tree": {}, "arrays": {"a0": {"dtype": "<f8", "shape": [1] * 40,
                                                                         "offset": 0}}}).encode(),
                 id="rank-40"),
])
def test_decode_never_raises_on_hostile_headers(header):
    """CRC-valid headers that made decode raise at d7cf311 (OverflowError, ValueError from reshape,
    RecursionError) instead of returning a WireError."""
    assert isinstance(decode(_frame(header, b"\0" * 8)), WireError)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data):
    got = decode(data)
    assert isinstance(got, (tuple, WireError))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([b"", MAGIC]), st.integers(0, 255))
def test_arbitrary_bytes_behind_a_valid_prefix_never_raise(tail, magic, version):
    got = decode(magic + bytes([version]) + tail)
    assert isinstance(got, (tuple, WireError))


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=5),
                       st.floats(allow_nan=False, allow_infinity=False))
_desc = st.fixed_dictionaries(
    {}, optional={"dtype": st.one_of(st.sampled_from(["<f8", "<f4", "|b1", "<i8", "|u1", ">f2", "<c8", "|O", "xx",
                                                       "V4"]), _json_leaf),
                  "shape": st.one_of(st.lists(st.integers(-2, 4), max_size=3), _json_leaf),
                  "offset": st.one_of(st.integers(-2, 40), _json_leaf)})
_tree_json = st.recursive(
    st.one_of(_json_leaf, st.builds(lambda n: {"__ndarray__": n}, st.sampled_from(["a0", "a1", "zz"]))),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.one_of(st.text(max_size=5), _json_leaf), tree=_tree_json,
       arrays=st.one_of(st.dictionaries(st.sampled_from(["a0", "a1"]), _desc, max_size=2), _json_leaf),
       payload=st.binary(max_size=48))
def test_crc_valid_structured_garbage_never_raises(kind, tree, arrays, payload):
    """Past the CRC: arbitrary (moderately sized) headers decode or give a WireError."""
    got = decode(_frame({"kind": kind, "tree": tree, "arrays": arrays}, payload))
    assert isinstance(got, (tuple, WireError))
    if isinstance(got, tuple):
        assert got[0] == kind and isinstance(got[1], dict)


_dtypes = st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.int32, np.int8, np.uint8, np.uint64,
                           np.bool_])


@st.composite
def _arrays(draw):
    dt = np.dtype(draw(_dtypes))
    shape = tuple(draw(st.lists(st.integers(0, 3), min_size=1, max_size=3)))
    n = int(np.prod(shape))
    raw = draw(st.binary(min_size=n * dt.itemsize, max_size=n * dt.itemsize))
    a = np.frombuffer(raw, dtype=np.uint8).view(dt).reshape(shape) if n else np.empty(shape, dt)
    if dt == np.bool_:
        a = a.astype(np.uint8) % 2 == 1
    return a.copy()


_state = st.recursive(st.one_of(_arrays(), _json_leaf),
                      lambda inner: st.one_of(st.lists(inner, max_size=3),
                                              st.dictionaries(st.text(max_size=4).filter(lambda k: k != "__ndarray__"),
                                                              inner, max_size=3)),
                      max_leaves=10)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.text(max_size=8), state=st.dictionaries(st.text(max_size=4).filter(lambda k: k != "__ndarray__"),
                                                        _state, max_size=4))
def test_round_trip_property(kind, state):
    got = decode(encode(kind, state))
    assert not isinstance(got, WireError), got
    assert got[0] == kind
    assert equal_trees(got[1], _expected(state)) == []


def test_module_exports():
    assert set(wire.__all__) == {"MAGIC", "WIRE_VERSION", "WireError", "encode", "decode"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["idle_partitions", "chunk_stats", "partition_resume"]), tree=_tree_json,
       payload=st.binary(max_size=16))
def test_stats_log_and_resume_readers_never_raise_on_structured_garbage(kind, tree, payload):
    """Idle markers, chunk statistics and partition resumes: a value or a WireError, never an exception."""
    from streamkm.group.messages import ChunkStats, IdleMarker, read_stats_log, resume_state

    data = _frame({"kind": kind, "tree": tree, "arrays": {}}, payload)
    assert isinstance(read_stats_log(data), (ChunkStats, IdleMarker, WireError))
    assert isinstance(resume_state(data, "sequence"), (dict, WireError))


def test_encode_writes_exactly_the_documented_layout():
    """magic | version | header length | CRC-32 of header + payload | header | arrays back to back
    (C order, little-endian), for views, Fortran order, empty and 0-d arrays (encode joins the
    arrays' own buffers; this pins it to the format, byte for byte)."""
    x = np.arange(24, dtype=np.float64).reshape(4, 6)
    state = {"v": x[:, ::2], "f": np.asfortranarray(x), "e": np.zeros((0, 3), np.float32), "s": np.array(7),
             "b": np.array([True, False]), "n": {"k": [1, "a"]}}
    got = encode("kind", state)
    hlen = struct.unpack_from("<I", got, 5)[0]
    header = json.loads(got[_HEAD.size:_HEAD.size + hlen])
    payload = b"".join(np.ascontiguousarray(np.asarray(a).astype(np.asarray(a).dtype.newbyteorder("<"))).tobytes()
                       for a in (x[:, ::2], np.asfortranarray(x), state["e"], np.asarray(state["s"]), state["b"]))
    body = got[_HEAD.size:_HEAD.size + hlen] + payload
    assert got == _HEAD.pack(MAGIC, WIRE_VERSION, hlen, zlib.crc32(body)) + body
    assert [d["offset"] for d in header["arrays"].values()] == [0, 96, 288, 288, 296]
