"""``compare(baseline, current)``: which features drifted, by which test, and the data set's verdict.

The default test of a feature follows Evidently's choice, by type and by the reference's number of
values (nulls not counted):

==========================================  =============================  ======================
feature                                      reference of 1,000 or fewer     more than 1,000
==========================================  =============================  ======================
numeric, more than 5 distinct values         ``ks``: p-value <= 0.05         ``wasserstein`` >= 0.1
numeric with at most 5 distinct values       ``chisquare``: p-value < 0.05  ``jensenshannon`` >= 0.1
categorical                                  ``chisquare``: p-value < 0.05  ``jensenshannon`` >= 0.1
==========================================  =============================  ======================

The data set drifts when the share of drifted features is at least ``drift_share`` (0.5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from ..validation import short_repr
from . import stats
from .features import DISCRETE_MAX, CategoricalFeature, Feature, NumericFeature
from .profile import Profile
from .types import FeatureType

SMALL_SAMPLE = 1000  # a reference with at most this many values gets the p-value tests
_NUMERIC, _CATEGORICAL = FeatureType.NUMERIC, FeatureType.CATEGORICAL


@dataclass(frozen=True)
class Method:
    """One drift test: what it applies to, its default threshold, and which side of it is drift."""

    kinds: frozenset[FeatureType]
    threshold: float
    p_value: bool  # True: drift when the statistic (a p-value) is below; False: at or above
    inclusive: bool  # whether a statistic equal to the threshold is drift (as Evidently decides each)
    counts: bool  # needs category counts (a numeric feature qualifies when it has few distinct values)


METHODS: Mapping[str, Method] = MappingProxyType(
    {
        "wasserstein": Method(frozenset({_NUMERIC}), 0.1, p_value=False, inclusive=True, counts=False),
        "ks": Method(frozenset({_NUMERIC}), 0.05, p_value=True, inclusive=True, counts=False),
        "psi": Method(frozenset({_NUMERIC, _CATEGORICAL}), 0.1, p_value=False, inclusive=True, counts=False),
        "jensenshannon": Method(
            frozenset({_NUMERIC, _CATEGORICAL}), 0.1, p_value=False, inclusive=True, counts=True
        ),
        "chisquare": Method(
            frozenset({_NUMERIC, _CATEGORICAL}), 0.05, p_value=True, inclusive=False, counts=True
        ),
    }
)


@dataclass(frozen=True)
class Test:
    """A drift test of one feature: ``Test("psi", threshold=0.2)``; no threshold: the method's default."""

    __test__: ClassVar[bool] = False  # not a pytest class, whatever its name
    method: str
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={short_repr(self.method)} is invalid: must be one of {sorted(METHODS)}")
        threshold = self.threshold
        if threshold is None:
            return
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise TypeError(
                f"threshold must be a float, got {type(threshold).__name__} {short_repr(threshold)}"
            )
        if METHODS[self.method].p_value and not 0 < threshold < 1:
            raise ValueError(
                f"threshold={threshold!r} is invalid: a p-value threshold must be between 0 and 1"
            )
        if not math.isfinite(threshold) or threshold <= 0:
            raise ValueError(f"threshold={threshold!r} is invalid: must be a finite number above 0")

    @property
    def effective_threshold(self) -> float:
        """The threshold given, or the method's default."""
        return METHODS[self.method].threshold if self.threshold is None else float(self.threshold)


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's result: the test, its statistic and threshold, and whether it drifted."""

    feature: str
    kind: FeatureType | None  # None: neither side had a value
    test: str  # a key of METHODS
    statistic: float  # NaN when a side has no values
    threshold: float
    drifted: bool
    reference_values: int  # non-null values in the reference
    current_values: int
    reference_null_share: float  # nulls / rows (0.0 for no rows)
    current_null_share: float

    def row(self) -> dict[str, object]:
        """The result as a flat dict."""
        return {
            "feature": self.feature,
            "type": str(self.kind) if self.kind else "null",
            "test": self.test,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "reference_values": self.reference_values,
            "current_values": self.current_values,
            "reference_null_share": self.reference_null_share,
            "current_null_share": self.current_null_share,
        }


@dataclass(frozen=True)
class DriftReport:
    """The results of :func:`compare`, feature by feature, in the baseline's order."""

    features: Mapping[str, FeatureDrift]
    drift_share: float  # the share of drifted features at which the data set drifts

    @property
    def drifted(self) -> list[str]:
        """Names of the drifted features."""
        return [name for name, result in self.features.items() if result.drifted]

    @property
    def drifted_share(self) -> float:
        """Drifted features / features compared (0.0 when none were)."""
        return len(self.drifted) / len(self.features) if self.features else 0.0

    @property
    def dataset_drift(self) -> bool:
        """Whether the share of drifted features reached ``drift_share``."""
        return bool(self.features) and self.drifted_share >= self.drift_share

    def rows(self) -> list[dict[str, object]]:
        """One flat dict per feature, for printing or a table."""
        return [result.row() for result in self.features.values()]

    def to_frame(self) -> Any:
        """:meth:`rows` as a pandas DataFrame indexed by feature (needs pandas)."""
        import pandas as pd  # type: ignore[import-untyped, unused-ignore]  # noqa: PLC0415 - optional

        return pd.DataFrame(self.rows()).set_index("feature")


def compare(
    baseline: Profile,
    current: Profile,
    tests: Mapping[str, Test | str] | None = None,
    *,
    features: Sequence[str] | None = None,
    drift_share: float = 0.5,
) -> DriftReport:
    """Test each feature of ``baseline`` (or of ``features``) for drift in ``current``.

    ``tests`` chooses a test per feature (``{"age": Test("psi", threshold=0.2)}`` or just ``"psi"``);
    the others get the default above.
    """
    for arg, value in (("baseline", baseline), ("current", current)):
        if not isinstance(value, Profile):
            raise TypeError(f"{arg} must be a Profile, got {type(value).__name__}")
    if isinstance(drift_share, bool) or not isinstance(drift_share, int | float) or not 0 < drift_share <= 1:
        raise ValueError(f"drift_share={short_repr(drift_share)} is invalid: must be above 0 and at most 1")
    names = _check_features(features, baseline, current)
    chosen = _check_tests(tests, names)
    results = {
        name: _compare_feature(name, baseline.features[name], current.features[name], chosen.get(name))
        for name in names
    }
    return DriftReport(MappingProxyType(results), float(drift_share))


def _check_features(features: Sequence[str] | None, baseline: Profile, current: Profile) -> list[str]:
    if features is None:
        names = list(baseline.features)
    elif isinstance(features, str) or not isinstance(features, Sequence):
        raise TypeError(f"features must be a list of feature names, got {type(features).__name__}")
    else:
        names = list(features)
        unknown = [name for name in names if name not in baseline.features]
        if unknown:
            raise ValueError(f"features names what the baseline does not have: {unknown}")
    missing = [name for name in names if name not in current.features]
    if missing:
        raise ValueError(f"current has no feature {missing} (it has {sorted(current.features)})")
    return names


def _check_tests(tests: Mapping[str, Test | str] | None, names: list[str]) -> dict[str, Test]:
    if tests is None:
        return {}
    if not isinstance(tests, Mapping):
        raise TypeError(f"tests must be a mapping of feature name to Test, got {type(tests).__name__}")
    chosen: dict[str, Test] = {}
    for name, test in tests.items():
        if name not in names:
            raise ValueError(f"tests[{name!r}] names no compared feature (they are {names})")
        if not isinstance(test, Test | str):
            raise TypeError(f"tests[{name!r}] must be a Test or a method name, got {type(test).__name__}")
        chosen[name] = Test(test) if isinstance(test, str) else test
    return chosen


def _kind(name: str, ref: Feature, cur: Feature) -> FeatureType | None:
    if ref.kind is not None and cur.kind is not None and ref.kind is not cur.kind:
        raise ValueError(f"feature {name!r} is {ref.kind} in the baseline and {cur.kind} in current")
    return ref.kind or cur.kind


def _discrete(ref: Feature, cur: Feature) -> dict[float, int] | None:
    """The reference's exact value counts, when both sides of a numeric feature have them and few values."""
    if not (isinstance(ref, NumericFeature) and isinstance(cur, NumericFeature)):
        return None
    if ref.discrete is None or cur.discrete is None or len({*ref.discrete, *cur.discrete}) > DISCRETE_MAX:
        return None
    return ref.discrete


def default_test(ref: Feature, cur: Feature) -> str:
    """The test Evidently would pick for this feature (see the module docstring)."""
    small = ref.values <= SMALL_SAMPLE
    if _NUMERIC in (ref.kind, cur.kind) and _discrete(ref, cur) is None:
        return "ks" if small else "wasserstein"
    return "chisquare" if small else "jensenshannon"


def _compare_feature(name: str, ref: Feature, cur: Feature, test: Test | None) -> FeatureDrift:
    kind = _kind(name, ref, cur)
    test = test or Test(default_test(ref, cur))
    method = METHODS[test.method]
    if kind is not None and kind not in method.kinds:
        raise ValueError(f"tests[{name!r}]: {test.method} does not apply to {kind} features")
    if kind is _NUMERIC and method.counts and ref.values and cur.values and _discrete(ref, cur) is None:
        raise ValueError(
            f"tests[{name!r}]: {test.method} needs counts of values, and {name!r} has more than "
            f"{DISCRETE_MAX} distinct values: use wasserstein, ks or psi"
        )
    threshold = test.effective_threshold
    if ref.values and cur.values:
        statistic = _statistic(test.method, ref, cur)
        if method.p_value:
            drifted = statistic <= threshold if method.inclusive else statistic < threshold
        else:
            drifted = statistic >= threshold
    else:  # a side without values: drift when exactly one side has some
        statistic, drifted = math.nan, bool(ref.values) != bool(cur.values)
    return FeatureDrift(
        feature=name,
        kind=kind,
        test=test.method,
        statistic=statistic,
        threshold=threshold,
        drifted=bool(drifted),
        reference_values=ref.values,
        current_values=cur.values,
        reference_null_share=ref.nulls / ref.count if ref.count else 0.0,
        current_null_share=cur.nulls / cur.count if cur.count else 0.0,
    )


def _statistic(method: str, ref: Feature, cur: Feature) -> float:
    if isinstance(ref, NumericFeature) and isinstance(cur, NumericFeature):
        discrete = _discrete(ref, cur)
        if method == "wasserstein":
            return stats.wasserstein_normed(ref, cur)
        if method == "ks":
            return stats.ks_pvalue(stats.ks_statistic(ref, cur), ref.values, cur.values)
        if method == "psi" and discrete is None:
            return stats.psi_numeric(ref, cur)
        assert ref.discrete is not None and cur.discrete is not None
        counts = stats.category_counts(ref.discrete, cur.discrete)
    else:
        assert isinstance(ref, CategoricalFeature) and isinstance(cur, CategoricalFeature)
        counts = stats.category_counts(ref, cur)
    if method == "psi":
        return stats.psi_counts(*counts)
    if method == "jensenshannon":
        return stats.jensenshannon(*counts)
    return stats.chisquare_pvalue(*counts)
