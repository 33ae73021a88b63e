"""fluentd/forwarder.conf (the node forwarders) held against pipeline_sdk/contract.py.

Like fluent.conf, the file is a hand-written head (the inputs) and, below ``generate.HEADER``,
a part ``make generate`` writes (fluentd/forwarder.py): the pipeline of a tailed container line
and the output to the aggregators.  The generated part is compared with the generator's output
and pinned where it matters (acks, the buffer, the shared key); the head is parsed with the
same parser as fluent.conf and held to what the generated part relies on, and each check is run
on a broken copy.  The regular expressions are run here too: the CRI parser's on containerd's
line format, and the traceback joiner's through a port of fluent-plugin-concat's regexp mode
(filter_concat.rb, process_regexp, at the version fluentd/Dockerfile pins) on tracebacks a real
Python process prints; the Ruby of the log record runs in Ruby (Debian's ``ruby``; skipped without
it), as record_transformer runs it.
(One concern, the forwarders' configuration, so one file over 400 lines.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fluentd import forwarder, generate
from pipeline_sdk import contract as c
from tests.test_fluentd import Directive, _env_var, _security_problems, conf_problems, parse

CONF = generate.FORWARDER_CONF
FORWARD_PORT = str(c.DEFAULT_FLUENTD_PORT)


def _head() -> str:
    return generate.split(CONF.read_text())[0]


def _sources(conf: Directive, kind: str) -> list[Directive]:
    return [s for s in conf.all("source") if s.params.get("@type") == kind]


def head_problems(head: Directive) -> list[str]:
    """Every way the head breaks what the generated part relies on (empty when it keeps it)."""
    found: list[str] = []
    forward = _sources(head, "forward")
    if not any(s.params.get("port") == FORWARD_PORT and s.params.get("bind") == "0.0.0.0" for s in forward):
        found.append(f"no forward source on 0.0.0.0:{FORWARD_PORT}")
    for s in forward:
        found.extend(f"line {s.line}: forward source: {p}" for p in _security_problems(s))
        if s.params.get("@label") != "@AGGREGATORS":
            found.append(f"line {s.line}: the forward source must go to @AGGREGATORS")
    tails = _sources(head, "tail")
    if len(tails) != 1:
        found.append(f"one tail source of the containers' logs, found {len(tails)}")
    for tail in tails:
        p = tail.params
        expected = {
            "@label": "@CONTAINERS",
            "path": "/var/log/containers/*.log",
            "tag": forwarder.TAILED_TAG,
            "read_from_head": "true",
            "follow_inodes": "true",
        }
        found.extend(
            f"line {tail.line}: tail source: {key} must be {value}, not {p.get(key)}"
            for key, value in expected.items()
            if p.get(key) != value
        )
        if not p.get("pos_file", "").startswith(forwarder.BUFFER_ROOT + "/"):
            found.append(
                f"line {tail.line}: the positions file must be on the hostPath {forwarder.BUFFER_ROOT}"
            )
        parser = tail.one("parse")
        if parser is None or parser.params.get("@type") != "regexp" or parser.params.get("utc") != "true":
            found.append(f"line {tail.line}: tail source: a regexp <parse> of the CRI format, in UTC")
    if not _sources(head, "prometheus"):
        found.append("no prometheus source")
    if any(label.arg == "@ERROR" for label in head.all("label")):
        found.append("a <label @ERROR> would acknowledge chunks that could not be buffered")
    found.extend(f"line {m.line}: <match {m.arg}> in the head" for m in head.all("match"))
    return found


def test_the_head_keeps_what_the_generated_part_relies_on() -> None:
    assert head_problems(parse(_head())) == []
    assert conf_problems(parse(CONF.read_text())) == []


def test_the_generated_part_is_the_generators_output() -> None:
    head, part = generate.split(CONF.read_text())
    assert part == generate.forwarder_generated()
    assert part.splitlines()[0] == generate.HEADER
    assert head.endswith(
        "# No <label @ERROR>, as in the aggregators: a chunk that cannot be buffered must not be acked.\n\n"
    )


def test_make_generate_puts_an_edited_generated_part_back() -> None:
    text = CONF.read_text()
    assert generate.render(text, generate.forwarder_generated) == text
    edited = text.replace("require_ack_response true", "require_ack_response false")
    assert generate.render(edited, generate.forwarder_generated) == text  # make generate puts it back
    run = subprocess.run(
        [sys.executable, "-m", "fluentd.generate", "--check"], capture_output=True, text=True, check=False
    )
    assert (run.returncode, run.stderr) == (0, "")


def _label(conf: Directive, name: str) -> Directive:
    [label] = [d for d in conf.all("label") if d.arg == name]
    return label


def _by_id(conf: Directive) -> dict[str, Directive]:
    return {d.params["@id"]: d for d in conf.walk() if "@id" in d.params}


# ---- the output to the aggregators ------------------------------------------------------------------


def test_the_output_waits_for_the_aggregators_ack_on_a_file_buffer_on_the_hostpath() -> None:
    conf = parse(CONF.read_text())
    [match, catch_all] = _label(conf, "@AGGREGATORS").all("match")
    assert match.arg == f"{c.TAG_PREFIX}**" and catch_all.arg == "**"
    p = match.params
    assert p == {
        "@type": "forward",
        "@id": "forward_to_aggregators",
        "require_ack_response": "true",
        "ack_response_timeout": "30s",
        "heartbeat_type": "none",
        "dns_round_robin": "true",
        "expire_dns_cache": "0",
        "ignore_network_errors_at_startup": "true",
    }
    assert _security_problems(match) == []
    [server] = match.all("server")
    assert _env_var(server.params["host"]) == forwarder.AGGREGATOR_HOST_VAR
    assert server.params["port"] == FORWARD_PORT
    buffer = match.one("buffer")
    assert buffer is not None and buffer.arg == "tag"
    assert buffer.params == {
        "@type": "file",
        "path": f"{forwarder.BUFFER_ROOT}/forward",
        "flush_mode": "interval",
        "flush_interval": "1s",
        "flush_at_shutdown": "false",
        "chunk_limit_size": "8m",
        "total_limit_size": f"#{{ENV.fetch('{forwarder.BUFFER_LIMIT_VAR}')}}",
        "overflow_action": "throw_exception",
        "retry_type": "exponential_backoff",
        "retry_wait": "1s",
        "retry_max_interval": "30s",
        "retry_forever": "true",
    }


def test_the_aggregators_log_route_takes_the_tailed_lines() -> None:
    [route] = [m for m in parse(generate.CONF.read_text()).all("match") if c.LOG.tag in m.arg.split()]
    assert route.arg.split() == [c.LOG.tag, forwarder.TAILED]


# ---- a tailed line: CRI, the pod's labels, tracebacks, the log record --------------------------------


def _cri() -> re.Pattern[str]:
    [tail] = _sources(parse(_head()), "tail")
    parser = tail.one("parse")
    assert parser is not None
    return re.compile(parser.params["expression"].strip("/").replace("(?<", "(?P<"))


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        (
            "2026-12-01T15:15:43.123456789Z stdout F epoch 1: loss 0.5",
            ("2026-12-01T15:15:43.123456789Z", "stdout", "F", "epoch 1: loss 0.5"),
        ),
        (
            "2026-12-01T15:15:43.000000000Z stderr P a long line, ",
            ("2026-12-01T15:15:43.000000000Z", "stderr", "P", "a long line, "),
        ),
        ("2026-12-01T15:15:43.000000001Z stdout F ", ("2026-12-01T15:15:43.000000001Z", "stdout", "F", "")),
        (
            "2026-12-01T15:15:43.000000001Z stdout F    indented",
            ("2026-12-01T15:15:43.000000001Z", "stdout", "F", "   indented"),
        ),
        ("2026-12-01T15:15:43.000000001Z other F x", None),
    ],
)
def test_the_cri_parser_reads_containerds_lines(line: str, parsed: tuple[str, ...] | None) -> None:
    match = _cri().fullmatch(line)
    got = None if match is None else (match["time"], match["stream"], match["logtag"], match["log"])
    assert got == parsed


def concat_regexp(lines: list[str], start: str, continuous: str, end: str) -> list[str]:
    """fluent-plugin-concat's regexp mode (process_regexp) on one stream, then its timeout flush."""
    first, cont, last = (re.compile(r.strip("/"), re.ASCII) for r in (start, continuous, end))
    out: list[str] = []
    buffer: list[str] = []

    def flush() -> None:
        out.append("\n".join(buffer))
        buffer.clear()

    for line in lines:
        if first.search(line):
            if buffer:
                flush()
            buffer.append(line)
            if last.search(line):
                flush()
        elif last.search(line):
            buffer.append(line)
            flush()
        elif not buffer:
            out.append(line)
        elif cont.search(line):
            buffer.append(line)
        else:
            flush()
            out.append(line)
    if buffer:
        flush()  # flush_interval later, through timeout_label
    return out


def _traceback_filter() -> tuple[str, str, str]:
    p = _by_id(parse(CONF.read_text()))["containers_tracebacks"].params
    return p["multiline_start_regexp"], p["continuous_line_regexp"], p["multiline_end_regexp"]


PROGRAM = """
import sys
class Diverged(Exception):
    pass
def fit(epoch):
    if epoch == 2:
        raise {error}
print("epoch 0", file=sys.stderr)
try:
    for epoch in range(3):
        fit(epoch)
except Exception:
    import traceback
    traceback.print_exc()
print("KeyError: printed by the step itself", file=sys.stderr)
print("after", file=sys.stderr)
{tail}
"""


def _stderr(tmp_path: Path, program: str) -> list[str]:
    """What a Python step run from a file (so its frames show their source lines) prints on stderr."""
    script = tmp_path / "step.py"
    script.write_text(program)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False)
    return run.stderr.splitlines()


@pytest.mark.parametrize(
    "error",
    ["ValueError('loss is nan')", "Diverged", "Diverged('at epoch 2: ' + 'x' * 50)", "KeyError('lr')"],
)
def test_a_python_traceback_is_one_record_and_other_lines_one_each(error: str, tmp_path: Path) -> None:
    lines = _stderr(tmp_path, PROGRAM.format(error=error, tail=""))
    records = concat_regexp(lines, *_traceback_filter())
    traceback = "\n".join(lines[1:-2])
    assert traceback.startswith("Traceback (most recent call last):\n  File ")
    assert len(lines) >= 8
    assert records == ["epoch 0", traceback, "KeyError: printed by the step itself", "after"]


def test_a_traceback_that_kills_the_step_is_one_record(tmp_path: Path) -> None:
    lines = _stderr(tmp_path, PROGRAM.format(error="ValueError('x')", tail="fit(2)"))
    records = concat_regexp(lines, *_traceback_filter())
    assert records[-1].startswith("Traceback (most recent call last):\n")
    assert records[-1].endswith("\nValueError: x")
    assert len(records) == 5


def test_a_chained_exception_is_a_record_per_traceback(tmp_path: Path) -> None:
    program = "try:\n    1 / 0\nexcept ZeroDivisionError:\n    raise KeyError('k')\n"
    records = concat_regexp(_stderr(tmp_path, program), *_traceback_filter())
    assert [r.splitlines()[-1] if r else r for r in records] == [
        "ZeroDivisionError: division by zero",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "KeyError: 'k'",
    ]  # the empty lines are dropped by containers_empty_lines


def test_the_port_of_concat_can_fail_to_join(tmp_path: Path) -> None:
    lines = _stderr(tmp_path, PROGRAM.format(error="ValueError('x')", tail=""))
    start, _, end = _traceback_filter()
    assert len(concat_regexp(lines, start, r"/^$/", end)) > 4  # frames not taken as continuous lines


def test_only_lines_of_pods_with_the_run_id_label_pass() -> None:
    ids = _by_id(parse(CONF.read_text()))
    metadata = ids["containers_metadata"]
    assert metadata.params["@type"] == "kubernetes_metadata"
    grep = ids["containers_of_runs"]
    [regexp] = grep.all("regexp")
    assert regexp.params == {"key": f"$['kubernetes']['labels']['{c.LABEL_RUN_ID}']", "pattern": "/./"}
    partial = ids["containers_partial_lines"].params
    assert (partial["use_partial_cri_logtag"], partial["separator"], partial["stream_identity_key"]) == (
        "true",
        "",
        forwarder.STREAM_KEY,
    )
    # concat deletes partial_cri_stream_key from a joined record: it names the logtag, keeping the stream
    assert partial["partial_cri_stream_key"] == partial["partial_cri_logtag_key"] == forwarder.LOGTAG_KEY
    order = [
        d.params.get("@id")
        for label in ("@CONTAINERS", "@CONTAINER_LINES", "@CONTAINER_RECORDS")
        for d in _label(parse(CONF.read_text()), label).children
    ]
    assert order == [
        "containers_metadata",
        "containers_of_runs",
        "containers_partial_lines",
        "containers_to_lines",
        "containers_tracebacks",
        "containers_to_records",
        "containers_log_records",
        "containers_empty_lines",
        "containers_to_aggregators",
    ]
    assert ids["containers_partial_lines"].params["timeout_label"] == "@CONTAINER_LINES"
    assert ids["containers_tracebacks"].params["timeout_label"] == "@CONTAINER_RECORDS"


# The record of a tailed line, pinned: the run's identity from the pod's labels, the pod's name
# as the attempt, the level, the message with the contract's escapes and the SDK's length bound.
LOG_RECORD = {
    "run_id": '${record.dig("kubernetes", "labels", "mlobs.io/run-id").to_s}',
    "pipeline": '${record.dig("kubernetes", "labels", "mlobs.io/pipeline").to_s}',
    "step": '${record.dig("kubernetes", "labels", "mlobs.io/step").to_s}',
    "attempt": '${record.dig("kubernetes", "pod_name").to_s}',
    "level": '${record["stream"] == "stdout" ? "INFO" : (record["log"].to_s.start_with?('
    '"Traceback (most recent call last):") ? "ERROR" : "WARNING")}',
    "message": '${record["log"].to_s[0, 32768].gsub(Regexp.union("\\\\", "\\n", "\\r"), '
    '"\\\\" => "\\\\\\\\", "\\n" => "\\\\n", "\\r" => "\\\\r")}',
    "logger": '${record["stream"]}',
    "extra": '${ {"source" => record["stream"], '
    '"container" => record.dig("kubernetes", "container_name")}.to_json }',
}


def test_a_tailed_line_becomes_a_record_of_the_log_stream() -> None:
    transformer = _by_id(parse(CONF.read_text()))["containers_log_records"]
    assert (transformer.params["enable_ruby"], transformer.params["renew_record"]) == ("true", "true")
    record = transformer.one("record")
    assert record is not None and record.params == LOG_RECORD == forwarder.log_record()
    assert set(record.params) == set(c.LOG.keys), "every key of the log stream, and no other"
    assert list(c.STRING_FIELD_ESCAPES) == [("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r")]
    assert forwarder.LEVELS == {
        c.LOG_SOURCE_STDOUT: "INFO",
        c.LOG_SOURCE_STDERR: "WARNING",
        "traceback": "ERROR",
    }
    for key in (c.EXTRA_SOURCE_KEY, c.EXTRA_CONTAINER_KEY):
        assert f'"{key}" =>' in record.params[c.FIELD_EXTRA]


def test_each_ruby_value_is_one_placeholder() -> None:
    """record_transformer evaluates a value as Ruby only when it is exactly one ``${...}``."""
    for key, value in forwarder.log_record().items():
        assert value.startswith("${") and value.endswith("}") and value.count("${") == 1, key
        assert " #" not in value, f"{key}: Fluentd would read ' #' as the start of a comment"


# ---- each check fails on a broken head -----------------------------------------------------------------


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, f"mutation target not found: {old!r}"
    return text.replace(old, new, 1)


BROKEN: dict[str, tuple[Callable[[str], str], list[str]]] = {
    "forward port": (lambda t: _edit(t, "port 24224", "port 24225"), ["no forward source"]),
    "no security": (
        lambda t: re.sub(r"  <security>.*?</security>\n", "", t, count=1, flags=re.S),
        ["no <security> section"],
    ),
    "forward to nowhere": (
        lambda t: _edit(t, "@label @AGGREGATORS", "@label @ELSEWHERE"),
        ["must go to @AGGREGATORS"],
    ),
    "tail of every file": (
        lambda t: _edit(t, "path /var/log/containers/*.log", "path /var/log/*.log"),
        ["path must be"],
    ),
    "untagged tail": (lambda t: _edit(t, "tag mlobs.log.*", "tag kube.*"), ["tag must be mlobs.log.*"]),
    "positions in the pod": (
        lambda t: _edit(t, "pos_file /fluentd/buffer/containers.pos", "pos_file /tmp/containers.pos"),
        ["positions file must be on the hostPath"],
    ),
    "local time": (lambda t: _edit(t, "    utc true\n", ""), ["in UTC"]),
    "not from the head": (
        lambda t: _edit(t, "read_from_head true", "read_from_head false"),
        ["read_from_head must be true"],
    ),
    "error label": (
        lambda t: t + "<label @ERROR>\n  <match **>\n    @type null\n  </match>\n</label>\n",
        ["a <label @ERROR>"],
    ),
    "a match in the head": (
        lambda t: t + "<match mlobs.**>\n  @type null\n</match>\n",
        ["<match mlobs.**> in the head"],
    ),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_each_check_reports_a_broken_head(name: str) -> None:
    mutate, expected = BROKEN[name]
    report = "\n".join(head_problems(parse(mutate(_head()))))
    for sentence in expected:
        assert sentence in report, f"{name}: {sentence!r} not reported in:\n{report}"


# ---- the record's Ruby, run by Ruby ---------------------------------------------------------------------

# record_transformer (enable_ruby) evaluates a value that is one ${...} as Ruby, with `record` in
# scope (CleanroomExpander#expand: instance_eval of the text between the braces); this does the same.
RUBY_EXPANDER = """
require "json"
class Cleanroom
  def expand(__str_to_eval__, record)
    instance_eval(__str_to_eval__)
  end
end
exprs = JSON.parse(ARGV[0])
records = JSON.parse(STDIN.read)
puts JSON.generate(records.map { |r| exprs.transform_values { |e| Cleanroom.new.expand(e, r) } })
"""


def _kube(stream: str, log: str, labels: dict[str, str]) -> dict[str, object]:
    kubernetes = {"pod_name": "demo-train-ci1-x7k2p", "container_name": "step", "labels": labels}
    return {"stream": stream, "log": log, "kubernetes": kubernetes}


RUN_LABELS = {c.LABEL_RUN_ID: "demo-train-ci1", c.LABEL_PIPELINE: "demo-train", c.LABEL_STEP: "train"}


def test_the_records_ruby_makes_the_sdks_log_record() -> None:
    import json
    import shutil

    from pipeline_sdk.validation import MAX_TEXT_LENGTH, escape_text, unescape_text

    ruby = shutil.which("ruby")
    if ruby is None:
        pytest.skip("ruby is not installed (Debian: apt-get install ruby)")
    traceback = 'Traceback (most recent call last):\n  File "a\\b.py", line 1\nValueError: x\r'
    records = [
        _kube(c.LOG_SOURCE_STDOUT, "epoch 1: loss 0.5", RUN_LABELS),
        _kube(c.LOG_SOURCE_STDERR, "warning: slow", RUN_LABELS),
        _kube(c.LOG_SOURCE_STDERR, traceback, RUN_LABELS),
        _kube(c.LOG_SOURCE_STDOUT, "x" * (MAX_TEXT_LENGTH + 5), {c.LABEL_RUN_ID: "r"}),
    ]
    exprs = {k: v[2:-1] for k, v in forwarder.log_record().items()}
    run = subprocess.run(
        [ruby, "-e", RUBY_EXPANDER, json.dumps(exprs)],
        input=json.dumps(records),
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(run.stdout)
    assert [r[c.TAG_LEVEL] for r in out] == ["INFO", "WARNING", "ERROR", "INFO"]
    assert [r[c.FIELD_LOGGER] for r in out] == ["stdout", "stderr", "stderr", "stdout"]
    first = out[0]
    assert {k: first[k] for k in c.IDENTITY_TAGS} == {
        c.TAG_RUN_ID: "demo-train-ci1",
        c.TAG_PIPELINE: "demo-train",
        c.TAG_STEP: "train",
        c.TAG_ATTEMPT: "demo-train-ci1-x7k2p",
    }
    assert json.loads(first[c.FIELD_EXTRA]) == {c.EXTRA_SOURCE_KEY: "stdout", c.EXTRA_CONTAINER_KEY: "step"}
    assert out[2][c.FIELD_MESSAGE] == escape_text(traceback)  # the SDK's own escapes, as its readers expect
    assert unescape_text(out[2][c.FIELD_MESSAGE]) == traceback
    assert "\n" not in out[2][c.FIELD_MESSAGE] and "\r" not in out[2][c.FIELD_MESSAGE]
    assert out[3][c.FIELD_MESSAGE] == "x" * MAX_TEXT_LENGTH  # the SDK's bound: 32 KiB, not one more
    assert (out[3][c.TAG_PIPELINE], out[3][c.TAG_STEP]) == ("", "")  # empty tags are not written


def test_ruby_reads_the_expressions_as_the_python_port_does(tmp_path: Path) -> None:
    """The CRI parser's and concat's expressions: Ruby's Regexp (as concat compiles them) agrees with re."""
    import json
    import shutil

    ruby = shutil.which("ruby")
    if ruby is None:
        pytest.skip("ruby is not installed (Debian: apt-get install ruby)")
    lines = _stderr(tmp_path, PROGRAM.format(error="Diverged('at epoch 2')", tail="fit(2)"))
    lines += ["2026-12-01T15:15:43.123456789Z stdout F epoch 1", "2026-12-01T15:15:43.1Z other F x", ""]
    [tail] = _sources(parse(_head()), "tail")
    cri = tail.one("parse").params["expression"]  # type: ignore[union-attr]
    patterns = [*_traceback_filter(), cri]
    script = (
        'require "json"; ps, ls = JSON.parse(ARGV[0]), JSON.parse(STDIN.read); '
        "puts JSON.generate(ps.map { |p| r = Regexp.compile(p[1..-2]); ls.map { |l| r.match?(l) } })"
    )
    run = subprocess.run(
        [ruby, "-e", script, json.dumps(patterns)],
        input=json.dumps(lines),
        capture_output=True,
        text=True,
        check=True,
    )
    python = [
        [re.search(p.strip("/").replace("(?<", "(?P<"), line, re.ASCII) is not None for line in lines]
        for p in patterns
    ]
    assert json.loads(run.stdout) == python
    assert sum(python[0]) == 2 and sum(python[3]) == 1  # two tracebacks start; one CRI line
