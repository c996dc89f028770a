"""Corrupting files of the sealed formats (checkpoints, LSTM weights) in the tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

__all__ = ["assert_every_flipped_byte_is_refused"]


def assert_every_flipped_byte_is_refused(path: Path, load: Callable[[Path], object],
                                         error: type[BaseException], match: str) -> None:
    """Flip one bit of each byte of *path* in turn: ``load(path)`` must raise *error* matching
    *match* every time, before ``np.load`` ever parses a byte (the checksum comes first).

    *path* holds its original bytes again afterwards, and ``np.load`` is the real one.
    """
    original = path.read_bytes()

    def no_parse(*args, **kwargs):
        raise AssertionError("np.load was called on bytes that do not match the checksum")

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(np, "load", no_parse)
            for i in range(len(original)):
                b = bytearray(original)
                b[i] ^= 0x01
                path.write_bytes(bytes(b))
                with pytest.raises(error, match=match):
                    load(path)
    finally:
        path.write_bytes(original)
