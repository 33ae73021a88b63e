"""fluentd/fluent.conf and fluentd/Dockerfile held against pipeline_sdk/contract.py.

Fluentd cannot run here, so its configuration is parsed (Fluentd's v1 syntax: ``<directive arg>``
... ``</directive>`` nesting, ``key value`` lines, quoted strings, JSON arrays, comments) and its
routes checked the way Fluentd routes: top-level ``<match>`` directives in file order, with
Fluentd's glob patterns, the first that matches a tag takes the event.  Every check is also
run against deliberately broken configurations, so each one is shown to fail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from pipeline_sdk import contract as c
from tests.conftest import ROOT

CONF = ROOT / "fluentd" / "fluent.conf"
DOCKERFILE = ROOT / "fluentd" / "Dockerfile"
CHART_VALUES = ROOT / "charts" / "mlobs-core" / "values.yaml"
CHART_FLUENTD = ROOT / "charts" / "mlobs-core" / "templates" / "fluentd"

FORWARD_PORT = str(c.DEFAULT_FLUENTD_PORT)
PROMETHEUS_PORT = "24231"  # fluent-plugin-prometheus's default, the chart's http-metrics port
BUFFER_ROOT = "/fluentd/buffer/"  # the chart's buffer volume
TIME_KEY = "_mlobs_time_ns"  # the record key the time filter adds and every output reads
TIME_EXPRESSION = "${time.to_i * 1000000000 + time.nsec}"  # exact EventTime in ns, an Integer
ENV_OF = {  # influxdb2 parameter -> the environment variable the chart sets for it
    "url": "INFLUXDB_URL",
    "token": "INFLUXDB_TOKEN",
    "org": "INFLUXDB_ORG",
    "bucket": "INFLUXDB_BUCKET",
}
SECRET_KEYS = ("token", "password", "shared_key", "secret")
SHARED_KEY_VAR = (
    c.ENV_FLUENTD_SHARED_KEY
)  # in_forward's <security> shared_key; the chart sets it from a Secret
CONF_VARIABLES = {*ENV_OF.values(), SHARED_KEY_VAR}  # every variable fluent.conf reads
MIN_RETRY_TIMEOUT_S = 24 * 3600  # with retry_forever off, at least a day of retries
MAX_FLUSH_INTERVAL_S = 5


# ---- Fluentd's configuration syntax --------------------------------------------------------------------


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


_DIRECTIVE_OPEN = re.compile(r"<\s*([A-Za-z_][\w.-]*)\s*(.*?)\s*>\s*(?:#.*)?")
_DIRECTIVE_CLOSE = re.compile(r"</\s*([A-Za-z_][\w.-]*)\s*>\s*(?:#.*)?")


def _double_quoted(text: str, number: int) -> str:
    """The inside of a double-quoted value; ``#{...}`` (embedded Ruby) is kept as written."""
    out, i = [], 1
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(escapes.get(text[i + 1], text[i + 1]))
            i += 2
        elif ch == "#" and text.startswith("#{", i):
            end = text.find("}", i)
            if end < 0:
                raise ConfError(f"line {number}: unterminated #{{...}}")
            out.append(text[i : end + 1])
            i = end + 1
        elif ch == '"':
            rest = text[i + 1 :].strip()
            if rest and not rest.startswith("#"):
                raise ConfError(f"line {number}: text after a quoted value: {rest!r}")
            return "".join(out)
        else:
            out.append(ch)
            i += 1
    raise ConfError(f"line {number}: unterminated double-quoted value")


def parse(text: str) -> Directive:
    """Parse Fluentd's v1 configuration syntax into a tree of directives."""
    root = Directive("ROOT", "", 0)
    stack = [root]
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        raw = lines[number]
        number += 1
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("</"):
            closing = _DIRECTIVE_CLOSE.fullmatch(line)
            if not closing:
                raise ConfError(f"line {number}: malformed end tag {line!r}")
            if len(stack) == 1 or stack[-1].name != closing[1]:
                raise ConfError(f"line {number}: </{closing[1]}> closes nothing open")
            stack.pop()
            continue
        if line.startswith("<"):
            opening = _DIRECTIVE_OPEN.fullmatch(line)
            if not opening:
                raise ConfError(f"line {number}: malformed directive {line!r}")
            directive = Directive(opening[1], opening[2], number)
            stack[-1].children.append(directive)
            stack.append(directive)
            continue
        key, _, value = line.partition(" ")
        value = value.strip()
        if key in ("@include", "include"):
            raise ConfError(f"line {number}: @include is not used by mlobs (one self-contained file)")
        if value.startswith('"'):
            value = _double_quoted(value, number)
        elif value.startswith("'"):
            end = value.find("'", 1)
            if end < 0:
                raise ConfError(f"line {number}: unterminated single-quoted value")
            value = value[1:end]
        elif value.startswith(("[", "{")):  # JSON, which may span lines
            while True:
                try:
                    json.loads(value)
                    break
                except json.JSONDecodeError:
                    if number >= len(lines):
                        raise ConfError(f"line {number}: unterminated JSON value of {key}") from None
                    value += "\n" + lines[number]
                    number += 1
        else:
            value = re.sub(r"\s+#.*$", "", value)  # `key value # comment`
        if key in stack[-1].params:
            raise ConfError(f"line {number}: {key} set twice in <{stack[-1].name} {stack[-1].arg}>")
        stack[-1].params[key] = value
    if len(stack) > 1:
        raise ConfError(f"<{stack[-1].name} {stack[-1].arg}> (line {stack[-1].line}) is never closed")
    return root


def _glob_regex(pattern: str) -> str:
    """One match pattern as Fluentd compiles it (lib/fluent/match.rb, GlobMatchPattern)."""
    if pattern.startswith("/"):
        if len(pattern) > 1 and pattern.endswith("/"):
            return pattern[1:-1]
        raise ConfError(f"invalid regex pattern {pattern!r}")
    stack: list[list[str]] = []
    regex = [""]
    escape = dot = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if escape:
            regex[-1] += re.escape(ch)
            escape = False
            i += 1
            continue
        if pattern.startswith("**", i):
            if dot:
                regex[-1] += r"(?![^\.])"
                dot = False
            if pattern[i + 2 : i + 3] == ".":
                regex[-1] += r"(?:.*\.|\A)"
                i += 3
            else:
                regex[-1] += ".*"
                i += 2
            continue
        if dot:
            regex[-1] += r"\."
            dot = False
        if ch == "\\":
            escape = True
        elif ch == ".":
            dot = True
        elif ch == "*":
            regex[-1] += r"[^\.]*"
        elif ch == "{":
            stack.append([])
            regex.append("")
        elif ch == "}" and stack:
            stack[-1].append(regex.pop())
            regex[-1] += "(?:" + "|".join(stack.pop()) + ")"
        elif ch == "," and stack:
            stack[-1].append(regex.pop())
            regex.append("")
        elif re.fullmatch(r"\w", ch, re.ASCII):
            regex[-1] += ch
        else:
            regex[-1] += "\\" + ch
        i += 1
    while stack:
        stack[-1].append(regex.pop())
        regex[-1] += "(?:" + "|".join(stack.pop()) + ")"
    return regex[-1]


def pattern_matches(patterns: str, tag: str) -> bool:
    """Whether ``<match patterns>`` takes ``tag``: several patterns are separated by spaces."""
    return any(p == "**" or re.fullmatch(_glob_regex(p), tag) for p in patterns.split())


def _size(value: str) -> int:
    """Fluentd's size type: 8m, 1g, 512k or bytes."""
    number = re.fullmatch(r"(\d+)\s*([kmgt]?)b?", value.strip().lower())
    if not number:
        raise ConfError(f"not a size: {value!r}")
    return int(number[1]) * int(1024 ** " kmgt".index(number[2] or " "))


def _seconds(value: str) -> float:
    """Fluentd's time type: 1s, 30s, 5m, 72h, 1d or a number of seconds."""
    number = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", value.strip())
    if not number:
        raise ConfError(f"not a time: {value!r}")
    return float(number[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[number[2]]


def _array(value: str) -> list[str]:
    """Fluentd's array type: a JSON array, or comma-separated values."""
    if value.startswith("["):
        parsed = json.loads(value)
        return [str(v) for v in parsed]
    return [v.strip() for v in value.split(",") if v.strip()]


def _env_var(value: str) -> str | None:
    """The variable a ``"#{ENV['X']}"`` or ``"#{ENV.fetch('X')}"`` value reads, else None."""
    found = re.fullmatch(r"""#\{ENV(?:\[|\.fetch\()['"](\w+)['"](?:\]|\))\}""", value)
    return found[1] if found else None


def _quantity(value: str) -> int:
    """A Kubernetes quantity with a binary suffix (the chart's buffer volume size)."""
    number = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", value)
    assert number, f"unexpected quantity {value!r}"
    return int(number[1]) * int(1024 ** ["", "Ki", "Mi", "Gi", "Ti"].index(number[2] or ""))


# ---- the contract check --------------------------------------------------------------------------------


def problems(conf: Directive, buffer_volume_bytes: int | None = None) -> list[str]:
    """Every way ``conf`` breaks the contract, as readable sentences (empty when it keeps it)."""
    found: list[str] = []
    top = conf.children
    sources = conf.all("source")

    def source(kind: str) -> list[Directive]:
        return [s for s in sources if s.params.get("@type") == kind]

    forward = source("forward")
    if not any(s.params.get("port") == FORWARD_PORT and s.params.get("bind") == "0.0.0.0" for s in forward):
        found.append(f"no forward source on 0.0.0.0:{FORWARD_PORT}")
    for s in forward:
        found.extend(f"line {s.line}: forward source: {p}" for p in _security_problems(s))
    prometheus = source("prometheus")
    if not any(
        s.params.get("port") == PROMETHEUS_PORT and s.params.get("metrics_path", "/metrics") == "/metrics"
        for s in prometheus
    ):
        found.append(f"no prometheus source serving /metrics on port {PROMETHEUS_PORT}")
    for kind in ("prometheus_monitor", "prometheus_output_monitor"):
        if not source(kind):
            found.append(f"no {kind} source (fluentd_output_status_* metrics)")

    if any(label.arg == "@ERROR" for label in conf.all("label")):
        found.append("a <label @ERROR> would acknowledge chunks that could not be buffered")

    matches = conf.all("match")
    first_route = min((top.index(m) for m in matches), default=len(top))

    # The time filter: exact nanoseconds for every stream, applied before any route.
    time_filters = [
        f
        for f in conf.all("filter")
        if f.params.get("@type") == "record_transformer"
        and f.params.get("enable_ruby") == "true"
        and (record := f.one("record")) is not None
        and record.params.get(TIME_KEY) == TIME_EXPRESSION
    ]
    for stream in c.STREAMS:
        if not any(pattern_matches(f.arg, stream.tag) and top.index(f) < first_route for f in time_filters):
            found.append(f"{stream.tag}: no time filter setting {TIME_KEY} before the routes")

    # One route per stream, reached first, writing the stream's measurement, tags and fields.
    buffer_paths: dict[str, str] = {}
    total_limit = 0
    for stream in c.STREAMS:
        own = [m for m in matches if m.arg == stream.tag]
        catching = [m for m in matches if pattern_matches(m.arg, stream.tag)]
        if not own:
            found.append(f"{stream.tag}: no route of its own (<match {stream.tag}>)")
            continue
        if len(own) > 1:
            found.append(f"{stream.tag}: routed {len(own)} times; only the first is ever used")
        route = own[0]
        if catching[0] is not route:
            found.append(f"{stream.tag}: caught by <match {catching[0].arg}> above its route")
            continue
        found.extend(f"{stream.tag}: {p}" for p in _output_problems(route, stream))
        buffer = route.one("buffer")
        if buffer is None or buffer.params.get("@type") != "file":
            found.append(f"{stream.tag}: no file buffer (an InfluxDB restart would lose events)")
            continue
        path = buffer.params.get("path", "")
        if not path.startswith(BUFFER_ROOT):
            found.append(f"{stream.tag}: buffer path {path!r} is not on the buffer volume {BUFFER_ROOT}")
        if path in buffer_paths:
            found.append(f"{stream.tag}: buffer path {path!r} is shared with {buffer_paths[path]}")
        buffer_paths[path] = stream.tag
        found.extend(f"{stream.tag}: {p}" for p in _buffer_problems(buffer))
        total_limit += _size(buffer.params.get("total_limit_size", "0"))
    if buffer_volume_bytes is not None and total_limit > buffer_volume_bytes:
        found.append(
            f"the buffers may hold {total_limit} bytes, more than the {buffer_volume_bytes}-byte volume"
        )

    ids = [d.params["@id"] for d in conf.walk() if "@id" in d.params]
    if len(ids) != len(set(ids)):
        found.append(f"plugin @id values repeat: {sorted(i for i in set(ids) if ids.count(i) > 1)}")

    # Unknown tags: printed by a final catch-all, never dropped silently.
    if not matches or matches[-1].arg != "**" or top[-1] is not matches[-1]:
        found.append("no final <match **> catch-all for unknown tags")
    elif matches[-1].params.get("@type") in (None, "null"):
        found.append("the final catch-all drops unknown tags silently (@type null)")

    # Secrets only from the environment, wherever they appear.
    for directive in conf.walk():
        for key, value in directive.params.items():
            if any(s in key for s in SECRET_KEYS) and _env_var(value) is None:
                found.append(f"line {directive.line}: {key} is a literal, not read from the environment")
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


def _output_problems(route: Directive, stream: c.Stream) -> list[str]:
    p = route.params
    found = []
    if p.get("@type") != "influxdb2":
        return [f"output is {p.get('@type')!r}, not influxdb2"]
    if p.get("measurement") != stream.measurement:
        found.append(f"measurement {p.get('measurement')!r}, expected {stream.measurement!r}")
    tag_keys = _array(p.get("tag_keys", "[]"))
    if sorted(tag_keys) != sorted(stream.tags):
        found.append(f"tag_keys {tag_keys} are not the stream's tags {list(stream.tags)}")
    field_keys = _array(p.get("field_keys", "[]"))
    if sorted(field_keys) != sorted(stream.fields):
        found.append(f"field_keys {field_keys} are not the stream's fields {list(stream.fields)}")
    if p.get("time_precision") != "ns":
        found.append(f"time_precision {p.get('time_precision')!r}, expected ns (EventTime)")
    if p.get("time_key") != TIME_KEY:
        found.append(f"time_key {p.get('time_key')!r}, expected {TIME_KEY} (the exact event time)")
    if TIME_KEY in stream.keys:
        found.append(f"{TIME_KEY} is also a record key of the stream")
    for key, variable in ENV_OF.items():
        if _env_var(p.get(key, "")) != variable:
            found.append(f"{key} must come from {variable}, got {p.get(key)!r}")
    if "INFLUXDB_URL" not in p.get("use_ssl", ""):
        found.append("use_ssl must follow the scheme of INFLUXDB_URL")
    return found


def _buffer_problems(buffer: Directive) -> list[str]:
    b = buffer.params
    found = []
    forever = b.get("retry_forever") == "true"
    if not forever and _seconds(b.get("retry_timeout", "72h")) < MIN_RETRY_TIMEOUT_S:
        found.append("the buffer gives up retrying too soon (retry_forever false, short retry_timeout)")
    if b.get("retry_max_times") is not None and not forever:
        found.append("retry_max_times drops chunks after a few failures")
    if b.get("retry_type", "exponential_backoff") != "exponential_backoff":
        found.append("retries must back off exponentially")
    if b.get("overflow_action", "throw_exception") != "throw_exception":
        found.append(
            f"overflow_action {b['overflow_action']}: only throw_exception refuses the ack "
            "without dropping data or stalling in_forward"
        )
    if _seconds(b.get("flush_interval", "60s")) > MAX_FLUSH_INTERVAL_S:
        found.append(
            f"flush_interval {b.get('flush_interval', '60s (default)')} is over {MAX_FLUSH_INTERVAL_S}s"
        )
    if "total_limit_size" not in b:
        found.append("no total_limit_size")
    return found


def _buffer_volume() -> int:
    values = yaml.safe_load(CHART_VALUES.read_text())
    return _quantity(values["fluentd"]["persistence"]["size"])


# ---- the real files ------------------------------------------------------------------------------------


def test_fluent_conf_routes_every_contract_stream() -> None:
    assert problems(parse(CONF.read_text()), _buffer_volume()) == []


def test_the_routes_are_the_contracts_streams_in_file_order() -> None:
    conf = parse(CONF.read_text())
    routes = [m.arg for m in conf.all("match")]
    assert routes == [s.tag for s in c.STREAMS] + ["**"]


def test_every_variable_the_config_reads_is_set_by_the_chart() -> None:
    variables = set(re.findall(r"ENV(?:\[|\.fetch\()'(\w+)'", CONF.read_text()))
    assert variables == CONF_VARIABLES
    template = "\n".join(p.read_text() for p in sorted(CHART_FLUENTD.glob("*.yaml")))
    for variable in variables:
        assert re.search(rf"-\s*name:\s*{variable}\b", template), f"the chart does not set {variable}"


# ---- each check fails on a broken configuration ---------------------------------------------------------


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, f"mutation target not found: {old!r}"
    return text.replace(old, new, 1)


def _drop_route(text: str, tag: str) -> str:
    start = text.index(f"<match {tag}>")
    end = text.index("</match>", start) + len("</match>")
    return text[:start] + text[end:]


def _above_routes(text: str, block: str) -> str:
    return _edit(text, f"<match {c.STREAMS[0].tag}>", f"{block}\n<match {c.STREAMS[0].tag}>")


def _route_params(text: str, tag: str, old: str, new: str) -> str:
    start = text.index(f"<match {tag}>")
    end = text.index("</match>", start)
    return text[:start] + _edit(text[start:end], old, new) + text[end:]


_RUN, _PARAM, _PRED = c.RUN.tag, c.PARAM.tag, c.PREDICTION.tag
_CATCH_ALL = "\n<match **>\n"  # the top-level catch-all (the one in <label @FLUENT_LOG> is indented)
_SHARED_KEY = f"shared_key \"#{{ENV.fetch('{SHARED_KEY_VAR}')}}\""
_SECURITY = f'  <security>\n    self_hostname "#{{Socket.gethostname}}"\n    {_SHARED_KEY}\n  </security>\n'

_TAGS = json.dumps(list(c.PARAM.tags))
BROKEN: dict[str, tuple[Callable[[str], str], list[str]]] = {
    "missing route": (lambda t: _drop_route(t, _PRED), [f"{_PRED}: no route of its own"]),
    "duplicate route": (
        lambda t: _edit(t, _CATCH_ALL, f"\n<match {_RUN}>\n  @type stdout\n</match>{_CATCH_ALL}"),
        [f"{_RUN}: routed 2 times"],
    ),
    "catch-all above": (
        lambda t: _above_routes(t, "<match mlobs.**>\n  @type stdout\n</match>"),
        [f"{s.tag}: caught by <match mlobs.**> above its route" for s in c.STREAMS],
    ),
    "wildcard above": (
        lambda t: _above_routes(t, "<match mlobs.*>\n  @type stdout\n</match>"),
        [f"{_PRED}: caught by <match mlobs.*> above its route"],
    ),
    "alternation above": (
        lambda t: _above_routes(t, "<match other {mlobs.param,x.y}>\n  @type stdout\n</match>"),
        [f"{_PARAM}: caught by <match other {{mlobs.param,x.y}}> above its route"],
    ),
    "wrong measurement": (
        lambda t: _route_params(t, _PARAM, "measurement param", "measurement params"),
        [f"{_PARAM}: measurement 'params', expected 'param'"],
    ),
    "missing tag key": (
        lambda t: _route_params(t, _PARAM, f"tag_keys {_TAGS}", 'tag_keys ["run_id"]'),
        [f"{_PARAM}: tag_keys ['run_id'] are not"],
    ),
    "field as tag": (
        lambda t: _route_params(t, _PARAM, 'field_keys ["value", "number"]', 'field_keys ["value"]'),
        [f"{_PARAM}: field_keys ['value'] are not"],
    ),
    "wrong output type": (
        lambda t: _route_params(t, _RUN, "@type influxdb2", "@type influxdb"),
        [f"{_RUN}: output is 'influxdb', not influxdb2"],
    ),
    "millisecond precision": (
        lambda t: _route_params(t, _RUN, "time_precision ns", "time_precision ms"),
        [f"{_RUN}: time_precision 'ms'"],
    ),
    "no exact time key": (
        lambda t: _route_params(t, _RUN, f"time_key {TIME_KEY}\n", ""),
        [f"{_RUN}: time_key None"],
    ),
    "literal bucket": (
        lambda t: _route_params(t, _RUN, "bucket \"#{ENV.fetch('INFLUXDB_BUCKET')}\"", "bucket mlobs"),
        [f"{_RUN}: bucket must come from INFLUXDB_BUCKET"],
    ),
    "literal token": (
        lambda t: _route_params(t, _RUN, "token \"#{ENV.fetch('INFLUXDB_TOKEN')}\"", 'token "s3cr3t-t0ken"'),
        [f"{_RUN}: token must come from INFLUXDB_TOKEN", "token is a literal"],
    ),
    "fixed use_ssl": (
        lambda t: _route_params(
            t, _RUN, "use_ssl \"#{ENV.fetch('INFLUXDB_URL').start_with?('https://')}\"", "use_ssl true"
        ),
        [f"{_RUN}: use_ssl must follow"],
    ),
    "memory buffer": (
        lambda t: _route_params(t, _PARAM, "@type file", "@type memory"),
        [f"{_PARAM}: no file buffer"],
    ),
    "shared buffer path": (
        lambda t: _route_params(t, _PARAM, "path /fluentd/buffer/param", "path /fluentd/buffer/run"),
        [f"{_PARAM}: buffer path '/fluentd/buffer/run' is shared with {_RUN}"],
    ),
    "buffer off the volume": (
        lambda t: _route_params(t, _PARAM, "path /fluentd/buffer/param", "path /tmp/param"),
        [f"{_PARAM}: buffer path '/tmp/param' is not on the buffer volume"],
    ),
    "retries give up": (
        lambda t: _route_params(t, _RUN, "retry_forever true", "retry_timeout 1h"),
        [f"{_RUN}: the buffer gives up retrying"],
    ),
    "drop on overflow": (
        lambda t: _route_params(
            t, _RUN, "overflow_action throw_exception", "overflow_action drop_oldest_chunk"
        ),
        [f"{_RUN}: overflow_action drop_oldest_chunk"],
    ),
    "slow flush": (
        lambda t: _route_params(t, _RUN, "flush_interval 1s", "flush_interval 60s"),
        [f"{_RUN}: flush_interval 60s is over"],
    ),
    "buffers over the volume": (
        lambda t: _route_params(t, _RUN, "total_limit_size 192m", "total_limit_size 4g"),
        ["the buffers may hold"],
    ),
    "forward port": (lambda t: _edit(t, "port 24224", "port 24225"), ["no forward source"]),
    "no security": (
        lambda t: _edit(t, _SECURITY, ""),
        ["forward source: no <security> section"],
    ),
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
        lambda t: _edit(
            t,
            _CATCH_ALL,
            f"\n<label @ERROR>\n  <match **>\n    @type stdout\n  </match>\n</label>{_CATCH_ALL}",
        ),
        ["a <label @ERROR> would acknowledge"],
    ),
    "no time filter": (
        lambda t: _edit(t, f"{TIME_KEY} {TIME_EXPRESSION}", f"{TIME_KEY} ${{time.to_f}}"),
        [f"{s.tag}: no time filter" for s in c.STREAMS],
    ),
    "time filter below the routes": (
        lambda t: _edit(
            _edit(t, "<filter mlobs.**>", "<filter unused>"),
            _CATCH_ALL,
            f"\n<filter mlobs.**>\n  @type record_transformer\n  enable_ruby true\n  <record>\n"
            f"    {TIME_KEY} {TIME_EXPRESSION}\n  </record>\n</filter>{_CATCH_ALL}",
        ),
        [f"{_RUN}: no time filter"],
    ),
    "no catch-all": (lambda t: _edit(t, _CATCH_ALL, "\n<match other.**>\n"), ["no final <match **>"]),
    "silent catch-all": (
        lambda t: _edit(t, "@type stdout\n  @id unknown_tag_stdout", "@type null\n  @id unknown_tag_stdout"),
        ["drops unknown tags silently"],
    ),
    "repeated plugin id": (
        lambda t: _edit(t, "@id influxdb_param", "@id influxdb_run"),
        ["plugin @id values repeat: ['influxdb_run']"],
    ),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_each_check_reports_a_broken_config(name: str) -> None:
    mutate, expected = BROKEN[name]
    found = problems(parse(mutate(CONF.read_text())), _buffer_volume())
    report = "\n".join(found)
    for sentence in expected:
        assert sentence in report, f"{name}: {sentence!r} not reported in:\n{report}"


# ---- the parser and the patterns follow Fluentd ---------------------------------------------------------


def test_the_parser_reads_fluentds_syntax() -> None:
    conf = parse(
        "# a comment\n"
        "<source>\n"
        "  @type forward   # trailing comment\n"
        "  port 24224\n"
        "</source>\n"
        "<match a.** b.*>\n"
        "  @type influxdb2\n"
        "  token \"#{ENV.fetch('T')}\"\n"
        "  name 'single # kept'\n"
        '  keys ["a",\n'
        '        "b"]\n'
        "  <buffer>\n"
        "    path /x#y\n"
        "  </buffer>\n"
        "</match>\n"
    )
    source, match = conf.children
    assert (source.name, source.params) == ("source", {"@type": "forward", "port": "24224"})
    assert (match.name, match.arg) == ("match", "a.** b.*")
    assert match.params["token"] == "#{ENV.fetch('T')}" and _env_var(match.params["token"]) == "T"
    assert match.params["name"] == "single # kept"
    assert _array(match.params["keys"]) == ["a", "b"]
    assert match.one("buffer") is not None and match.children[0].params == {"path": "/x#y"}


@pytest.mark.parametrize(
    "text",
    [
        "<match a>\n",  # never closed
        "</match>\n",  # closes nothing
        "<match a>\n</source>\n",  # closes the wrong directive
        "<match a\n</match>\n",  # malformed directive
        '<match a>\n  token "abc\n</match>\n',  # unterminated string
        "<match a>\n  keys [1,\n</match>\n",  # unterminated JSON
        "<match a>\n  k 1\n  k 2\n</match>\n",  # a key set twice
        "@include other.conf\n",
    ],
)
def test_the_parser_refuses_what_fluentd_refuses(text: str) -> None:
    with pytest.raises(ConfError):
        parse(text)


@pytest.mark.parametrize(
    ("pattern", "tag", "expected"),
    [
        ("**", "mlobs.run", True),
        ("mlobs.**", "mlobs.run", True),
        ("mlobs.**", "mlobs", True),
        ("mlobs.**", "mlobs.a.b", True),
        ("mlobs.**", "mlobsx.run", False),
        ("mlobs.*", "mlobs.run", True),
        ("mlobs.*", "mlobs.a.b", False),
        ("mlobs.run", "mlobs.run_record", False),
        ("mlobs.run*", "mlobs.run_record", True),
        ("**.run", "mlobs.run", True),
        ("{mlobs.run,x}", "mlobs.run", True),
        ("mlobs.{run,param}", "mlobs.param", True),
        ("mlobs.{run,param}", "mlobs.metric", False),
        ("other mlobs.io", "mlobs.io", True),
        ("/mlobs\\.(io|log)/", "mlobs.log", True),
    ],
)
def test_match_patterns_follow_fluentd(pattern: str, tag: str, expected: bool) -> None:
    assert pattern_matches(pattern, tag) is expected


# ---- the image -----------------------------------------------------------------------------------------


PLUGINS = ("fluent-plugin-influxdb-v2", "fluent-plugin-prometheus")


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
    if not re.search(r"^COPY\s+fluentd/fluent\.conf\s+/fluentd/etc/fluent\.conf\s*$", text, re.M):
        found.append("fluent.conf is not copied to /fluentd/etc/fluent.conf")
    return found


def test_the_image_pins_its_base_and_plugins_and_runs_as_non_root() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("fluent/fluentd:v1.19.3-debian-2.2", "fluent/fluentd:latest", "is not pinned"),
        ("fluent/fluentd:v1.19.3-debian-2.2", "fluent/fluentd", "is not pinned"),
        ("fluent/fluentd:v1.19.3-debian-2.2", "fluent/fluentd:v1.19-debian-2", "is not pinned"),
        ("fluent-plugin-prometheus -v 2.2.2", "fluent-plugin-prometheus", "one gem, with an exact -v"),
        ("fluent-plugin-influxdb-v2 -v 1.10.0", "fluent-plugin-influxdb-v2 -v '~> 1.10'", "exact -v"),
        ("USER 999:999", "USER root", "runs as root"),
        ("USER 999:999", "", "runs as root"),
        ("COPY fluentd/fluent.conf", "COPY fluentd/other.conf", "is not copied"),
    ],
)
def test_the_image_check_reports_a_broken_dockerfile(old: str, new: str, expected: str) -> None:
    text = _edit(DOCKERFILE.read_text(), old, new)
    assert any(expected in p for p in dockerfile_problems(text)), dockerfile_problems(text)


def test_the_image_bakes_in_the_checked_config() -> None:
    text = DOCKERFILE.read_text()
    assert "fluentd --dry-run -c /fluentd/etc/fluent.conf" in text
    variables = set(re.findall(r"\b((?:INFLUXDB|MLOBS)_\w+)=", text))
    assert variables == CONF_VARIABLES, "the dry run must set every variable fluent.conf fetches"


def test_readme_names_the_pins() -> None:
    readme = (ROOT / "fluentd" / "README.md").read_text()
    base = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.M)[-1]
    assert base in readme
    for gem, version in re.findall(r"fluent-gem install [^\n]*?(\S+) -v (\S+)", DOCKERFILE.read_text()):
        assert f"{gem} {version}" in readme, f"fluentd/README.md does not name {gem} {version}"


def test_paths_in_this_test_exist() -> None:
    for path in (CONF, DOCKERFILE, CHART_VALUES, CHART_FLUENTD):
        assert Path(path).exists(), path
