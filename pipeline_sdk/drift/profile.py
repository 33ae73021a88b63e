"""A profile: what a data set looked like, per feature, in constant memory and mergeable.

A profile keeps no rows.  Per feature it keeps the count of rows and nulls, exact moments for
numbers, and a sketch (KLL quantiles for numbers, frequent items for categories), so profiles of
parts (serving replicas, chunks of a big file, days) merge into the profile of the whole within the
sketches' documented error.  See :mod:`.features` for what each feature keeps and why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from types import MappingProxyType
from typing import Any

from ..validation import MAX_NAME_LENGTH, short_repr
from . import codec
from .columns import Column, Values, as_values, convert, describe_types
from .features import CategoricalFeature, Feature, NullFeature, NumericFeature, typed
from .frames import frame_columns
from .types import FeatureType, check_types

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_HELD = {FeatureType.NUMERIC: "numbers", FeatureType.CATEGORICAL: "categories"}


def check_feature_name(arg: str, name: object) -> str:
    """A feature (column) name: a non-empty str of at most 250 characters with no control characters."""
    if type(name) is not str:
        raise TypeError(f"{arg} must be a str, got {type(name).__name__} {short_repr(name)}")
    if not name:
        raise ValueError(f"{arg}={name!r} is invalid: must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{arg}={short_repr(name)} is invalid: longer than {MAX_NAME_LENGTH} characters")
    if _CONTROL_RE.search(name):
        raise ValueError(f"{arg}={short_repr(name)} is invalid: contains a control character")
    return name


class Profile:
    """Per-feature counts, moments and sketches of a data set.  Build one with a ``from_`` method."""

    __slots__ = ("_features", "_rows")

    def __init__(self) -> None:
        """An empty profile: no rows, no features."""
        self._features: dict[str, Feature] = {}
        self._rows = 0

    # ------------------------------------------------------------------ building

    @classmethod
    def from_columns(
        cls, columns: Mapping[str, Iterable[Any]], *, types: Mapping[str, FeatureType | str] | None = None
    ) -> Profile:
        """Profile columns of equal length: lists, numpy arrays, pandas Series, any iterables.

        ``types`` gives a column's type instead of inferring it (``{"zip": "categorical"}``).
        """
        if not isinstance(columns, Mapping):
            raise TypeError(
                f"columns must be a mapping of column name to values, got {type(columns).__name__}"
            )
        given = check_types("types", types)
        profile = cls()
        profile.update(columns, types=given)
        _check_types_used(given, profile)
        return profile

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[Mapping[str, Any]],
        *,
        types: Mapping[str, FeatureType | str] | None = None,
        batch_size: int = 4096,
    ) -> Profile:
        """Profile rows (dicts), ``batch_size`` at a time; a key missing from a row is a null there."""
        if isinstance(rows, str | bytes | Mapping) or not isinstance(rows, Iterable):
            raise TypeError(f"rows must be an iterable of mappings, got {type(rows).__name__}")
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"batch_size={short_repr(batch_size)} is invalid: must be at least 1")
        given = check_types("types", types)
        profile = cls()
        iterator = iter(rows)
        start = 0
        while batch := list(islice(iterator, batch_size)):
            profile._add_rows(batch, start, given)
            start += len(batch)
        _check_types_used(given, profile)
        return profile

    @classmethod
    def from_frame(cls, frame: Any, *, types: Mapping[str, FeatureType | str] | None = None) -> Profile:
        """Profile a pandas DataFrame, column by column (pandas is imported only here)."""
        columns = frame_columns(frame)
        for name in columns:
            check_feature_name("frame column name", name)
        return cls.from_columns(columns, types=types)  # type: ignore[arg-type]

    def update(
        self, columns: Mapping[str, Iterable[Any]], *, types: Mapping[str, FeatureType | str] | None = None
    ) -> None:
        """Add one batch of rows given as columns of equal length.

        A feature this profile knows but the batch lacks gets a null for each of its rows, and a new
        feature a null for each row before it, so every feature counts every row.
        """
        if not isinstance(columns, Mapping):
            raise TypeError(
                f"columns must be a mapping of column name to values, got {type(columns).__name__}"
            )
        given = check_types("types", types)
        converted: dict[str, tuple[Values, FeatureType | None]] = {}
        rows: int | None = None
        first = ""
        for name, values in columns.items():
            check_feature_name("columns key", name)
            data, hint = as_values(f"columns[{name!r}]", name, values)
            if rows is None:
                rows, first = len(data), name
            elif len(data) != rows:
                raise ValueError(f"columns[{name!r}] has {len(data)} values, columns[{first!r}] {rows}")
            converted[name] = data, given.get(name, hint)
        self._add(converted, rows or 0)

    def _add_rows(self, batch: Sequence[object], start: int, given: Mapping[str, FeatureType]) -> None:
        names: dict[str, None] = {}
        for offset, row in enumerate(batch):
            if not isinstance(row, Mapping):
                raise TypeError(
                    f"rows[{start + offset}] must be a mapping, got {type(row).__name__} {short_repr(row)}"
                )
            for name in row:
                if name not in names:
                    check_feature_name(f"rows[{start + offset}] key", name)
                    names[name] = None
        mappings: Sequence[Mapping[str, object]] = batch  # type: ignore[assignment]
        columns: dict[str, tuple[Values, FeatureType | None]] = {
            name: ([row.get(name) for row in mappings], given.get(name)) for name in names
        }
        self._add(columns, len(batch))

    def _add(self, columns: Mapping[str, tuple[Values, FeatureType | None]], rows: int) -> None:
        # Convert and check every column first: a bad one raises before the profile changes.
        typed_columns = {name: convert(name, data, kind) for name, (data, kind) in columns.items()}
        for name, column in typed_columns.items():
            kind = self._features[name].kind if name in self._features else None
            if kind is not None and column.kind is not None and kind is not column.kind:
                found = describe_types(columns[name][0])
                raise ValueError(f"column {name!r} held {_HELD[kind]} in earlier rows, now {found}")
        for name, column in typed_columns.items():
            feature = self._features.get(name) or NullFeature(self._rows, self._rows)
            if column.kind is not None and isinstance(feature, NullFeature):
                feature = typed(column.kind, feature)
            self._features[name] = feature
        for name, feature in self._features.items():
            feature.add(typed_columns.get(name) or Column(None, rows, rows))
        self._rows += rows

    # ------------------------------------------------------------------ reading

    @property
    def rows(self) -> int:
        """Rows profiled."""
        return self._rows

    @property
    def features(self) -> Mapping[str, Feature]:
        """The features by name, read-only."""
        return MappingProxyType(self._features)

    def summary(self) -> list[dict[str, object]]:
        """One dict per feature, for printing: type, count, nulls; min, max, mean, std or top categories."""
        out: list[dict[str, object]] = []
        for name, feature in self._features.items():
            row: dict[str, object] = {
                "feature": name,
                "type": str(feature.kind) if feature.kind else "null",
                "count": feature.count,
                "nulls": feature.nulls,
            }
            if isinstance(feature, NumericFeature) and feature.values:
                row.update(
                    min=feature.min,
                    max=feature.max,
                    mean=feature.mean,
                    std=feature.std,
                    median=feature.quantile(0.5),
                )
            elif isinstance(feature, CategoricalFeature):
                frequencies = feature.frequencies()
                row.update(categories=len(frequencies), top=", ".join(list(frequencies)[:3]))
            out.append(row)
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._features)

    def __repr__(self) -> str:
        return f"Profile(rows={self._rows}, features={list(self._features)})"

    # ------------------------------------------------------------------ merging

    def merge(self, other: Profile) -> Profile:
        """A new profile of both data sets, as if they had been profiled together; neither changes.

        A feature only one side has counts the other side's rows as nulls.  A feature that is numeric
        on one side and categorical on the other is a ``ValueError`` naming it.
        """
        if not isinstance(other, Profile):
            raise TypeError(f"other must be a Profile, got {type(other).__name__}")
        merged = Profile()
        merged._rows = self._rows + other._rows
        for name in {**self._features, **other._features}:
            mine = self._features.get(name) or NullFeature(self._rows, self._rows)
            theirs = other._features.get(name) or NullFeature(other._rows, other._rows)
            if None not in (mine.kind, theirs.kind) and mine.kind is not theirs.kind:
                raise ValueError(
                    f"feature {name!r} is {mine.kind} in this profile and {theirs.kind} in other"
                )
            merged._features[name] = _merge(mine, theirs)
        return merged

    # ------------------------------------------------------------------ bytes

    def to_bytes(self) -> bytes:
        """The profile's binary form (format described in :mod:`.codec`); never a pickle."""
        return codec.encode(self._rows, self._features)

    @classmethod
    def from_bytes(cls, data: bytes) -> Profile:
        """The profile :meth:`to_bytes` wrote; a ``ValueError`` says what is wrong with bad data."""
        profile = cls()
        profile._rows, profile._features = codec.decode(data)
        return profile

    def to_chunks(self, max_bytes: int = codec.CHUNK_MAX_BYTES) -> list[bytes]:
        """:meth:`to_bytes` split into chunks of at most ``max_bytes`` each, header included.

        The default is the largest chunk whose base64 text fits one string field of a point.
        """
        return codec.split_chunks(self.to_bytes(), max_bytes)

    @classmethod
    def from_chunks(cls, chunks: Sequence[bytes]) -> Profile:
        """The profile :meth:`to_chunks` split, from its chunks in any order; none missing, none twice."""
        return cls.from_bytes(codec.join_chunks(chunks))


def _merge(mine: Feature, theirs: Feature) -> Feature:
    if isinstance(mine, NullFeature) and isinstance(theirs, NullFeature):
        return NullFeature(mine.count + theirs.count, mine.nulls + theirs.nulls)
    if isinstance(mine, NullFeature):
        assert theirs.kind is not None
        mine = typed(theirs.kind, mine)
    if isinstance(mine, NumericFeature):
        assert not isinstance(theirs, CategoricalFeature)
        return mine.merged(theirs)
    assert isinstance(mine, CategoricalFeature) and not isinstance(theirs, NumericFeature)
    return mine.merged(theirs)


def _check_types_used(given: Mapping[str, FeatureType], profile: Profile) -> None:
    unknown = sorted(set(given) - set(profile.features))
    if unknown:
        raise ValueError(f"types names columns the data does not have: {unknown}")
