"""The two kinds of feature a profile knows, the check of a ``types=`` argument, what a null is, and a
column given as counted values."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..validation import short_repr

_NULL_TYPE_NAMES = frozenset({"NoneType", "NAType", "NaTType"})  # None, pandas.NA, pandas.NaT


class FeatureType(enum.StrEnum):
    """How a feature is profiled: numbers get a quantile sketch, categories a frequent-items sketch."""

    NUMERIC = "numeric"  # int and float values (never bool): min, max, mean, std and a KLL sketch
    CATEGORICAL = "categorical"  # str and bool values: a frequent-items sketch of their counts


def check_types(arg: str, types: object) -> dict[str, FeatureType]:
    """``types={"zip": "categorical"}``: a mapping of column name to a :class:`FeatureType` or its value."""
    if types is None:
        return {}
    if not isinstance(types, Mapping):
        raise TypeError(
            f"{arg} must be a mapping of column name to 'numeric' or 'categorical', got "
            f"{type(types).__name__} {short_repr(types)}"
        )
    checked: dict[str, FeatureType] = {}
    for name, kind in types.items():
        if type(name) is not str:
            raise TypeError(f"{arg} key must be a str, got {type(name).__name__} {short_repr(name)}")
        try:
            checked[name] = FeatureType(kind)
        except ValueError:
            raise ValueError(
                f"{arg}[{name!r}]={short_repr(kind)} is invalid: must be 'numeric' or 'categorical'"
            ) from None
    return checked


def unsupported_dtype(name: str, dtype: object) -> TypeError:
    """A column of dates, bytes, complex numbers...: profiles know numbers and categories only."""
    return TypeError(f"column {name!r} has dtype {dtype}: a feature is numbers, text or booleans; convert it")


def _is_nan(value: object) -> bool:
    return isinstance(value, float | np.floating) and math.isnan(value)


def is_null(value: object) -> bool:
    """None, NaN, pandas.NA or pandas.NaT."""
    return type(value).__name__ in _NULL_TYPE_NAMES or _is_nan(value)


@dataclass(frozen=True)
class Counted:
    """A text column given as its distinct values and their counts (a pandas Series' value_counts)."""

    rows: int
    counts: Mapping[object, int]  # every key a str or a null

    def __len__(self) -> int:
        return self.rows

    def expand(self) -> list[object]:
        return [value for value, n in self.counts.items() for _ in range(n)]
