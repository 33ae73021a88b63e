"""Drift profiles: exact counts and moments, type inference, merge, the binary format and its chunks."""

from __future__ import annotations

import base64
import math
import random
import struct

import numpy as np
import pandas as pd
import pytest

from pipeline_sdk import validation
from pipeline_sdk.drift import (
    CHUNK_MAX_BYTES,
    CategoricalFeature,
    FeatureType,
    NullFeature,
    NumericFeature,
    Profile,
    codec,
)


def numeric(profile: Profile, name: str) -> NumericFeature:
    feature = profile.features[name]
    assert isinstance(feature, NumericFeature)
    return feature


def categorical(profile: Profile, name: str) -> CategoricalFeature:
    feature = profile.features[name]
    assert isinstance(feature, CategoricalFeature)
    return feature


# --------------------------------------------------------------------------- counts and moments


def test_counts_nulls_and_moments_are_exact() -> None:
    profile = Profile.from_columns(
        {"age": [30, 40, None, 50.5, float("nan"), math.inf], "country": ["fr", "de", "fr", None, "fr", "de"]}
    )
    assert profile.rows == 6
    age = numeric(profile, "age")
    assert (age.count, age.nulls, age.values) == (6, 3, 3)  # None, NaN and inf are nulls
    assert (age.min, age.max) == (30.0, 50.5)
    assert age.mean == pytest.approx(120.5 / 3, abs=1e-12)
    assert age.std == pytest.approx(float(np.std([30, 40, 50.5])), abs=1e-12)
    assert age.quantile(0.0) == 30.0
    assert age.quantile(1.0) == 50.5
    country = categorical(profile, "country")
    assert (country.count, country.nulls, country.values) == (6, 1, 5)
    assert country.frequencies() == {"fr": 3, "de": 2}
    assert country.max_error == 0


def test_numpy_columns_are_profiled_in_one_pass_per_column() -> None:
    floats = np.array([1.5, np.nan, -2.0, np.inf, -np.inf, 4.0])
    ints = np.arange(10, dtype=np.int32)
    flags = np.array([True, False, True, True, True, False, True, True, True, True])
    words = np.array(["a", "b", "a", "", "a", "b", "a", "a", "a", "c"])
    profile = Profile.from_columns({"f": floats})
    f = numeric(profile, "f")
    assert (f.count, f.nulls, f.min, f.max, f.mean) == (6, 3, -2.0, 4.0, 3.5 / 3)
    profile = Profile.from_columns({"i": ints, "flag": flags, "word": words})
    i = numeric(profile, "i")
    assert (i.count, i.nulls, i.min, i.max, i.mean) == (10, 0, 0.0, 9.0, 4.5)
    assert i.std == pytest.approx(float(np.std(np.arange(10))), abs=1e-12)
    assert categorical(profile, "flag").frequencies() == {"True": 8, "False": 2}
    assert categorical(profile, "word").frequencies() == {"a": 6, "b": 2, "": 1, "c": 1}


def test_moments_merge_stably_for_large_offsets() -> None:
    rng = np.random.default_rng(3)
    data = 1e9 + rng.normal(size=20_000)
    profile = Profile.from_rows(({"x": float(v)} for v in data), batch_size=1000)
    x = numeric(profile, "x")
    assert x.mean == pytest.approx(float(np.mean(data)), abs=1e-6)
    assert x.std == pytest.approx(float(np.std(data)), rel=1e-6)


def test_discrete_values_are_counted_exactly_up_to_five_distinct() -> None:
    five = Profile.from_columns({"x": [0, 1, 2, 3, 4, 4, 4]})
    assert numeric(five, "x").discrete == {0.0: 1, 1.0: 1, 2.0: 1, 3.0: 1, 4.0: 3}
    six = Profile.from_columns({"x": [0, 1, 2, 3, 4, 5]})
    assert numeric(six, "x").discrete is None
    left = Profile.from_columns({"x": [0, 1, 2]})
    right = Profile.from_columns({"x": [3, 4, 5]})
    assert numeric(left.merge(right), "x").discrete is None  # six distinct once merged
    assert numeric(left.merge(left), "x").discrete == {0.0: 2, 1.0: 2, 2.0: 2}


# --------------------------------------------------------------------------- types


def test_types_are_inferred() -> None:
    profile = Profile.from_columns(
        {
            "n": [1, 2.5, None],
            "np": [np.int64(3), np.float32(1.5), None],
            "b": [True, False, None],  # booleans are categories
            "s": ["x", float("nan"), None],  # NaN among strings is pandas' missing value
            "none": [None, None, None],
        }
    )
    kinds = {name: feature.kind for name, feature in profile.features.items()}
    assert kinds == {
        "n": FeatureType.NUMERIC,
        "np": FeatureType.NUMERIC,
        "b": FeatureType.CATEGORICAL,
        "s": FeatureType.CATEGORICAL,
        "none": None,
    }
    assert categorical(profile, "b").frequencies() == {"True": 1, "False": 1}
    assert categorical(profile, "s").nulls == 2
    none = profile.features["none"]
    assert isinstance(none, NullFeature)
    assert (none.count, none.nulls) == (3, 3)


def test_types_can_be_given() -> None:
    profile = Profile.from_columns(
        {
            "zip": [94107, 10001, 94107, None],
            "flag": [True, False, True, True],
            "score": ["1", "2.5", None, "3"],
        },
        types={"zip": "categorical", "flag": FeatureType.NUMERIC, "score": "numeric"},
    )
    assert categorical(profile, "zip").frequencies() == {"94107": 2, "10001": 1}
    assert numeric(profile, "flag").mean == 0.75
    score = numeric(profile, "score")
    assert (score.nulls, score.min, score.max) == (1, 1.0, 3.0)
    zips = np.array([94107, 10001, 94107])
    assert categorical(
        Profile.from_columns({"zip": zips}, types={"zip": "categorical"}), "zip"
    ).frequencies() == {
        "94107": 2,
        "10001": 1,
    }


@pytest.mark.parametrize(
    ("values", "found"),
    [
        ([1, "a"], "int, str"),
        ([1.5, "a", None], "float, str"),
        ([True, 1], "bool, int"),
        ([b"x"], "bytes"),
    ],
)
def test_a_column_that_mixes_types_is_an_error_naming_it(values: list[object], found: str) -> None:
    with pytest.raises(ValueError, match=rf"column 'mixed' holds {found}") as info:
        Profile.from_columns({"ok": [0] * len(values), "mixed": values})
    assert "types={'mixed': 'categorical'}" in str(info.value)


def test_a_column_that_changes_type_between_batches_is_an_error_naming_it() -> None:
    rows = [{"x": 1}, {"x": 2}, {"x": "n/a"}]
    with pytest.raises(ValueError, match=r"column 'x' held numbers in earlier rows, now str"):
        Profile.from_rows(rows, batch_size=2)
    assert Profile.from_rows(rows[:2], batch_size=2).features["x"].kind is FeatureType.NUMERIC


def test_a_given_numeric_type_refuses_text() -> None:
    with pytest.raises(ValueError, match=r"types\['x'\] is 'numeric' but the column holds str 'abc'"):
        Profile.from_columns({"x": [1, "abc"]}, types={"x": "numeric"})


def test_unsupported_numpy_dtypes_are_refused() -> None:
    with pytest.raises(TypeError, match=r"column 'when' has dtype datetime64\[D\]"):
        Profile.from_columns({"when": np.array(["2024-01-01"], dtype="datetime64[D]")})


# --------------------------------------------------------------------------- rows and frames


def test_rows_with_missing_keys_count_as_nulls() -> None:
    rows = [{"a": 1.0}, {"a": 2.0}, {"a": 3.0, "b": "x"}, {"b": "y"}, {}]
    profile = Profile.from_rows(rows, batch_size=2)
    a, b = numeric(profile, "a"), categorical(profile, "b")
    assert profile.rows == 5
    assert (a.count, a.nulls, a.mean) == (5, 2, 2.0)
    assert (b.count, b.nulls) == (5, 3)  # two rows before it appeared, and the last one
    assert b.frequencies() == {"x": 1, "y": 1}


def test_a_frame_profiles_like_its_columns() -> None:
    frame = pd.DataFrame(
        {
            "i": pd.array([1, None, 3], dtype="Int64"),
            "f": [0.5, np.nan, 1.5],
            "cat": pd.Categorical(["1", "2", "1"]),
            "codes": pd.Categorical([1, 2, 1]),  # a category dtype is categorical whatever its values
            "flag": pd.array([True, None, False], dtype="boolean"),
            "s": pd.array(["a", None, "b"], dtype="string"),
            "o": ["a", None, "b"],
        }
    )
    profile = Profile.from_frame(frame)
    expected = Profile.from_columns(
        {
            "i": [1, None, 3],
            "f": [0.5, None, 1.5],
            "cat": ["1", "2", "1"],
            "codes": ["1", "2", "1"],
            "flag": [True, None, False],
            "s": ["a", None, "b"],
            "o": ["a", None, "b"],
        }
    )
    assert profile.to_bytes() == expected.to_bytes()
    with pytest.raises(TypeError, match=r"column 'when' has dtype datetime64\[ns\]"):
        Profile.from_frame(pd.DataFrame({"when": pd.to_datetime(["2024-01-01"])}))


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: Profile.from_columns("abc"), TypeError, r"columns must be a mapping"),  # type: ignore[arg-type]
        (lambda: Profile.from_columns({"x": "abc"}), TypeError, r"columns\['x'\] must be an iterable"),
        (lambda: Profile.from_columns({"x": 5}), TypeError, r"columns\['x'\] must be an iterable"),  # type: ignore[dict-item]
        (lambda: Profile.from_columns({1: [1]}), TypeError, r"columns key must be a str, got int 1"),  # type: ignore[dict-item]
        (
            lambda: Profile.from_columns({"": [1]}),
            ValueError,
            r"columns key='' is invalid: must not be empty",
        ),
        (lambda: Profile.from_columns({"a\nb": [1]}), ValueError, r"control character"),
        (lambda: Profile.from_columns({"x" * 251: [1]}), ValueError, r"longer than 250 characters"),
        (
            lambda: Profile.from_columns({"a": [1, 2], "b": [1, 2, 3]}),
            ValueError,
            r"columns\['b'\] has 3 values, columns\['a'\] 2",
        ),
        (
            lambda: Profile.from_columns({"a": [1]}, types={"a": "text"}),
            ValueError,
            r"types\['a'\]='text' is invalid: must be 'numeric' or 'categorical'",
        ),
        (
            lambda: Profile.from_columns({"a": [1]}, types={"b": "numeric"}),
            ValueError,
            r"types names columns the data does not have: \['b'\]",
        ),
        (lambda: Profile.from_columns({"a": [1]}, types=["a"]), TypeError, r"types must be a mapping"),  # type: ignore[arg-type]
        (lambda: Profile.from_rows([{"a": 1}, 5]), TypeError, r"rows\[1\] must be a mapping"),  # type: ignore[list-item]
        (lambda: Profile.from_rows({"a": 1}), TypeError, r"rows must be an iterable of mappings"),  # type: ignore[arg-type]
        (lambda: Profile.from_rows([{"a": 1}], batch_size=0), ValueError, r"batch_size=0 is invalid"),
        (
            lambda: Profile.from_rows([{"a": 1}], types={"b": "numeric"}),
            ValueError,
            r"types names columns the data does not have: \['b'\]",
        ),
        (lambda: Profile.from_frame([1]), TypeError, r"frame must be a pandas DataFrame"),  # type: ignore[arg-type]
        (lambda: Profile().merge({}), TypeError, r"other must be a Profile, got dict"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_are_named(call: object, error: type[Exception], message: str) -> None:
    assert callable(call)
    with pytest.raises(error, match=message):
        call()


# --------------------------------------------------------------------------- merge


def test_merge_equals_the_union_exactly_while_the_sketches_hold_every_value() -> None:
    rng = np.random.default_rng(7)
    a = {"x": rng.normal(size=150), "c": rng.choice(["a", "b", "c"], 150)}
    b = {"x": rng.normal(2, 3, size=120), "c": rng.choice(["c", "d"], 120)}
    union = {name: np.concatenate([a[name], b[name]]) for name in a}
    merged = Profile.from_columns(a).merge(Profile.from_columns(b))
    whole = Profile.from_columns(union)
    assert merged.rows == whole.rows == 270
    mx, wx = numeric(merged, "x"), numeric(whole, "x")
    assert (mx.count, mx.nulls, mx.min, mx.max) == (wx.count, wx.nulls, wx.min, wx.max)
    assert mx.mean == pytest.approx(wx.mean, abs=1e-12)
    assert mx.std == pytest.approx(wx.std, abs=1e-12)
    grid = np.linspace(0, 1, 101)
    assert mx.quantiles(grid) == wx.quantiles(grid)  # 270 values: no compaction, so exact
    assert categorical(merged, "c").frequencies() == categorical(whole, "c").frequencies()


def test_merge_of_large_profiles_is_within_the_documented_rank_error() -> None:
    rng = np.random.default_rng(11)
    parts = [rng.normal(i, 1, size=50_000) for i in range(4)]
    merged = Profile.from_columns({"x": parts[0]})
    for part in parts[1:]:
        merged = merged.merge(Profile.from_columns({"x": part}))
    union = np.sort(np.concatenate(parts))
    x = numeric(merged, "x")
    assert x.count == 200_000
    assert x.mean == pytest.approx(float(union.mean()), abs=1e-9)
    epsilon = x.rank_error
    assert 0.0067 < epsilon < 0.0068  # k=400's documented single-sided rank error, 99% confidence
    grid = np.linspace(0.01, 0.99, 99)
    true_ranks = np.searchsorted(union, np.asarray(x.quantiles(grid)), side="right") / union.size
    assert float(np.max(np.abs(true_ranks - grid))) <= epsilon


def test_merge_leaves_both_operands_unchanged_and_adopts_a_type_seen_only_as_nulls() -> None:
    left = Profile.from_columns({"x": [None, None], "y": [1.0, 2.0]})
    right = Profile.from_columns({"x": [1.0, 3.0], "z": ["a", "b"]})
    before = (left.to_bytes(), right.to_bytes())
    merged = left.merge(right)
    assert (left.to_bytes(), right.to_bytes()) == before
    x = numeric(merged, "x")
    assert (x.count, x.nulls, x.mean) == (4, 2, 2.0)
    y, z = numeric(merged, "y"), categorical(merged, "z")
    assert (y.count, y.nulls, z.count, z.nulls) == (4, 2, 4, 2)  # absent from one side: its rows are nulls
    assert merged.rows == 4


def test_merge_of_different_types_is_an_error_naming_the_feature() -> None:
    left = Profile.from_columns({"x": [1.0]})
    right = Profile.from_columns({"x": ["a"]})
    with pytest.raises(ValueError, match=r"feature 'x' is numeric in this profile and categorical in other"):
        left.merge(right)


def test_frequent_items_past_capacity_report_their_error() -> None:
    values = [f"user{i}" for i in range(2000)] + ["hot"] * 5000
    c = categorical(Profile.from_columns({"u": values}), "u")
    assert c.values == 7000
    assert 0 < c.max_error <= math.ceil(7000 * 3.5 / 1024)  # the sketch's a-priori bound at lg_max_k=10
    assert abs(c.frequencies()["hot"] - 5000) <= c.max_error


# --------------------------------------------------------------------------- bytes


def sample_profile(rows: int = 1000, seed: int = 5) -> Profile:
    rng = np.random.default_rng(seed)
    return Profile.from_columns(
        {
            "x": rng.normal(size=rows),
            "k": rng.integers(0, 3, size=rows),
            "c": rng.choice(["a", "b", "é"], size=rows),
            "empty": [None] * rows,
        }
    )


def observable(profile: Profile) -> dict[str, object]:
    """Everything a profile answers, feature by feature."""
    out: dict[str, object] = {"rows": profile.rows}
    grid = np.linspace(0, 1, 21)
    for name, feature in profile.features.items():
        seen: tuple[object, ...] = (type(feature), feature.count, feature.nulls)
        if isinstance(feature, NumericFeature):
            seen += (
                feature.min,
                feature.max,
                feature.mean,
                feature.std,
                feature.discrete,
                feature.quantiles(grid),
            )
        if isinstance(feature, CategoricalFeature):
            seen += (sorted(feature.frequencies().items()), feature.max_error)
        out[name] = seen
    return out


def test_bytes_round_trip() -> None:
    profile = sample_profile()
    data = profile.to_bytes()
    assert data[:5] == b"MLPF\x01"
    back = Profile.from_bytes(data)
    assert observable(back) == observable(profile)
    again = back.to_bytes()
    assert len(again) == len(data)  # a frequent-items sketch may list its items in another order
    assert observable(Profile.from_bytes(again)) == observable(profile)
    assert back.rows == 1000
    assert list(back.features) == ["c", "empty", "k", "x"]  # sorted by name
    x0, x1 = numeric(profile, "x"), numeric(back, "x")
    assert (x1.count, x1.nulls, x1.min, x1.max, x1.mean, x1.std) == (
        x0.count,
        x0.nulls,
        x0.min,
        x0.max,
        x0.mean,
        x0.std,
    )
    assert x1.quantiles([0.1, 0.5, 0.9]) == x0.quantiles([0.1, 0.5, 0.9])
    assert numeric(back, "k").discrete == numeric(profile, "k").discrete
    assert categorical(back, "c").frequencies() == categorical(profile, "c").frequencies()
    assert Profile.from_bytes(Profile().to_bytes()).rows == 0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"XXXX" + b[4:], r"data is not an mlobs profile \(magic b'XXXX'"),
        (
            lambda b: b[:4] + b"\x02" + b[5:],
            r"profile format version 2 is not supported \(this SDK reads 1\)",
        ),
        (lambda b: b[:-1], r"data is not an mlobs profile: .*truncated"),
        (lambda b: b + b"\x00", r"data is not an mlobs profile: 1 bytes after the last feature"),
        (lambda b: b[:9], r"truncated"),
    ],
)
def test_corrupt_bytes_are_a_clear_error(mutate: object, message: str) -> None:
    assert callable(mutate)
    data = sample_profile(rows=50).to_bytes()
    with pytest.raises(ValueError, match=message):
        Profile.from_bytes(mutate(data))


def test_from_bytes_refuses_what_is_not_bytes() -> None:
    with pytest.raises(TypeError, match=r"data must be bytes, got str"):
        Profile.from_bytes("MLPF")  # type: ignore[arg-type]


def test_a_corrupt_sketch_is_a_clear_error_naming_the_feature() -> None:
    data = bytearray(Profile.from_columns({"x": [1.0, 2.0]}).to_bytes())
    sketch_at = len(data) - numeric(Profile.from_bytes(bytes(data)), "x").sketch_bytes
    data[sketch_at : sketch_at + 4] = b"\xff\xff\xff\xff"
    with pytest.raises(ValueError, match=r"feature 'x': its KLL sketch does not deserialize"):
        Profile.from_bytes(bytes(data))


# --------------------------------------------------------------------------- chunks


def big_profile() -> Profile:
    rng = np.random.default_rng(1)
    columns: dict[str, object] = {f"n{i:02d}": rng.normal(size=20_000) for i in range(20)}
    for i in range(5):
        columns[f"c{i}"] = [f"item-{v}" for v in rng.integers(0, 3000, size=20_000)]
    return Profile.from_columns(columns)  # type: ignore[arg-type]


def test_the_default_chunk_fits_a_string_field_once_base64_encoded() -> None:
    assert CHUNK_MAX_BYTES == 24576
    assert len(base64.b64encode(bytes(CHUNK_MAX_BYTES))) == validation.MAX_TEXT_LENGTH
    assert len(base64.b64encode(bytes(CHUNK_MAX_BYTES + 1))) > validation.MAX_TEXT_LENGTH


def test_a_big_profile_splits_into_chunks_that_reassemble_byte_equal() -> None:
    profile = big_profile()
    data = profile.to_bytes()
    assert len(data) > 4 * CHUNK_MAX_BYTES
    chunks = profile.to_chunks()
    assert len(chunks) == math.ceil(len(data) / (CHUNK_MAX_BYTES - codec.CHUNK_HEADER_BYTES))
    assert all(len(chunk) <= CHUNK_MAX_BYTES for chunk in chunks)
    assert sum(len(chunk) - codec.CHUNK_HEADER_BYTES for chunk in chunks) == len(data)  # nothing cut
    shuffled = list(chunks)
    random.Random(0).shuffle(shuffled)
    assert codec.join_chunks(shuffled) == data
    assert observable(Profile.from_chunks(shuffled)) == observable(profile)


@pytest.mark.parametrize(("length", "expected"), [(299, 3), (300, 3), (301, 4)])
def test_chunk_count_at_the_boundary(length: int, expected: int) -> None:
    data = bytes(range(256)) + bytes(length - 256)
    chunks = codec.split_chunks(data, 100 + codec.CHUNK_HEADER_BYTES)  # 100 bytes of payload each
    assert len(chunks) == expected
    assert [len(chunk) - codec.CHUNK_HEADER_BYTES for chunk in chunks][-1] == length - 100 * (expected - 1)
    assert codec.join_chunks(chunks) == data


def test_missing_duplicated_and_foreign_chunks_are_clear_errors() -> None:
    chunks = sample_profile(rows=300).to_chunks(400)
    assert len(chunks) >= 3
    with pytest.raises(ValueError, match=rf"chunk 1 of {len(chunks)} is missing"):
        Profile.from_chunks(chunks[:1] + chunks[2:])
    with pytest.raises(ValueError, match=rf"chunk 0 of {len(chunks)} appears twice"):
        Profile.from_chunks([chunks[0], *chunks])
    other = sample_profile(rows=300, seed=6).to_chunks(400)
    with pytest.raises(ValueError, match=r"chunks\[1\] belongs to another profile"):
        Profile.from_chunks([chunks[0], other[1], *chunks[2:]])
    with pytest.raises(ValueError, match=r"chunks must not be empty"):
        Profile.from_chunks([])
    with pytest.raises(ValueError, match=r"chunks\[0\] is not an mlobs profile chunk"):
        Profile.from_chunks([b"junk" * 10])
    tampered = bytearray(chunks[1])
    tampered[-1] ^= 0xFF
    with pytest.raises(ValueError, match=r"reassembled chunks do not match their digest"):
        Profile.from_chunks([chunks[0], bytes(tampered), *chunks[2:]])


def test_chunk_header_is_pinned() -> None:
    chunks = sample_profile(rows=300).to_chunks(400)
    magic, version, _digest, index, total = struct.unpack_from("<4sB16sII", chunks[1])
    assert (magic, version, index, total) == (b"MLPC", 1, 1, len(chunks))
    assert codec.CHUNK_HEADER_BYTES == 29


@pytest.mark.parametrize("max_bytes", [29, 30 - 1, 0, -5])
def test_too_small_a_chunk_is_refused(max_bytes: int) -> None:
    with pytest.raises(ValueError, match=rf"max_bytes={max_bytes} is invalid: must be at least 30"):
        sample_profile(rows=10).to_chunks(max_bytes)


def test_to_chunks_refuses_a_non_int() -> None:
    with pytest.raises(TypeError, match=r"max_bytes must be an int, got float 1\.5"):
        sample_profile(rows=10).to_chunks(1.5)  # type: ignore[arg-type]


def test_a_text_column_is_scanned_for_its_types_in_one_pass() -> None:
    """The type check of a column stops at the first value of each type (it cost 0.7 s per 1M strings)."""
    from unittest import mock

    from pipeline_sdk.drift import columns

    calls = []
    for rows in (10, 10_000):
        with mock.patch.object(columns, "_is_nan", wraps=columns._is_nan) as is_nan:
            Profile.from_columns({"plan": ["a", "b"] * (rows // 2)})
        calls.append(is_nan.call_count)
    assert calls[0] == calls[1] <= 10  # the same few checks, whatever the rows (it was once per value)
    mixed = [float("nan")] * 3 + [1.5, "x"]  # a NaN is passed over for a float that is a number
    assert columns._distinct_by_type(mixed) == [1.5, "x"]
    [only] = columns._distinct_by_type([float("nan"), float("nan")])
    assert math.isnan(only)  # only NaN: a NaN


def test_a_finite_float_column_is_profiled_without_a_copy() -> None:
    """A batch's numbers are the caller's array while every value is finite (its memory is not doubled)."""
    from pipeline_sdk.drift import columns

    array = np.arange(1000, dtype=np.float64)
    assert columns.convert("x", array, None).numbers is array
    array[3] = np.nan
    column = columns.convert("x", array, None)
    assert not np.shares_memory(column.numbers, array) and column.numbers.size == 999 and column.nulls == 1


def test_a_text_series_is_counted_by_pandas_and_profiles_as_its_values_do() -> None:
    """An object or string Series is counted by value_counts (C), never walked value by value."""
    from unittest import mock

    from pipeline_sdk.drift import columns

    values = ["a", "b", None, "a", float("nan"), "c", "a"] * 100
    for series in (pd.Series(values, dtype=object), pd.Series(values, dtype="string")):
        with mock.patch.object(columns, "_distinct_by_type", wraps=columns._distinct_by_type) as walked:
            from_pandas = Profile.from_frame(pd.DataFrame({"plan": series})).features["plan"]
        assert walked.call_count == 0
        from_list = Profile.from_columns({"plan": values}).features["plan"]
        assert isinstance(from_pandas, CategoricalFeature) and isinstance(from_list, CategoricalFeature)
        assert (from_pandas.count, from_pandas.nulls) == (from_list.count, from_list.nulls) == (700, 200)
        assert from_pandas.frequencies() == from_list.frequencies() == {"a": 300, "b": 100, "c": 100}


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (["a", 1, None], "mixed"),  # a number among the text: the whole column is looked at, and refused
        ([1, 2.5, None], NumericFeature),  # numbers in an object column: as before
        ([None, None], NullFeature),
    ],
)
def test_a_series_that_is_not_all_text_is_profiled_value_by_value(values: list[object], kind: object) -> None:
    frame = pd.DataFrame({"x": pd.Series(values, dtype=object)})
    if kind == "mixed":
        with pytest.raises(ValueError, match=r"column 'x' holds int, str: a feature is numbers or"):
            Profile.from_frame(frame)
        return
    assert type(Profile.from_frame(frame).features["x"]) is kind
    assert type(Profile.from_columns({"x": values}).features["x"]) is kind


def test_a_text_series_given_as_numeric_is_refused_naming_it() -> None:
    frame = pd.DataFrame({"x": pd.Series(["1.5", "two"], dtype=object)})
    with pytest.raises(ValueError, match=r"types\['x'\] is 'numeric' but the column holds str 'two'"):
        Profile.from_frame(frame, types={"x": "numeric"})
