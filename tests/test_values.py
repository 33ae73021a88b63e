"""Values people have (numpy, pandas, nested configs) are recorded the obvious way, or refused saying how.

And the policy for invalid telemetry: raise by default; with ``on_invalid="drop"`` an invalid call is
dropped, counted in ``Client.stats().dropped_invalid`` and logged (rate-limited), and the run goes on.
(One concern, what a recording call accepts, so one file a little over 400 lines.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

import pipeline_sdk
from pipeline_sdk import contract as c
from pipeline_sdk import ratelog
from pipeline_sdk.config import SettingError
from pipeline_sdk.local_store import DB_NAME, LocalStore
from pipeline_sdk.validation import MAX_JSON_DEPTH, unescape_text
from pipeline_sdk.values import json_value
from tests.conftest import ROOT


def stored_io(home: Path, run_id: str) -> dict[str, str]:
    points = LocalStore(home / DB_NAME).points(measurement=c.IO.measurement, run_id=run_id)
    return {p.tags[c.TAG_NAME]: unescape_text(p.fields[c.FIELD_VALUE]) for p in points}


def stored_params(home: Path, run_id: str) -> dict[str, tuple[str, float | None]]:
    points = LocalStore(home / DB_NAME).points(measurement=c.PARAM.measurement, run_id=run_id)
    return {
        p.tags[c.TAG_NAME]: (unescape_text(p.fields[c.FIELD_VALUE]), p.fields.get(c.FIELD_NUMBER))
        for p in points
    }


def stored_metrics(home: Path, run_id: str) -> list[tuple[str, float]]:
    points = LocalStore(home / DB_NAME).points(measurement=c.METRIC.measurement, run_id=run_id)
    return [(p.tags[c.TAG_NAME], p.fields[c.FIELD_VALUE]) for p in points]


# ---- numpy and pandas inside inputs and outputs ---------------------------------------------------

CONVERTED: dict[str, tuple[Any, str]] = {
    "numpy scalars": (
        {
            "f64": np.float64(0.5),
            "f32": np.float32(0.25),
            "i64": np.int64(3),
            "u8": np.uint8(7),
            "ok": np.bool_(True),
        },
        '{"f32": 0.25, "f64": 0.5, "i64": 3, "ok": true, "u8": 7}',
    ),
    "numpy keys": ({np.int64(1): "one", np.str_("two"): 2}, '{"1": "one", "two": 2}'),
    "array": (np.arange(6).reshape(2, 3), "[[0, 1, 2], [3, 4, 5]]"),
    "float array": (np.array([0.5, 1.5]), "[0.5, 1.5]"),
    "bool array": (np.array([True, False]), "[true, false]"),
    "0-d array": (np.array(4.5), "4.5"),
    "text array": (np.array(["a", "b"]), '["a", "b"]'),
    "datetime64 array": (
        np.array(["2024-05-01T12:30", "NaT"], dtype="datetime64[m]"),
        '["2024-05-01T12:30", null]',
    ),
    "datetime64 scalar": (np.datetime64("2024-05-01"), '"2024-05-01"'),
    "object array": (np.array([{"a": np.int64(1)}, None], dtype=object), '[{"a": 1}, null]'),
    "series": (pd.Series([0.5, None], index=["a", "b"]), '{"a": 0.5, "b": null}'),
    "series with a range index": (pd.Series([1, 2]), '{"0": 1, "1": 2}'),
    "value counts": (pd.Series(["x", "y", "x"]).value_counts(), '{"x": 2, "y": 1}'),
    "series of timestamps": (
        pd.Series(pd.to_datetime(["2024-05-01", None])),
        '{"0": "2024-05-01T00:00:00", "1": null}',
    ),
    "series with a time index": (
        pd.Series([1.0], index=pd.to_datetime(["2024-05-01T06:00:00+02:00"])),
        '{"2024-05-01T06:00:00+02:00": 1.0}',
    ),
    "dataframe": (
        pd.DataFrame({"loss": [0.5, float("nan")], "name": ["a", pd.NA]}),
        '{"loss": {"0": 0.5, "1": null}, "name": {"0": "a", "1": null}}',
    ),
    "describe": (
        pd.DataFrame({"x": [1.0, 3.0]}).describe().loc[["count", "mean"]],
        '{"x": {"count": 2.0, "mean": 2.0}}',
    ),
    "timestamp": (pd.Timestamp("2024-05-01T12:00:00Z"), '"2024-05-01T12:00:00+00:00"'),
    "nat": ({"when": pd.NaT}, '{"when": null}'),
    "index": (pd.Index(["a", "b"]), '["a", "b"]'),
    "datetime": (dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC), '"2024-05-01T12:00:00+00:00"'),
    "date": (dt.date(2024, 5, 1), '"2024-05-01"'),
    "tuple and nesting": (
        {"shape": (2, np.int64(3)), "deep": [[np.float32(1.0)]]},
        '{"deep": [[1.0]], "shape": [2, 3]}',
    ),
}


def test_numpy_and_pandas_values_are_stored_the_obvious_way(home: Path) -> None:
    with pipeline_sdk.run(pipeline="p", step="s", run_id="np-1") as run:
        for name, (value, _) in CONVERTED.items():
            run.log_input(name.replace(" ", "_"), value)
    assert stored_io(home, "np-1") == {name.replace(" ", "_"): text for name, (_, text) in CONVERTED.items()}


REFUSED: dict[str, tuple[Any, type[Exception], str]] = {
    "nan in an array": (
        np.array([1.0, np.nan]),
        ValueError,
        "value=[1.0, nan] is invalid: Out of range float values are not JSON compliant",
    ),
    "nan numpy scalar": (
        {"loss": np.float64("nan")},
        ValueError,
        "value={'loss': np.float64(nan)} is invalid: Out of range float values are not JSON compliant",
    ),
    "inf in a series": (
        pd.Series([np.inf]),
        ValueError,
        "value={0: inf} is invalid: Out of range float values are not JSON compliant",
    ),
    "complex": (
        {"z": np.complex128(1 + 2j)},
        TypeError,
        "value['z'] is a numpy complex128, which JSON cannot hold: convert it first, "
        "e.g. with str(x) or [x.real, x.imag]",
    ),
    "complex array": (
        [np.array([1j])],
        TypeError,
        "value[0] is a numpy array of complex128, which JSON cannot hold: convert it first, "
        "e.g. with x.astype(str).tolist() or x.real.tolist()",
    ),
    "timedelta": (
        pd.Timedelta(seconds=3),
        TypeError,
        "value is a pandas Timedelta, which JSON cannot hold: convert it first, "
        "e.g. with str(x) or x.total_seconds()",
    ),
    "a huge array": (
        np.zeros(40_000),
        ValueError,
        "value is invalid: a numpy array of 40000 items, more than fit in 32768 characters of JSON: "
        "log a summary instead (its shape, a few statistics, or a sample)",
    ),
    "a huge dataframe": (
        pd.DataFrame({"x": range(20_000), "y": range(20_000)}),
        ValueError,
        "value is invalid: a pandas DataFrame of 40000 items, more than fit in 32768 characters of JSON: "
        "log a summary instead (its shape, a few statistics, or a sample)",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_values_json_cannot_hold_are_refused_saying_how_to_convert_them(home: Path, case: str) -> None:
    value, error, message = REFUSED[case]
    with pipeline_sdk.run(pipeline="p", step="s", run_id="np-2") as run:
        with pytest.raises(error) as raised:
            run.log_output("out", value)
        assert str(raised.value) == message
    assert stored_io(home, "np-2") == {}


def test_an_array_counts_against_the_depth_limit(home: Path) -> None:
    deepest = np.zeros((1,) * MAX_JSON_DEPTH)  # numpy's own limit is 64 dimensions
    assert json_value("value", deepest) == deepest.tolist()
    with pipeline_sdk.run(pipeline="p", step="s", run_id="np-3") as run:
        run.log_input("deepest", deepest)
        with pytest.raises(ValueError, match=r"^value=\[\[\[\[.* is invalid: nested more than 64 deep$"):
            run.log_input("too_deep", [deepest])
    assert list(stored_io(home, "np-3")) == ["deepest"]


def test_the_items_limit_is_exact() -> None:
    assert len(json_value("value", np.zeros(32_768))) == 32_768  # may still be too long as JSON
    with pytest.raises(ValueError, match=r"^value is invalid: a numpy array of 32769 items"):
        json_value("value", np.zeros(32_769))
    with pytest.raises(ValueError, match=r"^value is invalid: a list of 32769 items"):
        json_value("value", [np.int64(1)] * 32_769)


def test_a_circular_value_is_refused_without_recursing_forever(home: Path) -> None:
    loop: list[Any] = [np.int64(1)]
    loop.append(loop)
    with (
        pipeline_sdk.run(pipeline="p", step="s", run_id="np-4") as run,
        pytest.raises(
            ValueError,
            match=r"^value=\[np\.int64\(1\), \[np\.int64\(1\), \[np\.int64\(1\), \[\.\.\.\]\]\]\] "
            r"is invalid: contains a circular reference at value\[1\]$",
        ),
    ):
        run.log_input("loop", loop)


def test_numpy_and_pandas_are_never_imported_by_the_sdk(tmp_path: Path) -> None:
    script = (
        "import sys, pipeline_sdk\n"
        "from pipeline_sdk import values\n"
        "with pipeline_sdk.run(pipeline='p', step='s', params={'opt': {'lr': 0.1}}) as run:\n"
        "    run.log_input('data', {'rows': [1, 2], 'when': __import__('datetime').date(2024, 1, 1)})\n"
        "print(sorted(m for m in ('numpy', 'pandas') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"MLOBS_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=True,
    )
    assert done.stdout == "[]\n"


# ---- params: nested configs are flattened to dotted names -----------------------------------------


class ConfigNode(Mapping[str, Any]):
    """A mapping that is not a dict, as OmegaConf's DictConfig is."""

    def __init__(self, **items: Any) -> None:
        self._items = items

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Optim:
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)


def test_nested_params_are_flattened_to_dotted_names(home: Path) -> None:
    params = {
        "optim": {"lr": 0.01, "betas": [0.9, 0.999], "schedule": {"warmup": 100}},
        "model": ConfigNode(depth=np.int64(12), act="gelu", dropout=None),
        "data": argparse.Namespace(root=Path("/data/train"), shuffle=np.bool_(True)),
        "trainer": Optim(),
        "seed": 7,
        "weights": np.array([1, 2]),
        "layers": {0: 64, 1: 32},
        "tags": ("a", "b"),
        "empty": {},
        "start": pd.Timestamp("2024-05-01"),
    }
    with pipeline_sdk.run(pipeline="p", step="s", run_id="par-1") as run:
        run.log_params(params)
        run.log_param("extra", {"x": np.float32(0.5)})
        run.log_params(argparse.Namespace(batch_size=32))
    assert stored_params(home, "par-1") == {
        "optim.lr": ("0.01", 0.01),
        "optim.betas": ("[0.9, 0.999]", None),
        "optim.schedule.warmup": ("100", 100.0),
        "model.depth": ("12", 12.0),
        "model.act": ("gelu", None),
        "model.dropout": ("None", None),
        "data.root": ("/data/train", None),
        "data.shuffle": ("True", None),
        "trainer.lr": ("0.1", 0.1),
        "trainer.betas": ("[0.9, 0.999]", None),
        "seed": ("7", 7.0),
        "weights": ("[1, 2]", None),
        "layers.0": ("64", 64.0),
        "layers.1": ("32", 32.0),
        "tags": ('["a", "b"]', None),
        "empty": ("{}", None),
        "start": ("2024-05-01T00:00:00", None),
        "extra.x": ("0.5", 0.5),
        "batch_size": ("32", 32.0),
    }


def test_params_given_to_run_are_flattened_too(home: Path) -> None:
    with pipeline_sdk.run(pipeline="p", step="s", run_id="par-2", params={"optim": {"lr": 0.1}}):
        pass
    assert stored_params(home, "par-2") == {"optim.lr": ("0.1", 0.1)}


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        (
            {"a.b": 1, "a": {"b": 2}},
            ValueError,
            "params: the name 'a.b' is given twice (params['a.b'] and params['a']['b'])",
        ),
        ({"optim": {"l r": 0.1}}, ValueError, "params key 'optim.l r'='optim.l r' is invalid: use letters"),
        ({"optim": {1.5: 0.1}}, TypeError, "params['optim'] keys must be str or int, got float 1.5"),
        (
            {"optim": {"lr": float("nan")}},
            ValueError,
            "params['optim']['lr']=nan is invalid: must be a finite",
        ),
        (
            {"optim": {"lr": object()}},
            TypeError,
            "params['optim']['lr'] must be a str, int, float, bool or None",
        ),
        (
            {"big": list(range(2000))},
            ValueError,
            "params['big']=[0, 1, 2, 3, 4, 5, ...] is invalid: 10890 characters",
        ),
    ],
)
def test_bad_params_name_the_path(
    home: Path, params: dict[Any, Any], error: type[Exception], message: str
) -> None:
    with pipeline_sdk.run(pipeline="p", step="s", run_id="par-3") as run:
        with pytest.raises(error) as raised:
            run.log_params(params)
        assert str(raised.value).startswith(message)
    assert stored_params(home, "par-3") == {}, "all are validated before any is recorded"


def test_a_circular_config_is_refused(home: Path) -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with (
        pipeline_sdk.run(pipeline="p", step="s", run_id="par-4") as run,
        pytest.raises(
            ValueError,
            match=r"^params=\{'self': \{'self': \{'self': \{\.\.\.\}\}\}\} is invalid: "
            r"nested more than 64 deep$",
        ),
    ):
        run.log_params(loop)


# ---- metrics -------------------------------------------------------------------------------------


def test_metric_values_people_have(home: Path) -> None:
    with pipeline_sdk.run(pipeline="p", step="s", run_id="met-1") as run:
        run.log_metric("f32", np.float32(0.5))
        run.log_metric("i64", np.int64(3), step=np.int64(2))
        run.log_metric("zero_d", np.array(1.5))
        run.log_metrics(pd.Series({"s1": 1.0, "s2": np.float64(2.0)}))
        run.log_metrics(argparse.Namespace(ns=4))
        with pytest.raises(TypeError, match=r"^value must be a real number, got bool np\.True_$"):
            run.log_metric("flag", np.bool_(True))
        with pytest.raises(ValueError, match=r"^value=nan is invalid: must be a finite number"):
            run.log_metric("loss", np.float64("nan"))
    assert stored_metrics(home, "met-1") == [
        ("f32", 0.5),
        ("zero_d", 1.5),
        ("s1", 1.0),
        ("s2", 2.0),
        ("ns", 4.0),
    ]


# ---- invalid telemetry: raise (default) or drop, count and log ------------------------------------

INVALID_CALLS: dict[str, tuple[str, Any]] = {
    "log_metric": ("log_metric('bad name')", lambda r: r.log_metric("bad name", 1.0)),
    "log_metric value": ("log_metric('loss')", lambda r: r.log_metric("loss", float("nan"))),
    "log_metric step": ("log_metric('loss')", lambda r: r.log_metric("loss", 1.0, step=-1)),
    "log_param": ("log_param('lr')", lambda r: r.log_param("lr", object())),
    "log_input": ("log_input('x')", lambda r: r.log_input("x", {1, 2})),
    "log_output": ("log_output('y')", lambda r: r.log_output("y", "ok", destination=5)),
}


@pytest.mark.parametrize("call", list(INVALID_CALLS))
def test_by_default_an_invalid_call_raises(home: Path, call: str) -> None:
    _, do = INVALID_CALLS[call]
    with pipeline_sdk.run(pipeline="p", step="s", run_id="inv-1") as run:
        with pytest.raises((TypeError, ValueError)):
            do(run)
        assert run.client.stats().dropped_invalid == 0


@pytest.mark.parametrize("call", list(INVALID_CALLS))
def test_with_drop_an_invalid_call_is_dropped_counted_and_logged(
    home: Path, caplog: pytest.LogCaptureFixture, call: str
) -> None:
    shown, do = INVALID_CALLS[call]
    run_id = "inv-" + call.replace(" ", "-")  # one run id per case: attempt 1
    with (
        caplog.at_level(logging.WARNING, logger="mlobs"),
        pipeline_sdk.run(pipeline="p", step="s", run_id=run_id, on_invalid="drop") as run,
    ):
        run.log_metric("loss", 0.5)
        do(run)
        run.log_metric("after", 1.0)
        stats = run.client.stats()
    assert stats.dropped_invalid == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "mlobs" and "dropped" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"mlobs: run p/s run_id={run_id} attempt=1: {shown} dropped (on_invalid='drop'): "
    )
    assert warnings[0].endswith(" (1 dropped so far)")
    assert stored_metrics(home, run_id) == [("loss", 0.5), ("after", 1.0)]
    _, ended = LocalStore(home / DB_NAME).points(measurement=c.RUN.measurement, run_id=run_id)
    assert ended.tags[c.TAG_STATUS] == "succeeded", "the run's result is kept"


def test_drops_are_logged_at_most_once_per_interval_and_say_how_many_were_suppressed(
    home: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="mlobs"),
        pipeline_sdk.run(pipeline="p", step="s", run_id="inv-3", on_invalid="drop") as run,
    ):
        for _ in range(5):
            run.log_metric("bad name", 1.0)
        later = time.monotonic() + 3600  # an hour on: the next warning is due
        monkeypatch.setattr(ratelog, "time", SimpleNamespace(monotonic=lambda: later))
        run.log_metric("bad name", 1.0)
        assert run.client.stats().dropped_invalid == 6
    warnings = [r.getMessage() for r in caplog.records if r.name == "mlobs" and "dropped" in r.getMessage()]
    assert len(warnings) == 2
    assert warnings[0].endswith("(1 dropped so far)")
    assert warnings[1].endswith("(6 dropped so far) (4 similar messages suppressed)")


def test_with_drop_a_batch_keeps_its_valid_entries(home: Path) -> None:
    with pipeline_sdk.run(pipeline="p", step="s", run_id="inv-4", on_invalid="drop") as run:
        run.log_metrics({"ok": 1.0, "bad": float("inf"), "bad name": 2.0})
        run.log_params({"lr": 0.1, "bad key": 1, "opt": {"x": object()}})
        assert run.client.stats().dropped_invalid == 4
    assert stored_metrics(home, "inv-4") == [("ok", 1.0)]
    assert stored_params(home, "inv-4") == {"lr": ("0.1", 0.1)}


def test_with_drop_a_call_on_an_ended_run_still_raises(home: Path) -> None:
    with pipeline_sdk.run(pipeline="p", step="s", run_id="inv-5", on_invalid="drop") as run:
        pass
    with pytest.raises(
        RuntimeError, match=r"^log_metric\(\) on run p/s run_id=inv-5 attempt=1, which has ended"
    ):
        run.log_metric("bad name", 1.0)
    with pytest.raises(
        RuntimeError, match=r"^log_metric\(\) on run p/s run_id=inv-5 attempt=1, which has ended"
    ):
        run.log_metric("loss", float("nan"))


def test_the_policy_comes_from_the_argument_else_mlobs_on_invalid(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(c.ENV_ON_INVALID, "drop")
    with pipeline_sdk.run(pipeline="p", step="s", run_id="inv-6") as run:
        run.log_metric("bad name", 1.0)
        assert run.client.stats().dropped_invalid == 1
    with (
        pipeline_sdk.run(pipeline="p", step="s", run_id="inv-7", on_invalid="raise") as run,
        pytest.raises(ValueError, match="name='bad name' is invalid"),
    ):
        run.log_metric("bad name", 1.0)
    monkeypatch.setenv(c.ENV_ON_INVALID, "ignore")
    with pytest.raises(
        SettingError, match=r"^environment variable MLOBS_ON_INVALID='ignore': must be 'raise' or 'drop'$"
    ):
        pipeline_sdk.run(pipeline="p")
    with pytest.raises(ValueError, match=r"^on_invalid='skip' is invalid: must be 'raise' or 'drop'$"):
        pipeline_sdk.run(pipeline="p", on_invalid="skip")
