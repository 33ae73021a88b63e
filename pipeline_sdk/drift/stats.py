"""Drift statistics from two profiles' sketches, never from rows.

Numbers.  A KLL sketch is a weighted sample of its stream: its retained values and their weights.
The CDF of each side is the step function of that sample, evaluated at the union of both sides'
retained values (the merged split points), so:

- the **KS statistic** is ``max |F_ref - F_cur|`` over those points;
- the **Wasserstein-1 distance** is ``∫ |F_ref(x) - F_cur(x)| dx``, exact between the two step
  functions (a sum over consecutive split points), divided by the reference's std (its exact
  population std, at least 0.001, as Evidently norms it);
- **PSI** bins both sides at the reference's deciles (the sketch's quantiles 0.1 ... 0.9, repeated
  edges dropped); an empty bin counts as a share of 0.0001, Evidently's value, so the log is finite.

Error.  KLL's documented rank error at 99% confidence (``normalized_rank_error``) bounds each CDF, so
the KS statistic is within the sum of both sides' CDF errors (:func:`ks_error_bound`).  A value at
rank ``p`` read from a sketch lies between the true quantiles at ``p - ε`` and ``p + ε``; integrating
that band over ``p`` bounds each side's Wasserstein error (:func:`wasserstein_error_bound`).  Both
are 0 while a sketch still holds every value (up to ``k`` values).

Categories.  Counts come from the frequent-items sketches (exact below 768 categories); any count
the sketch no longer holds goes into one "other" bucket, so shares always add up to 1.

- **Jensen-Shannon distance**: :func:`scipy.spatial.distance.jensenshannon` with its default
  natural logarithm, as Evidently calls it (its largest value is ``sqrt(ln 2)`` = 0.833);
- **PSI** over the categories, with the same 0.0001 for an empty one;
- **chi-squared**: Pearson's test of the 2 x K table of counts (no continuity correction).  For two
  categories it is the pooled two-proportion z-test Evidently uses there; for more it is the
  two-sample test, where Evidently tests the current counts against the reference's shares as if
  those were exact.

The KS p-value needs the sample sizes: it is ``scipy.stats.kstwo.sf(D, round(n*m/(n+m)))``, the
asymptotic form ``scipy.stats.ks_2samp`` uses above 10,000 rows (below, scipy counts paths exactly;
the two differ by less than the sketch's own error moves D).

scipy is imported by the functions that need it, so profiling never loads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .columns import FloatArray
from .features import CategoricalFeature, NumericFeature

PSI_BINS = 10  # reference deciles
PSI_EMPTY_SHARE = 1e-4  # the share an empty bin or category counts as (Evidently's)
WASSERSTEIN_MIN_STD = 0.001  # the smallest std a Wasserstein distance is normed by (Evidently's)
_OTHER = "\x00other"  # the bucket of counts a frequent-items sketch no longer holds by name


def _step_cdfs(ref: NumericFeature, cur: NumericFeature) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The merged split points and each side's CDF just after each point."""
    rx, rw = ref.items()
    cx, cw = cur.items()
    points = np.union1d(rx, cx)
    return points, _cdf(rx, rw, points, "right"), _cdf(cx, cw, points, "right")


def _cdf(values: FloatArray, weights: FloatArray, points: FloatArray, side: str) -> FloatArray:
    cumulative = np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
    return cumulative[np.searchsorted(values, points, side=side)]  # type: ignore[call-overload]


def ks_statistic(ref: NumericFeature, cur: NumericFeature) -> float:
    """The two-sample KS statistic: the largest gap between the two CDFs."""
    _, fr, fc = _step_cdfs(ref, cur)
    return float(np.max(np.abs(fr - fc)))


def ks_pvalue(statistic: float, n: int, m: int) -> float:
    """The two-sided KS p-value of ``statistic`` for samples of ``n`` and ``m`` (asymptotic, as scipy's)."""
    from scipy import stats  # noqa: PLC0415 - scipy only when comparing

    effective = round(n * m / (n + m))
    return float(np.clip(stats.kstwo.sf(statistic, max(effective, 1)), 0.0, 1.0))


def wasserstein(ref: NumericFeature, cur: NumericFeature) -> float:
    """The Wasserstein-1 distance between the two sketches' distributions, in the feature's units."""
    points, fr, fc = _step_cdfs(ref, cur)
    return float(np.sum(np.abs(fr - fc)[:-1] * np.diff(points)))


def wasserstein_normed(ref: NumericFeature, cur: NumericFeature) -> float:
    """:func:`wasserstein` divided by the reference's std (at least :data:`WASSERSTEIN_MIN_STD`)."""
    return wasserstein(ref, cur) / max(ref.std, WASSERSTEIN_MIN_STD)


def ks_error_bound(ref: NumericFeature, cur: NumericFeature) -> float:
    """How far :func:`ks_statistic` may be from the raw data's, at 99% confidence per sketch."""
    return _cdf_error(ref) + _cdf_error(cur)


def _cdf_error(feature: NumericFeature) -> float:
    sketch = feature.sketch
    return float(sketch.normalized_rank_error(True)) if sketch.is_estimation_mode() else 0.0


def wasserstein_error_bound(ref: NumericFeature, cur: NumericFeature) -> float:
    """How far :func:`wasserstein_normed` may be from the raw data's, from each sketch's rank error."""
    return (_quantile_band(ref) + _quantile_band(cur)) / max(ref.std, WASSERSTEIN_MIN_STD)


def _quantile_band(feature: NumericFeature) -> float:
    """``∫ Q(p + ε) - Q(p - ε) dp`` over ``p`` in [0, 1], ranks clipped to [0, 1], from the sketch."""
    epsilon = _cdf_error(feature)
    if not epsilon:
        return 0.0
    grid = np.linspace(0.0, 1.0, 2001)
    high = np.asarray(feature.quantiles(np.minimum(grid + epsilon, 1.0)))
    low = np.asarray(feature.quantiles(np.maximum(grid - epsilon, 0.0)))
    return float(np.trapezoid(high - low, grid))


def psi_numeric(ref: NumericFeature, cur: NumericFeature) -> float:
    """PSI over the reference's deciles."""
    edges = np.unique(np.asarray(ref.quantiles(np.arange(1, PSI_BINS) / PSI_BINS)))
    rx, rw = ref.items()
    cx, cw = cur.items()
    ref_share = np.diff(np.concatenate([[0.0], _cdf(rx, rw, edges, "left"), [1.0]]))
    cur_share = np.diff(np.concatenate([[0.0], _cdf(cx, cw, edges, "left"), [1.0]]))
    return psi_shares(ref_share, cur_share)


def psi_shares(ref_share: FloatArray, cur_share: FloatArray) -> float:
    """``Σ (cur - ref) ln(cur / ref)``, an empty share counted as :data:`PSI_EMPTY_SHARE`."""
    r = np.where(ref_share > 0, ref_share, PSI_EMPTY_SHARE)
    c = np.where(cur_share > 0, cur_share, PSI_EMPTY_SHARE)
    return float(np.sum((c - r) * np.log(c / r)))


def category_counts(
    ref: CategoricalFeature | Mapping[float, int], cur: CategoricalFeature | Mapping[float, int]
) -> tuple[FloatArray, FloatArray]:
    """Both sides' counts over the union of their categories (plus "other" where a sketch lost some)."""
    ref_counts, cur_counts = _counts(ref), _counts(cur)
    keys = list(dict.fromkeys([*ref_counts, *cur_counts]))
    return (
        np.array([ref_counts.get(k, 0) for k in keys], dtype=np.float64),
        np.array([cur_counts.get(k, 0) for k in keys], dtype=np.float64),
    )


def _counts(side: CategoricalFeature | Mapping[float, int]) -> dict[object, int]:
    counts: dict[object, int] = {}
    if not isinstance(side, CategoricalFeature):
        counts.update(side.items())
        return counts
    counts.update(side.frequencies())
    other = side.values - sum(counts.values())
    if other > 0:
        counts[_OTHER] = other
    return counts


def jensenshannon(ref_counts: FloatArray, cur_counts: FloatArray) -> float:
    """The Jensen-Shannon distance of the two count vectors' shares (natural log, as Evidently)."""
    from scipy.spatial import distance  # noqa: PLC0415 - scipy only when comparing

    return float(distance.jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()))


def psi_counts(ref_counts: FloatArray, cur_counts: FloatArray) -> float:
    """PSI over categories."""
    return psi_shares(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum())


def chisquare_pvalue(ref_counts: FloatArray, cur_counts: FloatArray) -> float:
    """Pearson's chi-squared p-value of the 2 x K table (1.0 when only one category was seen at all)."""
    from scipy import stats  # noqa: PLC0415 - scipy only when comparing

    table = np.vstack([ref_counts, cur_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    p = float(stats.chi2_contingency(table, correction=False).pvalue)
    return p if math.isfinite(p) else 1.0
