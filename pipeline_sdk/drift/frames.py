"""pandas, when it is installed: a Series' values as numpy, typed by its dtype."""

from __future__ import annotations

from typing import Any

import numpy as np

from .types import FeatureType, unsupported_dtype


def series_values(name: str, series: Any) -> tuple[np.ndarray[Any, Any], FeatureType | None]:
    """A Series as a numpy array its dtype fits, with nulls as NaN (numbers) or None (anything else)."""
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
        return series.to_numpy(dtype=object, na_value=None), None
    raise unsupported_dtype(name, dtype)


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
