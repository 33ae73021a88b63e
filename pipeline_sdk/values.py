"""Conversions of the values people have into what the SDK records.

Inputs and outputs (``log_input``, ``log_output``) are stored as JSON text.  Plain Python
values go to :func:`~pipeline_sdk.validation.check_json` as they are; a value JSON has no
form for is converted first, the obvious way:

* numpy scalars: ``np.float64`` / ``np.float32`` -> float, ``np.int64`` (any integer) -> int,
  ``np.bool_`` -> bool, ``np.str_`` -> str, ``np.datetime64`` -> ISO text (NaT -> null);
* numpy arrays -> nested lists (a 0-d array -> its item); datetime64 arrays -> ISO text;
* a pandas ``Series`` -> a dict of its index labels to its values (a Series is a labelled
  column and its labels carry the meaning, e.g. ``value_counts()``; pass ``s.tolist()`` for a
  plain list); a ``DataFrame`` -> a dict of columns, each such a dict (pandas' own
  ``df.to_dict()``, so ``df.describe()`` keeps its row names); an ``Index`` -> a list;
* ``pd.Timestamp``, ``datetime`` and ``date`` -> ISO 8601 text (with the offset when aware);
* dict keys of those types -> text; other mappings -> dicts; tuples -> lists.

Missing values: inside a pandas object NaN means "missing", so it is stored as null, and so
are ``pd.NA`` and ``NaT`` anywhere.  A float NaN or infinity anywhere else (a plain float,
a numpy scalar or array) is refused as before: it usually means a computation went wrong.

What has no JSON form (complex numbers, timedeltas, raw bytes...) is refused with a
``TypeError`` that names where it is (``value['z'][3]``) and says how to convert it.  The
bounds of :func:`~pipeline_sdk.validation.check_json` hold for the converted value
(32,768 characters, 64 levels of nesting); an array or frame with more items than could
ever fit is refused before it is converted.

Params (``log_param``, ``log_params``, ``run(params=...)``) are flat name/value pairs:
nested configs (dicts, OmegaConf-like mappings, ``argparse.Namespace``, dataclasses) are
flattened to dotted names (``{"optim": {"lr": 0.1}}`` -> ``optim.lr``), a list, tuple or
numpy array is stored as its JSON text, numpy scalars as their Python value, paths as their
text and timestamps as ISO text.

numpy and pandas are optional: this module never imports them.  A value can only be a
numpy or pandas object if that library is already imported, so the checks look it up
in ``sys.modules``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from .validation import MAX_JSON_DEPTH, MAX_TEXT_LENGTH, check_json, check_name, param_value, short_repr

_PARAM_TEXT = 4096  # characters of a param's stored text (as validation.param_value allows)
_SUMMARY_HINT = "log a summary instead (its shape, a few statistics, or a sample)"


def _module(name: str) -> Any:
    return sys.modules.get(name)


def as_mapping(arg: str, value: object) -> Mapping[Any, Any]:
    """A mapping of names to values: a Mapping, ``argparse.Namespace``, dataclass or pandas Series."""
    if isinstance(value, Mapping):
        return value
    if isinstance(value, argparse.Namespace):
        return vars(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    pd = _module("pandas")
    if pd is not None and isinstance(value, pd.Series):
        return dict(value.items())
    raise TypeError(f"{arg} must be a mapping of name to value, got {type(value).__name__}")


def json_text(arg: str, value: object, max_length: int = MAX_TEXT_LENGTH) -> str:
    """``value`` as checked JSON text: as it is when JSON can hold it, else converted first."""
    try:
        return check_json(arg, value, max_length)
    except TypeError:
        pass  # a type JSON has no form for: convert it, and check again
    return check_json(arg, json_value(arg, value), max_length)


def json_value(arg: str, value: object) -> object:
    """``value`` with numpy, pandas and datetime objects converted (see the module's docstring)."""
    return _Converter(arg, value).convert(value, arg, 1, missing_as_null=False)


class _Converter:
    """One conversion: its budget of items, and the containers on the current path (cycles)."""

    def __init__(self, arg: str, top: object) -> None:
        self.arg = arg
        self.top = top
        self.items = 0
        self.on_path: set[int] = set()
        self.np = _module("numpy")
        self.pd = _module("pandas")

    def invalid(self, reason: str) -> ValueError:
        return ValueError(f"{self.arg}={short_repr(self.top)} is invalid: {reason}")

    def check_size(self, path: str, kind: str, n: int) -> None:
        """Refuse a container of more items than could ever fit, before converting it."""
        if n > MAX_TEXT_LENGTH:
            raise ValueError(
                f"{path} is invalid: a {kind} of {n} items, more than fit in {MAX_TEXT_LENGTH} "
                f"characters of JSON: {_SUMMARY_HINT}"
            )

    def spend(self, n: int) -> None:
        """Count ``n`` items converted; past the bound, the whole value cannot fit."""
        self.items += n
        if self.items > MAX_TEXT_LENGTH:
            raise ValueError(
                f"{self.arg} is invalid: more than {MAX_TEXT_LENGTH} items in all, more than fit in "
                f"{MAX_TEXT_LENGTH} characters of JSON: {_SUMMARY_HINT}"
            )

    def convert(  # noqa: PLR0911 - a return per kind of value
        self, node: object, path: str, depth: int, *, missing_as_null: bool
    ) -> object:
        kind = type(node)
        if node is None or kind in (str, int, bool):
            return node
        if kind is float:
            return None if missing_as_null and math.isnan(node) else node  # type: ignore[arg-type]
        if isinstance(node, (Mapping, list, tuple)):
            return self.container(node, path, depth, missing_as_null=missing_as_null)
        np, pd = self.np, self.pd
        if pd is not None and (node is pd.NA or node is pd.NaT):
            return None
        if np is not None and isinstance(node, np.generic):
            return self.numpy_scalar(node, path, missing_as_null=missing_as_null)
        if np is not None and isinstance(node, np.ndarray):
            lists, objects = self.array(node, path)
            return self.convert(lists, path, depth, missing_as_null=missing_as_null) if objects else lists
        if pd is not None:
            pandas = self.pandas(node, path, depth)
            if pandas is not _NOT_PANDAS:
                return pandas
        if isinstance(node, (dt.datetime, dt.date, dt.time)):
            return node.isoformat()
        if isinstance(node, float):  # a float subclass of another library
            return self.convert(float(node), path, depth, missing_as_null=missing_as_null)
        return node  # check_json says what JSON cannot hold

    def container(self, node: Any, path: str, depth: int, *, missing_as_null: bool) -> object:
        if depth > MAX_JSON_DEPTH:
            raise self.invalid(f"nested more than {MAX_JSON_DEPTH} deep")
        if id(node) in self.on_path:
            raise self.invalid(f"contains a circular reference at {path}")
        self.check_size(path, "dict" if isinstance(node, Mapping) else type(node).__name__, len(node))
        self.spend(len(node))
        self.on_path.add(id(node))
        try:
            if isinstance(node, Mapping):
                return {
                    self.key(key, path): self.convert(
                        item, f"{path}[{short_repr(key)}]", depth + 1, missing_as_null=missing_as_null
                    )
                    for key, item in node.items()
                }
            return [
                self.convert(item, f"{path}[{i}]", depth + 1, missing_as_null=missing_as_null)
                for i, item in enumerate(node)
            ]
        finally:
            self.on_path.discard(id(node))

    def key(self, key: object, path: str) -> object:
        if key is None or type(key) in (str, int, float, bool):
            return key
        converted = self.convert(key, f"{path} key {short_repr(key)}", 1, missing_as_null=False)
        return converted if converted is None or type(converted) in (str, int, float, bool) else str(key)

    def numpy_scalar(self, node: Any, path: str, *, missing_as_null: bool) -> object:
        np = self.np
        if isinstance(node, (np.bool_, np.integer, np.floating, np.str_)):
            item = node.item()
            return None if missing_as_null and isinstance(item, float) and math.isnan(item) else item
        if isinstance(node, np.datetime64):
            return None if np.isnat(node) else str(np.datetime_as_string(node))
        hint = "str(x) or [x.real, x.imag]" if isinstance(node, np.complexfloating) else "str(x)"
        raise _cannot_hold(path, f"a numpy {type(node).__name__}", hint)

    def array(self, node: Any, path: str) -> tuple[object, bool]:
        """The array as lists, and whether they hold objects still to convert."""
        np = self.np
        self.check_size(path, "numpy array", int(node.size))
        kind = node.dtype.kind
        if kind == "O":
            return node.tolist(), True  # its items are counted as they are converted
        self.spend(int(node.size))
        if kind in "biufU":
            return node.tolist(), False  # Python scalars, nested as the array is
        if kind == "M":
            return np.where(np.isnat(node), None, np.datetime_as_string(node)).tolist(), False
        hints = {
            "c": "x.astype(str).tolist() or x.real.tolist()",
            "m": "(x / np.timedelta64(1, 's')).tolist()",
        }
        raise _cannot_hold(path, f"a numpy array of {node.dtype}", hints.get(kind, "x.astype(str).tolist()"))

    def pandas(self, node: Any, path: str, depth: int) -> object:
        pd = self.pd
        if isinstance(node, pd.Timestamp):
            return node.isoformat()
        if isinstance(node, pd.DataFrame):
            self.check_size(path, "pandas DataFrame", int(node.size))
            columns = {column: dict(series.items()) for column, series in node.items()}
            return self.convert(columns, path, depth, missing_as_null=True)
        if isinstance(node, pd.Series):
            self.check_size(path, "pandas Series", len(node))
            return self.convert(dict(node.items()), path, depth, missing_as_null=True)
        if isinstance(node, pd.Index):
            self.check_size(path, "pandas Index", len(node))
            return self.convert(node.tolist(), path, depth, missing_as_null=True)
        if isinstance(node, pd.Timedelta):
            raise _cannot_hold(path, "a pandas Timedelta", "str(x) or x.total_seconds()")
        if type(node).__module__.startswith("pandas"):
            raise _cannot_hold(path, f"a pandas {type(node).__name__}", "str(x)")
        return _NOT_PANDAS


_NOT_PANDAS = object()


def _cannot_hold(path: str, what: str, hint: str) -> TypeError:
    return TypeError(f"{path} is {what}, which JSON cannot hold: convert it first, e.g. with {hint}")


# ---- params ----------------------------------------------------------------------------------------


def flatten_params(arg: str, params: object, prefix: str = "") -> list[tuple[str, str, object]]:
    """``(dotted name, where it came from, value)`` for every leaf of a nested config.

    ``where`` names the leaf for error messages (``params['optim']['lr']``); ``prefix`` starts
    every name.  A name reached twice (``{"a.b": 1, "a": {"b": 2}}``) is a ``ValueError``; keys
    must be str or int.
    """
    top = as_mapping(arg, params)
    leaves: dict[str, tuple[str, object]] = {}

    def walk(prefix: str, where: str, mapping: Mapping[Any, Any], depth: int) -> None:
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"{arg}={short_repr(params)} is invalid: nested more than {MAX_JSON_DEPTH} deep")
        for key, value in mapping.items():
            if type(key) is not str and (not isinstance(key, int) or isinstance(key, bool)):
                raise TypeError(
                    f"{where} keys must be str or int, got {type(key).__name__} {short_repr(key)}"
                )
            name = f"{prefix}.{key}" if prefix else str(key)
            at = f"{where}[{key!r}]"
            nested = nested_config(value)
            if nested is not None and len(nested):
                walk(name, at, nested, depth + 1)
                continue
            if name in leaves:
                raise ValueError(f"{arg}: the name {name!r} is given twice ({leaves[name][0]} and {at})")
            leaves[name] = (at, {} if nested is not None else value)

    walk(prefix, arg, top, 1)
    return [(name, at, value) for name, (at, value) in leaves.items()]


def nested_config(value: object) -> Mapping[Any, Any] | None:
    """The mapping a config value nests: a mapping, ``argparse.Namespace`` or dataclass; else None."""
    if isinstance(value, (Mapping, argparse.Namespace)) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    ):
        return as_mapping("", value)
    return None


def param_scalar(where: str, value: object) -> object:
    """A param's value as :func:`~pipeline_sdk.validation.param_value` takes it.

    Lists, tuples, numpy arrays and empty mappings become their JSON text; numpy scalars their Python value;
    paths their text; timestamps, datetimes and dates ISO text.  Anything else is left for
    ``param_value`` to accept or refuse.
    """
    if isinstance(value, (list, tuple, Mapping)):
        return json_text(where, value, _PARAM_TEXT)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (dt.datetime, dt.date)) and not _is_missing(value):
        return value.isoformat()
    np = _module("numpy")
    if np is not None and isinstance(value, np.generic):
        return json_value(where, value)  # its Python value (a NaN is refused by param_value)
    if np is not None and isinstance(value, np.ndarray):
        return json_text(where, value, _PARAM_TEXT)
    return value


def _is_missing(value: object) -> bool:
    pd = _module("pandas")
    return pd is not None and value is pd.NaT


def each_valid(
    items: list[tuple[str, str, object]], check: Callable[[str, str, object], Any]
) -> tuple[list[Any], list[tuple[str, Exception]]]:
    """``check(name, where, value)`` of every item: the results, and ``(name, error)`` of those refused."""
    results: list[Any] = []
    refused: list[tuple[str, Exception]] = []
    for name, where, value in items:
        try:
            results.append(check(name, where, value))
        except (TypeError, ValueError) as exc:
            refused.append((name, exc))
    return results, refused


def checked_params(
    leaves: list[tuple[str, str, object]],
) -> tuple[list[tuple[str, str, float | None]], list[tuple[str, Exception]]]:
    """``(name, text, number)`` of every leaf of :func:`flatten_params` that is a valid param, and
    ``(name, error)`` of those refused."""
    return each_valid(
        leaves,
        lambda name, where, value: (
            check_name(f"params key {name!r}", name),
            *param_value(where, param_scalar(where, value)),
        ),
    )
