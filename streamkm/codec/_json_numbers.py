"""Vectorized reader of JSON arrays of numbers: the text between ``[`` and ``]`` of many records at once.

:func:`read_number_arrays` checks each text against the JSON grammar (RFC 8259
section 6: ``-? (0 | [1-9] digit*) (. digit+)? ([eE] [+-]? digit+)?``, numbers
separated by commas, whitespace only around them) and converts the numbers to
float32 as ``json.loads`` + float64 + float32 would, with NumPy calls over the
joined bytes: no Python object is built per number. Package-internal; the
batched JSON path of :mod:`streamkm.codec.json_vectors` is its only user.

How, per chunk of about ``_CHUNK_BYTES`` of text (so that the temporaries stay
in the cache and in memory the allocator already holds):

1. Every byte that is not a digit (commas, signs, points, exponents,
   whitespace, anything else) becomes an element of a *skeleton*, with its
   position and a class code. Each text is runs of digits between such
   elements, so the grammar is a rule on each pair of neighbouring skeleton
   elements (which pairs may follow each other, with or without digits
   between them), plus the rule on leading zeros. Whitespace must touch a
   comma or a text's end; it is then deleted and the texts read again.
2. Each number's digit runs (integer part, fraction, exponent) are read
   eight bytes at a time as little-endian 64-bit words (three multiply-shift
   steps turn eight ASCII digits into their value; Lemire 2021).
3. The mantissa m and the power of ten k give the float64 ``m / 10**-k`` (or
   ``m * 10**k``): exactly the correctly rounded value whenever
   ``m <= 2**53`` and ``|k| <= 22``, since both operands are then exact and
   IEEE 754 rounds one operation correctly (Clinger 1990). Other numbers
   get an estimate within a few float64 ulps, which gives the right float32
   unless a float32 rounding boundary is that close; those few (and
   subnormal float32 values, far exponents, mantissas beyond 64 bits) are
   converted by ``np.fromstring``, a correctly rounded C parser.

A text failing a check is rejected (for the caller's exact path) and the
others are read again without it, since each verdict depends on its text alone.

References
----------
Clinger, W. D. (1990). How to read floating point numbers accurately. PLDI '90.
Lemire, D. (2021). Number parsing at a gigabyte per second. Software: Practice
and Experience 51(8) (the eight-digit SWAR step).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["read_number_arrays"]

# Skeleton element classes (any byte that is not a digit).
_COMMA, _SEP, _MINUS, _SIGN, _DOT, _EXP, _WS, _BAD = range(8)
_SEP_BYTE = b";"  # joins the texts; a text holding one is rejected (it is no JSON number)


def _table(pairs: dict[bytes, int], default: int) -> bytes:
    t = bytearray([default] * 256)
    for chars, v in pairs.items():
        for ch in chars:
            t[ch] = v
    return bytes(t)


_CLASS = _table({b",": _COMMA, _SEP_BYTE: _SEP, b"-": _MINUS, b"+": _SIGN, b".": _DOT, b"eE": _EXP,
                 b" \t\n\r": _WS}, _BAD)  # JSON whitespace is exactly these four


def _pair_rules() -> bytes:
    # Which skeleton elements a, b may be neighbours (in a text without whitespace),
    # as a translation table indexed by a * 16 + b * 2 + (digits between them): 1 = yes.
    rules = bytearray(64)  # a * 8 + b -> 0 never, 1 only with no digit between, 2 only with digits
    ends = (_COMMA, _SEP)
    for a in ends:
        for b in ends:
            rules[a * 8 + b] = 2  # an integer
        rules[a * 8 + _MINUS] = 1
        rules[a * 8 + _DOT] = rules[a * 8 + _EXP] = 2
    for b in (*ends, _DOT, _EXP):
        rules[_MINUS * 8 + b] = 2
    for b in (*ends, _EXP):
        rules[_DOT * 8 + b] = 2
    rules[_EXP * 8 + _SIGN] = 1
    for b in ends:
        rules[_EXP * 8 + b] = rules[_SIGN * 8 + b] = 2
    table = bytearray(256)
    for ab, r in enumerate(rules):
        if r:
            table[ab * 2 + (r == 2)] = 1
    return bytes(table)


_PAIRS = _pair_rules()

_U = np.uint64
# _KEEP_DIGITS[n]: the low nibbles of the top n bytes of a little-endian word (its last n characters)
_KEEP_DIGITS = np.array([0] + [0x0F0F0F0F0F0F0F0F & ((2**64 - 1) ^ (2 ** (8 * (8 - n)) - 1)) for n in range(1, 9)],
                        dtype=np.uint64)
_POW10_U = np.array([10**i for i in range(20)], dtype=np.uint64)
_POW10_F = np.array([10.0**i for i in range(23)], dtype=np.float64)  # exact up to 1e22
_MAX_EXACT = 2**53
_INT_DIGITS = 18  # longer JSON integers: json.loads + np.array may not give int64 (left to the caller)
_PAD = b"00000000"  # 8 bytes before the texts: the word ending at any text position is inside the buffer
_WS_BYTES = b" \t\n\r"
_CHUNK_BYTES = 2**18


def read_number_arrays(texts: list[bytes]) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.bool_]]:
    """Read the inside of JSON arrays of numbers, e.g. ``b"1.5, -2e3,0"``.

    Parameters
    ----------
    texts : list of bytes
        The text between each record's ``[`` and ``]``.

    Returns
    -------
    values : ndarray of shape (n_numbers,), float32
        The numbers of the accepted texts, in order; each is what ``json.loads``
        returns for it converted to float64 and then to float32 (an integer
        ``-0`` is ``0.0``; beyond float32 range, ±inf).
    counts : ndarray of shape (len(texts),), int64
        Numbers in each accepted text (0 where rejected).
    accepted : ndarray of shape (len(texts),), bool
        False where a text is not one or more JSON numbers separated by
        commas (``[]``, ``01``, ``1.``, ``.5``, ``+1``, ``NaN``, a trailing
        comma, ...) or holds an integer of more than 18 digits, which
        ``json.loads`` and NumPy turn into something other than a float64
        (the caller's exact path decides those).

    Examples
    --------
    >>> values, counts, accepted = read_number_arrays([b"1.5, -2e3,0", b"1,", b"-0"])
    >>> values.tolist(), counts.tolist(), accepted.tolist()
    ([1.5, -2000.0, 0.0, 0.0], [3, 0, 1], [True, False, True])
    """
    n = len(texts)
    # Chunks of about _CHUNK_BYTES of text: the temporaries then stay in the cache and in memory
    # malloc already holds (fresh pages for each batch-sized temporary cost more than the work).
    ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=n))
    cuts = np.searchsorted(ends, np.arange(_CHUNK_BYTES, int(ends[-1]) if n else 0, _CHUNK_BYTES), side="right")
    bounds = [0, *np.unique(cuts[(cuts > 0) & (cuts < n)]).tolist(), n]
    if n == 0 or len(bounds) == 2:
        return _read_chunk(texts)
    parts = [_read_chunk(texts[i:j]) for i, j in zip(bounds[:-1], bounds[1:], strict=True)]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


def _read_chunk(texts: list[bytes]) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.bool_]]:
    n = len(texts)
    counts = np.zeros(n, dtype=np.int64)
    keep = np.arange(n)
    # Each pass rejects the texts failing one stage of checks (the separator byte, whitespace,
    # the grammar); a text's verdict depends on that text alone, so the others are read again.
    none = (np.empty(0, dtype=np.float32), counts, np.zeros(n, dtype=bool))
    while keep.size:
        sub = [texts[i] for i in keep.tolist()] if keep.size < n else texts
        values, n_each, bad = _scan(_join(sub), keep.size)
        if values is not None:
            counts[keep] = n_each
            accepted = np.zeros(n, dtype=bool)
            accepted[keep] = True
            return values, counts, accepted
        if bad is None:
            bad = np.array([_SEP_BYTE in t for t in sub])
        if not bad.any():  # a pass that rejects nothing would repeat: the exact path reads them all
            return none
        keep = keep[~bad]
    return none


def _join(texts: list[bytes]) -> bytes:
    return _SEP_BYTE.join([_PAD, *texts, b""])  # _PAD;t0;t1;...;tn-1;


_Scan = tuple[NDArray[np.float32] | None, NDArray[np.int64], NDArray[np.bool_] | None]


def _scan(buf: bytes, n: int) -> _Scan:
    """Check and read the n texts joined in ``buf``: (values, counts, rejected).

    ``values`` is None if any text is rejected; ``rejected`` is None if a
    text holds the separator byte (the caller then finds which).
    """
    c = np.frombuffer(buf, dtype=np.uint8)[len(_PAD):]
    # ---- the skeleton: position and class of every byte that is not a digit
    mask = np.subtract(c, 48, dtype=np.uint8)
    flags = mask.view(bool)
    np.greater_equal(mask, 10, out=flags)
    pos = np.flatnonzero(flags)
    code = np.frombuffer(bytearray(c[pos].tobytes().translate(_CLASS)), dtype=np.uint8)
    sep_idx = np.flatnonzero(code == _SEP)
    if sep_idx.size != n + 1:  # a text holds the separator byte itself (no JSON number does): caller finds it
        return None, np.zeros(n, dtype=np.int64), None
    gap = np.diff(pos)
    gap -= 1  # digits between neighbouring elements
    if np.any(code == _WS):
        return _without_whitespace(buf, n, c, pos, code, gap, sep_idx)
    exp_idx = np.flatnonzero(code == _EXP)
    if exp_idx.size:
        # a minus right after an exponent mark is the exponent's sign
        after = exp_idx + 1
        code[after[(code[after] == _MINUS) & (gap[exp_idx] == 0)]] = _SIGN
    digits = (gap > 0).view(np.uint8)
    pair = code[:-1] * np.uint8(16)
    pair += code[1:] * np.uint8(2)
    pair += digits
    legal = np.frombuffer(pair.tobytes().translate(_PAIRS), dtype=bool)
    if not legal.all():
        return None, np.zeros(n, dtype=np.int64), _texts_of(pos, sep_idx, np.flatnonzero(~legal), n)
    # ---- the numbers: the grammar leaves exactly one between neighbouring commas/separators
    bidx = np.flatnonzero(code <= _SEP)
    start, la, i_end, lf, f_end, neg, is_int = _parts(pos, code, gap, digits, bidx, exp_idx)
    lead0 = c[start] == 48
    lead0 &= la > 1  # "01", "-00"
    long_int = is_int & (la > _INT_DIGITS)
    if lead0.any() or long_int.any():
        return None, np.zeros(n, dtype=np.int64), _texts_of(pos, sep_idx, bidx[:-1][lead0 | long_int], n)
    counts = np.diff(np.flatnonzero(code[bidx] == _SEP))  # numbers between a text's separators
    values = _values(buf, c, pos, code, gap, exp_idx, start, la, i_end, lf, f_end, neg, is_int)
    return values, counts, np.zeros(n, dtype=bool)


_Parts = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64],
               NDArray[np.bool_], NDArray[np.bool_]]


def _parts(pos: NDArray[np.int64], code: NDArray[np.uint8], gap: NDArray[np.int64], digits: NDArray[np.uint8],
           bidx: NDArray[np.int64], exp_idx: NDArray[np.int64]) -> _Parts:
    """Where each number's parts are, in a text that passed the pair rules.

    Returns the position of the first integer digit, the integer digits, the
    end of the integer part, the fraction digits (0 without a point), the end
    of the fraction (of the mantissa), whether it has a leading minus and
    whether it is an integer. Two layouts skip the general search: every
    number with a point (what float encoders write) and only integers.
    """
    pb = pos[bidx]
    n_num = bidx.size - 1
    dots = np.flatnonzero(code == _DOT)
    if dots.size == n_num:  # one point per number (the rules allow at most one): the t-th is number t's
        pd = pos[dots]
        neg = (dots - bidx[:-1]) == 2  # only a minus can stand between the comma and the point
        start = pb[:-1] + 1
        start += neg
        la = pd - start
        f_end = pb[1:].copy()
        if exp_idx.size:
            f_end[np.searchsorted(dots, exp_idx) - 1] = pos[exp_idx]
        lf = f_end - pd
        lf -= 1
        return start, la, pd, lf, f_end, neg, np.zeros(n_num, dtype=bool)
    if dots.size == 0 and exp_idx.size == 0:  # integers only
        neg = code[bidx[:-1] + 1] == _MINUS
        start = pb[:-1] + 1
        start += neg
        i_end = pb[1:]
        return start, i_end - start, i_end, np.zeros(n_num, dtype=np.int64), i_end, neg, np.ones(n_num, dtype=bool)
    # general: the integer part is the digits after a comma, a separator or a leading minus
    ir = np.flatnonzero((code[:-1] <= _MINUS) & digits.view(bool))
    neg = code[ir] == _MINUS
    start = pos[ir] + 1
    la = gap[ir]
    i_end = start + la
    nxt = code[ir + 1]
    sub = np.flatnonzero(nxt == _DOT)
    lf = np.zeros(ir.size, dtype=np.int64)
    lf[sub] = gap[ir[sub] + 1]
    f_end = i_end.copy()
    f_end[sub] = pos[ir[sub] + 2]
    return start, la, i_end, lf, f_end, neg, nxt <= _SEP


def _texts_of(pos: NDArray[np.int64], sep_idx: NDArray[np.int64], elements: NDArray[np.int64],
              n: int) -> NDArray[np.bool_]:
    """Mask of the texts holding the given skeleton elements (a separator counts for the text after it)."""
    bad = np.zeros(n, dtype=bool)
    bad[np.searchsorted(pos[sep_idx], pos[elements], side="right") - 1] = True
    return bad


def _without_whitespace(buf: bytes, n: int, c: NDArray[np.uint8], pos: NDArray[np.int64],
                        code: NDArray[np.uint8], gap: NDArray[np.int64], sep_idx: NDArray[np.int64]) -> _Scan:
    """Texts with whitespace: legal only around the numbers, so each run of it must touch a comma or an end.

    Then deleting it changes no number, and the texts are read without it.
    """
    wi = np.flatnonzero(code == _WS)
    joined = (np.diff(wi) == 1) & (gap[wi[:-1]] == 0)  # the next byte is whitespace too
    first = wi[np.concatenate(([True], ~joined))]
    last = wi[np.concatenate((~joined, [True]))]
    # the elements around a run are no whitespace and exist (the ends of buf are separators)
    touches = (code[first - 1] <= _SEP) & (gap[first - 1] == 0)
    touches |= (code[last + 1] <= _SEP) & (gap[last] == 0)
    if not touches.all():
        return None, np.zeros(n, dtype=np.int64), _texts_of(pos, sep_idx, first[~touches], n)
    values, counts, bad = _scan(buf.translate(None, _WS_BYTES), n)  # the pad holds none
    if bad is None:  # not reachable: the separators were counted already
        raise AssertionError("JSON number scan: separators changed with the whitespace")
    return values, counts, bad


def _words(w: NDArray[np.uint64], end: NDArray[np.int64], length: NDArray[np.int64]) -> NDArray[np.uint64]:
    """Value of the ``length`` (0-8) digits ending before ``end``, read as one little-endian word.

    ``w`` is the buffer viewed as overlapping 8-byte words: ``w[end]`` holds the
    8 bytes before ``end`` in text coordinates (the text starts after ``_PAD``).
    Three multiply-shift steps combine the digits in pairs, fours and the
    eight (Lemire 2021).
    """
    v = w[end]  # the last digit in the top byte
    v &= _KEEP_DIGITS[length]  # '0'..'9' -> 0..9, the bytes before the run -> 0 (leading zeros)
    v *= _U(2561)  # 10 * 256 + 1
    v >>= _U(8)
    v &= _U(0x00FF00FF00FF00FF)
    v *= _U(6553601)  # 100 * 65536 + 1
    v >>= _U(16)
    v &= _U(0x0000FFFF0000FFFF)
    v *= _U(42949672960001)  # 10000 * 2**32 + 1
    v >>= _U(32)
    return v


def _mantissas(w: NDArray[np.uint64], c: NDArray[np.uint8], i_end: NDArray[np.int64], la: NDArray[np.int64],
               f_end: NDArray[np.int64], lf: NDArray[np.int64]) -> NDArray[np.uint64]:
    """Integer digits then fraction digits as one integer (exact if la + lf <= 19: callers check)."""
    n = la.size
    if n and int(la.max()) <= 3:
        # integer parts of at most 3 digits (values below 1000): three byte reads beat a word
        small = c[i_end - 1].astype(np.int32)
        small -= 48
        for j in range(2, int(la.max()) + 1):
            d = c[i_end - j].astype(np.int32)
            d -= 48
            d *= la >= j  # a sign or a separator before shorter parts
            d *= 10 ** (j - 1)
            small += d
        mant = small.astype(np.uint64)
        frac = _words(w, f_end, np.minimum(lf, 8))
        runs: tuple[tuple[NDArray[np.uint64], NDArray[np.int64], NDArray[np.int64]], ...] = ((frac, f_end, lf),)
    else:
        both = _words(w, np.concatenate((i_end, f_end)), np.minimum(np.concatenate((la, lf)), 8))
        mant, frac = both[:n], both[n:]
        runs = ((mant, i_end, la), (frac, f_end, lf))
    for run, end, digits in runs:
        top = int(digits.max()) if n else 0
        for j in (8, 16):  # digits 9-16, 17-24 (more make the mantissa too long anyway)
            if top > j:
                long = np.flatnonzero(digits > j)
                run[long] += _words(w, end[long] - j, np.minimum(digits[long] - j, 8)) * _U(10**j)
    if n and int(lf.max()):
        mant *= _POW10_U[np.minimum(lf, 19)]
        mant += frac
    return mant


def _values(buf: bytes, c: NDArray[np.uint8], pos: NDArray[np.int64], code: NDArray[np.uint8],
            gap: NDArray[np.int64], exp_idx: NDArray[np.int64], start: NDArray[np.int64], la: NDArray[np.int64],
            i_end: NDArray[np.int64], lf: NDArray[np.int64], f_end: NDArray[np.int64], neg: NDArray[np.bool_],
            is_int: NDArray[np.bool_]) -> NDArray[np.float32]:
    """The float32 value of every number of checked texts, from the parts :func:`_parts` found."""
    # w[j]: the 8 bytes of buf from j, i.e. those before text position j (the text starts after the 8-byte pad)
    w = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    mant = _mantissas(w, c, i_end, la, f_end, lf)
    k = -lf  # the power of ten of the mantissa's last digit
    end = f_end  # of each number
    exact = la + lf <= 19  # else the mantissa did not fit 64 bits
    if exp_idx.size:
        # the exponent: digits after the mark or its sign, of the last number starting before it
        tok = np.searchsorted(start, pos[exp_idx]) - 1
        signed = code[exp_idx + 1] == _SIGN
        run = exp_idx + signed
        le = gap[run]
        end = f_end.copy()
        end[tok] = pos[run + 1]
        exact[tok] &= le <= 8
        ev = _words(w, pos[run + 1], np.minimum(le, 8)).astype(np.int64)
        negative = signed & (c[pos[exp_idx + 1]] == ord("-"))
        k[tok] += np.where(negative, -ev, ev)
    if int(k.max()) <= 0 and int(k.min()) >= -22 and int(mant.max()) <= _MAX_EXACT and exact.all():
        # the common case: every value is m / 10**j with exact operands, one correctly rounded division
        vals = mant.astype(np.float64)
        vals /= _POW10_F[-k]
    else:
        vals, slow = _near(mant, k, exact)
        if slow.size:
            # far exponents, subnormal float32, or within a few float64 ulps of a float32 rounding
            # boundary: the correctly rounded C parser decides (with the sign, in the text)
            lo = start[slow] - neg[slow] + len(_PAD)
            hi = end[slow] + len(_PAD)
            text = b",".join([buf[i:j] for i, j in zip(lo.tolist(), hi.tolist(), strict=True)])
            exact64 = np.fromstring(text, dtype=np.float64, sep=",")
            if exact64.size != slow.size:  # the grammar check passed, so this would be a parser disagreement
                raise AssertionError(f"np.fromstring read {exact64.size} numbers, expected {slow.size}")
            vals[slow] = np.abs(exact64)
    out = _to_float32(vals)
    # json.loads reads "-0" as the integer 0, whose float is +0.0; "-0.0" stays -0.0
    if is_int.any():
        neg &= ~(is_int & (mant == 0))
    sign = neg.astype(np.uint32)
    sign <<= np.uint32(31)
    out.view(np.uint32)[...] ^= sign  # negation is exact: flip the sign bit
    return out


def _to_float32(v: NDArray[np.float64]) -> NDArray[np.float32]:
    with np.errstate(over="ignore"):  # beyond float32 range: inf, rejected by the caller as non_finite
        return v.astype(np.float32)


_HALF_ULP32 = np.uint64(1 << 28)  # a float32 rounding boundary: float64 mantissa bits 28..0 = 1000...0
_LOW29 = np.uint64((1 << 29) - 1)
_MARGIN = 16  # float64 ulps: the error of _near's estimate is at most 2 or 3


def _near(mant: NDArray[np.uint64], k: NDArray[np.int64], exact: NDArray[np.bool_]
          ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """float64 estimates y of mant * 10**k, and the numbers whose float32 rounding y may get wrong.

    Only float32(round64(x)) is needed. y is within a few float64 ulps of
    round64(x) (at most four roundings of 2**-53 each); so float32(y) is right
    unless a float32 rounding boundary (a float64 whose low 29 mantissa bits
    are 1 followed by zeros) lies within that distance, y is outside the
    normal float32 range (subnormal boundaries are spaced otherwise), or the
    estimate does not apply (mantissa beyond 64 bits, |k| > 44).
    """
    y = mant.astype(np.float64)
    kk = np.clip(k, -44, 44)
    for part in (np.clip(kk, -22, 22), kk - np.clip(kk, -22, 22)):
        up = part > 0
        y *= np.where(up, _POW10_F[np.abs(part)], 1.0)
        y /= np.where(up, 1.0, _POW10_F[np.abs(part)])
    low = y.view(np.uint64) & _LOW29
    with np.errstate(invalid="ignore"):
        risky = np.abs(low.astype(np.int64) - np.int64(_HALF_ULP32)) <= _MARGIN
    risky |= (y < 2.0**-126) & (mant != 0)
    risky |= ~exact
    risky |= (k < -44) | (k > 44)
    # Clinger's exact case needs no check
    risky &= ~(exact & (mant <= _U(_MAX_EXACT)) & (k >= -22) & (k <= 22))  # (a wrapped mantissa is no proof)
    return y, np.flatnonzero(risky)
