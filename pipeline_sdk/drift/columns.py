"""One column of a batch, typed: finite numbers, or category counts, and how many values were null.

A column is whatever iterable the caller has (a list, a numpy array, a pandas Series).  Its type
is given, or inferred from the types of its values:

- ``int``, ``float`` and numpy numbers (never ``bool``) make a numeric column;
- ``str`` makes a categorical one, and so does ``bool`` (``"True"`` and ``"False"``): a flag is a
  category, as Evidently treats it;
- ``None``, ``float("nan")``, ``pandas.NA`` and, in numeric columns, ``±inf`` are nulls (Evidently
  drops them too before it tests a column);
- anything else, or a mix (numbers and text, booleans and numbers), is a ``ValueError`` that names
  the column and the types it found.

numpy arrays of numbers are converted in one call, never value by value; text columns are counted
with :class:`collections.Counter` and their distinct values classified once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..validation import short_repr
from .types import Counted, FeatureType, _is_nan, is_null, unsupported_dtype

FloatArray = npt.NDArray[np.float64]
_EMPTY = np.empty(0, dtype=np.float64)


@dataclass(frozen=True)
class Column:
    """One column of one batch: its rows, nulls, and either its finite numbers or its category counts."""

    kind: FeatureType | None  # None: every value was null, so the type is not known
    rows: int
    nulls: int
    numbers: FloatArray = field(default_factory=lambda: _EMPTY)  # numeric: the finite values, float64
    counts: Mapping[str, int] | None = None  # categorical: count per category


_is_null = is_null


def _class_of(value: object) -> str:
    """The type class of one value: null, bool, number, str or other."""
    if _is_null(value):
        return "null"
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | float | np.integer | np.floating):
        return "number"
    if isinstance(value, str):
        return "str"
    return "other"


def _type_names(values: Iterable[object]) -> str:
    return ", ".join(sorted({"float" if isinstance(v, np.floating) else type(v).__name__ for v in values}))


def _mixed(name: str, values: Iterable[object]) -> ValueError:
    return ValueError(
        f"column {name!r} holds {_type_names(values)}: a feature is numbers or categories, not both; "
        f"give types={{{name!r}: 'categorical'}} to profile its values as text, or clean the column"
    )


Values = np.ndarray[Any, Any] | list[object] | Counted


def as_values(arg: str, name: str, values: object) -> tuple[Values, FeatureType | None]:
    """A numpy array as it is, a pandas Series as numpy, any other iterable as a list; and a type hint.

    The hint is the type a pandas dtype implies where the values alone would not (a ``category``
    column of numbers is categorical).
    """
    if isinstance(values, np.ndarray):
        return values, None
    if type(values).__module__.startswith("pandas") and hasattr(values, "dtype"):
        from .frames import series_values  # noqa: PLC0415 - pandas is optional; only a Series gets here

        return series_values(name, values)
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise TypeError(
            f"{arg} must be an iterable of values, got {type(values).__name__} {short_repr(values)}"
        )
    return list(values), None


def describe_types(values: Values) -> str:
    """The types of a column's non-null values, for an error message."""
    if isinstance(values, Counted):
        values = list(values.counts)
    if isinstance(values, np.ndarray) and values.dtype.kind != "O":
        return str(values.dtype)
    return _type_names(
        v for v in (values.tolist() if isinstance(values, np.ndarray) else values) if not _is_null(v)
    )


def convert(name: str, values: Values, given: FeatureType | None) -> Column:
    """Type one column (given or inferred) and reduce it to numbers or counts."""
    if isinstance(values, np.ndarray):
        return _convert_array(name, values, given)
    if isinstance(values, Counted):
        if given is FeatureType.NUMERIC or (given is None and all(map(_is_null, values.counts))):
            return _convert_list(name, values.expand(), given)  # numbers wanted, or nothing but nulls
        return _categorical(name, values.rows, values.counts, given)
    return _convert_list(name, values, given)


def _numeric(rows: int, array: FloatArray) -> Column:
    mask = np.isfinite(array)
    finite = array if mask.all() else array[mask]  # no copy of a column without NaN or infinity
    return Column(FeatureType.NUMERIC, rows, rows - int(finite.size), numbers=finite)


def _categorical(name: str, rows: int, counted: Mapping[Any, int], given: FeatureType | None) -> Column:
    counts: dict[str, int] = {}
    nulls = 0
    for value, count in counted.items():
        if _is_null(value):
            nulls += count
            continue
        if given is None and _class_of(value) not in ("str", "bool"):
            raise _mixed(name, [v for v in counted if not _is_null(v)])
        key = value if type(value) is str else str(value)
        counts[key] = counts.get(key, 0) + count
    return Column(FeatureType.CATEGORICAL, rows, nulls, counts=counts)


def _convert_array(name: str, values: np.ndarray[Any, Any], given: FeatureType | None) -> Column:
    if values.ndim != 1:
        raise ValueError(f"column {name!r} must be one-dimensional, got shape {values.shape}")
    kind = values.dtype.kind
    rows = int(values.size)
    if kind == "O":
        return _convert_list(name, values.tolist(), given)
    if kind not in "biufU":
        raise unsupported_dtype(name, values.dtype)
    if given is FeatureType.CATEGORICAL or (given is None and kind in "bU"):
        if kind == "b":
            true = int(np.count_nonzero(values))
            counts = {key: n for key, n in (("True", true), ("False", rows - true)) if n}
            return Column(FeatureType.CATEGORICAL, rows, 0, counts=counts)
        return _categorical(name, rows, Counter(values.tolist()), FeatureType.CATEGORICAL)
    if kind == "U":  # given numeric
        return _convert_list(name, values.tolist(), given)
    return _numeric(rows, values.astype(np.float64, copy=False))


def _convert_list(name: str, values: list[object], given: FeatureType | None) -> Column:
    rows = len(values)
    if given is FeatureType.NUMERIC:
        return _numeric(rows, _floats(name, values))
    if given is FeatureType.CATEGORICAL:
        return _categorical(name, rows, Counter(values), given)
    classes = {_class_of(v) for v in _distinct_by_type(values)}
    classes.discard("null")
    if not classes:
        return Column(None, rows, rows)
    if classes == {"number"}:
        return _numeric(rows, _floats(name, values))
    if classes in ({"str"}, {"bool"}):
        return _categorical(name, rows, Counter(values), None)
    raise _mixed(name, [v for v in values if not _is_null(v)])


def _distinct_by_type(values: list[object]) -> list[object]:
    """One value of each type present, a non-null one where there is one (a float that is not NaN)."""
    kinds = len(set(map(type, values)))  # one pass at C speed; the loop below stops once it has them
    seen: dict[type, object] = {}
    for value in values:
        kind = type(value)
        if kind not in seen or _is_nan(seen[kind]):
            seen[kind] = value
            if len(seen) == kinds and not any(_is_nan(v) for v in seen.values()):
                break
    return list(seen.values())


def _floats(name: str, values: list[object]) -> FloatArray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        pass
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        if _is_null(value):
            out[i] = math.nan
            continue
        try:
            out[i] = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            found = f"{type(value).__name__} {short_repr(value)}"
            raise ValueError(f"types[{name!r}] is 'numeric' but the column holds {found}") from None
    return out
