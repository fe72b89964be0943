"""JSON text as TF Serving reads and writes it (``util/json_tensor.cc`` over RapidJSON 1.1.0).

- `loads`: RapidJSON's ``kParseNanAndInfFlag`` reads ``NaN``, ``-NaN``, ``Inf``, ``-Inf``,
  ``Infinity`` and ``-Infinity`` (Python's json only the first, fifth and sixth); parse errors
  carry RapidJSON's English messages and byte offsets.
- `decimal_value`: ``WriteDecimal``: a float is written as ``%g`` (six digits) when that reads
  back as the same value, else with full precision (``%.9g`` for float32); non-finite values as
  ``NaN``, ``Infinity``, ``-Infinity``.
- `show`: ``JsonValueToString`` for error messages: a number as ``WriteDecimal`` writes it, an
  object or array as RapidJSON's ``PrettyWriter`` (4-space indent), which stops at the first
  non-finite number (it cannot write one).
"""

from __future__ import annotations

import decimal
import json
import math
import re

import numpy as np

from keras_resnet.serving.repository import BadRequest

# Outside strings: the RapidJSON-only spellings of non-finite numbers, rewritten for Python.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|(-NaN|-?Inf(?!inity))')
_SPELLING = {"-NaN": "NaN", "Inf": "Infinity", "-Inf": "-Infinity"}
_OPEN = re.compile(r'"(?:[^"\\]|\\.)*"|([\[\]{}])')
TOO_DEEP = "The document nests arrays and objects too deeply for keras-resnet serve."
_MESSAGES = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Extra data": "The document root must not be followed by other values.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid control character at": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}


def loads(body: bytes):
    """Parses a request body as TF Serving's ``ParseJson`` does.

    Raises:
        BadRequest: ``JSON Parse error: <RapidJSON message> at offset: <byte offset>``.
    """
    if not body:
        raise BadRequest("JSON Parse error: The document is empty")
    text = body.decode("utf-8", "surrogateescape")  # RapidJSON does not validate UTF-8
    # RapidJSON's recursive parser reads any depth its stack holds; Python's stops near its
    # recursion limit (about 1,000 levels), which must not end the connection unanswered.
    too_deep = BadRequest(f"JSON Parse error: {TOO_DEEP}")
    try:
        return json.loads(text)
    except RecursionError:
        raise too_deep from None
    except ValueError as error:
        failure, failed_text = error, text
    rewritten, shifts = _rewrite_tokens(text)
    if shifts:
        try:
            return json.loads(rewritten)
        except RecursionError:
            raise too_deep from None
        except ValueError as error:
            failure, failed_text = error, rewritten
    else:
        shifts = []
    if not isinstance(failure, json.JSONDecodeError):  # e.g. an integer of over 4,300 digits
        raise BadRequest(f"JSON Parse error: {failure}") from None
    message = _message(failure, failed_text, failure.pos)
    position = failure.pos - sum(delta for end, delta in shifts if end <= failure.pos)
    offset = len(text[:position].encode("utf-8", "surrogateescape"))
    if message.startswith("Missing a closing quotation mark"):
        offset = len(body)  # RapidJSON stops at the end of the stream
    raise BadRequest(f"JSON Parse error: {message} at offset: {offset}") from None


def _rewrite_tokens(text):
    """``text`` with Inf/-Inf/-NaN respelled for Python, and ``(end, characters added)``."""
    shifts, pieces, last, added = [], [], 0, 0
    for match in _TOKENS.finditer(text):
        token = match.group(1)
        if token is None:
            continue
        spelling = _SPELLING[token]
        pieces += [text[last:match.start()], spelling]
        added += len(spelling) - len(token)
        shifts.append((match.end() + added, len(spelling) - len(token)))
        last = match.end()
    pieces.append(text[last:])
    return "".join(pieces), shifts


def _message(error, text, position):
    if error.msg.startswith("Unterminated string"):
        return "Missing a closing quotation mark in string."
    if error.msg == "Expecting value" and not text[:position].strip() and \
            not text[position:].strip():
        return "The document is empty."
    if error.msg == "Expecting ',' delimiter":
        stack = [m.group(1) for m in _OPEN.finditer(text[:position]) if m.group(1)]
        depth = []
        for bracket in stack:
            if bracket in "[{":
                depth.append(bracket)
            elif depth:
                depth.pop()
        if depth and depth[-1] == "{":
            return "Missing a comma or '}' after an object member."
        return "Missing a comma or ']' after an array element."
    return _MESSAGES.get(error.msg, error.msg)


def decimal_text(value: float, float32: bool = False) -> str:
    """``WriteDecimal``'s text for a float (float32 when ``float32``), as TF Serving writes it."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = "%g" % value
    back = float(np.float32(float(text))) if float32 else float(text)
    if back != value:
        text = ("%.9g" if float32 else "%.17g") % value
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def decimal_value(value, float32: bool = True) -> float:
    """The Python float a JSON parser reads from TF Serving's text for ``value``."""
    return float(decimal_text(value, float32))


def show(value) -> str:
    """``JsonValueToString``: a value as TF Serving quotes it in error messages."""
    if isinstance(value, float):
        return decimal_text(value)
    out = []
    _pretty(value, out, 0)
    return "".join(out)


def _pretty(value, out, depth):
    """RapidJSON's PrettyWriter; False where it stops (a non-finite number)."""
    indent = "    "
    if isinstance(value, (dict, list)):
        items = list(value.items()) if isinstance(value, dict) else list(value)
        opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
        out.append(opening)
        for index, item in enumerate(items):
            out.append(("," if index else "") + "\n" + indent * (depth + 1))
            if isinstance(value, dict):
                out.append(_string(item[0]) + ": ")
                item = item[1]
            if not _pretty(item, out, depth + 1):
                return False
        out.append(("\n" + indent * depth if items else "") + closing)
        return True
    if isinstance(value, float):
        if not math.isfinite(value):
            return False
        out.append(_grisu_text(value))
        return True
    out.append(_string(value) if isinstance(value, str) else json.dumps(value))
    return True


def _string(value):
    return json.dumps(value, ensure_ascii=False)


def _grisu_text(value):
    """RapidJSON's Writer::Double: shortest digits, Prettify's layout (``1e-7``, ``100.0``)."""
    if value == 0:
        return "-0.0" if math.copysign(1, value) < 0 else "0.0"
    sign, digits, exponent = decimal.Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digits))
    length, point = len(digits), len(digits) + exponent
    minus = "-" if value < 0 else ""
    if exponent >= 0 and point <= 21:
        return f"{minus}{digits}{'0' * exponent}.0"
    if 0 < point <= 21:
        return f"{minus}{digits[:point]}.{digits[point:]}"
    if -6 < point <= 0:
        return f"{minus}0.{'0' * -point}{digits}"
    mantissa = digits if length == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{minus}{mantissa}e{point - 1}"
