"""Validators: bad input raises at the call site; accepted input makes valid line protocol.

The line protocol is produced by influxdb-client's own ``Point`` (the same escaping
rules the Fluentd output applies) and read back by a strict parser of InfluxDB's
rules (tests/support/lineproto.py).  The "needs the validator" tests show that influxdb-client
alone corrupts or drops exactly what the validators refuse.  The boundary tests pin each
limit on both sides (n and n + 1) with the exact error message.  (One file for one module's
validators, so over 400 lines.)
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, get_type_hints

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from influxdb_client import Point

from pipeline_sdk import Client, LocalTransport, validation
from pipeline_sdk import contract as c
from pipeline_sdk.encoding import MAX_EVENT_TIME_NS, decode_entries
from pipeline_sdk.local_store import split_record
from pipeline_sdk.validation import (
    INT64_MAX,
    INT64_MIN,
    MAX_JSON_DEPTH,
    MAX_TEXT_LENGTH,
    check_attempt,
    check_identity,
    check_index,
    check_int64,
    check_json,
    check_name,
    check_number,
    check_tag_value,
    check_text,
    describe,
    escape_surrogates,
    escape_text,
    json_dumps,
    json_nesting_problem,
    param_value,
    safe_text,
    short_repr,
    truncate_text,
    unescape_text,
)
from pipeline_sdk.writer import EventWriter
from tests.support.lineproto import LineProtocolError, parse_line

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
any_text = st.text(max_size=80)  # lone surrogates included


def line_for(tags: dict[str, str], fields: dict[str, object]) -> str:
    point = Point("m")
    for k, v in tags.items():
        point.tag(k, v)
    for k, v in fields.items():
        point.field(k, v)
    return str(point.time(1_700_000_000_000_000_000).to_line_protocol())


def accepted(check, *args):  # type: ignore[no-untyped-def]
    try:
        return True, check("arg", *args)
    except (TypeError, ValueError):
        return False, None


# ---- the annotations resolve (as typing.get_type_hints and runtime type checkers read them) -----------


def test_every_annotation_in_the_module_resolves() -> None:
    functions = [
        f for f in vars(validation).values() if inspect.isfunction(f) and f.__module__ == validation.__name__
    ]
    assert len(functions) >= 20
    for function in functions:
        get_type_hints(function)  # raises for an annotation that is not a type
    assert get_type_hints(json_dumps) == {
        "value": object,
        "default": Callable[[Any], Any] | None,
        "allow_nan": bool,
        "return": str,
    }
    assert get_type_hints(json_nesting_problem) == {"value": object, "max_depth": int, "return": str | None}
    assert get_type_hints(param_value) == {"arg": str, "value": Any, "return": tuple[str, float | None]}


# ---- tag values --------------------------------------------------------------------------


@given(any_text)
def test_accepted_tag_values_round_trip_through_line_protocol(value: str) -> None:
    ok, checked = accepted(check_tag_value, value)
    if not ok:
        return
    _, tags, _, _ = parse_line(line_for({"t": checked}, {"f": 1.0}))
    assert tags == {"t": value}


@given(any_text)
def test_tag_value_rejections_name_the_argument(value: str) -> None:
    try:
        check_tag_value("pipeline", value)
    except (TypeError, ValueError) as exc:
        assert "pipeline" in str(exc)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a\nb", "line break"),
        ("a\rb", "line break"),
        ("ends\\", "backslash"),
        ("", "empty"),
        ("x" * 300, "longer than"),
        ("tab\there", "control character"),
        ("\ud800", "not valid Unicode"),
    ],
)
def test_tag_value_rejects(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        check_tag_value("reason", value)
    assert str(info.value).startswith("reason=")


@pytest.mark.parametrize("value", ["a\nb", "ends\\", ""])
def test_influxdb_client_alone_corrupts_what_the_validator_refuses(value: str) -> None:
    """Without the validator these values come back different, or not at all."""
    try:
        _, tags, _, _ = parse_line(line_for({"t": value}, {"f": 1.0}))
    except LineProtocolError:
        return  # not even one point
    assert tags.get("t") != value


def test_tag_value_type() -> None:
    with pytest.raises(TypeError, match="level must be a str, got int"):
        check_tag_value("level", 3)


# ---- names and identity --------------------------------------------------------------------


@given(any_text)
def test_accepted_names_and_identities_round_trip(value: str) -> None:
    for check in (check_name, check_identity):
        ok, checked = accepted(check, value)
        if ok:
            _, tags, _, _ = parse_line(line_for({"name": checked}, {"f": 1.0}))
            assert tags == {"name": value}


@pytest.mark.parametrize(
    ("check", "value", "reason"),
    [
        (check_name, "has space", "letters, digits"),
        (check_name, "-leading", "letters, digits"),
        (check_name, "x" * 251, "longer than 250"),
        (check_name, "", "empty"),
        (check_identity, "Train_", "starting and ending"),
        (check_identity, "a" * 64, "longer than 63"),
        (check_identity, "a/b", "Kubernetes label value"),
    ],
)
def test_name_rejects(check, value: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=reason):
        check("name", value)


def test_names_accept_common_forms() -> None:
    for name in ("loss", "val/acc", "f1_score", "lr:warmup", "layer.0.weight-norm", "_private"):
        assert check_name("name", name) == name
    for ident in ("train", "fit-model", "20261122T080938Z-02789bfe", "v1.2_rc"):
        assert check_identity("run_id", ident) == ident


# ---- numbers -------------------------------------------------------------------------------


@given(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(2**70), max_value=2**70)
    )
)
def test_accepted_numbers_are_finite_floats_that_survive_line_protocol(value: float) -> None:
    ok, checked = accepted(check_number, value)
    if not ok:
        assert isinstance(value, int) or not math.isfinite(value)
        return
    assert isinstance(checked, float) and math.isfinite(checked)
    _, _, fields, _ = parse_line(line_for({}, {"value": checked}))
    assert fields["value"] == checked


@pytest.mark.parametrize(
    ("value", "error", "reason"),
    [
        (float("nan"), ValueError, "finite"),
        (float("inf"), ValueError, "finite"),
        (-float("inf"), ValueError, "finite"),
        (2**63, ValueError, "int64"),
        (-(2**63) - 1, ValueError, "int64"),
        ("0.5", TypeError, "real number"),
        (True, TypeError, "real number"),
        (None, TypeError, "real number"),
        ([1.0, 2.0], TypeError, "real number"),
    ],
)
def test_number_rejects(value: object, error: type[Exception], reason: str) -> None:
    with pytest.raises(error, match=reason) as info:
        check_number("value", value)
    assert "value" in str(info.value)


def test_number_accepts_numeric_tower_and_scalars() -> None:
    assert check_number("v", 3) == 3.0
    assert check_number("v", Fraction(1, 4)) == 0.25
    assert check_number("v", Decimal("0.5")) == 0.5

    class Scalar:  # numpy and torch scalars expose item()
        def item(self) -> float:
            return 0.75

    assert check_number("v", Scalar()) == 0.75


def test_influxdb_client_alone_drops_nan_and_emits_out_of_range_ints() -> None:
    assert "value" not in line_for({}, {"value": float("nan"), "other": 1.0})
    with pytest.raises(LineProtocolError, match="out of range"):
        parse_line(line_for({}, {"value": 2**63}))


@given(st.integers(min_value=-10, max_value=2**64))
def test_index(value: int) -> None:
    ok, checked = accepted(check_index, value)
    assert ok == (0 <= value <= INT64_MAX)
    if ok:
        _, _, fields, _ = parse_line(line_for({}, {"index": checked}))
        assert fields["index"] == value


def test_index_rejects_non_int() -> None:
    with pytest.raises(TypeError, match="step must be an int, got float"):
        check_index("step", 1.0)
    with pytest.raises(TypeError, match="step must be an int, got bool"):
        check_index("step", True)


# ---- text fields ------------------------------------------------------------------------------


@given(any_text)
def test_text_fields_round_trip_escaped(value: str) -> None:
    ok, checked = accepted(check_text, value)
    if not ok:
        with pytest.raises(UnicodeEncodeError):
            value.encode("utf-8")
        return
    stored = escape_text(checked)
    assert "\n" not in stored and "\r" not in stored
    _, _, fields, _ = parse_line(line_for({}, {"message": stored}))
    assert unescape_text(fields["message"]) == value


def test_influxdb_client_alone_breaks_the_line_on_a_newline_in_a_string() -> None:
    with pytest.raises(LineProtocolError, match="line break"):
        parse_line(line_for({}, {"message": "Traceback\n  File"}))


def test_text_too_long() -> None:
    with pytest.raises(ValueError, match=r"message=.*longer than 32768"):
        check_text("message", "x" * 40_000)


def test_param_values() -> None:
    assert param_value("v", 0.01) == ("0.01", 0.01)
    assert param_value("v", 32) == ("32", 32.0)
    assert param_value("v", "adam") == ("adam", None)
    assert param_value("v", True) == ("True", None)
    assert param_value("v", None) == ("None", None)
    with pytest.raises(ValueError, match="finite"):
        param_value("v", float("nan"))
    with pytest.raises(TypeError, match="v must be a str, int, float, bool or None, got dict"):
        param_value("v", {"a": 1})


# ---- whole events: what the recorder accepts becomes valid points ------------------------------


@pytest.fixture(scope="module")
def quiet_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A real client whose spooler sleeps (linger 1 h), so tests can take entries off its queues."""
    home = tmp_path_factory.mktemp("home")
    client = Client(LocalTransport(Path(home) / "db"), home=home, linger=3600)
    yield client
    client.close(timeout=0)


def take_points(client: Client) -> list[tuple[str, dict[str, str], dict[str, object]]]:
    points = []
    for tag, queue in client.shipper.queues.items():
        while queue:
            for _, record in decode_entries(queue.popleft()):
                measurement, tags, fields = split_record(tag, record)
                _, parsed_tags, parsed_fields, _ = parse_line(line_for(tags, fields))
                points.append((measurement, parsed_tags, parsed_fields))
    return points


names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-/:]{0,40}", fullmatch=True)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=names,
    value=st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63 - 1)),
    step=st.one_of(st.none(), st.integers(0, 2**63 - 1)),
)
def test_every_accepted_metric_is_a_valid_point(
    quiet_client: Client, name: str, value: float, step: int | None
) -> None:
    rec = quiet_client.recorder("pipe", "step", "run-1")
    rec.log_metric(name, value, step=step)
    [(measurement, tags, fields)] = take_points(quiet_client)
    assert measurement == (c.METRIC.measurement if step is None else c.LIST_METRIC.measurement)
    assert tags == {
        c.TAG_RUN_ID: "run-1",
        c.TAG_PIPELINE: "pipe",
        c.TAG_STEP: "step",
        c.TAG_ATTEMPT: c.FIRST_ATTEMPT,
        c.TAG_NAME: name,
    }
    assert fields[c.FIELD_VALUE] == float(value)
    if step is not None:
        assert fields[c.FIELD_INDEX] == step


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    message=text,
    level=st.sampled_from(["DEBUG", "INFO", "WARNING", "Level 5"]),
    extra=st.dictionaries(names, text, max_size=3),
)
def test_every_accepted_log_record_is_a_valid_point(
    quiet_client: Client, message: str, level: str, extra: dict[str, str]
) -> None:
    rec = quiet_client.recorder("pipe", "step", "run-1")
    rec.log_record(level, message, "app", extra)
    [(measurement, tags, fields)] = take_points(quiet_client)
    assert measurement == c.LOG.measurement
    assert tags[c.TAG_LEVEL] == level
    assert unescape_text(str(fields[c.FIELD_MESSAGE])) == message


def test_recorder_rejects_at_the_call_site(quiet_client: Client) -> None:
    rec = quiet_client.recorder("pipe", "step", "run-1")
    with pytest.raises(ValueError, match=r"value=nan is invalid: must be a finite number"):
        rec.log_metric("loss", float("nan"))
    with pytest.raises(TypeError, match=re.escape("value must be a real number, got str '0.5'")):
        rec.log_metric("loss", "0.5")
    with pytest.raises(ValueError, match="name='bad name' is invalid"):
        rec.log_metric("bad name", 1.0)
    with pytest.raises(TypeError, match="step must be an int"):
        rec.log_metric("loss", 1.0, step=1.5)
    with pytest.raises(ValueError, match="metrics\\['b'\\]=inf"):
        rec.log_metrics({"a": 1.0, "b": float("inf")})
    with pytest.raises(TypeError, match="value must be JSON-serialisable"):
        rec.log_input("model", object())
    with pytest.raises(ValueError, match=re.escape("value=[1.0, nan] is invalid: Out of range float values")):
        rec.log_output("scores", [1.0, float("nan")])
    with pytest.raises(ValueError, match="run_id='bad id' is invalid"):
        quiet_client.recorder("pipe", "step", "bad id")
    assert take_points(quiet_client) == [], "a rejected call must record nothing (log_metrics included)"


# ---- boundaries, pinned exactly ----------------------------------------------------------------


def shown(text: str) -> str:
    """How an error message shows a long string: its repr cut to 60 characters."""
    return short_repr(text)


@pytest.mark.parametrize(
    ("check", "arg", "limit"),
    [
        (check_tag_value, "reason", 256),
        (check_identity, "pipeline", 63),
        (check_name, "name", 250),
        (check_attempt, "attempt", 253),
    ],
)
def test_length_limits_are_exact(check, arg: str, limit: int) -> None:  # type: ignore[no-untyped-def]
    assert check(arg, "a" * (limit - 1)) == "a" * (limit - 1)
    assert check(arg, "a" * limit) == "a" * limit
    too_long = "a" * (limit + 1)
    with pytest.raises(ValueError) as info:
        check(arg, too_long)
    assert shown(too_long) == "'" + "a" * 56 + "..."
    assert (
        str(info.value) == f"{arg}={shown(too_long)} is invalid: longer than {limit} characters ({limit + 1})"
    )


def test_text_length_limit_is_exact() -> None:
    assert MAX_TEXT_LENGTH == 32_768
    assert check_text("message", "x" * MAX_TEXT_LENGTH) == "x" * MAX_TEXT_LENGTH
    with pytest.raises(ValueError) as info:
        check_text("message", "x" * (MAX_TEXT_LENGTH + 1))
    assert str(info.value) == (f"message='{'x' * 56}... is invalid: longer than 32768 characters (32769)")
    assert param_value("v", "p" * 4096) == ("p" * 4096, None)
    with pytest.raises(ValueError, match=r"^v='p+\.\.\. is invalid: longer than 4096 characters \(4097\)$"):
        param_value("v", "p" * 4097)


@pytest.mark.parametrize(
    ("value", "accepted_as"),
    [(-1, None), (0, 0), (1, 1), (INT64_MAX, INT64_MAX), (INT64_MAX + 1, None)],
)
def test_index_bounds_are_exact(value: int, accepted_as: int | None) -> None:
    if accepted_as is not None:
        assert check_index("step", value) == accepted_as
        return
    with pytest.raises(ValueError) as info:
        check_index("step", value)
    assert str(info.value) == f"step={value} is invalid: must be from 0 to 2**63-1"


@pytest.mark.parametrize(
    ("value", "ok"),
    [(2**63 - 1, True), (2**63, False), (-(2**63), True), (-(2**63) - 1, False)],
)
def test_int64_bounds_are_exact(value: int, ok: bool) -> None:
    assert (INT64_MIN, INT64_MAX) == (-(2**63), 2**63 - 1)
    if ok:
        assert check_number("value", value) == float(value)
        return
    with pytest.raises(ValueError) as info:
        check_number("value", value)
    assert str(info.value) == f"value={value} is invalid: integer outside the int64 range"


def test_truncate_text_boundary() -> None:
    at_limit = "a" * 50
    assert truncate_text(at_limit, 50) is at_limit
    assert truncate_text("a" * 51, 50) == "a" * 12 + "... [39 characters truncated by mlobs]"
    assert truncate_text("a" * 20, 10) == "a" * 10, "no room for the marker: a plain cut"


@given(st.integers(min_value=0, max_value=200_000), st.integers(min_value=50, max_value=40_000))
def test_truncate_text_is_exactly_the_limit_and_counts_what_it_cut(length: int, limit: int) -> None:
    value = "b" * length
    cut = truncate_text(value, limit)
    if length <= limit:
        assert cut == value
        return
    assert len(cut) == limit
    match = re.fullmatch(r"(b*)\.\.\. \[(\d+) characters truncated by mlobs\]", cut)
    assert match is not None
    assert len(match.group(1)) + int(match.group(2)) == length


# ---- text on paths that must not raise ----------------------------------------------------------


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_describe_never_raises() -> None:
    assert describe("as is") == "as is"
    assert describe(3.5) == "3.5"
    assert describe(Unprintable()) == "<unprintable Unprintable: str() raised RuntimeError>"


def test_surrogates_become_six_character_escapes() -> None:
    escaped = escape_surrogates("bad \udcff")
    assert escaped == "bad \\udcff" and len(escaped) == 10
    assert escape_surrogates("caf\u00e9 \U0001f600") == "caf\u00e9 \U0001f600", "valid text is unchanged"


@given(any_text, st.integers(min_value=40, max_value=100))
def test_safe_text_always_encodes_and_keeps_valid_text(value: str, limit: int) -> None:
    out = safe_text(value, limit)
    out.encode("utf-8")  # never raises
    assert len(out) <= limit
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return
    if len(value) <= limit:
        assert out == value


# ---- JSON values (inputs and outputs) -------------------------------------------------------------


def nested_lists(depth: int) -> list[object]:
    value: list[object] = []  # 1 deep
    for _ in range(depth - 1):
        value = [value]
    return value


def nested_dicts(depth: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("build", [nested_lists, nested_dicts])
def test_json_depth_limit_is_exact(build) -> None:  # type: ignore[no-untyped-def]
    assert MAX_JSON_DEPTH == 64
    for depth in (63, 64):
        assert check_json("value", build(depth)) == json.dumps(build(depth))
    for depth in (65, 10_000):
        with pytest.raises(ValueError) as info:
            check_json("value", build(depth))
        assert str(info.value) == f"value={short_repr(build(depth))} is invalid: nested more than 64 deep"


def test_json_refuses_circular_values() -> None:
    loop: list[object] = [1]
    loop.append(loop)
    with pytest.raises(ValueError) as info:
        check_json("value", loop)
    assert str(info.value) == "value=[1, [1, [1, [...]]]] is invalid: contains a circular reference"
    same_twice = [[1], [1]]
    same_twice[1] = same_twice[0]  # shared, not circular
    assert check_json("value", same_twice) == "[[1], [1]]"


@pytest.mark.parametrize("value", [["bad \udcff"], {"bad \udcff": 1}])
def test_json_refuses_text_that_is_not_unicode(value: object) -> None:
    with pytest.raises(ValueError) as info:
        check_json("value", value)
    assert str(info.value) == (
        f"value={short_repr(value)} is invalid: holds text that is not valid Unicode (surrogates not allowed)"
    )


def test_json_keeps_mixed_key_types_unsorted() -> None:
    assert check_json("value", {"b": 2, 1: "a"}) == '{"b": 2, "1": "a"}'
    assert check_json("value", {"b": 2, "a": 1}) == '{"a": 1, "b": 2}'


def test_json_length_limit_is_exact() -> None:
    overhead = len(json.dumps(""))
    assert check_json("value", "z" * (MAX_TEXT_LENGTH - overhead)) == json.dumps(
        "z" * (MAX_TEXT_LENGTH - overhead)
    )
    with pytest.raises(ValueError, match=r"is invalid: 32769 characters once JSON-encoded, more than 32768$"):
        check_json("value", "z" * (MAX_TEXT_LENGTH - overhead + 1))


def test_recorder_refuses_bad_inputs_and_outputs_naming_the_argument(quiet_client: Client) -> None:
    rec = quiet_client.recorder("pipe", "step", "run-1")
    loop: dict[str, object] = {}
    loop["self"] = loop
    refusals = {
        "deep": (nested_lists(10_000), "value=[[[[...]]]] is invalid: nested more than 64 deep"),
        "loop": (loop, "value={'self': {'self': {'self': {...}}}} is invalid: contains a circular reference"),
        "text": (
            {"path": "bad \udcff"},
            "value={'path': 'bad \\udcff'} is invalid: holds text that is not valid Unicode "
            "(surrogates not allowed)",
        ),
    }
    for log in (rec.log_input, rec.log_output):
        for name, (value, message) in refusals.items():
            with pytest.raises(ValueError) as info:
                log(name, value)
            assert str(info.value) == message
    assert take_points(quiet_client) == [], "a refused value records nothing"
    rec.log_input("deep", nested_lists(64))
    [(measurement, tags, fields)] = take_points(quiet_client)
    assert (measurement, tags[c.TAG_NAME]) == (c.IO.measurement, "deep")
    assert unescape_text(str(fields[c.FIELD_VALUE])) == json.dumps(nested_lists(64))


# ---- exact messages, both sides of every check (the mutation test found these loose) -------------

STRING_CHECKS = [
    (check_name, "must not be empty"),
    (check_identity, "must not be empty"),
    (check_attempt, "must not be empty"),
    (check_tag_value, "must not be empty (InfluxDB drops empty tags)"),
]


@pytest.mark.parametrize(("check", "empty"), STRING_CHECKS)
def test_string_checks_refuse_other_types_and_the_empty_string_exactly(check, empty: str) -> None:  # type: ignore[no-untyped-def]
    class Text(str):
        pass

    for value, shown_as in (
        (3, "int 3"),
        (b"x", "bytes b'x'"),
        (Text("x"), "Text 'x'"),
        (None, "NoneType None"),
    ):
        with pytest.raises(TypeError) as info:
            check("arg", value)
        assert str(info.value) == f"arg must be a str, got {shown_as}"
    with pytest.raises(ValueError) as refused:
        check("arg", "")
    assert str(refused.value) == f"arg='' is invalid: {empty}"
    assert check("arg", "a") == "a"


def test_text_is_any_str_even_empty_and_nothing_else() -> None:
    assert check_text("message", "") == ""
    with pytest.raises(TypeError) as info:
        check_text("message", 3)
    assert str(info.value) == "message must be a str, got int 3"
    with pytest.raises(ValueError) as refused:
        check_text("message", "bad \udcff")
    assert (
        str(refused.value)
        == "message='bad \\udcff' is invalid: is not valid Unicode text (surrogates not allowed)"
    )


def test_attempts_are_label_values_of_up_to_253_characters() -> None:
    for attempt in ("1", "12", "train-fit-r1-0-x7k2p", "a" * 253):
        assert check_attempt("attempt", attempt) == attempt
    for bad in ("-1", "pod-", "a b", "a/b"):
        with pytest.raises(ValueError) as info:
            check_attempt("attempt", bad)
        assert str(info.value) == (
            f"attempt={bad!r} is invalid: use letters, digits and _ . - only, "
            "starting and ending with a letter or digit"
        )


def test_every_tag_value_refusal_names_its_reason_exactly() -> None:
    reasons = {
        "a\nb": "contains a line break, which line protocol cannot carry in a tag",
        "a\rb": "contains a line break, which line protocol cannot carry in a tag",
        "a\\": "ends in a backslash, which would escape the tag separator",
        "a\tb": "contains a control character",
        "a\x7fb": "contains a control character",
        "bad \udcff": "is not valid Unicode text (surrogates not allowed)",
    }
    for value, reason in reasons.items():
        with pytest.raises(ValueError) as info:
            check_tag_value("tag", value)
        assert str(info.value) == f"tag={short_repr(value)} is invalid: {reason}"
    assert check_tag_value("tag", "a\\b c=d,e") == "a\\b c=d,e", "escaped by line protocol, not refused"


class Unshowable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_short_repr_cuts_at_exactly_the_limit_and_never_raises() -> None:
    at_limit = "x" * 58  # its repr, with the quotes, is 60 characters
    assert short_repr(at_limit) == repr(at_limit)
    assert short_repr(at_limit + "x") == "'" + "x" * 56 + "..."
    assert len(short_repr("y" * 1000)) == 60 and short_repr("abc", limit=4) == "'..."

    assert short_repr(Unshowable()) == "<Unshowable: repr() raised RuntimeError>"
    assert re.fullmatch(r"\[<Unshowable instance at 0x[0-9a-f]+>\]", short_repr([Unshowable()]))
    assert short_repr({"a": {"b": {"c": {"d": 1}}}}) == "{'a': {'b': {'c': {...}}}}", "three levels deep"


class Scalar:
    """Any object with ``item()``, as numpy and torch scalars and 0-d arrays have."""

    def __init__(self, item: object) -> None:
        self._item = item

    def item(self) -> object:
        if isinstance(self._item, Exception):
            raise self._item
        return self._item

    def __repr__(self) -> str:
        return f"Scalar({self._item!r})"


def test_numbers_from_item_and_numpy() -> None:
    import numpy as np

    assert check_number("v", Scalar(2)) == 2.0 and check_number("v", Scalar(0.5)) == 0.5
    assert check_number("v", np.float32(0.5)) == 0.5 and check_number("v", np.int64(-3)) == -3.0
    assert check_number("v", np.array(1.25)) == 1.25, "a 0-d array"
    for number in (3, Fraction(1, 4), Decimal("0.5"), np.int64(2), np.float32(0.5), Scalar(1), 1.5):
        assert type(check_number("v", number)) is float, number
    for bad in (Scalar(TypeError("no")), Scalar(ValueError("size 2"))):
        with pytest.raises(TypeError) as info:
            check_number("v", bad)
        assert str(info.value) == f"v must be a real number (or a one-element array), got Scalar {bad!r}"
    with pytest.raises(TypeError) as many:
        check_number("v", np.array([1.0, 2.0]))
    assert str(many.value) == "v must be a real number (or a one-element array), got ndarray array([1., 2.])"
    for inner in (True, "0.5", None, 1j):
        with pytest.raises(TypeError) as info:
            check_number("v", Scalar(inner))
        assert str(info.value) == f"v must be a real number, got Scalar Scalar({inner!r})"

    class NumericText(str):
        def item(self) -> float:
            return 1.0

    for text in (NumericText("1"), NumericText("")):
        with pytest.raises(TypeError) as refused:
            check_number("v", text)
        assert str(refused.value) == f"v must be a real number, got NumericText {text!r}", (
            "text is never a number"
        )
    with pytest.raises(ValueError) as inf:
        check_number("v", Scalar(float("inf")))
    assert str(inf.value) == "v=inf is invalid: must be a finite number (InfluxDB drops NaN and infinity)"
    with pytest.raises(ValueError) as big:
        check_number("v", np.uint64(2**63))
    assert str(big.value) == f"v={2**63} is invalid: integer outside the int64 range"


def test_an_index_may_be_any_integral_but_not_a_bool() -> None:
    import numpy as np

    assert check_index("step", np.int64(7)) == 7 and type(check_index("step", np.int64(7))) is int
    assert check_index("step", np.uint8(0)) == 0
    with pytest.raises(ValueError) as info:
        check_index("step", np.int64(-1))
    assert str(info.value) == "step=-1 is invalid: must be from 0 to 2**63-1"
    for bad, shown_as in (
        (np.bool_(True), "bool np.True_"),
        (Fraction(1), "Fraction Fraction(1, 1)"),
        ("1", "str '1'"),
    ):
        with pytest.raises(TypeError) as refused:
            check_index("step", bad)
        assert str(refused.value) == f"step must be an int, got {shown_as}"


def test_unescape_keeps_unknown_escapes_and_escape_leaves_plain_text_alone() -> None:
    assert unescape_text("a\\xb\\") == "a\\xb\\", "only the three escapes the writer makes are read"
    assert unescape_text("a\\\\n\\nb\\r") == "a\\n\nb\r"
    plain = "no escapes here, \t tabs stay"
    assert escape_text(plain) is plain and unescape_text(plain) is plain
    assert escape_text("a\\b\nc\rd") == "a\\\\b\\nc\\rd"


def test_truncate_text_at_the_markers_own_boundaries() -> None:
    marker = "... [50 characters truncated by mlobs]"
    assert len(marker) == 38
    assert truncate_text("a" * 50, 38) == marker, (
        "no room for any prefix: the marker alone, exactly the limit"
    )
    assert truncate_text("a" * 100, 38) == "a" * 38, "the marker would be 39 characters: a plain cut"
    # Both 99 and 100 characters cut would fit 200 (a prefix of 162 or of 161): the longer prefix is kept.
    assert truncate_text("a" * 261, 200) == "a" * 162 + "... [99 characters truncated by mlobs]"
    assert truncate_text("a" * 189, 128) == "a" * 90 + "... [99 characters truncated by mlobs]"
    assert truncate_text("a" * 10_000, 50) == "a" * 10 + "... [9990 characters truncated by mlobs]"


def test_safe_text_describes_escapes_and_truncates_in_that_order() -> None:
    assert safe_text(Unprintable()) == "<unprintable Unprintable: str() raised RuntimeError>"
    assert safe_text(ValueError("bad \udcff")) == "bad \\udcff"
    assert safe_text("\udcff" * 10, 45) == "\\udcff\\... [53 characters truncated by mlobs]", (
        "cut after escaping"
    )
    assert safe_text(12) == "12"


def test_json_nesting_problem_reports_its_own_stack_running_out() -> None:
    assert json_nesting_problem(nested_lists(5000), max_depth=10**6) == "nested too deep to encode here"
    assert json_nesting_problem(nested_lists(64)) is None and json_nesting_problem("[[[") is None
    assert json_nesting_problem([[], {"a": [[]]}], max_depth=4) is None
    assert json_nesting_problem([[], {"a": [[]]}], max_depth=3) == "nested more than 3 deep"
    assert json_nesting_problem(({"a": ()},), max_depth=2) == "nested more than 2 deep", "tuples count too"


def test_json_text_is_unicode_sorted_and_refuses_nan_exactly() -> None:
    assert (
        check_json("value", {"é": "café", "a": [1.5, None, True]}) == '{"a": [1.5, null, true], "é": "café"}'
    )
    assert json_dumps(float("nan"), allow_nan=True) == "NaN"
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        json_dumps(float("nan"))
    assert json_dumps({"b": object()}, default=lambda o: "obj") == '{"b": "obj"}'
    for value in (float("nan"), {"x": [float("-inf")]}):
        with pytest.raises(ValueError) as info:
            check_json("value", value)
        assert str(info.value) == (
            f"value={short_repr(value)} is invalid: Out of range float values are not JSON compliant"
        )
    with pytest.raises(TypeError) as refused:
        check_json("output", {1, 2})
    assert (
        str(refused.value) == "output must be JSON-serialisable: Object of type set is not JSON serializable"
    )


def test_param_values_exactly() -> None:
    import numpy as np

    assert param_value("p", Fraction(1, 4)) == ("0.25", 0.25)
    assert param_value("p", np.int64(7)) == ("7", 7.0)
    assert param_value("p", 2**63 - 1) == ("9223372036854775807", float(2**63 - 1))
    assert param_value("p", "") == ("", None)
    assert param_value("p", False) == ("False", None)
    for bad, shown_as in ((b"x", "bytes b'x'"), (Decimal("2.5"), "Decimal Decimal('2.5')")):
        with pytest.raises(TypeError) as info:
            param_value("p", bad)
        assert str(info.value) == f"p must be a str, int, float, bool or None, got {shown_as}"


# ---- check_int64 and EventWriter.write_at: a record of a stream at an exact time ------------------


def test_check_int64_takes_the_int64_range_and_refuses_what_is_not_an_int() -> None:
    assert [check_int64("n", v) for v in (-(2**63), -1, 0, 2**63 - 1)] == [-(2**63), -1, 0, 2**63 - 1]
    assert check_int64("n", np.int32(-7)) == -7 and type(check_int64("n", np.int64(7))) is int
    for value in (2**63, -(2**63) - 1):
        with pytest.raises(ValueError, match=rf"^n={value} is invalid: integer outside the int64 range$"):
            check_int64("n", value)
    for value, shown in ((True, "bool True"), (1.0, "float 1.0"), ("1", "str '1'"), (None, "NoneType None")):
        with pytest.raises(TypeError, match=f"^n must be an int, got {re.escape(shown)}$"):
            check_int64("n", value)


RECORD = {
    c.TAG_RUN_ID: "r1",
    c.TAG_PIPELINE: "train",
    c.TAG_STEP: "fit",
    c.TAG_ATTEMPT: "train-r1-abcde",
    c.TAG_STATUS: "failed",
    c.FIELD_EXIT_CODE: -9,
    c.FIELD_EXECUTION_TIME_MS: 1500,  # an int for a float field: stored as a float
    c.FIELD_NODE: "node\n1\\",  # text is stored escaped, as every string field
}


@pytest.fixture
def writer_client(tmp_path: Path) -> Iterator[Client]:
    with Client(LocalTransport(tmp_path / "store.db"), home=tmp_path) as client:
        yield client


def test_write_at_writes_the_record_at_exactly_its_time_each_time(writer_client: Client) -> None:
    writer = EventWriter(writer_client)
    t = 1_790_000_000_123_456_789
    assert writer.write_at(c.RUN_RECORD, RECORD, t) is True
    assert writer.write_at(c.RUN_RECORD, RECORD, t) is True  # not moved on by 1 ns: the same point
    assert writer.write_at(c.RUN_RECORD, {**RECORD, c.TAG_STATUS: "succeeded"}, 0) is True
    entries = b"".join(writer_client.shipper.queues[c.RUN_RECORD.tag])
    expected = {**RECORD, c.FIELD_EXECUTION_TIME_MS: 1500.0, c.FIELD_NODE: "node\\n1\\\\"}
    assert decode_entries(entries) == [
        (t, expected),
        (t, expected),
        (0, {**expected, c.TAG_STATUS: "succeeded"}),
    ]
    assert type(decode_entries(entries)[0][1][c.FIELD_EXECUTION_TIME_MS]) is float
    assert writer.write_at(c.RUN_RECORD, RECORD, MAX_EVENT_TIME_NS) is True  # the last EventTime
    assert MAX_EVENT_TIME_NS == 2**32 * 10**9 - 1


@pytest.mark.parametrize(
    ("stream", "record", "time_ns", "refusal"),
    [
        (
            c.RUN_RECORD,
            RECORD,
            -1,
            (ValueError, "time_ns=-1 is invalid: must be from 0 to 4294967295999999999"),
        ),
        (c.RUN_RECORD, RECORD, 2**32 * 10**9, (ValueError, "time_ns=4294967296000000000 is invalid")),
        (c.RUN_RECORD, RECORD, 1.5, (TypeError, "time_ns must be an int, got float 1.5")),
        (c.RUN_RECORD, RECORD, True, (TypeError, "time_ns must be an int, got bool True")),
        (
            "mlobs.run_record",
            RECORD,
            0,
            (TypeError, "stream must be one of pipeline_sdk.contract.STREAMS, got str"),
        ),
        (
            dataclasses.replace(c.RUN_RECORD),  # equal, but not the contract's own
            RECORD,
            0,
            (TypeError, "stream must be one of pipeline_sdk.contract.STREAMS, got Stream"),
        ),
        (c.RUN_RECORD, [("run_id", "r1")], 0, (TypeError, "record must be a mapping, got list")),
        (
            c.RUN_RECORD,
            {**RECORD, "colour": "red"},
            0,
            (
                ValueError,
                "record key 'colour' is invalid: not a tag or field of stream mlobs.run_record (its keys:",
            ),
        ),
        (c.RUN_RECORD, {c.TAG_RUN_ID: "r1"}, 0, (ValueError, "record is invalid: it has no field of stream")),
        (
            c.RUN_RECORD,
            {**RECORD, c.TAG_STEP: ""},
            0,
            (ValueError, "record['step']='' is invalid: must not be"),
        ),
        (
            c.RUN_RECORD,
            {**RECORD, c.FIELD_EXIT_CODE: 2**63},
            0,
            (ValueError, "record['exit_code']=9223372036854775808"),
        ),
        (
            c.RUN_RECORD,
            {**RECORD, c.FIELD_EXIT_CODE: "1"},
            0,
            (TypeError, "record['exit_code'] must be an int, got"),
        ),
        (
            c.RUN_RECORD,
            {**RECORD, c.FIELD_EXECUTION_TIME_MS: math.nan},
            0,
            (ValueError, "record['execution_time_ms']=nan is invalid: must be a finite number"),
        ),
        (
            c.RUN_RECORD,
            {**RECORD, c.FIELD_NODE: 7},
            0,
            (TypeError, "record['node'] must be a str, got int 7"),
        ),
    ],
)
def test_write_at_refuses_a_bad_argument_by_name_and_writes_nothing(
    writer_client: Client, stream: Any, record: Any, time_ns: Any, refusal: tuple[type[Exception], str]
) -> None:
    error, message = refusal
    writer = EventWriter(writer_client)
    with pytest.raises(error, match=f"^{re.escape(message)}"):
        writer.write_at(stream, record, time_ns)
    assert sum(len(q) for q in writer_client.shipper.queues.values()) == 0


def test_write_at_after_the_client_closed_raises_and_writes_nothing(tmp_path: Path) -> None:
    client = Client(LocalTransport(tmp_path / "store.db"), home=tmp_path)
    writer = EventWriter(client)
    assert client.close(10) is True
    with pytest.raises(
        RuntimeError, match=r"^<EventWriter to the local store .*> writes through a client that was"
    ):
        writer.write_at(c.RUN_RECORD, RECORD, 1)
    assert sum(len(q) for q in client.shipper.queues.values()) == 0
