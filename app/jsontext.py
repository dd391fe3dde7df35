"""JSON text in and out, exact for every number: orjson on the hot path, the standard library for
the rare document with an integer orjson cannot hold.

orjson parses an integer literal wider than 64 bits as the nearest double and refuses to write
a Python int that wide. A key-value store must give back what it accepted, so a document that
may hold such an integer (a run of 19 or more digits) is parsed by the standard library, which
keeps integers exact, under the same rules orjson applies (strict UTF-8, no NaN or Infinity, no
lone surrogates, finite doubles), and such an integer is written out as its digits.

Numbers with a fraction or an exponent are IEEE doubles (as I-JSON, RFC 7493, recommends): they
come back as the shortest text that reads as the same double, so 1.0 stays 1.0, -0.0 stays
-0.0 and 1e300 comes back as 1e+300. A number a double cannot hold is refused, whichever way it
misses: too large (1e400 would be infinity) or too small (1e-400 would be 0, a different value).

As I-JSON requires, an object may not name a member twice: {"key": "a", "key": "b"} is refused
rather than read as whichever came last.
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
# Text orjson would not read exactly: a possible integer past 64 bits (19 digits reach past 2**63),
# or an exponent of three digits, which may put a double out of range either way.
_NEEDS_EXACT = re.compile(rb"[0-9]{19}|[eE][-+]?[0-9]{3}")
# Every string of a document, in order; group 1 is set when the string names an object member.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"(\s*:)?')
# Python refuses to convert longer digit strings (quadratic time); so does this service.
MAX_INTEGER_DIGITS = sys.get_int_max_str_digits() or 4300


class IntegerTooLong(ValueError):
    """An integer literal with more than MAX_INTEGER_DIGITS digits."""


class NestedTooDeep(ValueError):
    """Arrays and objects nested past what the exact parser can follow (about 1,000 levels)."""


def loads(raw: bytes) -> Any:
    """The document in `raw`, parsed strictly; raises json.JSONDecodeError (orjson's is one)
    for anything that is not valid JSON, IntegerTooLong for an integer too long to keep, and
    NestedTooDeep for nesting the exact parser cannot follow."""
    document = orjson.loads(raw) if _NEEDS_EXACT.search(raw) is None else _exact_loads(raw)
    if _members(document) != _named_members(raw):  # a name given twice kept only its last member
        raise json.JSONDecodeError("an object names a member more than once", "", 0)
    return document


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
        raise NestedTooDeep("arrays and objects nest too deeply") from None
    except ValueError as exc:  # the one ValueError json.loads lets through: int() refusing
        raise IntegerTooLong(f"integers have at most {MAX_INTEGER_DIGITS} digits") from exc
    if not _all_utf8(document):  # what orjson refuses on the way in: escaped lone surrogates
        raise json.JSONDecodeError("str is not valid UTF-8: surrogates not allowed", text, 0)
    return document


def _no_constants(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)


def _double(literal: str) -> float:
    number = float(literal)
    if math.isinf(number):
        raise json.JSONDecodeError("number is infinity when parsed as double", literal, 0)
    mantissa = literal.lower().partition("e")[0]
    if number == 0 and mantissa.strip("-+.0"):
        raise json.JSONDecodeError("number is too small for a double: it would be 0", literal, 0)
    return number


def _all_utf8(document: Any) -> bool:
    """Whether every string in the document, member names included, can be written as UTF-8
    (without recursion: the document may nest deeper than the interpreter's stack allows)."""
    pending = [document]
    while pending:
        item = pending.pop()
        strings: list[Any] = []
        if isinstance(item, dict):
            strings = list(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            strings = [item]
        for string in strings:
            try:
                string.encode()
            except UnicodeEncodeError:
                return False
    return True


def _members(document: Any) -> int:
    """How many object members the parsed document holds, at every depth (without recursion)."""
    count, pending = 0, [document]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            count += len(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return count


def _named_members(raw: bytes) -> int:
    """How many object members the text names: strings followed by a colon."""
    return sum(1 for colon in _STRING.findall(raw) if colon)


def _wide_ints_as_digits(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _wide_ints_as_digits(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_wide_ints_as_digits(item) for item in value]
    if isinstance(value, int) and value not in _ORJSON_INTS:
        return orjson.Fragment(str(value))
    return value
