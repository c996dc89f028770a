"""Property tests over every decoder and every path of :mod:`streamkm.codec`.

Three promises (docs/formats.md, "Type policy"), each checked on the batched
fast paths and on the per-record path they must match:

* any bytes, and any JSON value in any Unicode encoding, give valid rows or a
  :class:`DecodeError` value with a reason in ``REASONS``; never an exception;
* the rows are finite float32 (nothing NaN, infinite or beyond float32 range)
  and no boolean ever becomes a number;
* each fast path gives exactly what the per-record path gives: rows bit for
  bit, ``record_index``, and the same errors (reason, class, message).

Each property is bounded in examples and sizes so the module runs in a few seconds.
"""

from __future__ import annotations

import codecs
import json

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamkm.codec import (
    HEADER_SIZE,
    MAGIC,
    REASONS,
    DecodeError,
    EventBatch,
    VectorBatch,
    decode_events,
    decode_vectors,
    encode_binary,
    encode_binary_records,
)
from streamkm.codec._json_numbers import read_number_arrays
from streamkm.codec.binary import _fast_binary
from streamkm.codec.events import _decode_events_generic, _fast_events
from streamkm.codec.json_vectors import _array_texts, _fast_json, _loads_json
from streamkm.codec.vectors import _decode_json_exact, _decode_vectors_generic

MRB = 4096  # max_record_bytes: small enough that "oversized" is reachable
F32_MAX = float(np.finfo(np.float32).max)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: The encodings RFC 8259 rules out between systems, each with how to write text in it.
FOREIGN = {
    "utf-8-bom": lambda s: s.encode("utf-8-sig"),
    "utf-16-bom": lambda s: s.encode("utf-16"),  # native order (LE here), with its BOM
    "utf-16-be-bom": lambda s: codecs.BOM_UTF16_BE + s.encode("utf-16-be"),
    "utf-16-le": lambda s: s.encode("utf-16-le"),
    "utf-16-be": lambda s: s.encode("utf-16-be"),
    "utf-32-bom": lambda s: s.encode("utf-32"),
    "utf-32-be-bom": lambda s: codecs.BOM_UTF32_BE + s.encode("utf-32-be"),
    "utf-32-le": lambda s: s.encode("utf-32-le"),
    "utf-32-be": lambda s: s.encode("utf-32-be"),
}


# ------------------------------------------------------------------ invariants
def _check_common(batch: VectorBatch | EventBatch, n: int) -> None:
    X, ri = batch.X, batch.record_index
    assert X.dtype == np.float32 and X.ndim == 2 and X.flags.c_contiguous
    assert np.isfinite(X).all()  # finite float32: no NaN, no ±inf, nothing beyond float32 range
    assert ri.dtype == np.int64 and ri.shape == (X.shape[0],) and (np.diff(ri) >= 0).all()
    pos = [i for i, _ in batch.errors]
    assert pos == sorted(set(pos))
    for _, e in batch.errors:
        assert isinstance(e, DecodeError) and e.reason in REASONS and e.exc_type and e.message
    good = set(ri.tolist())
    assert good.isdisjoint(pos) and good | set(pos) == set(range(n))  # each record: rows or an error


def _check_vectors(batch: VectorBatch, n: int) -> None:
    assert isinstance(batch, VectorBatch)
    _check_common(batch, n)
    assert batch.X.flags.writeable


def _check_events(batch: EventBatch, n: int) -> None:
    assert isinstance(batch, EventBatch)
    _check_common(batch, n)
    m = batch.X.shape[0]
    assert len(batch.keys) == m and all(type(k) is str for k in batch.keys)
    assert batch.ts.dtype == np.float64 and batch.ts.shape == (m,) and np.isfinite(batch.ts).all()


def _same_vectors(a: VectorBatch, b: VectorBatch) -> None:
    assert a.X.dtype == b.X.dtype == np.float32 and a.X.shape == b.X.shape
    assert a.X.tobytes() == b.X.tobytes()  # bit for bit (signed zeros included)
    assert np.array_equal(a.record_index, b.record_index)
    assert a.errors == b.errors


def _same_events(a: EventBatch, b: EventBatch) -> None:
    assert a.keys == b.keys
    assert a.ts.tobytes() == b.ts.tobytes()
    assert a.X.dtype == b.X.dtype == np.float32 and a.X.shape == b.X.shape and a.X.tobytes() == b.X.tobytes()
    assert np.array_equal(a.record_index, b.record_index)
    assert a.errors == b.errors


# ------------------------------------------------------------------ strategies
#: Numbers every path accepts and converts exactly (float32 values, small integers).
good_numbers = st.one_of(st.floats(-1e6, 1e6, width=32), st.integers(-10**6, 10**6))
#: Numbers at the edges: NaN/±Infinity (json.dumps writes them, json.loads reads them),
#: beyond float32 range, integers beyond 64 bits, integers float32 rounds, subnormals.
edge_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-2**70, 2**70),
    st.sampled_from([0, 1, -0.0, F32_MAX, -F32_MAX, 3.4028235e38, 3.4028236e38, 1e39, -1e39,
                     2**54 + 2**30 + 1, 2**63, 2**64 - 1, 2**64, 5e-324, 1e-46]),
)
#: JSON values of other types where a number belongs.
not_numbers = st.one_of(st.booleans(), st.none(), st.text(max_size=3), st.lists(good_numbers, max_size=2),
                        st.dictionaries(st.text(max_size=2), good_numbers, max_size=1))
keys = st.one_of(st.text(max_size=4), st.sampled_from(["x", "X", "key", "ts", "true", "y"]))
json_values = st.recursive(
    st.one_of(good_numbers, edge_numbers, st.booleans(), st.none(), st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=16,
)


@st.composite
def vectors(draw, d):
    """A JSON vector of length d: numbers, sometimes one odd element, another length, or all booleans."""
    kind = draw(st.sampled_from(["good", "good", "good", "edge", "odd", "bool", "all_bool", "length"]))
    if kind == "all_bool":
        return draw(st.lists(st.booleans(), min_size=d, max_size=d))
    n = draw(st.integers(0, d + 2)) if kind == "length" else d
    x = draw(st.lists(good_numbers, min_size=n, max_size=n))
    if x and kind in ("edge", "odd", "bool"):
        odd = {"edge": edge_numbers, "odd": not_numbers, "bool": st.booleans()}[kind]
        x[draw(st.integers(0, n - 1))] = draw(odd)
    return x


@st.composite
def serialized(draw, obj):
    """JSON text of obj: UTF-8 mostly, else a foreign encoding, a truncated text or padding."""
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()), separators=draw(st.sampled_from([None, (",", ":")])))
    how = draw(st.sampled_from(["utf-8"] * 6 + ["foreign", "truncated", "spaces"]))
    if how == "foreign":
        return FOREIGN[draw(st.sampled_from(sorted(FOREIGN)))](text)
    raw = text.encode()
    if how == "truncated":
        return raw[:draw(st.integers(0, max(len(raw) - 1, 0)))]
    return (" \n" + text + "\t ").encode() if how == "spaces" else raw


@st.composite
def binary_records(draw, d):
    rows = draw(st.integers(1, 3))
    return encode_binary(np.asarray(draw(st.lists(st.lists(good_numbers, min_size=d, max_size=d),
                                                  min_size=rows, max_size=rows)), dtype=np.float32))


odd_values = st.one_of(st.none(), st.binary(max_size=40), st.binary(max_size=40).map(lambda b: MAGIC + b),
                       st.just(b" " * (MRB + 1)))


@st.composite
def good_vector_records(draw, d):
    obj = {"x": draw(st.lists(good_numbers, min_size=d, max_size=d))}
    if draw(st.booleans()):
        obj["key"] = draw(st.sampled_from(["k", "true", "false", "sensor-7"]))
        obj["ts"] = draw(st.one_of(good_numbers, st.booleans(), st.none()))  # ignored by the vectors pipeline
    return json.dumps(obj).encode()


@st.composite
def any_vector_records(draw, d):
    kind = draw(st.sampled_from(["x", "x", "x", "X", "x_and_X", "not_list", "json", "binary", "odd"]))
    if kind == "binary":
        return draw(binary_records(d))
    if kind == "odd":
        return draw(odd_values)
    if kind == "x":
        obj = {"x": draw(vectors(d))}
        if draw(st.booleans()):
            obj[draw(st.sampled_from(["key", "ts", "y"]))] = draw(json_values)
    elif kind == "X":
        obj = {"X": draw(st.lists(vectors(d), max_size=3))}
    elif kind == "x_and_X":
        obj = {"x": draw(vectors(d)), "X": [draw(vectors(d))]}
    elif kind == "not_list":
        obj = {draw(st.sampled_from(["x", "X"])): draw(json_values)}
    else:
        obj = draw(json_values)
    return draw(serialized(obj))


@st.composite
def json_vector_batches(draw):
    """(d, values): a batch of plain {"x": [...]} records with 0-2 of them replaced by anything."""
    d = draw(st.integers(1, 4))
    values = [draw(good_vector_records(d)) for _ in range(draw(st.integers(1, 8)))]
    for _ in range(draw(st.integers(0, 2))):
        values[draw(st.integers(0, len(values) - 1))] = draw(any_vector_records(d))
    return d, values


@st.composite
def good_event_objs(draw, d):
    return {"key": draw(st.text(max_size=4)), "ts": draw(st.one_of(st.floats(-1e9, 1e9), st.integers(-10**9, 10**9))),
            "x": draw(st.lists(good_numbers, min_size=d, max_size=d))}


@st.composite
def any_event_objs(draw, d):
    obj = draw(good_event_objs(d))
    kind = draw(st.sampled_from(["x", "x", "key", "ts", "missing", "extra", "json"]))
    if kind == "x":
        obj["x"] = draw(vectors(d))
    elif kind == "key":
        obj["key"] = draw(st.one_of(st.integers(-2**70, 2**70), not_numbers, edge_numbers))
    elif kind == "ts":
        obj["ts"] = draw(st.one_of(edge_numbers, not_numbers))
    elif kind == "missing":
        del obj[draw(st.sampled_from(["key", "ts", "x"]))]
    elif kind == "extra":
        obj[draw(keys)] = draw(json_values)
    else:
        obj = draw(json_values)
    return obj


@st.composite
def any_event_records(draw, d):
    kind = draw(st.sampled_from(["one", "one", "one", "array", "binary", "odd"]))
    if kind == "binary":
        return draw(binary_records(d))
    if kind == "odd":
        return draw(odd_values)
    if kind == "array":
        obj = draw(st.lists(st.one_of(good_event_objs(d), any_event_objs(d)), max_size=3))
    else:
        obj = draw(any_event_objs(d))
    return draw(serialized(obj))


@st.composite
def event_batches(draw):
    d = draw(st.integers(1, 4))
    values = [json.dumps(draw(good_event_objs(d))).encode() for _ in range(draw(st.integers(1, 8)))]
    for _ in range(draw(st.integers(0, 2))):
        values[draw(st.integers(0, len(values) - 1))] = draw(any_event_records(d))
    return d, values


@st.composite
def binary_batches(draw):
    """(d, values): same-length binary records, some corrupted, reshaped, or replaced by same-length text."""
    rows, d = draw(st.sampled_from([(1, 1), (1, 4), (2, 2), (4, 1), (3, 2)]))
    n = draw(st.integers(1, 10))
    X = draw(hnp.arrays(np.float32, (n * rows, d), elements=st.floats(width=32, allow_nan=False,
                                                                      allow_infinity=False)))
    recs = [bytearray(r) for r in encode_binary_records(X, rows)]
    L = len(recs[0])
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, n - 1))
        kind = draw(st.sampled_from(["header", "payload", "reshape", "json", "foreign", "length"]))
        if len(recs[i]) != L:  # already shortened
            continue
        if kind == "header":  # any byte of the header: magic, version, dtype, flags, rows, dim
            recs[i][draw(st.integers(0, HEADER_SIZE - 1))] = draw(st.integers(0, 255))
        elif kind == "payload":  # any 4 bytes as one float32: NaN payloads, ±inf, subnormals, -0.0
            k = draw(st.integers(0, rows * d - 1))
            recs[i][HEADER_SIZE + 4 * k:HEADER_SIZE + 4 * k + 4] = draw(st.binary(min_size=4, max_size=4))
        elif kind == "reshape":  # valid, same byte length, other rows x dim
            recs[i] = bytearray(encode_binary(np.ones((rows * d, 1), np.float32)))
        elif kind in ("json", "foreign"):  # text of the same length (JSON allows trailing spaces)
            text = json.dumps({"x": draw(vectors(d))}, separators=(",", ":"))
            raw = text.encode() if kind == "json" else text.encode("utf-16-le")
            pad = b" " if kind == "json" else b" \x00"
            if len(raw) <= L:
                recs[i] = bytearray(raw + pad * ((L - len(raw)) // len(pad)))
        else:  # another length: the batch is no longer uniform
            recs[i] = recs[i][:draw(st.integers(0, L - 1))]
    return d, [bytes(r) for r in recs]


# ------------------------------------------------------ 1. never an exception
@PROPERTY
@given(st.lists(st.one_of(odd_values, st.binary(max_size=80), json_values.flatmap(serialized),
                          st.integers(1, 4).flatmap(any_vector_records), st.integers(1, 4).flatmap(any_event_records)),
                max_size=8),
       st.one_of(st.none(), st.integers(1, 4)))
def test_any_bytes_give_rows_or_typed_errors_on_every_decoder(values, dim):
    n = len(values)
    for fmt in ("json", "binary", "auto"):
        ref = _decode_vectors_generic(values, fmt, dim, MRB)
        _check_vectors(ref, n)
        _same_vectors(decode_vectors(values, fmt=fmt, dim=dim, max_record_bytes=MRB), ref)
    for fmt in ("json", "auto"):
        ev = decode_events(values, fmt=fmt, dim=dim, max_record_bytes=MRB)
        _check_events(ev, n)
        _same_events(ev, _decode_events_generic(values, dim, MRB))


@PROPERTY
@given(json_values, st.sampled_from(sorted(FOREIGN)), st.booleans())
def test_json_in_any_other_encoding_is_an_encoding_error(obj, enc, ascii_only):
    text = json.dumps(obj, ensure_ascii=ascii_only)
    good_v, good_e = b'{"x": [1.0, 2.0]}', b'{"key": "k", "ts": 1, "x": [1.0, 2.0]}'
    for raw, expect in ((FOREIGN[enc](text), "encoding"), (text.encode(), None)):
        for fmt in ("json", "auto"):
            b = decode_vectors([good_v, raw, good_v], fmt=fmt, max_record_bytes=2**20)
            _check_vectors(b, 3)
            assert b.record_index.tolist()[:1] == [0] and b.record_index.tolist()[-1] == 2
            reasons = {i: e.reason for i, e in b.errors}
            assert reasons.get(1) == expect if expect else reasons.get(1) != "encoding"
            e = decode_events([good_e, raw, good_e], fmt=fmt, max_record_bytes=2**20)
            _check_events(e, 3)
            reasons = {i: e.reason for i, e in e.errors}
            assert reasons.get(1) == expect if expect else reasons.get(1) != "encoding"


# ------------------------------------------------------ 2. what reaches the rows
@st.composite
def with_booleans(draw, d):
    """A length-d vector holding at least one boolean (or only booleans), the rest numbers."""
    x: list[object] = draw(st.lists(good_numbers, min_size=d, max_size=d))
    for i in draw(st.sets(st.integers(0, d - 1), min_size=1)):
        x[i] = draw(st.booleans())
    return x


@PROPERTY
@given(st.integers(1, 4).flatmap(lambda d: st.tuples(
    st.just(d),
    st.lists(st.lists(good_numbers, min_size=d, max_size=d), min_size=1, max_size=6),
    st.lists(st.tuples(st.sampled_from(["x", "x_meta", "X", "event", "event_array"]), with_booleans(d)),
             min_size=1, max_size=3),
    st.lists(st.integers(0, 6), min_size=3, max_size=3))),
    st.booleans())
def test_booleans_never_become_numbers(case, fix_dim):
    d, good, bad, where = case
    dim = d if fix_dim else None
    records: list[tuple[str, object, list[object] | None]] = [("x", None, x) for x in good]
    for (form, x), at in zip(bad, where, strict=False):
        records.insert(min(at, len(records)), (form, x, None))
    vec, ev, expect_rows, expect_bad = [], [], [], set()
    for i, (form, bx, gx) in enumerate(records):
        if gx is not None:  # a good vector, in both record kinds
            vec.append(json.dumps({"x": gx}).encode())
            ev.append(json.dumps({"key": "k", "ts": i, "x": gx}).encode())
            expect_rows.append(gx)
            continue
        expect_bad.add(i)
        if form in ("x", "x_meta", "X"):
            obj: object = ({"x": bx} if form == "x" else {"x": bx, "key": "true", "ts": 1} if form == "x_meta"
                           else {"X": [[1.0] * d, bx]})
            evobj: object = {"key": "k", "ts": i, "x": bx}
        else:
            obj = {"x": bx}
            evobj = ({"key": "k", "ts": i, "x": bx} if form == "event"
                     else [{"key": "k", "ts": i, "x": [1.0] * d}, {"key": "k", "ts": i, "x": bx}])
        vec.append(json.dumps(obj).encode())
        ev.append(json.dumps(evobj).encode())
    rows = np.asarray(expect_rows, dtype=np.float64).astype(np.float32).reshape(-1, d)
    results = [decode_vectors(vec, fmt=fmt, dim=dim) for fmt in ("json", "auto")]
    results += [_decode_vectors_generic(vec, "json", dim, 8 * 2**20), decode_events(ev, dim=dim),
                _decode_events_generic(ev, dim, 8 * 2**20)]
    for b in results:
        assert {i: e.reason for i, e in b.errors} == dict.fromkeys(expect_bad, "dtype")
        assert b.X.tobytes() == rows.tobytes() and b.X.shape == rows.shape
        assert set(b.record_index.tolist()).isdisjoint(expect_bad)


@PROPERTY
@given(st.lists(st.lists(st.one_of(good_numbers, edge_numbers), min_size=3, max_size=3), min_size=1, max_size=6),
       st.sampled_from(["json", "binary"]))
def test_rows_are_exactly_the_finite_float32_values(xs, form):
    """NaN, ±inf and values beyond float32 range reject their record; any other number is float64, then float32.

    (Integers NumPy cannot hold in 64 bits are ``dtype`` errors: see docs/formats.md.)
    """
    with np.errstate(over="ignore", invalid="ignore"):
        conv = [np.asarray([float(v) for v in x], dtype=np.float64).astype(np.float32) for x in xs]
    if form == "json":
        values = [json.dumps({"x": x}).encode() for x in xs]
        expect = ["dtype" if np.array(x).dtype == object else None if np.isfinite(c).all() else "non_finite"
                  for x, c in zip(xs, conv, strict=True)]
    else:  # binary carries float32 already; out-of-range values are ±inf by then
        values = [encode_binary(c) for c in conv]
        expect = [None if np.isfinite(c).all() else "non_finite" for c in conv]
    b = decode_vectors(values, fmt="auto", dim=3)
    _check_vectors(b, len(xs))
    ok = [i for i, r in enumerate(expect) if r is None]
    assert {i: e.reason for i, e in b.errors} == {i: r for i, r in enumerate(expect) if r is not None}
    assert b.record_index.tolist() == ok
    assert b.X.tobytes() == np.asarray([conv[i] for i in ok], dtype=np.float32).reshape(-1, 3).tobytes()


# ------------------------------------------------------ 3. fast path == per-record path
@PROPERTY
@given(json_vector_batches(), st.sampled_from(["json", "auto"]), st.booleans())
def test_fast_json_path_agrees_with_per_record_path(batch, fmt, fix_dim):
    d, values = batch
    dim = d if fix_dim else None
    ref = _decode_vectors_generic(values, fmt, dim, MRB)
    _check_vectors(ref, len(values))
    if all(t is not None for t in _array_texts(values, MRB)):
        event("every record has the strict form the number scanner reads")
    _same_vectors(_fast_json(values, fmt, dim, MRB, _decode_json_exact), ref)
    loads = _loads_json(values, dim, MRB, fmt == "auto")
    if isinstance(loads, VectorBatch):
        event("json.loads path took the batch")
        _same_vectors(loads, ref)
    else:  # declined: the per-record path reusing its parsed objects is still the reference
        _same_vectors(_decode_vectors_generic(values, fmt, dim, MRB, loads), ref)
    _same_vectors(decode_vectors(values, fmt=fmt, dim=dim, max_record_bytes=MRB), ref)


@PROPERTY
@given(event_batches(), st.booleans())
def test_fast_event_path_agrees_with_per_record_path(batch, fix_dim):
    d, values = batch
    dim = d if fix_dim else None
    ref = _decode_events_generic(values, dim, MRB)
    _check_events(ref, len(values))
    fast = _fast_events(values, dim, MRB)
    if isinstance(fast, EventBatch):
        event("fast event path took the batch")
        _same_events(fast, ref)
    else:
        _same_events(_decode_events_generic(values, dim, MRB, fast), ref)
    _same_events(decode_events(values, dim=dim, max_record_bytes=MRB), ref)


@PROPERTY
@given(binary_batches(), st.sampled_from(["binary", "auto"]), st.booleans())
def test_fast_binary_path_agrees_with_per_record_path(batch, fmt, fix_dim):
    d, values = batch
    dim = d if fix_dim else None
    ref = _decode_vectors_generic(values, fmt, dim, MRB)
    _check_vectors(ref, len(values))
    L = len(values[0])
    if all(len(v) == L for v in values):
        res = _fast_binary(values, L, dim, fmt, MRB, _decode_vectors_generic)
        if res is not None:
            event("fast binary path took the batch")
            fast = VectorBatch(*res)
            _check_vectors(fast, len(values))
            _same_vectors(fast, ref)
    _same_vectors(decode_vectors(values, fmt=fmt, dim=dim, max_record_bytes=MRB), ref)


@PROPERTY
@given(st.integers(1, 4).flatmap(lambda d: st.tuples(st.just(d), st.lists(st.one_of(
    binary_records(d), good_vector_records(d), any_vector_records(d),
    st.lists(st.lists(good_numbers, min_size=d, max_size=d), min_size=1, max_size=3).map(
        lambda X: json.dumps({"X": X}).encode())), min_size=1, max_size=8))),
    st.booleans())
def test_auto_mixed_batches_agree_with_per_record_path(case, fix_dim):
    d, values = case
    dim = d if fix_dim else None
    for fmt in ("auto", "json", "binary"):
        ref = _decode_vectors_generic(values, fmt, dim, MRB)
        _check_vectors(ref, len(values))
        _same_vectors(decode_vectors(values, fmt=fmt, dim=dim, max_record_bytes=MRB), ref)


def test_strategies_reach_the_fast_paths():
    """The batches above do take each fast path (else the agreement properties would prove little)."""
    strict = [b'{"x": [1, 2.5]}', b'{"x": [3, 4], "key": "true"}']
    assert isinstance(_loads_json(strict, None, MRB, True), VectorBatch)
    texts = _array_texts(strict, MRB)
    assert texts == [b"1, 2.5", b"3, 4"] and read_number_arrays(texts)[2].all()
    assert isinstance(_fast_events([b'{"key": "k", "ts": 1, "x": [1, 0]}'], None, MRB), EventBatch)
    recs = encode_binary_records(np.ones((4, 2), np.float32), 2)
    assert _fast_binary(recs, len(recs[0]), None, "binary", MRB, _decode_vectors_generic) is not None
