"""JSON text in and out, exact for every number: orjson on the hot path, the standard library for
the rare document with an integer orjson cannot hold.

orjson parses an integer literal wider than 64 bits as the nearest double and refuses to write
a Python int that wide. A key-value store must give back what it accepted, so a document that
may hold such an integer (a run of 19 or more digits) is parsed by the standard library, which
keeps integers exact, under the same rules orjson applies (strict UTF-8, no NaN or Infinity, no
lone surrogates, finite doubles), and such an integer is written out as its digits.

Numbers with a fraction or an exponent are IEEE doubles (as I-JSON, RFC 7493, recommends): they
come back as the shortest text that reads as the same double, so 1.0 stays 1.0, -0.0 stays
-0.0 and 1e300 comes back as 1e+300.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

import orjson

# The widest integers orjson writes: signed and unsigned 64 bits.
_ORJSON_INTS = range(-(2**63), 2**64)
# A possible integer literal orjson would not keep exactly (19 digits reach past 2**63).
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
# Python refuses to convert longer digit strings (quadratic time); so does this service.
MAX_INTEGER_DIGITS = sys.get_int_max_str_digits() or 4300


class IntegerTooLong(ValueError):
    """An integer literal with more than MAX_INTEGER_DIGITS digits."""


def loads(raw: bytes) -> Any:
    """The document in `raw`, parsed strictly; raises json.JSONDecodeError (orjson's is one)
    for anything that is not valid JSON, IntegerTooLong for an integer too long to keep."""
    if _LONG_DIGITS.search(raw) is None:
        return orjson.loads(raw)
    return _exact_loads(raw)


def dumps(value: Any, option: int = 0) -> bytes:
    """`value` as JSON text (orjson `option`s apply); integers of any size exactly."""
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError:
        try:
            exact = _wide_ints_as_digits(value)
        except RecursionError:
            raise orjson.JSONEncodeError("nested too deeply") from None
        return orjson.dumps(exact, option=option)


def _exact_loads(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError(f"str is not valid UTF-8: {exc.reason}", "", exc.start) from None
    try:
        document = json.loads(text, parse_constant=_no_constants, parse_float=_double)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    except ValueError as exc:  # the one ValueError json.loads lets through: int() refusing
        raise IntegerTooLong(f"integers have at most {MAX_INTEGER_DIGITS} digits") from exc
    try:
        dumps(document)  # refuses what orjson refuses on the way in: lone surrogates
    except orjson.JSONEncodeError as exc:
        raise json.JSONDecodeError(str(exc), text, 0) from None
    return document


def _no_constants(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)


def _double(literal: str) -> float:
    number = float(literal)
    if math.isinf(number):
        raise json.JSONDecodeError("number is infinity when parsed as double", literal, 0)
    return number


def _wide_ints_as_digits(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _wide_ints_as_digits(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_wide_ints_as_digits(item) for item in value]
    if isinstance(value, int) and value not in _ORJSON_INTS:
        return orjson.Fragment(str(value))
    return value
