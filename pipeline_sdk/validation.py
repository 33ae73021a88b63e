"""Validators for everything a caller hands the SDK.

InfluxDB line protocol silently drops NaN and infinite fields and empty tags,
does not escape a tag that ends in a backslash, carries no line break in a
value, and accepts no integer beyond int64.  Rather than let a bad value
corrupt or vanish downstream, the SDK refuses it at the call site with a
``TypeError`` or ``ValueError`` that names the argument and the reason.
Anything these functions accept turns into valid line protocol.

Some text the SDK records itself, on paths that must not raise: the exception
a run ends with, log records and their extras.  For those, :func:`safe_text`
never refuses: text that is not valid Unicode keeps its lone surrogates as
backslash escapes (``\\udcff``, six characters), an object whose ``str()``
raises is described instead, and long text is cut with a marker that says how
much was cut.
"""

from __future__ import annotations

import decimal
import json
import math
import numbers
import re
import reprlib
from collections.abc import Callable
from typing import Any

from . import contract as c

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_NAME_LENGTH = 250  # metric, param, input and output names
MAX_IDENTITY_LENGTH = 63  # pipeline, step and run id: the Kubernetes label-value limit
MAX_TAG_LENGTH = 256  # any other tag value
MAX_TEXT_LENGTH = 32 * 1024  # string fields; escaped, they stay under InfluxDB's 64 KiB
MAX_JSON_DEPTH = 64  # containers nested in a JSON value (inputs and outputs): ``[]`` is 1, ``[[]]`` 2

# Metric, param, input and output names: letters, digits and _ . - / : (no spaces),
# starting with a letter, digit or underscore.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/:]*")
# Pipeline, step and run id are Kubernetes label values (the exporter reads them off pods).
IDENTITY_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.\-]*[A-Za-z0-9])?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_ESCAPE_NEEDED_RE = re.compile(r"[\\\n\r]")
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPE_MAP = {stored[1]: raw for raw, stored in c.STRING_FIELD_ESCAPES}


# Containers are shown a few levels and items deep, so a huge or deeply nested value is cheap to show.
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel = 3
_CONTAINERS = (list, tuple, dict, set, frozenset)
_JSON_CONTAINERS = (list, tuple, dict)  # what json.dumps descends into
_JsonContainer = list[Any] | tuple[Any, ...] | dict[Any, Any]  # one of _JSON_CONTAINERS, as a type


def short_repr(value: object, limit: int = 60) -> str:
    """The value as an error message shows it: its repr, at most ``limit`` characters; never raises."""
    try:
        text = _SHORT_REPR.repr(value) if isinstance(value, _CONTAINERS) else repr(value)
    except Exception as exc:  # noqa: BLE001 - a message about a bad value must not fail on the value
        text = f"<{type(value).__qualname__}: repr() raised {type(exc).__qualname__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_error(arg: str, value: object, expected: str) -> TypeError:
    return TypeError(f"{arg} must be {expected}, got {type(value).__name__} {short_repr(value)}")


def _value_error(arg: str, value: object, reason: str) -> ValueError:
    return ValueError(f"{arg}={short_repr(value)} is invalid: {reason}")


_NAME_RULE = "use letters, digits and _ . - / : only, starting with a letter, digit or _"
_IDENTITY_RULE = "use letters, digits and _ . - only, starting and ending with a letter or digit"


def _check_str(arg: str, value: object, max_length: int, empty: str | None) -> str:
    """A str of at most ``max_length`` characters; an empty one refused with the reason ``empty``."""
    if type(value) is not str:
        raise _type_error(arg, value, "a str")
    if not value and empty is not None:
        raise _value_error(arg, value, empty)
    if len(value) > max_length:
        raise _value_error(arg, value, f"longer than {max_length} characters ({len(value)})")
    return value


def _check_word(arg: str, value: object, max_length: int, pattern: re.Pattern[str], rule: str) -> str:
    """A non-empty str of at most ``max_length`` characters that ``pattern`` matches whole."""
    value = _check_str(arg, value, max_length, "must not be empty")
    if not pattern.fullmatch(value):
        raise _value_error(arg, value, rule)
    return value


def check_name(arg: str, value: object) -> str:
    """A metric, param, input or output name: becomes an InfluxDB tag value."""
    return _check_word(arg, value, MAX_NAME_LENGTH, NAME_RE, _NAME_RULE)


def check_identity(arg: str, value: object) -> str:
    """Pipeline, step or run id: an InfluxDB tag, a Prometheus label and a Kubernetes label value."""
    return _check_word(
        arg, value, MAX_IDENTITY_LENGTH, IDENTITY_RE, _IDENTITY_RULE + " (a Kubernetes label value)"
    )


MAX_ATTEMPT_LENGTH = 253  # a pod name (a DNS subdomain) names the attempt of a retried Job


def check_attempt(arg: str, value: object) -> str:
    """The attempt of a step run: "1", "2"... or a pod's name; an InfluxDB tag value."""
    return _check_word(arg, value, MAX_ATTEMPT_LENGTH, IDENTITY_RE, _IDENTITY_RULE)


def check_tag_value(arg: str, value: object, max_length: int = MAX_TAG_LENGTH) -> str:
    """Any free-form string that becomes an InfluxDB tag value."""
    value = _check_str(arg, value, max_length, "must not be empty (InfluxDB drops empty tags)")
    if "\n" in value or "\r" in value:
        raise _value_error(arg, value, "contains a line break, which line protocol cannot carry in a tag")
    if value.endswith("\\"):
        raise _value_error(arg, value, "ends in a backslash, which would escape the tag separator")
    if _CONTROL_RE.search(value):
        raise _value_error(arg, value, "contains a control character")
    _check_encodable(arg, value)
    return value


def _check_encodable(arg: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _value_error(arg, value, f"is not valid Unicode text ({exc.reason})") from None


def check_number(arg: str, value: object) -> float:
    """A metric value: a finite real number, returned as float (one InfluxDB field type)."""
    if type(value) is float:
        if math.isfinite(value):
            return value
        raise _value_error(arg, value, "must be a finite number (InfluxDB drops NaN and infinity)")
    if type(value) is int:
        if INT64_MIN <= value <= INT64_MAX:
            return float(value)
        raise _value_error(arg, value, "integer outside the int64 range")
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes)):
        raise _type_error(arg, value, "a real number")
    if isinstance(value, numbers.Integral):
        return check_number(arg, int(value))
    if isinstance(value, (numbers.Real, decimal.Decimal)):
        return check_number(arg, float(value))
    item = getattr(value, "item", None)  # numpy / torch scalars and 0-d arrays
    if callable(item):
        try:
            inner = item()
        except (TypeError, ValueError):
            raise _type_error(arg, value, "a real number (or a one-element array)") from None
        if isinstance(inner, (int, float)) and not isinstance(inner, bool):
            return check_number(arg, inner)
    raise _type_error(arg, value, "a real number")


def check_index(arg: str, value: object) -> int:
    """A list-metric position (step or epoch): an int64 of 0 or more."""
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise _type_error(arg, value, "an int")
        value = int(value)
    if not 0 <= value <= INT64_MAX:
        raise _value_error(arg, value, "must be from 0 to 2**63-1")
    return value


def check_int64(arg: str, value: object) -> int:
    """An integer field: an int (numpy's too, never a bool) in the int64 range."""
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise _type_error(arg, value, "an int")
        value = int(value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise _value_error(arg, value, "integer outside the int64 range")
    return value


def check_text(arg: str, value: object, max_length: int = MAX_TEXT_LENGTH) -> str:
    """A string field: any Unicode text up to ``max_length`` characters."""
    value = _check_str(arg, value, max_length, None)
    _check_encodable(arg, value)
    return value


def escape_text(value: str) -> str:
    """Store a string field: double backslashes, and turn CR and LF into backslash escapes."""
    if _ESCAPE_NEEDED_RE.search(value) is None:
        return value
    for raw, stored in c.STRING_FIELD_ESCAPES:
        value = value.replace(raw, stored)
    return value


def unescape_text(value: str) -> str:
    """Read a string field back: the inverse of :func:`escape_text`."""
    if "\\" not in value:
        return value
    return _UNESCAPE_RE.sub(lambda m: _UNESCAPE_MAP.get(m.group(1), m.group(0)), value)


def truncate_text(value: str, max_length: int = MAX_TEXT_LENGTH) -> str:
    """Shorten text for paths that must not raise (log records), saying how much was cut.

    Text of ``max_length`` characters or fewer is returned as it is; longer text becomes
    exactly ``max_length`` characters: a prefix, then ``... [N characters truncated by mlobs]``
    where N is the number of characters cut (so the prefix and N add up to the original length).
    """
    if len(value) <= max_length:
        return value
    cut = len(value) - max_length
    while True:  # the marker's own length depends on N's digits: at most a few rounds
        marker = f"... [{cut} characters truncated by mlobs]"
        kept = max_length - len(marker)
        if kept < 0:
            return value[:max_length]  # no room for the marker
        if len(value) - kept == cut:
            return value[:kept] + marker
        cut = len(value) - kept


def describe(value: object) -> str:
    """``str(value)``, for paths that must not raise: if ``str()`` raises, a description instead.

    For example ``<unprintable ValueError: str() raised RuntimeError>``.
    """
    if type(value) is str:
        return value
    try:
        return str(value)
    except Exception as exc:  # noqa: BLE001 - recorded instead of the text it could not give
        return f"<unprintable {type(value).__qualname__}: str() raised {type(exc).__qualname__}>"


def describe_error(exc: BaseException) -> str:
    """An exception as one line of text: ``"OSError: disk full"``; never raises."""
    return f"{type(exc).__qualname__}: {describe(exc)}"


def escape_surrogates(value: str) -> str:
    """Text that encodes as UTF-8: each lone surrogate becomes a backslash escape (``\\udcff``)."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def safe_text(value: object, max_length: int = MAX_TEXT_LENGTH) -> str:
    """Text of any object for a string field on a path that must not raise; never raises.

    :func:`describe`, then :func:`escape_surrogates`, then :func:`truncate_text` to ``max_length``.
    """
    return truncate_text(escape_surrogates(describe(value)), max_length)


def json_nesting_problem(value: object, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why ``value`` cannot be JSON text: a circular reference or containers nested deeper
    than ``max_depth`` (lists, tuples and dicts; ``[]`` is 1 deep, ``[[]]`` 2).  None if neither.

    The walk itself stops at ``max_depth``, so a value nested 10,000 deep is cheap to refuse.
    """
    on_path: set[int] = set()

    def walk(node: _JsonContainer, depth: int) -> str | None:
        if id(node) in on_path:
            return "contains a circular reference"
        if depth > max_depth:
            return f"nested more than {max_depth} deep"
        on_path.add(id(node))
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, _JSON_CONTAINERS):
                problem = walk(child, depth + 1)
                if problem is not None:
                    return problem
        on_path.discard(id(node))
        return None

    if not isinstance(value, _JSON_CONTAINERS):
        return None
    try:
        return walk(value, 1)
    except RecursionError:  # the caller's own stack was already deep
        return "nested too deep to encode here"


def json_dumps(value: object, default: Callable[[Any], Any] | None = None, *, allow_nan: bool = False) -> str:
    """JSON text with sorted keys; a dict whose keys cannot be sorted (``{1: "a", "b": 2}``) keeps
    its own order.  Raises what :func:`json.dumps` raises for anything else."""
    options: dict[str, Any] = {"allow_nan": allow_nan, "ensure_ascii": False, "default": default}
    try:
        return json.dumps(value, sort_keys=True, **options)
    except TypeError:
        # Keys of mixed types cannot be sorted; unsorted they can still be written.
        return json.dumps(value, **options)


def check_json(arg: str, value: object, max_length: int = MAX_TEXT_LENGTH) -> str:
    """A value stored as JSON text (an input or output), returned as that text.

    Refused with a ``ValueError`` naming ``arg``: NaN or infinity anywhere, a circular
    reference, containers nested more than :data:`MAX_JSON_DEPTH` (64) deep, text that is not
    valid Unicode (a lone surrogate, in a value or a key), and JSON text longer than
    ``max_length`` characters.  A type JSON has no form for is a ``TypeError``.
    """
    try:
        text = json_dumps(value)
    except RecursionError:
        raise _value_error(arg, value, json_nesting_problem(value) or "nested too deep to encode") from None
    except ValueError as exc:  # circular, or NaN / infinity somewhere inside
        raise _value_error(arg, value, json_nesting_problem(value) or str(exc)) from None
    except TypeError as exc:
        raise TypeError(f"{arg} must be JSON-serialisable: {exc}") from None
    if len(text) > max_length:
        raise _value_error(arg, value, f"{len(text)} characters once JSON-encoded, more than {max_length}")
    problem = json_nesting_problem(value)
    if problem is not None:
        raise _value_error(arg, value, problem)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _value_error(arg, value, f"holds text that is not valid Unicode ({exc.reason})") from None
    return text


def param_value(arg: str, value: Any) -> tuple[str, float | None]:
    """A param: its stored string form and, for numbers, its numeric form."""
    if value is None or isinstance(value, bool):
        return str(value), None
    if isinstance(value, str):
        return check_text(arg, value, 4096), None
    if isinstance(value, (int, float, numbers.Real)):
        number = check_number(arg, value)
        if isinstance(value, numbers.Integral):
            return str(int(value)), number
        return repr(number), number
    raise _type_error(arg, value, "a str, int, float, bool or None")
