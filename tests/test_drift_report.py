"""drift.compare and DriftReport: default tests, tests and thresholds per feature, verdicts, bad arguments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline_sdk import drift
from pipeline_sdk.drift import Profile, Test


def pair(rows: int, shift: float = 0.0, seed: int = 0) -> tuple[Profile, Profile]:
    rng = np.random.default_rng(seed)
    return (
        Profile.from_columns(
            {
                "x": rng.normal(size=rows),
                "k": rng.integers(0, 3, rows),
                "c": rng.choice(["a", "b"], rows),
                "z": rng.normal(size=rows),
            }
        ),
        Profile.from_columns(
            {
                "x": rng.normal(shift, 1, size=rows),
                "k": rng.integers(0, 3, rows),
                "c": rng.choice(["a", "b"], rows),
                "z": rng.normal(size=rows),
            }
        ),
    )


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (1000, {"x": "ks", "k": "chisquare", "c": "chisquare", "z": "ks"}),
        (1001, {"x": "wasserstein", "k": "jensenshannon", "c": "jensenshannon", "z": "wasserstein"}),
    ],
)
def test_default_tests_follow_evidentlys_choice_at_the_1000_row_boundary(
    rows: int, expected: dict[str, str]
) -> None:
    report = drift.compare(*pair(rows))
    assert {name: result.test for name, result in report.features.items()} == expected
    assert {name: result.threshold for name, result in report.features.items()} == {
        name: {"ks": 0.05, "chisquare": 0.05, "wasserstein": 0.1, "jensenshannon": 0.1}[test]
        for name, test in expected.items()
    }


def test_a_shifted_feature_drifts_and_the_share_decides_the_data_set() -> None:
    baseline, current = pair(5000, shift=1.0)
    report = drift.compare(baseline, current)
    assert report.drifted == ["x"]
    assert report.drifted_share == 0.25
    assert report.dataset_drift is False
    assert drift.compare(baseline, current, drift_share=0.25).dataset_drift is True
    assert drift.compare(baseline, current, drift_share=0.26).dataset_drift is False
    x = report.features["x"]
    assert (x.test, x.threshold, x.drifted) == ("wasserstein", 0.1, True)
    assert 0.9 < x.statistic < 1.1
    assert (x.reference_values, x.current_values, x.reference_null_share) == (5000, 5000, 0.0)


def test_rows_and_frame() -> None:
    report = drift.compare(*pair(2000, shift=1.0))
    rows = report.rows()
    assert [row["feature"] for row in rows] == ["x", "k", "c", "z"]
    assert set(rows[0]) == {
        "feature",
        "type",
        "test",
        "statistic",
        "threshold",
        "drifted",
        "reference_values",
        "current_values",
        "reference_null_share",
        "current_null_share",
    }
    assert (rows[0]["type"], rows[0]["drifted"]) == ("numeric", True)
    frame = report.to_frame()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == ["x", "k", "c", "z"]
    assert bool(frame.loc["x", "drifted"]) is True


@pytest.mark.parametrize(
    ("test", "statistic_range"),
    [
        (Test("psi"), (0.2, 0.35)),
        (Test("ks"), (0.0, 1e-10)),
        ("wasserstein", (0.4, 0.6)),
    ],
)
def test_a_test_can_be_chosen_per_feature(test: Test | str, statistic_range: tuple[float, float]) -> None:
    report = drift.compare(*pair(20_000, shift=0.5), tests={"x": test})
    x = report.features["x"]
    assert x.test == (test if isinstance(test, str) else test.method)
    low, high = statistic_range
    assert low <= x.statistic <= high
    assert x.drifted is True


def test_thresholds_are_settable_per_feature() -> None:
    baseline, current = pair(20_000, shift=0.5)
    loose = drift.compare(baseline, current, tests={"x": Test("wasserstein", threshold=0.6)})
    assert (loose.features["x"].threshold, loose.features["x"].drifted) == (0.6, False)
    strict = drift.compare(baseline, current, tests={"z": Test("wasserstein", threshold=0.001)})
    assert strict.features["z"].drifted is True


def test_p_value_thresholds_compare_as_evidently() -> None:
    baseline, current = pair(500, shift=0.0, seed=3)
    report = drift.compare(baseline, current, tests={"x": "ks", "c": "chisquare"})
    p_x, p_c = report.features["x"].statistic, report.features["c"].statistic
    at_x = drift.compare(baseline, current, tests={"x": Test("ks", threshold=p_x)})
    assert at_x.features["x"].drifted is True  # ks: p <= threshold drifts
    at_c = drift.compare(baseline, current, tests={"c": Test("chisquare", threshold=p_c)})
    assert at_c.features["c"].drifted is False  # chi-square: p < threshold drifts


def test_categorical_psi_and_discrete_numeric_counts() -> None:
    baseline = Profile.from_columns({"c": ["a"] * 600 + ["b"] * 400, "k": [0] * 500 + [1] * 500})
    current = Profile.from_columns({"c": ["a"] * 400 + ["b"] * 600, "k": [0] * 500 + [1] * 500})
    report = drift.compare(baseline, current, tests={"c": "psi", "k": "jensenshannon"})
    assert report.features["c"].statistic == pytest.approx(2 * 0.2 * math.log(1.5), abs=1e-12)
    assert report.features["k"].statistic == pytest.approx(0.0, abs=1e-12)


def test_a_side_without_values_is_drift_only_when_the_other_has_some() -> None:
    baseline = Profile.from_columns({"x": [1.0, 2.0, 3.0], "gone": [None, None, None]})
    current = Profile.from_columns({"x": [None, None, None], "gone": [None, None, None]})
    report = drift.compare(baseline, current)
    x, gone = report.features["x"], report.features["gone"]
    assert (math.isnan(x.statistic), x.drifted, x.current_null_share) == (True, True, 1.0)
    assert (math.isnan(gone.statistic), gone.drifted, gone.kind) == (True, False, None)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"baseline": 1}, TypeError, r"baseline must be a Profile, got int"),
        ({"current": "p"}, TypeError, r"current must be a Profile, got str"),
        ({"tests": ["x"]}, TypeError, r"tests must be a mapping of feature name to Test"),
        ({"tests": {"nope": "ks"}}, ValueError, r"tests\['nope'\] names no compared feature"),
        ({"tests": {"x": 0.1}}, TypeError, r"tests\['x'\] must be a Test or a method name, got float"),
        ({"tests": {"x": "t-test"}}, ValueError, r"method='t-test' is invalid: must be one of"),
        (
            {"tests": {"c": "wasserstein"}},
            ValueError,
            r"tests\['c'\]: wasserstein does not apply to categorical",
        ),
        (
            {"tests": {"x": "jensenshannon"}},
            ValueError,
            r"tests\['x'\]: jensenshannon needs counts of values",
        ),
        ({"features": ["x", "q"]}, ValueError, r"features names what the baseline does not have: \['q'\]"),
        ({"features": "x"}, TypeError, r"features must be a list of feature names, got str"),
        ({"drift_share": 0}, ValueError, r"drift_share=0 is invalid: must be above 0 and at most 1"),
        ({"drift_share": 1.5}, ValueError, r"drift_share=1.5 is invalid"),
        ({"drift_share": True}, ValueError, r"drift_share=True is invalid"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    baseline, current = pair(100)
    arguments: dict[str, object] = {"baseline": baseline, "current": current, **kwargs}
    with pytest.raises(error, match=message):
        drift.compare(**arguments)  # type: ignore[arg-type]


def test_a_feature_missing_from_current_or_of_another_type_is_an_error() -> None:
    baseline = Profile.from_columns({"x": [1.0, 2.0], "y": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"current has no feature \['y'\] \(it has \['x'\]\)"):
        drift.compare(baseline, Profile.from_columns({"x": [1.0, 2.0]}))
    with pytest.raises(
        ValueError, match=r"feature 'y' is numeric in the baseline and categorical in current"
    ):
        drift.compare(baseline, Profile.from_columns({"x": [1.0], "y": ["a"]}))
    report = drift.compare(baseline, Profile.from_columns({"x": [1.0, 2.0]}), features=["x"])
    assert list(report.features) == ["x"]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (("ks", 1.0), ValueError, r"threshold=1.0 is invalid: a p-value threshold must be between 0 and 1"),
        (("ks", 0.0), ValueError, r"threshold=0.0 is invalid: a p-value threshold"),
        (("psi", -0.1), ValueError, r"threshold=-0.1 is invalid: must be a finite number above 0"),
        (("psi", math.inf), ValueError, r"threshold=inf is invalid"),
        (("psi", "0.2"), TypeError, r"threshold must be a float, got str '0.2'"),
        (("psi", True), TypeError, r"threshold must be a float, got bool True"),
    ],
)
def test_bad_tests_are_refused_when_made(
    arguments: tuple[object, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Test(*arguments)  # type: ignore[arg-type]


def test_an_empty_comparison_is_no_drift() -> None:
    report = drift.compare(Profile(), Profile())
    assert (report.drifted_share, report.dataset_drift, report.rows()) == (0.0, False, [])
