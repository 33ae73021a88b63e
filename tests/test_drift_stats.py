"""Statistical checks: drift statistics from sketches against scipy on the raw data, verdicts against
Evidently 0.7.23's on a table of cases (``pytest -s`` prints it), and the false-positive rate of the
defaults on data that did not drift, across 200 seeds.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from pipeline_sdk import drift
from pipeline_sdk.drift import NumericFeature, Profile
from pipeline_sdk.drift import stats as sketch_stats

# Measured here (docs/drift.md): over 360 comparisons of 1k-100k rows, normed Wasserstein from k=400
# sketches was at most 0.019 from scipy's.  The bound below allows half as much again.
WASSERSTEIN_MEASURED_BOUND = 0.03
# PSI of a 0.5 sd shift at 200k rows, from sketches: at most 0.019 from the raw deciles' over 2,000 builds.
PSI_MEASURED_BOUND = 0.03


def numeric(profile: Profile, name: str = "x") -> NumericFeature:
    feature = profile.features[name]
    assert isinstance(feature, NumericFeature)
    return feature


def raw_normed_wasserstein(ref: np.ndarray[Any, Any], cur: np.ndarray[Any, Any]) -> float:
    return float(scipy_stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))


# --------------------------------------------------------------------------- sketches against scipy

SHIFTS = [
    ("no drift", 0.0, 1.0),
    ("mean +0.1sd", 0.1, 1.0),
    ("mean +0.5sd", 0.5, 1.0),
    ("scale x1.5", 0.0, 1.5),
]


@pytest.mark.parametrize("rows", [1000, 10_000, 1_000_000])
@pytest.mark.parametrize(("case", "shift", "scale"), SHIFTS)
def test_ks_and_wasserstein_from_sketches_agree_with_scipy(
    rows: int, case: str, shift: float, scale: float
) -> None:
    if rows == 1_000_000 and case not in ("no drift", "mean +0.5sd"):
        pytest.skip("1M rows: two cases keep the file fast")
    rng = np.random.default_rng(rows + int(shift * 10) + int(scale * 100))
    ref, cur = rng.normal(size=rows), rng.normal(shift, scale, size=rows)
    a, b = numeric(Profile.from_columns({"x": ref})), numeric(Profile.from_columns({"x": cur}))
    ks_raw = float(scipy_stats.ks_2samp(ref, cur).statistic)
    ks_sketch = sketch_stats.ks_statistic(a, b)
    ks_bound = sketch_stats.ks_error_bound(a, b)
    assert ks_bound == pytest.approx(2 * 0.008589, abs=1e-6)  # both sides' documented CDF error, k=400
    assert abs(ks_sketch - ks_raw) <= ks_bound, (case, ks_sketch, ks_raw)
    w_raw = raw_normed_wasserstein(ref, cur)
    w_sketch = sketch_stats.wasserstein_normed(a, b)
    assert abs(w_sketch - w_raw) <= sketch_stats.wasserstein_error_bound(a, b)  # derived from the rank error
    assert abs(w_sketch - w_raw) <= WASSERSTEIN_MEASURED_BOUND, (case, w_sketch, w_raw)
    print(f"\n{rows:>9} {case:12} KS {ks_sketch:.4f} vs {ks_raw:.4f}  W {w_sketch:.4f} vs {w_raw:.4f}")


def test_sketches_that_hold_every_value_give_scipys_statistics_exactly() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=300).astype(np.float32).astype(np.float64)  # float32 values: the sketch's precision
    cur = rng.normal(0.3, 1.2, size=250).astype(np.float32).astype(np.float64)
    a, b = numeric(Profile.from_columns({"x": ref})), numeric(Profile.from_columns({"x": cur}))
    assert sketch_stats.ks_error_bound(a, b) == 0.0
    assert sketch_stats.wasserstein_error_bound(a, b) == 0.0
    assert sketch_stats.ks_statistic(a, b) == pytest.approx(
        float(scipy_stats.ks_2samp(ref, cur).statistic), abs=1e-12
    )
    assert sketch_stats.wasserstein_normed(a, b) == pytest.approx(raw_normed_wasserstein(ref, cur), abs=1e-12)
    p = (
        drift.compare(Profile.from_columns({"x": ref}), Profile.from_columns({"x": cur}))
        .features["x"]
        .statistic
    )
    exact = float(scipy_stats.ks_2samp(ref, cur).pvalue)
    asymptotic = float(scipy_stats.ks_2samp(ref, cur, method="asymp").pvalue)
    assert p == pytest.approx(asymptotic, rel=1e-9)  # the asymptotic p-value of the exact statistic
    assert abs(p - exact) < 0.01  # scipy's exact count of paths differs a little at this size


def test_psi_from_sketches_matches_the_raw_deciles() -> None:
    rng = np.random.default_rng(4)
    ref, cur = rng.normal(size=200_000), rng.normal(0.5, 1, size=200_000)
    edges = np.quantile(ref, np.arange(1, 10) / 10)
    ref_share = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=10) / ref.size
    cur_share = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=10) / cur.size
    raw = float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))
    assert raw == pytest.approx(0.2313, abs=1e-4)  # a 0.5sd shift: past PSI's 0.2 "act" rule of thumb
    # KLL compaction is random (and datasketches takes no seed), so one sketch's PSI is a draw: over
    # 2,000 builds here its error had a mean of -0.0019 (sd 0.0057) and was at most 0.019.  The mean of
    # 100 builds past 0.004 has odds of about 1 in 10,000 if nothing is wrong; eight bins instead of
    # ten read -0.006.
    errors = np.array(
        [
            sketch_stats.psi_numeric(
                numeric(Profile.from_columns({"x": ref})), numeric(Profile.from_columns({"x": cur}))
            )
            - raw
            for _ in range(100)
        ]
    )
    assert abs(float(errors.mean())) <= 0.004, errors
    assert float(np.abs(errors).max()) <= PSI_MEASURED_BOUND, errors


def test_categorical_statistics_match_scipy_on_exact_counts() -> None:
    from scipy.spatial import distance

    ref = {"a": 500, "b": 300, "c": 200}
    cur = {"a": 300, "b": 300, "c": 300, "d": 100}
    a = Profile.from_columns({"c": [k for k, n in ref.items() for _ in range(n)]}).features["c"]
    b = Profile.from_columns({"c": [k for k, n in cur.items() for _ in range(n)]}).features["c"]
    counts = sketch_stats.category_counts(a, b)  # type: ignore[arg-type]
    assert counts[0].tolist() == [500, 300, 200, 0]
    assert counts[1].tolist() == [300, 300, 300, 100]
    p, q = np.array([0.5, 0.3, 0.2, 0.0]), np.array([0.3, 0.3, 0.3, 0.1])
    assert sketch_stats.jensenshannon(*counts) == pytest.approx(
        float(distance.jensenshannon(p, q)), abs=1e-12
    )
    assert sketch_stats.jensenshannon(*counts) == pytest.approx(
        0.22875, abs=1e-5
    )  # natural log, as Evidently
    table = np.array([[500, 300, 200, 0], [300, 300, 300, 100]])
    expected = float(scipy_stats.chi2_contingency(table, correction=False).pvalue)
    assert sketch_stats.chisquare_pvalue(*counts) == pytest.approx(expected, rel=1e-12)
    two = (np.array([600.0, 400.0]), np.array([550.0, 450.0]))  # 1 degree of freedom: no Yates correction
    uncorrected = float(scipy_stats.chi2_contingency(np.vstack(two), correction=False).pvalue)
    assert sketch_stats.chisquare_pvalue(*two) == pytest.approx(uncorrected, rel=1e-12)
    assert uncorrected == pytest.approx(0.023719, abs=1e-6)  # = the pooled two-proportion z-test's p-value
    share = np.where(p > 0, p, 1e-4)
    assert sketch_stats.psi_counts(*counts) == pytest.approx(
        float(np.sum((q - share) * np.log(q / share))), abs=1e-12
    )


# --------------------------------------------------------------------------- verdicts against Evidently

CATEGORIES = np.array(["a", "b", "c", "d", "e"])
SHARES = np.array([0.4, 0.25, 0.2, 0.1, 0.05])
CASES: dict[str, dict[str, Any]] = {
    "no drift": {},
    "mean +0.1sd": {"shift": 0.1},
    "mean +0.5sd": {"shift": 0.5},
    "mean +1sd": {"shift": 1.0},
    "scale x1.5": {"scale": 1.5},
    "new category": {"categories": np.array(["a", "b", "c", "d", "f"])},
    "category swap": {"shares": SHARES[::-1].copy()},
    "nulls appear": {"nulls": 0.2},
}


def frame(
    rng: np.random.Generator,
    rows: int,
    *,
    shift: float = 0.0,
    scale: float = 1.0,
    categories: np.ndarray[Any, Any] = CATEGORIES,
    shares: np.ndarray[Any, Any] = SHARES,
    nulls: float = 0.0,
) -> pd.DataFrame:
    num = rng.normal(shift, scale, rows)
    cat = rng.choice(categories, rows, p=shares).astype(object)
    if nulls:
        num[rng.random(rows) < nulls] = np.nan
        cat[rng.random(rows) < nulls] = None
    return pd.DataFrame({"num": num, "cat": cat, "other": rng.normal(5, 2, rows)})


@pytest.fixture(scope="module")
def evidently() -> Iterator[Any]:
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry, off
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import evidently as module
        from evidently import presets

    assert module.__version__ == "0.7.23"
    yield module, presets


def evidently_verdicts(
    evidently: Any, ref: pd.DataFrame, cur: pd.DataFrame
) -> dict[str, tuple[str, float, bool]]:
    """Per column: Evidently's method, statistic and verdict (its test FAILs on drift)."""
    module, presets = evidently
    definition = module.DataDefinition(numerical_columns=["num", "other"], categorical_columns=["cat"])
    report = module.Report([presets.DataDriftPreset()], include_tests=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = report.run(
            module.Dataset.from_pandas(cur, data_definition=definition),
            module.Dataset.from_pandas(ref, data_definition=definition),
        ).dict()
    values = {
        m["config"]["column"]: (m["config"]["method"], float(m["value"]))
        for m in snapshot["metrics"]
        if m["config"]["type"].endswith("ValueDrift")
    }
    verdicts = {
        t["metric_config"]["params"]["column"]: t["status"] == "FAIL"
        for t in snapshot["tests"]
        if "column" in t["metric_config"]["params"]
    }
    return {column: (*values[column], verdicts[column]) for column in values}


EVIDENTLY_METHODS = {
    "K-S p_value": "ks",
    "Wasserstein distance (normed)": "wasserstein",
    "chi-square p_value": "chisquare",
    "Jensen-Shannon distance": "jensenshannon",
}


def near_threshold(result: drift.FeatureDrift, ref: pd.Series, cur: pd.Series, raw: float) -> bool:
    """Whether the raw statistic is within the sketch's error of the threshold (either verdict is right)."""
    a = Profile.from_columns({"x": ref.to_numpy()}).features["x"]
    b = Profile.from_columns({"x": cur.to_numpy()}).features["x"]
    if result.test == "wasserstein":
        return abs(raw - result.threshold) <= WASSERSTEIN_MEASURED_BOUND
    if result.test == "ks":
        assert isinstance(a, NumericFeature) and isinstance(b, NumericFeature)
        d = float(scipy_stats.ks_2samp(ref.dropna(), cur.dropna()).statistic)
        bound = sketch_stats.ks_error_bound(a, b)
        n, m = a.values, b.values
        high, low = sketch_stats.ks_pvalue(max(d - bound, 0), n, m), sketch_stats.ks_pvalue(d + bound, n, m)
        return low <= result.threshold <= high
    return False  # category counts are exact: no sketch error


def test_verdicts_agree_with_evidently(evidently: Any) -> None:
    lines = [f"{'rows':>6} {'case':14} {'column':6} {'Evidently':>26}   {'mlobs (sketches)':>26}   agree"]
    disagreements = []
    for rows in (1000, 10_000):
        for index, (case, change) in enumerate(CASES.items()):
            rng = np.random.default_rng(1000 * index + rows)
            ref, cur = frame(rng, rows), frame(rng, rows, **change)
            theirs = evidently_verdicts(evidently, ref, cur)
            ours = drift.compare(Profile.from_frame(ref), Profile.from_frame(cur))
            for column, (method, value, verdict) in theirs.items():
                result = ours.features[column]
                assert result.test == EVIDENTLY_METHODS[method], (rows, case, column)  # the same test chosen
                edge = near_threshold(result, ref[column], cur[column], value)
                if result.test == "chisquare":
                    agree = "by design" if result.drifted != verdict else "yes"
                else:
                    agree = "yes" if result.drifted == verdict else ("edge" if edge else "NO")
                lines.append(
                    f"{rows:>6} {case:14} {column:6} {result.test:>13} {value:7.4f} {verdict!s:5}"
                    f"   {result.test:>13} {result.statistic:7.4f} {result.drifted!s:5}   {agree}"
                )
                if agree == "NO" or (agree == "by design" and not (verdict and not result.drifted)):
                    disagreements.append((rows, case, column, value, result.statistic))
    print("\n" + "\n".join(lines))
    assert not disagreements
    by_design = [line for line in lines if line.endswith("by design")]
    # Evidently's small-sample chi-square tests the current counts against the reference's shares as if
    # they were exact, so it flags unchanged columns (28% of them: the test below); the two-sample test
    # does not.  Every such difference is Evidently flagging a column whose categories did not change.
    assert len(by_design) == 4
    assert all(" cat " in line and not any(case in line for case in CATEGORIES_CHANGED) for line in by_design)


CATEGORIES_CHANGED = ("new category", "category swap")


# --------------------------------------------------------------------------- false positives


def profile_pair(seed: int, rows: int) -> tuple[Profile, Profile]:
    rng = np.random.default_rng(seed)
    columns = lambda: {  # noqa: E731 - the same recipe for both sides
        **{f"n{i}": rng.normal(i, 1 + i, rows) for i in range(3)},
        "c": rng.choice(CATEGORIES, rows, p=SHARES),
    }
    return Profile.from_columns(columns()), Profile.from_columns(columns())


def false_positive_rate(rows: int, seeds: int = 200) -> float:
    flagged = total = 0
    for seed in range(seeds):
        report = drift.compare(*profile_pair(seed, rows))
        flagged += len(report.drifted)
        total += len(report.features)
    return flagged / total


def test_false_positive_rate_at_10k_rows_is_within_the_promise() -> None:
    rate = false_positive_rate(10_000)
    print(f"\nfalse positives at 10,000 rows: {rate:.2%} of 800 feature comparisons")
    assert rate <= 0.01  # docs/drift.md: at most 1% of features of data that did not drift


def test_false_positive_rate_at_1k_rows_is_the_tests_significance_level() -> None:
    rate = false_positive_rate(1000)
    print(f"\nfalse positives at 1,000 rows: {rate:.2%} of 800 feature comparisons")
    assert 0.02 <= rate <= 0.085  # the p-value tests at 0.05: 5% ± 3 standard errors of 800 comparisons


def test_evidentlys_small_sample_chi_square_flags_more_than_its_level(evidently: Any) -> None:
    """Why our chi-square is the two-sample test: Evidently's, run by itself on the same 200 seeds."""
    from evidently.legacy.calculations.stattests.chisquare_stattest import chi_stat_test
    from evidently.legacy.core import ColumnType

    theirs = ours = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        ref = pd.Series(rng.choice(CATEGORIES, 1000, p=SHARES))
        cur = pd.Series(rng.choice(CATEGORIES, 1000, p=SHARES))
        theirs += chi_stat_test(ref, cur, ColumnType.Categorical, 0.05).drifted
        report = drift.compare(Profile.from_columns({"c": ref}), Profile.from_columns({"c": cur}))
        ours += report.features["c"].drifted
    print(f"\nno-drift categorical, 1,000 rows, 200 seeds: Evidently flags {theirs}, mlobs {ours}")
    assert theirs == 57  # 28.5%, where a test at 0.05 should flag about 10 (exact counts: deterministic)
    assert ours == 7
