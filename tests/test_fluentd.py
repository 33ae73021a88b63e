"""fluentd/fluent.conf and fluentd/Dockerfile held against pipeline_sdk/contract.py.

fluent.conf is a hand-written head (inputs, Fluentd's own metrics, the time filter) and, below
``fluentd.generate.HEADER``, routes that ``make generate`` writes from ``contract.STREAMS``.  So
the routes are checked by comparing them with the generator's output and by pinning what the
generator writes; the head is parsed (Fluentd's v1 syntax, as far as the head uses it) and held
to the rules the routes rely on.  Every head check is also run against a broken copy, so each
one is shown to fail.  Fluentd itself does not run here (no Ruby gems); the image's build runs
``fluentd --dry-run`` on this file, and ``make e2e`` runs it on kind.  (One concern, the
Fluentd aggregator's configuration and image, so one file over 400 lines.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from fluentd import generate
from pipeline_sdk import contract as c
from tests.conftest import ROOT

CONF = generate.CONF
DOCKERFILE = ROOT / "fluentd" / "Dockerfile"
CHART_VALUES = ROOT / "charts" / "mlobs-core" / "values.yaml"
CHART_FLUENTD = ROOT / "charts" / "mlobs-core" / "templates" / "fluentd"

FORWARD_PORT = str(c.DEFAULT_FLUENTD_PORT)
PROMETHEUS_PORT = "24231"  # fluent-plugin-prometheus's default, the chart's http-metrics port
TIME_FILTER = f"{c.TAG_PREFIX}**"  # the time filter's pattern: every tag of ours
TIME_EXPRESSION = "${time.to_i * 1000000000 + time.nsec}"  # exact EventTime in ns, an Integer
SECRET_KEYS = ("token", "password", "shared_key", "secret")
SHARED_KEY_VAR = c.ENV_FLUENTD_SHARED_KEY  # in_forward's <security> shared_key; the chart sets it
CONF_VARIABLES = {*generate.INFLUXDB_VARIABLES.values(), SHARED_KEY_VAR}  # every variable fluent.conf reads
MIB = 1024 * 1024


# ---- Fluentd's configuration syntax, as far as fluent.conf uses it --------------------------------------


class ConfError(ValueError):
    """The text is not a configuration Fluentd would parse."""


@dataclass
class Directive:
    name: str  # "source", "match", "buffer"...; "ROOT" for the file
    arg: str  # "mlobs.run" of <match mlobs.run>
    line: int
    params: dict[str, str] = field(default_factory=dict)
    children: list[Directive] = field(default_factory=list)

    def all(self, name: str) -> list[Directive]:
        return [d for d in self.children if d.name == name]

    def one(self, name: str) -> Directive | None:
        found = self.all(name)
        return found[0] if len(found) == 1 else None

    def walk(self) -> list[Directive]:
        return [self, *(d for child in self.children for d in child.walk())]


_OPEN = re.compile(r"<([A-Za-z_][\w.-]*)(?:\s+(.*?))?\s*>")
_CLOSE = re.compile(r"</([A-Za-z_][\w.-]*)>")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')  # a double-quoted value; #{...} (embedded Ruby) kept raw


def parse(text: str) -> Directive:
    """Fluentd's v1 syntax: nested ``<directive arg>``, ``key value`` lines, ``#`` comments."""
    root = Directive("ROOT", "", 0)
    stack = [root]
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if closing := _CLOSE.fullmatch(line):
            if len(stack) == 1 or stack[-1].name != closing[1]:
                raise ConfError(f"line {number}: </{closing[1]}> closes nothing open")
            stack.pop()
        elif opening := _OPEN.fullmatch(line):
            directive = Directive(opening[1], opening[2] or "", number)
            stack[-1].children.append(directive)
            stack.append(directive)
        elif line.startswith("<"):
            raise ConfError(f"line {number}: malformed directive {line!r}")
        else:
            key, _, value = line.partition(" ")
            value = value.strip()
            if value.startswith('"'):
                quoted = _QUOTED.fullmatch(value)
                if quoted is None:
                    raise ConfError(f"line {number}: a double-quoted value must be the whole value")
                value = quoted[1]
            if key in stack[-1].params:
                raise ConfError(f"line {number}: {key} set twice in <{stack[-1].name} {stack[-1].arg}>")
            stack[-1].params[key] = value
    if len(stack) > 1:
        raise ConfError(f"<{stack[-1].name} {stack[-1].arg}> (line {stack[-1].line}) is never closed")
    return root


def _env_var(value: str) -> str | None:
    """The variable a ``"#{ENV.fetch('X')}"`` value reads, else None."""
    found = re.fullmatch(r"""#\{ENV\.fetch\('(\w+)'\)\}""", value)
    return found[1] if found else None


def _quantity(value: str) -> int:
    """A Kubernetes quantity with a binary suffix (the chart's buffer volume size)."""
    number = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", value)
    assert number, f"unexpected quantity {value!r}"
    return int(number[1]) * int(1024 ** ["", "Ki", "Mi", "Gi", "Ti"].index(number[2] or ""))


def _buffer_volume() -> int:
    values = yaml.safe_load(CHART_VALUES.read_text())
    return _quantity(values["fluentd"]["persistence"]["size"])


# ---- the hand-written head -----------------------------------------------------------------------------


def head_problems(head: Directive) -> list[str]:
    """Every way the head breaks what the generated routes rely on (empty when it keeps it)."""
    found: list[str] = []

    def source(kind: str) -> list[Directive]:
        return [s for s in head.all("source") if s.params.get("@type") == kind]

    forward = source("forward")
    if not any(s.params.get("port") == FORWARD_PORT and s.params.get("bind") == "0.0.0.0" for s in forward):
        found.append(f"no forward source on 0.0.0.0:{FORWARD_PORT}")
    for s in forward:
        found.extend(f"line {s.line}: forward source: {p}" for p in _security_problems(s))
    if not any(
        s.params.get("port") == PROMETHEUS_PORT and s.params.get("metrics_path") == "/metrics"
        for s in source("prometheus")
    ):
        found.append(f"no prometheus source serving /metrics on port {PROMETHEUS_PORT}")
    for kind in ("prometheus_monitor", "prometheus_output_monitor"):
        if not source(kind):
            found.append(f"no {kind} source (fluentd_output_status_* metrics)")
    if any(label.arg == "@ERROR" for label in head.all("label")):
        found.append("a <label @ERROR> would acknowledge chunks that could not be buffered")
    found.extend(
        f"line {m.line}: <match {m.arg}> in the head takes events before the generated routes"
        for m in head.all("match")
    )
    if not any(
        f.arg == TIME_FILTER
        and f.params.get("@type") == "record_transformer"
        and f.params.get("enable_ruby") == "true"
        and (record := f.one("record")) is not None
        and record.params.get(generate.TIME_KEY) == TIME_EXPRESSION
        for f in head.all("filter")
    ):
        found.append(f"no <filter {TIME_FILTER}> setting {generate.TIME_KEY} to the exact event time")
    return found


def _security_problems(forward: Directive) -> list[str]:
    """The forward source must require the shared key of the SDK, read from the environment."""
    security = forward.one("security")
    if security is None:
        return ["no <security> section: any pod that reaches the port could write events"]
    found = []
    p = security.params
    if _env_var(p.get("shared_key", "")) != SHARED_KEY_VAR:
        found.append(f"shared_key must come from {SHARED_KEY_VAR}, got {p.get('shared_key')!r}")
    if not p.get("self_hostname"):
        found.append("<security> has no self_hostname (in_forward requires it)")
    if p.get("user_auth") == "true" and not security.all("user"):
        found.append("user_auth without <user> sections (in_forward refuses to start)")
    return found


def conf_problems(conf: Directive) -> list[str]:
    """What the whole file, head and routes, must keep: secrets from the environment, unique ids."""
    found = [
        f"<{d.name} {d.arg}> (line {d.line}): {key} is a literal, not read from the environment"
        for d in conf.walk()
        for key, value in d.params.items()
        if any(s in key for s in SECRET_KEYS) and _env_var(value) is None
    ]
    ids = [d.params["@id"] for d in conf.walk() if "@id" in d.params]
    if len(ids) != len(set(ids)):
        found.append(f"plugin @id values repeat: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
    return found


def buffer_problems(routes: int, volume_bytes: int) -> list[str]:
    total = routes * generate.OUTPUT_LIMIT_MIB * MIB
    if total > volume_bytes:
        return [f"{routes} buffers may hold {total} bytes, more than the {volume_bytes}-byte volume"]
    return []


def _head() -> str:
    return generate.split(CONF.read_text())[0]


def test_the_head_keeps_what_the_routes_rely_on() -> None:
    assert head_problems(parse(_head())) == []
    assert conf_problems(parse(CONF.read_text())) == []


def test_the_routes_are_the_generators_output() -> None:
    head, routes = generate.split(CONF.read_text())
    assert routes == generate.generated()
    assert head.endswith("</filter>\n\n"), "the generated part follows the time filter"
    assert routes.splitlines()[0] == generate.HEADER
    assert "generated from pipeline_sdk/contract.py by `make generate`; do not edit" in generate.HEADER


def test_the_routes_are_the_contracts_streams_in_file_order() -> None:
    conf = parse(generate.generated())
    routes = conf.all("match")
    assert [m.arg for m in routes] == [
        f"{s.tag} {c.LOG.tag}.**" if s is c.LOG else s.tag for s in c.STREAMS
    ] + ["**"]  # the log route also takes the lines the node forwarders tail (mlobs.log.<file>)
    for stream, route in zip(c.STREAMS, routes, strict=False):
        p = route.params
        assert (p["measurement"], p["@id"]) == (stream.measurement, f"influxdb_{stream.measurement}")
        assert json.loads(p["tag_keys"]) == list(stream.tags)
        assert json.loads(p["field_keys"]) == list(stream.fields)
        assert {k: _env_var(p[k]) for k in generate.INFLUXDB_VARIABLES} == generate.INFLUXDB_VARIABLES
        buffer = route.one("buffer")
        assert buffer is not None and buffer.params["path"] == f"{generate.BUFFER_ROOT}/{stream.measurement}"
    assert routes[-1].params == {"@type": "stdout", "@id": "unknown_tag_stdout"}, "unknown tags are printed"
    assert len({m.one("buffer").params["path"] for m in routes[:-1]}) == len(c.STREAMS)  # type: ignore[union-attr]


# What the generator writes for one stream, pinned: the output, the exact time, the file buffer
# that survives restarts, retries forever with backoff, refuses (never drops) on overflow.
PARAM_ROUTE = """<match mlobs.param>
  @type influxdb2
  @id influxdb_param
  url "#{ENV.fetch('INFLUXDB_URL')}"
  use_ssl "#{ENV.fetch('INFLUXDB_URL').start_with?('https://')}"
  token "#{ENV.fetch('INFLUXDB_TOKEN')}"
  org "#{ENV.fetch('INFLUXDB_ORG')}"
  bucket "#{ENV.fetch('INFLUXDB_BUCKET')}"
  measurement param
  tag_keys ["run_id", "pipeline", "step", "attempt", "name"]
  field_keys ["value", "number"]
  time_key _mlobs_time_ns
  time_precision ns
  <buffer>
    @type file
    path /fluentd/buffer/param
    flush_mode interval
    flush_interval 1s
    flush_at_shutdown true
    chunk_limit_size 8m
    total_limit_size 170m
    overflow_action throw_exception
    retry_type exponential_backoff
    retry_wait 1s
    retry_max_interval 30s
    retry_forever true
  </buffer>
</match>
"""


def test_a_route_is_what_the_generator_pins() -> None:
    assert generate.route(c.PARAM) == PARAM_ROUTE
    assert PARAM_ROUTE in CONF.read_text()


def test_the_buffers_fit_the_chart_volume_with_room_for_a_twelfth_stream() -> None:
    volume = _buffer_volume()
    assert volume == 2 * 1024 * MIB
    assert len(c.STREAMS) == 11
    assert buffer_problems(len(c.STREAMS), volume) == []
    assert buffer_problems(12, volume) == []  # 2040 MiB
    assert buffer_problems(13, volume) == [
        f"13 buffers may hold {13 * 170 * MIB} bytes, more than the {volume}-byte volume"
    ]


def _stream(tag: str, **keys: c.FieldType) -> c.Stream:
    return c.Stream(tag=tag, measurement=tag.removeprefix(c.TAG_PREFIX), tags=(), fields=keys)


def test_the_generator_refuses_a_tag_routed_twice_or_the_time_key_as_a_record_key() -> None:
    with pytest.raises(ValueError, match="a Fluentd tag is routed twice"):
        generate.generated([c.RUN, c.PARAM, c.RUN])
    with pytest.raises(ValueError, match="_mlobs_time_ns is the time filter's key"):
        generate.generated([_stream("mlobs.x", _mlobs_time_ns=c.FieldType.INTEGER)])
    two = generate.generated([_stream("mlobs.a"), _stream("mlobs.b")])
    assert [m.arg for m in parse(two).all("match")] == ["mlobs.a", "mlobs.b", "**"]
    assert "2 outputs hold at most 340 MiB" in two


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("<source>\n</source>\n", 0),
        (f"x\n{generate.HEADER}\n<match **>\n</match>\n", 1),
        (f"{generate.HEADER}\n{generate.HEADER}\n", 2),
        (f"{generate.HEADER} and more\n", 0),
    ],
)
def test_the_generated_part_starts_at_one_header_line(text: str, found: int) -> None:
    if found == 1:
        assert generate.split(text) == ("x\n", f"{generate.HEADER}\n<match **>\n</match>\n")
    else:
        with pytest.raises(ValueError, match=f"must be there once, found {found} times"):
            generate.split(text)


def test_every_variable_the_config_reads_is_set_by_the_chart() -> None:
    variables = set(re.findall(r"ENV(?:\[|\.fetch\()'(\w+)'", CONF.read_text()))
    assert variables == CONF_VARIABLES
    template = "\n".join(p.read_text() for p in sorted(CHART_FLUENTD.glob("*.yaml")))
    for variable in variables:
        assert re.search(rf"-\s*name:\s*{variable}\b", template), f"the chart does not set {variable}"


# ---- each head check fails on a broken head -------------------------------------------------------------


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, f"mutation target not found: {old!r}"
    return text.replace(old, new, 1)


_SHARED_KEY = f"shared_key \"#{{ENV.fetch('{SHARED_KEY_VAR}')}}\""
_SECURITY = f'  <security>\n    self_hostname "#{{Socket.gethostname}}"\n    {_SHARED_KEY}\n  </security>\n'
_TIME_RECORD = f"{generate.TIME_KEY} {TIME_EXPRESSION}"

BROKEN: dict[str, tuple[Callable[[str], str], list[str]]] = {
    "forward port": (lambda t: _edit(t, "port 24224", "port 24225"), ["no forward source"]),
    "no security": (lambda t: _edit(t, _SECURITY, ""), ["forward source: no <security> section"]),
    "literal shared key": (
        lambda t: _edit(t, _SHARED_KEY, 'shared_key "s3cr3t-f0rward-key"'),
        [f"shared_key must come from {SHARED_KEY_VAR}", "shared_key is a literal"],
    ),
    "shared key from another variable": (
        lambda t: _edit(t, _SHARED_KEY, "shared_key \"#{ENV.fetch('INFLUXDB_TOKEN')}\""),
        [f"shared_key must come from {SHARED_KEY_VAR}, got \"#{{ENV.fetch('INFLUXDB_TOKEN')}}\""],
    ),
    "no self_hostname": (
        lambda t: _edit(t, '    self_hostname "#{Socket.gethostname}"\n', ""),
        ["<security> has no self_hostname"],
    ),
    "user auth without users": (
        lambda t: _edit(t, _SHARED_KEY, _SHARED_KEY + "\n    user_auth true"),
        ["user_auth without <user> sections"],
    ),
    "no prometheus endpoint": (
        lambda t: _edit(t, "@type prometheus\n", "@type monitor_agent\n"),
        ["no prometheus source serving /metrics"],
    ),
    "no output monitor": (
        lambda t: _edit(t, "@type prometheus_output_monitor", "@type prometheus_tail_monitor"),
        ["no prometheus_output_monitor source"],
    ),
    "error label": (
        lambda t: t + "<label @ERROR>\n  <match **>\n    @type stdout\n  </match>\n</label>\n",
        ["a <label @ERROR> would acknowledge"],
    ),
    "a route in the head": (
        lambda t: t + "<match mlobs.*>\n  @type stdout\n</match>\n",
        ["<match mlobs.*> in the head takes events before the generated routes"],
    ),
    "inexact time": (
        lambda t: _edit(t, _TIME_RECORD, f"{generate.TIME_KEY} ${{time.to_f}}"),
        [f"no <filter {TIME_FILTER}> setting {generate.TIME_KEY}"],
    ),
    "time filter on one stream only": (
        lambda t: _edit(t, f"<filter {TIME_FILTER}>", f"<filter {c.RUN.tag}>"),
        [f"no <filter {TIME_FILTER}>"],
    ),
    "repeated plugin id": (
        lambda t: _edit(t, "@id in_prometheus_monitor", "@id in_prometheus"),
        ["plugin @id values repeat: ['in_prometheus']"],
    ),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_each_check_reports_a_broken_head(name: str) -> None:
    mutate, expected = BROKEN[name]
    conf = parse(mutate(_head()))
    report = "\n".join(head_problems(conf) + conf_problems(conf))
    for sentence in expected:
        assert sentence in report, f"{name}: {sentence!r} not reported in:\n{report}"


def test_a_literal_secret_in_a_route_is_reported() -> None:
    routes = _edit(generate.generated(), "token \"#{ENV.fetch('INFLUXDB_TOKEN')}\"", 'token "s3cr3t-t0ken"')
    line = routes.splitlines().index(f"<match {c.RUN.tag}>") + 1
    assert conf_problems(parse(routes)) == [
        f"<match {c.RUN.tag}> (line {line}): token is a literal, not read from the environment"
    ]


def test_the_parser_reads_fluentds_syntax() -> None:
    conf = parse(
        "# a comment\n"
        "<source>\n"
        "  @type forward\n"
        "  port 24224\n"
        "</source>\n"
        "<match a.** b.*>\n"
        "  token \"#{ENV.fetch('T')}\"\n"
        '  keys ["a", "b"]\n'
        "  <buffer>\n"
        "    path /x#y\n"
        "  </buffer>\n"
        "</match>\n"
    )
    source, match = conf.children
    assert (source.name, source.arg, source.params) == ("source", "", {"@type": "forward", "port": "24224"})
    assert (match.name, match.arg, match.line) == ("match", "a.** b.*", 6)
    assert _env_var(match.params["token"]) == "T"
    assert json.loads(match.params["keys"]) == ["a", "b"]
    assert match.one("buffer") is not None and match.children[0].params == {"path": "/x#y"}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("<match a>\n", "<match a> (line 1) is never closed"),
        ("</match>\n", "line 1: </match> closes nothing open"),
        ("<match a>\n</source>\n", "line 2: </source> closes nothing open"),
        ("<match a\n</match>\n", "line 1: malformed directive '<match a'"),
        ('<match a>\n  token "abc\n</match>\n', "line 2: a double-quoted value must be the whole value"),
        ("<match a>\n  k 1\n  k 2\n</match>\n", "line 3: k set twice in <match a>"),
    ],
)
def test_the_parser_refuses_what_fluentd_refuses(text: str, error: str) -> None:
    with pytest.raises(ConfError) as raised:
        parse(text)
    assert str(raised.value) == error


# ---- the image -----------------------------------------------------------------------------------------


PLUGINS = (
    "fluent-plugin-influxdb-v2",
    "fluent-plugin-prometheus",
    "fluent-plugin-concat",
    "fluent-plugin-kubernetes_metadata_filter",
)
CONFIGS = ("fluent.conf", "forwarder.conf")  # both baked in, both dry-run


def dockerfile_problems(text: str) -> list[str]:
    found = []
    text = re.sub(r"\\\n", " ", text)  # continuation lines
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    for base in bases:
        name, _, tag = base.partition("@")[0].rpartition(":")
        if (
            not name
            or "/" in tag
            or tag in ("latest", "edge", "edge-debian")
            or not re.search(r"\d+\.\d+\.\d+", tag)
        ):
            found.append(f"base image {base} is not pinned to a release tag")
    installs = re.findall(r"fluent-gem install\s+([^&;]+)", text)
    pinned = {}
    for args in installs:
        words = args.split()
        names = [w for w in words if not w.startswith("-")]
        version = words[words.index("-v") + 1] if "-v" in words else None
        gems = [n for n in names if n != version]
        if len(gems) != 1 or version is None or not re.fullmatch(r"\d+(\.\d+)+", version):
            found.append(f"fluent-gem install {args.strip()}: one gem, with an exact -v version")
            continue
        pinned[gems[0]] = version
    for plugin in PLUGINS:
        if plugin not in pinned:
            found.append(f"{plugin} is not installed with a pinned version")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    if not users or users[-1].split(":")[0] in ("0", "root"):
        found.append("the image runs as root")
    for name in CONFIGS:
        if not re.search(
            rf"^COPY\s+fluentd/{re.escape(name)}\s+/fluentd/etc/{re.escape(name)}\s*$", text, re.M
        ):
            found.append(f"{name} is not copied to /fluentd/etc/{name}")
    return found


def test_the_image_pins_its_base_and_plugins_and_runs_as_non_root() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


_BASE = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.M)[-1]  # the pin, from its home
_GEMS = dict(re.findall(r"fluent-gem install [^\n]*?(\S+) -v (\S+)", DOCKERFILE.read_text()))
_PROMETHEUS, _INFLUXDB = "fluent-plugin-prometheus", "fluent-plugin-influxdb-v2"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (_BASE, "fluent/fluentd:latest", "is not pinned"),
        (_BASE, "fluent/fluentd", "is not pinned"),
        (_BASE, re.sub(r"(\d+\.\d+)\.\d+", r"\1", _BASE), "is not pinned"),  # v1.19-debian...
        (f"{_PROMETHEUS} -v {_GEMS[_PROMETHEUS]}", _PROMETHEUS, "one gem, with an exact -v"),
        (
            f"{_INFLUXDB} -v {_GEMS[_INFLUXDB]}",
            f"{_INFLUXDB} -v '~> {_GEMS[_INFLUXDB].rsplit('.', 1)[0]}'",
            "exact -v",
        ),
        ("USER 999:999", "USER root", "runs as root"),
        ("USER 999:999", "", "runs as root"),
        ("COPY fluentd/fluent.conf", "COPY fluentd/other.conf", "fluent.conf is not copied"),
        ("COPY fluentd/forwarder.conf", "COPY fluentd/other.conf", "forwarder.conf is not copied"),
        (
            "fluent-gem install --no-document --minimal-deps fluent-plugin-concat -v",
            "fluent-gem install --no-document --minimal-deps fluent-plugin-cat -v",
            "fluent-plugin-concat is not installed",
        ),
    ],
)
def test_the_image_check_reports_a_broken_dockerfile(old: str, new: str, expected: str) -> None:
    text = _edit(DOCKERFILE.read_text(), old, new)
    assert any(expected in p for p in dockerfile_problems(text)), dockerfile_problems(text)


def test_the_image_bakes_in_the_checked_configs() -> None:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    runs = {
        name: re.search(rf"((?:\b\w+=\S+\s+)+)fluentd --dry-run -c /fluentd/etc/{name}\b", text)
        for name in CONFIGS
    }
    for name, run in runs.items():
        assert run is not None, f"{name} is not dry-run"
    dry = {name: set(re.findall(r"\b(\w+)=", run[1])) for name, run in runs.items() if run}
    forwarder_vars = set(re.findall(r"ENV\.fetch\('(\w+)'\)", generate.FORWARDER_CONF.read_text()))
    assert forwarder_vars == {
        c.ENV_FLUENTD_SHARED_KEY,
        "MLOBS_AGGREGATOR_HOST",
        "MLOBS_FORWARDER_BUFFER_LIMIT",
    }
    assert dry == {"fluent.conf": CONF_VARIABLES, "forwarder.conf": forwarder_vars}, (
        "each dry run sets what its file fetches"
    )


def test_readme_points_at_the_pins_and_repeats_none() -> None:
    readme = (ROOT / "fluentd" / "README.md").read_text()
    assert "pinned once, in `fluentd/Dockerfile`" in readme
    assert {_PROMETHEUS, _INFLUXDB, "prometheus-client", *PLUGINS} <= set(_GEMS)
    assert len(_GEMS) == 23, "every gem of the forwarders' Kubernetes client is pinned too"
    for version in [_BASE.rpartition(":")[2], *_GEMS.values()]:
        assert version.removeprefix("v") not in readme, f"fluentd/README.md repeats {version}"


def test_paths_in_this_test_exist() -> None:
    for path in (CONF, DOCKERFILE, CHART_VALUES, CHART_FLUENTD):
        assert Path(path).exists(), path
