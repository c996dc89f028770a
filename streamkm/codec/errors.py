"""Decode failures as values: :class:`DecodeError` and its bounded set of :data:`REASONS`.

Decoders never raise on bad data; each bad record becomes a ``DecodeError``
(the reasons are documented in ``docs/formats.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REASONS", "DecodeError"]

#: Every value DecodeError.reason can take (bounded: used as a metric label);
#: ``docs/formats.md`` says what each means. ``encoding``: JSON text that is not
#: UTF-8 (a byte-order mark, UTF-16 or UTF-32; RFC 8259 section 8.1 requires UTF-8).
REASONS: tuple[str, ...] = (
    "empty",
    "oversized",
    "not_json",
    "encoding",
    "schema",
    "dtype",
    "dimension",
    "non_finite",
    "truncated",
    "bad_header",
    "bad_magic",
    "unsupported_version",
)


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Why one record could not be decoded (a value, not an exception).

    Parameters
    ----------
    reason : str
        One of :data:`REASONS` (bounded; safe as a metric label).
    exc_type : str
        Class name of the underlying error (e.g. ``"JSONDecodeError"``,
        ``"ValueError"``), for the dead-letter ``exception.class`` header.
    message : str
        Human-readable detail naming the offending values.
    """

    reason: str
    exc_type: str
    message: str

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown decode error reason {self.reason!r}; expected one of {REASONS}")


class _Bad(Exception):
    """Internal: carries a DecodeError out of per-record helpers."""

    def __init__(self, reason: str, message: str, exc_type: str = "ValueError"):
        super().__init__(message)
        self.err = DecodeError(reason, exc_type, message)
