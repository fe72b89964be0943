"""Argument checks shared by every entry point (library, CLI, tuning, export, serving).

One rule for every check, so the same bad value gets the same answer wherever it is passed:

* a value of the wrong *type* (``2.0`` or ``"2"`` or ``True`` where an int is expected) raises
  ``TypeError``; a value of the right type that is *out of range* raises ``ValueError``;
* the message always reads ``"{argument} must be {what is accepted}; got {value!r}"``, naming
  the argument as the caller spells it (``"batch_size"`` in Python, the CLI prints it under its
  own flag name through ``keras-resnet``'s error handler).

Pure Python: no TensorFlow or Keras import, so the CLI can check before anything heavy loads.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Iterable

# TF Serving model names and our export / run / project names: safe as a directory name on every
# file system and as a URL path segment.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
NAME_RULE = ("1-128 letters, digits, '_', '-' or '.', starting with a letter or digit and "
             "without '..'")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(value, argument: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """Returns ``value`` as an ``int`` if it is an integer in ``[minimum, maximum]``.

    Raises:
        TypeError: ``value`` is not an integer (``bool`` and ``2.0`` included).
        ValueError: ``value`` is below ``minimum`` or above ``maximum``.
    """
    if maximum is not None:
        accepted = f"an int in [{minimum}, {maximum}]"
    else:
        accepted = "a positive int (1, 2, 64, ...)" if minimum == 1 else f"an int >= {minimum}"
    if not _is_int(value):
        raise TypeError(f"{argument} must be {accepted}; got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{argument} must be {accepted}; got {value!r}")
    return int(value)


def optional_positive_int(value, argument: str, **bounds) -> int | None:
    """``None`` or :func:`positive_int`."""
    return None if value is None else positive_int(value, argument, **bounds)


def number(value, argument: str, *, minimum: float | None = None,
           maximum: float | None = None, min_inclusive: bool = True,
           max_inclusive: bool = True, example: str | None = None) -> float:
    """Returns ``value`` as a finite ``float`` within the given bounds.

    Args:
        value: the value to check.
        argument: its name in the caller's API.
        minimum, maximum: bounds (``None``: unbounded).
        min_inclusive, max_inclusive: whether the bounds themselves are accepted.
        example: a typical value shown in the message (e.g. ``"0.1"``).

    Raises:
        TypeError: ``value`` is not a real number (``bool`` and strings included).
        ValueError: ``value`` is NaN, infinite or out of bounds.
    """
    accepted = _range_text(minimum, maximum, min_inclusive, max_inclusive)
    if example is not None:
        accepted += f" (e.g. {example})"
    if not _is_number(value):
        raise TypeError(f"{argument} must be {accepted}; got {value!r}")
    value = float(value)
    too_low = minimum is not None and (value < minimum or (value == minimum and not min_inclusive))
    too_high = maximum is not None and (value > maximum or (value == maximum and not max_inclusive))
    if not math.isfinite(value) or too_low or too_high:
        raise ValueError(f"{argument} must be {accepted}; got {value!r}")
    return value


def _range_text(minimum, maximum, min_inclusive, max_inclusive) -> str:
    if minimum is not None and maximum is not None:
        left, right = "[" if min_inclusive else "(", "]" if max_inclusive else ")"
        return f"a number in {left}{minimum:g}, {maximum:g}{right}"
    if minimum is not None:
        return f"a number {'>=' if min_inclusive else '>'} {minimum:g}"
    if maximum is not None:
        return f"a number {'<=' if max_inclusive else '<'} {maximum:g}"
    return "a finite number"


def positive_number(value, argument: str, *, example: str | None = None) -> float:
    """A finite number > 0."""
    return number(value, argument, minimum=0, min_inclusive=False, example=example)


def non_negative(value, argument: str, *, example: str | None = None) -> float:
    """A finite number >= 0."""
    return number(value, argument, minimum=0, example=example)


def fraction(value, argument: str, *, allow_one: bool = False) -> float:
    """A number in ``[0, 1)`` (``[0, 1]`` with ``allow_one``)."""
    return number(value, argument, minimum=0, maximum=1, max_inclusive=allow_one)


def boolean(value, argument: str) -> bool:
    """``True`` or ``False`` (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise TypeError(f"{argument} must be True or False; got {value!r}")
    return value


def one_of(value, argument: str, choices: Iterable) -> object:
    """Returns ``value`` if it is one of ``choices``.

    Raises:
        ValueError: naming every accepted choice.
    """
    choices = tuple(choices)
    try:
        accepted = value in choices
    except TypeError:  # unhashable values in a set/dict of choices
        accepted = False
    if not accepted:
        raise ValueError(f"{argument} must be one of {', '.join(repr(c) for c in choices)}; "
                         f"got {value!r}")
    return value


def name(value, argument: str = "name") -> str:
    """A model, export, run or project name (``NAME_RULE``).

    Raises:
        TypeError: ``value`` is not a string.
        ValueError: it breaks the rule.
    """
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str of {NAME_RULE}; got {value!r}")
    if not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise ValueError(f"{argument} must be {NAME_RULE}; got {value!r}")
    return value


def writable_dir(path, argument: str) -> str:
    """A directory that exists and is writable, or can be created (checked before long work).

    Creates nothing. Raises ``ValueError`` when ``path`` is an existing file or when the nearest
    existing ancestor is not a writable directory.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a directory path; got {path!r}")
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{argument} must be a directory; got {path!r}, which is a file")
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ValueError(f"{argument} must be a directory path; got {path!r}, but {probe!r} is "
                         "a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{argument} must be a writable directory; got {path!r} "
                         f"({probe!r} is not writable)")
    return path


def created_dir(path, argument: str) -> str:
    """`writable_dir`, then the directory made now (parents too) unless it exists.

    Making it is the only sure check: permission bits cannot tell of ``/proc``, read-only
    mounts or root's access. Raises ``ValueError`` naming ``argument``, the path and the OS
    reason (``--out '/proc/x' cannot be created: No such file or directory``).
    """
    path = writable_dir(path, argument)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{argument} {path!r} cannot be created: "
                         f"{error.strerror or error}") from None
    return path
