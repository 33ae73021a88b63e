"""What a profile keeps of one feature: counts, exact moments, and a mergeable sketch.

- :class:`NumericFeature`: count, nulls, min, max, mean and the sum of squared deviations (merged
  exactly with Chan's parallel formula, so the std is exact too), exact counts of its values while
  it has at most :data:`DISCRETE_MAX` distinct ones, and a KLL quantile sketch (``k`` =
  :data:`KLL_K`) of its finite values.
- :class:`CategoricalFeature`: count, nulls and a frequent-items sketch of its categories
  (``lg_max_k`` = :data:`FREQUENT_LG_MAX_K`): exact while it has fewer than 768 distinct ones.
- :class:`NullFeature`: a feature seen only as nulls so far, so of no known type; the first values
  it gets give it one.

Why these sizes: at ``k=400`` the KLL sketch's documented rank error is 0.0068 (99% confidence, one
quantile; 0.0084 for the whole CDF) at about 4.8 KB a feature however many rows it has seen; ``k=200``
halves the bytes but doubles the error, and measured here its normed Wasserstein distance was off by
up to 0.04 against a threshold of 0.1, while ``k=400`` stayed within 0.013.  The KLL sketch keeps
32-bit floats: a feature whose spread is below about 1e-6 of its magnitude loses resolution in its
quantiles (its min, max, mean and std are float64 and exact).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import datasketches
import numpy as np

from .columns import Column, FloatArray
from .types import FeatureType

KLL_K = 400  # the KLL sketch's k: 0.68% rank error at 99% confidence, about 4.8 KB a feature
FREQUENT_LG_MAX_K = 10  # the frequent-items map holds up to 0.75 * 2**10 = 768 categories exactly
DISCRETE_MAX = 5  # a numeric feature with at most this many distinct values is also counted exactly
_PROBE = 64  # values looked at before np.unique runs over a whole batch (continuous data stops here)
_NO_FALSE_NEGATIVES = datasketches.frequent_items_error_type.NO_FALSE_NEGATIVES


class NullFeature:
    """A feature with only nulls so far: its type is not known."""

    kind: ClassVar[FeatureType | None] = None
    __slots__ = ("count", "nulls")

    def __init__(self, count: int = 0, nulls: int = 0) -> None:
        self.count = count  # rows seen, nulls included
        self.nulls = nulls

    @property
    def values(self) -> int:
        """Rows with a value: none."""
        return self.count - self.nulls

    def add(self, column: Column) -> None:
        """Count one batch of nulls."""
        assert column.kind is None
        self.count += column.rows
        self.nulls += column.nulls

    def __repr__(self) -> str:
        return f"NullFeature(count={self.count})"


class NumericFeature:
    """A numeric feature: exact count, nulls, min, max, mean and std; a KLL sketch of its values."""

    kind: ClassVar[FeatureType | None] = FeatureType.NUMERIC
    __slots__ = ("_m2", "count", "discrete", "max", "mean", "min", "nulls", "sketch")

    def __init__(self, count: int = 0, nulls: int = 0) -> None:
        self.count = count  # rows seen, nulls included
        self.nulls = nulls  # None, NaN and ±inf
        self.min = math.inf
        self.max = -math.inf
        self.mean = 0.0  # of the finite values; 0.0 while there are none
        self._m2 = 0.0  # sum of squared deviations from the mean
        # value -> count while there are at most DISCRETE_MAX distinct values, then None
        self.discrete: dict[float, int] | None = {}
        self.sketch = datasketches.kll_floats_sketch(KLL_K)

    @property
    def values(self) -> int:
        """Rows with a finite value."""
        return self.count - self.nulls

    @property
    def std(self) -> float:
        """The population standard deviation (numpy's ``std``, ``ddof=0``); NaN without values."""
        return math.sqrt(self._m2 / self.values) if self.values else math.nan

    @property
    def rank_error(self) -> float:
        """The KLL sketch's rank error of one quantile at 99% confidence; 0.0 while it holds every value."""
        return self.sketch.normalized_rank_error(False) if self.sketch.is_estimation_mode() else 0.0

    @property
    def sketch_bytes(self) -> int:
        """Bytes of the serialized KLL sketch."""
        return len(self.sketch.serialize())

    def quantile(self, q: float) -> float:
        """The value at normalised rank ``q`` (0 to 1), from the sketch; NaN without values."""
        return float(self.sketch.get_quantile(q)) if self.values else math.nan

    def quantiles(self, qs: Sequence[float] | FloatArray) -> list[float]:
        """:meth:`quantile` at each of ``qs``."""
        if not self.values:
            return [math.nan] * len(qs)
        return [float(v) for v in self.sketch.get_quantiles([float(q) for q in qs])]

    def items(self) -> tuple[FloatArray, FloatArray]:
        """The sketch's retained values (sorted) and their weights: a weighted sample of the stream."""
        pairs = np.array(list(self.sketch), dtype=np.float64).reshape(-1, 2)
        order = np.argsort(pairs[:, 0], kind="stable")
        return pairs[order, 0], pairs[order, 1]

    def add(self, column: Column) -> None:
        """Count one batch's rows and fold in its finite numbers."""
        self.count += column.rows
        self.nulls += column.nulls
        numbers = column.numbers
        if not numbers.size:
            return
        self.min = min(self.min, float(numbers.min()))
        self.max = max(self.max, float(numbers.max()))
        mean = float(numbers.mean())
        m2 = float(np.square(numbers - mean).sum())
        self._combine_moments(int(numbers.size), mean, m2)
        self.sketch.update(numbers.astype(np.float32))
        self._count_discrete(numbers)

    def _combine_moments(self, n: int, mean: float, m2: float) -> None:
        """Chan et al.'s pairwise update; ``self.values`` already includes the ``n`` new values."""
        before = self.values - n
        total = before + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self._m2 += m2 + delta * delta * before * n / total

    def _count_discrete(self, numbers: FloatArray) -> None:
        if self.discrete is None:
            return
        probe = set(np.unique(numbers[:_PROBE]).tolist())
        if len(probe | self.discrete.keys()) > DISCRETE_MAX:
            self.discrete = None
            return
        found, counts = np.unique(numbers, return_counts=True)
        for value, count in zip(found.tolist(), counts.tolist(), strict=True):
            self.discrete[value] = self.discrete.get(value, 0) + count
        if len(self.discrete) > DISCRETE_MAX:
            self.discrete = None

    def merged(self, other: NumericFeature | NullFeature) -> NumericFeature:
        """A new feature holding both; neither operand changes."""
        out = NumericFeature(self.count + other.count, self.nulls + other.nulls)
        out.sketch.merge(self.sketch)
        out.min, out.max, out.mean, out._m2 = self.min, self.max, self.mean, self._m2
        out.discrete = None if self.discrete is None else dict(self.discrete)
        if isinstance(other, NumericFeature) and other.values:
            out.sketch.merge(other.sketch)
            out.min, out.max = min(out.min, other.min), max(out.max, other.max)
            out._combine_moments(other.values, other.mean, other._m2)
            if out.discrete is not None and other.discrete is not None:
                for value, count in other.discrete.items():
                    out.discrete[value] = out.discrete.get(value, 0) + count
            if other.discrete is None or (out.discrete is not None and len(out.discrete) > DISCRETE_MAX):
                out.discrete = None
        return out

    def __repr__(self) -> str:
        return f"NumericFeature(count={self.count}, nulls={self.nulls}, mean={self.mean:.6g})"


class CategoricalFeature:
    """A categorical feature: exact count and nulls; a frequent-items sketch of its categories."""

    kind: ClassVar[FeatureType | None] = FeatureType.CATEGORICAL
    __slots__ = ("count", "nulls", "sketch")

    def __init__(self, count: int = 0, nulls: int = 0) -> None:
        self.count = count  # rows seen, nulls included
        self.nulls = nulls  # None, NaN and pandas.NA
        self.sketch = datasketches.frequent_strings_sketch(FREQUENT_LG_MAX_K)

    @property
    def values(self) -> int:
        """Rows with a category."""
        return self.count - self.nulls

    @property
    def max_error(self) -> int:
        """How far any count of :meth:`frequencies` may be off: 0 while the sketch holds every category."""
        items = self.sketch.get_frequent_items(_NO_FALSE_NEGATIVES)
        return max((upper - lower for _, _, lower, upper in items), default=0)

    def frequencies(self) -> dict[str, int]:
        """Estimated count per category, most frequent first (ties in first-seen order)."""
        items = self.sketch.get_frequent_items(_NO_FALSE_NEGATIVES)
        return {item: estimate for item, estimate, _, _ in items}

    def add(self, column: Column) -> None:
        """Count one batch's rows; one weighted sketch update per distinct category."""
        self.count += column.rows
        self.nulls += column.nulls
        for category, count in (column.counts or {}).items():
            self.sketch.update(category, count)

    def merged(self, other: CategoricalFeature | NullFeature) -> CategoricalFeature:
        """A new feature holding both; neither operand changes."""
        out = CategoricalFeature(self.count + other.count, self.nulls + other.nulls)
        out.sketch.merge(self.sketch)
        if isinstance(other, CategoricalFeature):
            out.sketch.merge(other.sketch)
        return out

    def __repr__(self) -> str:
        return f"CategoricalFeature(count={self.count}, nulls={self.nulls})"


Feature = NumericFeature | CategoricalFeature | NullFeature
_TYPED: Mapping[FeatureType, type[NumericFeature] | type[CategoricalFeature]] = {
    FeatureType.NUMERIC: NumericFeature,
    FeatureType.CATEGORICAL: CategoricalFeature,
}


def typed(kind: FeatureType, feature: NullFeature) -> NumericFeature | CategoricalFeature:
    """A feature of ``kind`` that carries a null-only feature's counts."""
    return _TYPED[kind](feature.count, feature.nulls)
