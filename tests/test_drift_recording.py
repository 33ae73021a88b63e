"""Profiles recorded and read back: a run's baseline (log_profile), a service's serving profiles
(log_features), through the local store and the InfluxDB stand-in evaluating the Flux."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pipeline_sdk
from pipeline_sdk import Client, config, drift
from pipeline_sdk import contract as c
from pipeline_sdk.config import SettingError
from pipeline_sdk.drift import serving
from pipeline_sdk.drift.records import assemble, profile_records
from pipeline_sdk.local_store import DB_NAME, LocalStore
from pipeline_sdk.read import ProfileNotFound, ReadClient
from pipeline_sdk.read.influx import InfluxBackend
from pipeline_sdk.service import ServiceRecorder
from pipeline_sdk.testing.influx_fake import InfluxServer, serve_store
from tests.conftest import wait_for

TOKEN = "profiles-token"
RNG = np.random.default_rng(7)
BIG = {f"x{i}": RNG.normal(i, 1, 20_000) for i in range(12)}  # 12 numeric features: several chunks
BASELINE = drift.Profile.from_columns(BIG)


def num(profile: drift.Profile, name: str) -> drift.NumericFeature:
    feature = profile.features[name]
    assert isinstance(feature, drift.NumericFeature)
    return feature


def cat(profile: drift.Profile, name: str) -> drift.CategoricalFeature:
    feature = profile.features[name]
    assert isinstance(feature, drift.CategoricalFeature)
    return feature


def points(home: Path) -> list[Any]:
    store = LocalStore(home / DB_NAME)
    try:
        return [p for p in store.points(measurement=c.PROFILE.measurement)]
    finally:
        store.close()


# ---- the records ---------------------------------------------------------------------------------


def test_a_profile_is_one_point_per_chunk_with_pinned_fields() -> None:
    profile = drift.Profile.from_columns(BIG)
    chunks = profile.to_chunks()
    records = profile_records({c.TAG_NAME: "train"}, profile)
    assert len(records) == len(chunks) == 3  # 12 x ~4.8 KB over 24,576-byte chunks
    assert [r[c.FIELD_INDEX] for r in records] == [0, 1, 2]
    assert {r[c.FIELD_TOTAL] for r in records} == {3}
    assert {r[c.FIELD_ROWS] for r in records} == {20_000}
    assert {r[c.FIELD_DIGEST] for r in records} == {chunks[0][5:21].hex()}
    assert len(records[0][c.FIELD_CHUNK]) == 32_768  # a full chunk is exactly the text limit
    assert all(len(r[c.FIELD_CHUNK]) <= 32_768 for r in records)
    assert [base64.b64decode(r[c.FIELD_CHUNK]) for r in records] == chunks
    for record in records:
        assert set(record) <= set(c.PROFILE.keys)


def test_assemble_keeps_whole_profiles_and_counts_the_rest() -> None:
    one = drift.Profile.from_columns({"a": [1.0, 2.0, 3.0]})
    two = drift.Profile.from_columns(BIG)
    pts = [(100 + i, {"n": "one"}, r) for i, r in enumerate(profile_records({}, one))]
    big = profile_records({}, two)
    pts += [(200 + i, {"n": "two"}, r) for i, r in enumerate(big[:-1])]  # the last chunk is missing
    bad = dict(profile_records({}, one)[0], chunk="!!!!")
    pts.append((300, {"n": "bad"}, bad))
    found = assemble(pts)
    assert (len(found.profiles), found.incomplete, found.corrupt) == (1, 1, 1)
    assert num(found.profiles[0][2], "a").mean == 2.0
    pts.append((202, {"n": "two"}, big[-1]))
    found = assemble(pts)
    assert [t for t, _, _ in found.profiles] == [200, 100]  # newest first, at its first chunk's time


# ---- recording and reading ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("profiles") / "home"
    with Client(home=home) as client:
        with pipeline_sdk.run("train", "fit", run_id="run-1", client=client) as run:
            run.log_profile("train", BASELINE)
            run.log_profile("small", [{"age": 30, "plan": "a"}, {"age": 40, "plan": "b"}])
            run.log_profile("small", drift.Profile.from_columns({"age": [50.0, 60.0, 70.0]}))  # again: latest
        for replica in ("pod-a:1", "pod-b:1"):
            recorder = ServiceRecorder(client, "churn-api", key="k" * 32, profile_interval=3600)
            recorder.replica = replica  # two replicas of one service
            for i in range(3000):
                recorder.log_features("churn", 3, {"age": float(i % 100), "plan": "ab"[i % 2]})
            recorder.close()
        assert client.flush(10)
    return home


def influx(home: Path) -> Iterator[InfluxServer]:
    srv = serve_store(home, TOKEN)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[InfluxServer]:
    yield from influx(home)


@pytest.fixture(params=["local", "influx"])
def reader(request: pytest.FixtureRequest, home: Path, server: InfluxServer) -> ReadClient:
    if request.param == "local":
        return ReadClient(home=home)
    return ReadClient(InfluxBackend(server.url, TOKEN, c.INFLUXDB_ORG, c.INFLUXDB_BUCKET))


def test_the_stored_points_are_distinct_chunks(home: Path) -> None:
    pts = points(home)
    baselines = [p for p in pts if p.tags.get(c.TAG_NAME) == "train"]
    assert [p.fields[c.FIELD_INDEX] for p in baselines] == [0, 1, 2]
    assert [p.time_ns - baselines[0].time_ns for p in baselines] == [0, 1, 2]  # the index in ns
    serving_points = [p for p in pts if c.TAG_MODEL in p.tags]
    assert sorted(p.tags[c.TAG_REPLICA] for p in serving_points) == ["pod-a:1", "pod-b:1"]
    assert {p.tags[c.TAG_MODEL_VERSION] for p in serving_points} == {"3"}


def test_a_baseline_reads_back_whole(reader: ReadClient) -> None:
    profile = reader.profile("run-1", "train")
    assert profile.rows == 20_000
    assert num(profile, "x5").mean == num(BASELINE, "x5").mean
    assert num(profile, "x5").quantiles([0.1, 0.5, 0.9]) == num(BASELINE, "x5").quantiles([0.1, 0.5, 0.9])
    latest = reader.profile("run-1", "small")
    assert (latest.rows, num(latest, "age").mean) == (3, 60.0)


def test_serving_profiles_merge_across_replicas(reader: ReadClient) -> None:
    profile = reader.serving_profile("churn", 3, since="1h")
    assert profile.rows == 6000
    assert cat(profile, "plan").frequencies() == {"a": 3000, "b": 3000}
    assert num(profile, "age").mean == pytest.approx(49.5)
    assert reader.serving_profile("churn").rows == 6000  # every version


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda r: r.profile("run-1", "nope"), ProfileNotFound, "run 'run-1' has no profile named 'nope'"),
        (lambda r: r.profile("run-1", ""), ValueError, "name='' is invalid"),
        (
            lambda r: r.serving_profile("churn", 4),
            ProfileNotFound,
            "no serving profile of model 'churn' version 4",
        ),
        (lambda r: r.serving_profile("churn", until="2h"), ProfileNotFound, "no serving profile"),
        (lambda r: r.serving_profile("churn", True), TypeError, "version must be a str, an int or None"),
    ],
)
def test_missing_profiles_and_bad_arguments_are_named(
    reader: ReadClient, call: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        call(reader)


def test_log_profile_names_bad_data(tmp_path: Path) -> None:
    with Client(home=tmp_path) as client, pipeline_sdk.run("p", "s", run_id="r", client=client) as run:
        with pytest.raises(TypeError, match=re.escape("data must be a drift.Profile, a mapping of columns")):
            run.log_profile("x", 42)
        with pytest.raises(ValueError, match="column 'a'"):
            run.log_profile("x", {"a": [1, "two"]})
        with pytest.raises(ValueError, match="name"):
            run.log_profile("", {"a": [1]})


# ---- log_features ----------------------------------------------------------------------------------


class Emitted:
    def __init__(self) -> None:
        self.profiles: list[tuple[tuple[str, str], drift.Profile]] = []

    def __call__(self, key: tuple[str, str], profile: drift.Profile) -> None:
        self.profiles.append((key, profile))


def test_profiles_flush_on_the_interval_of_an_injected_clock() -> None:
    now = [0.0]
    out = Emitted()
    profiles = serving.FeatureProfiles(out, 60.0, clock=lambda: now[0], start=False)
    for i in range(1500):
        profiles.add(("m", "1"), {"f": float(i)})
    now[0] = 59.999
    assert profiles.tick() == 0 and out.profiles == []
    now[0] = 60.0
    assert profiles.tick() == 1
    assert [(k, p.rows) for k, p in out.profiles] == [(("m", "1"), 1500)]
    now[0] = 120.0
    assert profiles.tick() == 0  # nothing new: no empty profile
    profiles.add(("m", "1"), {"f": 1.0})
    profiles.close()  # the last partial profile
    assert [p.rows for _, p in out.profiles] == [1500, 1]


def test_the_thread_flushes_every_interval() -> None:
    out = Emitted()
    profiles = serving.FeatureProfiles(out, 0.05)
    try:
        profiles.add(("m", "1"), {"f": 1.0})
        wait_for(lambda: len(out.profiles) == 1, 5, "the first profile")
        profiles.add(("m", "1"), {"f": 2.0})
        wait_for(lambda: len(out.profiles) == 2, 5, "the second profile")
    finally:
        profiles.close()
    assert [num(p, "f").mean for _, p in out.profiles] == [1.0, 2.0]


def test_memory_is_constant_over_100k_calls() -> None:
    now = [0.0]
    out = Emitted()
    profiles = serving.FeatureProfiles(out, 60.0, clock=lambda: now[0], start=False)
    features = {f"f{i}": float(i) for i in range(9)} | {"plan": "a"}
    sizes = []
    for i in range(100_000):
        profiles.add(("m", "1"), {**features, "f0": float(i)})
        if i % 1024 == 1023:
            profiles.tick()  # the thread's part, in line here
        if i in (20_000, 99_999):
            sizes.append(profiles.sizes()[("m", "1")])
    assert profiles.stats.lost_rows == 0
    rows_buffered = [s[0] for s in sizes]
    assert rows_buffered[0] <= serving.BATCH_ROWS and rows_buffered[1] <= serving.BATCH_ROWS
    assert sizes[1][1] <= sizes[0][1] * 1.25  # 5x the rows, the sketches barely grow
    assert sizes[1][1] < 10 * 5_000  # 10 features of at most ~4.8 KB
    now[0] = 60.0
    profiles.tick()
    assert out.profiles[0][1].rows == 100_000


def test_a_thread_behind_drops_and_counts_whole_batches() -> None:
    profiles = serving.FeatureProfiles(Emitted(), 60.0, clock=lambda: 0.0, start=False)
    for _ in range((serving.MAX_PENDING + 2) * serving.BATCH_ROWS):
        profiles.add(("m", "1"), {"f": 1.0})
    assert profiles.stats.lost_rows == 2 * serving.BATCH_ROWS


def test_bad_rows_are_dropped_alone_and_counted() -> None:
    now = [0.0]
    out = Emitted()
    profiles = serving.FeatureProfiles(out, 1.0, clock=lambda: now[0], start=False)
    profiles.add(("m", "1"), {"f": 1.0})
    profiles.add(("m", "1"), {"f": "text"})
    profiles.add(("m", "1"), {"f": 3.0})
    now[0] = 1.0
    profiles.tick()
    assert (profiles.stats.rows, profiles.stats.invalid_rows) == (2, 1)
    assert num(out.profiles[0][1], "f").mean == 2.0


def test_a_failed_emission_is_counted_not_raised() -> None:
    def fail(key: tuple[str, str], profile: drift.Profile) -> None:
        raise RuntimeError("queue full")

    now = [0.0]
    profiles = serving.FeatureProfiles(fail, 1.0, clock=lambda: now[0], start=False)
    profiles.add(("m", "1"), {"f": 1.0})
    now[0] = 1.0
    assert profiles.tick() == 0
    assert (profiles.stats.errors, profiles.stats.lost_rows) == (1, 1)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("m", "1", [1.0]), TypeError, "features must be a mapping of feature name to value, got list"),
        (("m", "1", {}), ValueError, "features={} is invalid: must name at least one feature"),
        (("m", "1", {1: 2.0}), TypeError, "features key must be a str, got int"),
        (("m", "1", {"": 2.0}), ValueError, "features key='' is invalid: must not be empty"),
        (("", "1", {"f": 1.0}), ValueError, "model"),
        (("m", 1.5, {"f": 1.0}), TypeError, "version must be a str or an int"),
    ],
)
def test_log_features_names_bad_arguments(
    tmp_path: Path, args: tuple[Any, Any, Any], error: type[Exception], message: str
) -> None:
    with Client(home=tmp_path) as client:
        recorder = ServiceRecorder(client, "svc", key="k" * 32, profile_interval=3600)
        with pytest.raises(error, match=re.escape(message)):
            recorder.log_features(*args)


def test_too_many_models_or_features_are_refused() -> None:
    profiles = serving.FeatureProfiles(Emitted(), 60.0, start=False)
    for i in range(serving.MAX_MODELS):
        profiles.add((f"m{i}", "1"), {"f": 1.0})
    with pytest.raises(ValueError, match=f"already profiles {serving.MAX_MODELS}"):
        profiles.add(("one-more", "1"), {"f": 1.0})
    many = {f"f{i}": 1.0 for i in range(serving.MAX_FEATURES - 1)}  # and "f"
    profiles.add(("m0", "1"), many)
    with pytest.raises(ValueError, match=f"already has {serving.MAX_FEATURES} features"):
        profiles.add(("m0", "1"), {"new": 1.0})


def test_the_interval_setting_and_argument() -> None:
    assert config.PROFILE_INTERVAL.get({}) == 60.0
    assert config.PROFILE_INTERVAL.get({c.ENV_PROFILE_INTERVAL: "0.5"}) == 0.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(SettingError, match=f"MLOBS_PROFILE_INTERVAL='{bad}'"):
            config.PROFILE_INTERVAL.get({c.ENV_PROFILE_INTERVAL: bad})
    with pytest.raises(ValueError, match=re.escape("profile_interval=0.0 is invalid")):
        ServiceRecorder.__new__(ServiceRecorder).__init__(None, "svc", profile_interval=0.0)  # type: ignore[misc]


def test_a_clients_service_takes_the_profile_interval(tmp_path: Path) -> None:
    with Client(home=tmp_path / "home") as client:
        assert client.service("svc", key="k" * 32, profile_interval=5.0)._profile_interval == 5.0
        with pytest.raises(ValueError, match=re.escape("profile_interval=-1.0 is invalid")):
            client.service("svc", key="k" * 32, profile_interval=-1.0)
