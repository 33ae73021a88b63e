"""pandas, when it is installed: a Series' values as numpy, typed by its dtype."""

from __future__ import annotations

from typing import Any

import numpy as np

from .types import Counted, FeatureType, is_null, unsupported_dtype


def series_values(name: str, series: Any) -> tuple[np.ndarray[Any, Any] | Counted, FeatureType | None]:
    """A Series as a numpy array its dtype fits, with nulls as NaN (numbers) or None (anything else);
    a text Series as its counted values."""
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]  # noqa: PLC0415 - optional

    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return series.to_numpy(dtype=object, na_value=None), FeatureType.CATEGORICAL
    if pd.api.types.is_bool_dtype(dtype):
        if dtype == np.bool_:
            return series.to_numpy(), None
        return series.to_numpy(dtype=object, na_value=None), None
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan), None
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        counted = _text_counts(series)
        if counted is not None:
            return counted, None
        return series.to_numpy(dtype=object, na_value=None), None
    raise unsupported_dtype(name, dtype)


def _text_counts(series: Any) -> Counted | None:
    """The Series' values and counts when every value is a str or a null (else None: look at each).

    Only text: pandas counts 1, 1.0 and True as one key, and a column mixing them must be refused.
    """
    try:
        counts = series.value_counts(dropna=False, sort=False)
    except TypeError:  # an unhashable value (a list): looked at one by one, and refused there
        return None
    items: dict[object, int] = {}
    for value, n in zip(counts.index.tolist(), counts.tolist(), strict=True):
        if type(value) is not str and not is_null(value):
            return None
        items[value] = items.get(value, 0) + n
    return Counted(len(series), items)


def frame_columns(frame: object) -> dict[object, Any]:
    """A DataFrame's columns by name; a ``TypeError`` for anything that is not a DataFrame."""
    try:
        import pandas as pd  # type: ignore[import-untyped, unused-ignore]  # noqa: PLC0415 - optional
    except ImportError:
        raise TypeError(
            f"frame must be a pandas DataFrame (pandas is not installed), got {type(frame).__name__}"
        ) from None
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    if not frame.columns.is_unique:
        raise ValueError(
            f"frame has duplicate column names: {sorted(map(str, frame.columns[frame.columns.duplicated()]))}"
        )
    return {name: frame[name] for name in frame.columns}
