"""Validators for everything a caller hands the SDK.

InfluxDB line protocol silently drops NaN and infinite fields and empty tags,
does not escape a tag that ends in a backslash, carries no line break in a
value, and accepts no integer beyond int64.  Rather than let a bad value
corrupt or vanish downstream, the SDK refuses it at the call site with a
``TypeError`` or ``ValueError`` that names the argument and the reason.
Anything these functions accept turns into valid line protocol.
"""

from __future__ import annotations

import decimal
import math
import numbers
import re
from typing import Any

from . import contract as c

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_NAME_LENGTH = 250  # metric, param, input and output names
MAX_IDENTITY_LENGTH = 63  # pipeline, step and run id: the Kubernetes label-value limit
MAX_TAG_LENGTH = 256  # any other tag value
MAX_TEXT_LENGTH = 32 * 1024  # string fields; escaped, they stay under InfluxDB's 64 KiB

# Metric, param, input and output names: letters, digits and _ . - / : (no spaces),
# starting with a letter, digit or underscore.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/:]*")
# Pipeline, step and run id are Kubernetes label values (the exporter reads them off pods).
IDENTITY_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.\-]*[A-Za-z0-9])?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_ESCAPE_NEEDED_RE = re.compile(r"[\\\n\r]")
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPE_MAP = {stored[1]: raw for raw, stored in c.STRING_FIELD_ESCAPES}


def _show(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_error(arg: str, value: object, expected: str) -> TypeError:
    return TypeError(f"{arg} must be {expected}, got {type(value).__name__} {_show(value)}")


def _value_error(arg: str, value: object, reason: str) -> ValueError:
    return ValueError(f"{arg}={_show(value)} is invalid: {reason}")


def check_name(arg: str, value: object) -> str:
    """A metric, param, input or output name: becomes an InfluxDB tag value."""
    if type(value) is not str:
        raise _type_error(arg, value, "a str")
    if not value:
        raise _value_error(arg, value, "must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise _value_error(arg, value, f"longer than {MAX_NAME_LENGTH} characters ({len(value)})")
    if not NAME_RE.fullmatch(value):
        raise _value_error(
            arg,
            value,
            "use letters, digits and _ . - / : only, starting with a letter, digit or _",
        )
    return value


def check_identity(arg: str, value: object) -> str:
    """Pipeline, step or run id: an InfluxDB tag, a Prometheus label and a Kubernetes label value."""
    if type(value) is not str:
        raise _type_error(arg, value, "a str")
    if not value:
        raise _value_error(arg, value, "must not be empty")
    if len(value) > MAX_IDENTITY_LENGTH:
        raise _value_error(arg, value, f"longer than {MAX_IDENTITY_LENGTH} characters ({len(value)})")
    if not IDENTITY_RE.fullmatch(value):
        raise _value_error(
            arg,
            value,
            "use letters, digits and _ . - only, starting and ending with a letter or digit "
            "(a Kubernetes label value)",
        )
    return value


def check_tag_value(arg: str, value: object, max_length: int = MAX_TAG_LENGTH) -> str:
    """Any free-form string that becomes an InfluxDB tag value."""
    if type(value) is not str:
        raise _type_error(arg, value, "a str")
    if not value:
        raise _value_error(arg, value, "must not be empty (InfluxDB drops empty tags)")
    if len(value) > max_length:
        raise _value_error(arg, value, f"longer than {max_length} characters ({len(value)})")
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


def check_text(arg: str, value: object, max_length: int = MAX_TEXT_LENGTH) -> str:
    """A string field: any Unicode text up to ``max_length`` characters."""
    if type(value) is not str:
        raise _type_error(arg, value, "a str")
    if len(value) > max_length:
        raise _value_error(arg, value, f"longer than {max_length} characters ({len(value)})")
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
    """Shorten text for paths that must not raise (log records), saying how much was cut."""
    if len(value) <= max_length:
        return value
    marker = f"... [{len(value) - max_length} characters truncated by mlobs]"
    return value[: max_length - len(marker)] + marker


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
