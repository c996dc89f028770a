"""Tests for streamkm.codec._json_numbers: the vectorized reader of JSON number arrays.

The oracle is the standard library: a text is accepted exactly when
``json.loads(b"[" + text + b"]")`` gives a non-empty list of JSON numbers (not
NaN/Infinity, which are Python extensions, and no integer of more than 18
digits, which the exact path decides), and each value is that number as
float64, then float32, bit for bit.
"""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamkm.codec._json_numbers import _CHUNK_BYTES, read_number_arrays

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _oracle(text: bytes) -> np.ndarray | None:
    """float32 values json.loads gives for the array ``[text]``, or None where the scanner must decline."""
    if any(w in text for w in (b"NaN", b"Infinity")):
        return None  # json.loads reads them; they are no JSON numbers (RFC 8259)
    try:
        got = json.loads(b"[" + text + b"]")
    except (ValueError, RecursionError):
        return None
    if not got or any(type(v) not in (int, float) for v in got):
        return None
    if any(type(v) is int and len(str(abs(v))) > 18 for v in got):
        return None
    with np.errstate(over="ignore"):
        return np.asarray([float(v) for v in got], dtype=np.float64).astype(np.float32)


def _check(texts: list[bytes]) -> None:
    values, counts, accepted = read_number_arrays(texts)
    assert values.dtype == np.float32 and counts.dtype == np.int64 and accepted.dtype == bool
    assert len(counts) == len(accepted) == len(texts)
    at = 0
    for t, k, ok in zip(texts, counts.tolist(), accepted.tolist(), strict=True):
        ref = _oracle(t)
        assert ok == (ref is not None), t
        if ok:
            assert ref is not None and k == ref.size
            assert values[at:at + k].tobytes() == ref.tobytes(), (t, values[at:at + k], ref)
            at += k
        else:
            assert k == 0
    assert at == values.size


# ------------------------------------------------------------------ strategies
#: JSON numbers by the grammar (RFC 8259 section 6), long enough to reach every branch:
#: mantissas beyond 2**53 and 64 bits, exponents beyond 10**22 and float32 range.
json_numbers = st.from_regex(rb"\A-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,22})?([eE][+-]?[0-9]{1,3})?\Z")
float32_texts = st.floats(width=32, allow_nan=False, allow_infinity=False).map(
    lambda v: st.sampled_from(["%.9g", "%r", "%.17g", "%.6e", "%.12f"]).map(lambda f: (f % v).encode()))
small = st.integers(-999, 999).map(lambda i: str(i).encode()) | st.sampled_from(
    [b"0", b"-0", b"-0.0", b"0.0", b"-0e0", b"1e39", b"-1e39", b"3.4028235e38", b"3.4028236e38", b"1e-46",
     b"1.4e-45", b"1e-400", b"1e400", b"123456789012345678", b"1234567890123456789", b"0.30000000000000004"])
#: Anything a number could be mistaken for: made of the characters numbers are made of.
junk = st.binary(max_size=6) | st.text(alphabet="0123456789+-.eE \t\n\r,;x", max_size=6).map(str.encode)
tokens = st.one_of(json_numbers, float32_texts.flatmap(lambda s: s), small, junk)
separators = st.sampled_from([b",", b",", b", ", b" ,", b",\n  ", b"\t,\r"])


@st.composite
def number_texts(draw):
    parts = draw(st.lists(tokens, min_size=1, max_size=6))
    text = parts[0]
    for p in parts[1:]:
        text += draw(separators) + p
    return draw(st.sampled_from([b"", b" ", b"\n "])) + text + draw(st.sampled_from([b"", b" ", b","]))


# ------------------------------------------------------------------ properties
@PROPERTY
@given(st.lists(number_texts(), min_size=1, max_size=12))
def test_scanner_agrees_with_json_loads(texts):
    _check(texts)


@PROPERTY
@given(st.lists(st.lists(json_numbers | small, min_size=1, max_size=8), min_size=1, max_size=12),
       st.sampled_from([b",", b", "]))
def test_valid_arrays_are_all_accepted(rows, sep):
    texts = [sep.join(r) for r in rows]
    _check(texts)
    assert read_number_arrays(texts)[2].sum() == sum(_oracle(t) is not None for t in texts)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True),
                min_size=1, max_size=64), st.integers(0, 2))
def test_float32_rounding_boundaries(xs, where):
    """Decimals at, just below and just above the float64 midpoints between neighbouring float32 values.

    There float32(y) of an estimate y can differ from float32(round64(x)): the scanner
    must notice and defer to the correctly rounded parser.
    """
    texts = []
    for v in xs:
        a = np.float32(v)
        with np.errstate(over="ignore"):  # the largest float32's neighbour is inf
            b = np.nextafter(a, np.float32(np.inf))
        if not np.isfinite(b):
            continue
        mid = (Decimal(float(a)) + Decimal(float(b))) / 2  # exact
        for digits in (17, 18, 19):
            q = Decimal(f"{mid:.{digits}e}")
            step = Decimal(1).scaleb(q.adjusted() - digits + 1)
            q = q + (where - 1) * step
            texts.append(f"{q:e}".encode())
    if texts:
        _check(texts)


# ------------------------------------------------------------------ targeted cases
GRAMMAR_TRAPS = [b"01", b"00", b"-01", b"1.", b".5", b"-.5", b"+1", b"1e", b"1e+", b"1E-", b"NaN", b"-NaN",
                 b"Infinity", b"-Infinity", b"inf", b"nan", b"-", b"--1", b"-+1", b"1-", b"1+1", b"1_0", b"0x10",
                 b"1.5.5", b"1e5e5", b"1e5.5", b"1.e5", b"1,", b",1", b"1,,2", b"", b" ", b",", b"1 2", b"- 1",
                 b"1. 5", b"1 .5", b"1e 5", b"true", b"null", b'"1"', b"[1]", b"1;2", b"\xef\xbc\x91",
                 b"1\x00", b"\x0b1", b"\x0c1", b"1\xc2\xa0", b"1\x85", b"12345678901234567890"]
ACCEPTED = [b" 1", b"1 ", b"\t1\r\n", b"1 , 2", b"-0", b"-0.0", b"-0e0", b"0e0", b"1E5", b"1e+5", b"1e-5",
            b"1e05", b"0.000001", b"-1.5e-7", b"123456789012345678", b"-123456789012345678",
            b"0.30000000000000004", b"1e39", b"3.4028235e38", b"3.4028236e38", b"1e-46", b"1.4e-45",
            b"1e-400", b"1e400", b"9007199254740993", b"1.00000005960464477539", b"12345678.12345678",
            b"4503599627370496.000000000000", b"18446744073709551616.5", b"0.00000000000000000000000000001"]


@pytest.mark.parametrize("text", GRAMMAR_TRAPS)
def test_grammar_traps_are_declined_alone_and_among_good_texts(text):
    _check([text])
    values, counts, accepted = read_number_arrays([b"1.5", text, b"2, 3"])
    assert accepted.tolist() == [True, _oracle(text) is not None, True]
    assert values[:1].tolist() == [1.5] and values[-2:].tolist() == [2.0, 3.0]


@pytest.mark.parametrize("text", ACCEPTED)
def test_valid_numbers_are_read_exactly(text):
    assert _oracle(text) is not None
    _check([text])
    _check([b"7", text, b"-8.25"])


def test_negative_zero_follows_json_loads():
    """json.loads reads the integer -0 as 0 (+0.0), the float -0.0 keeps its sign."""
    values, _, _ = read_number_arrays([b"-0, -0.0, -0e0, 0"])
    assert np.signbit(values).tolist() == [False, True, True, False]


def test_batches_larger_than_a_chunk_keep_their_order():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(3 * _CHUNK_BYTES // 300, 32)) * 10).astype(np.float32)
    texts = [",".join(f"{v:.9g}" for v in row).encode() for row in x]
    texts[5] = b"1,,2"  # one bad text in the first chunk
    values, counts, accepted = read_number_arrays(texts)
    assert accepted.sum() == len(texts) - 1 and not accepted[5]
    assert values.tobytes() == np.delete(x, 5, axis=0).tobytes()
    assert counts.tolist() == [0 if i == 5 else 32 for i in range(len(texts))]
