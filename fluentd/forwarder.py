"""The generated part of ``fluentd/forwarder.conf``, the configuration of the node forwarders.

A forwarder runs on every node (the chart's DaemonSet).  It takes two kinds of events:

- the SDK's and the exporter's, on its forward input, which it acknowledges once they are in its
  file buffer on the node's disk;
- what the containers of a run's pods print, tailed from ``/var/log/containers/*.log``.

and sends both, with acknowledgement, to the aggregators (``fluentd/fluent.conf``).

Everything above ``generate.HEADER`` in forwarder.conf is written by hand (the inputs).  Below it
is this module's output, from ``pipeline_sdk/contract.py``: the pipeline of a tailed line (the
pod's labels from the Kubernetes API, only pods with ``LABEL_RUN_ID``, CRI partial lines joined,
a Python traceback kept as one record, then a record of the ``LOG`` stream with the run's
identity tags, the contract's string escapes and a length bound) and the output to the
aggregators on a file buffer whose size the chart sets.
"""

from __future__ import annotations

import json

from pipeline_sdk import contract as c
from pipeline_sdk.validation import MAX_TEXT_LENGTH

BUFFER_ROOT = "/fluentd/buffer"  # the forwarder's hostPath: its output buffer and the tail's positions
AGGREGATOR_HOST_VAR = "MLOBS_AGGREGATOR_HOST"  # the aggregators' headless Service (the chart sets it)
BUFFER_LIMIT_VAR = "MLOBS_FORWARDER_BUFFER_LIMIT"  # total_limit_size of the output buffer, e.g. 2g
TAILED_TAG = f"{c.LOG.tag}.*"  # in_tail's tag: mlobs.log.<the file's path, dots for slashes>
TAILED = f"{c.LOG.tag}.**"  # what the container labels match, and the aggregators' log route too
# What every file buffer of both tiers does when full or failing (fluentd/generate.py's routes too):
# refuse new events at once (no ack: the sender keeps them), and retry with backoff, for ever.
BUFFER_POLICY = (
    "overflow_action throw_exception",
    "retry_type exponential_backoff",
    "retry_wait 1s",
    "retry_max_interval 30s",
    "retry_forever true",
)


def buffer_policy(indent: str) -> str:
    """:data:`BUFFER_POLICY`'s lines at ``indent``, each ending its line."""
    return "".join(f"{indent}{line}\n" for line in BUFFER_POLICY)


LINE_KEY = "log"  # the CRI parser's key of a line's text
STREAM_KEY = "stream"  # the CRI parser's key of stdout / stderr
LOGTAG_KEY = "logtag"  # the CRI parser's key of F (a full line) / P (a part of a longer one)
LABELS = {  # record key of the log stream -> the pod label it is read from
    c.TAG_RUN_ID: c.LABEL_RUN_ID,
    c.TAG_PIPELINE: c.LABEL_PIPELINE,
    c.TAG_STEP: c.LABEL_STEP,
}
# A Python traceback: it starts with this line, its frames are indented, and it ends with the
# exception's line ("ValueError: ...", "KeyboardInterrupt", "pkg.mod.Error: ...").
TRACEBACK_START = r"^Traceback \(most recent call last\):$"
TRACEBACK_FRAME = r"^\s"
TRACEBACK_END = r"^[A-Za-z_][\w.]*(?::.*)?$"
LEVELS = {  # what a tailed line's level tag is, by where it was printed
    c.LOG_SOURCE_STDOUT: "INFO",
    c.LOG_SOURCE_STDERR: "WARNING",  # warnings, logging's last resort, progress bars...
    "traceback": "ERROR",  # ...and a traceback (on stderr, where Python prints it)
}


def _ruby(text: str) -> str:
    """A Ruby double-quoted string literal of ``text`` (JSON's escapes are Ruby's)."""
    return json.dumps(text)


def _label(key: str) -> str:
    return f"${{record.dig({_ruby('kubernetes')}, {_ruby('labels')}, {_ruby(LABELS[key])}).to_s}}"


def _message() -> str:
    raw = ", ".join(_ruby(raw) for raw, _ in c.STRING_FIELD_ESCAPES)
    table = ", ".join(f"{_ruby(raw)} => {_ruby(stored)}" for raw, stored in c.STRING_FIELD_ESCAPES)
    return f"${{record[{_ruby(LINE_KEY)}].to_s[0, {MAX_TEXT_LENGTH}].gsub(Regexp.union({raw}), {table})}}"


def _level() -> str:
    stdout, stderr, traceback = (
        _ruby(LEVELS[k]) for k in (c.LOG_SOURCE_STDOUT, c.LOG_SOURCE_STDERR, "traceback")
    )
    start = _ruby(TRACEBACK_START.strip("^$").replace("\\", ""))
    return (
        f"${{record[{_ruby(STREAM_KEY)}] == {_ruby(c.LOG_SOURCE_STDOUT)} ? {stdout} : "
        f"(record[{_ruby(LINE_KEY)}].to_s.start_with?({start}) ? {traceback} : {stderr})}}"
    )


def _extra() -> str:
    pairs = (
        f"{_ruby(c.EXTRA_SOURCE_KEY)} => record[{_ruby(STREAM_KEY)}], "
        f"{_ruby(c.EXTRA_CONTAINER_KEY)} => record.dig({_ruby('kubernetes')}, {_ruby('container_name')})"
    )
    return f"${{ {{{pairs}}}.to_json }}"


def log_record() -> dict[str, str]:
    """The record_transformer ``<record>`` that makes a tailed line a record of ``contract.LOG``."""
    record = {key: _label(key) for key in LABELS}
    record[c.TAG_ATTEMPT] = f"${{record.dig({_ruby('kubernetes')}, {_ruby('pod_name')}).to_s}}"
    record[c.TAG_LEVEL] = _level()
    record[c.FIELD_MESSAGE] = _message()
    record[c.FIELD_LOGGER] = f"${{record[{_ruby(STREAM_KEY)}]}}"
    record[c.FIELD_EXTRA] = _extra()
    return record


PREAMBLE = """
# The pipeline of a tailed line, in three labels, since each fluent-plugin-concat filter hands
# what it held past its flush_interval to the label named by its timeout_label:
# - @CONTAINERS: the pod's labels from the Kubernetes API (kubernetes_metadata, watching this
#   node's pods); a line of a pod without the run-id label is dropped here; a line containerd
#   split into parts (CRI logtag P, at 16 KiB) is joined again.
# - @CONTAINER_LINES: a Python traceback (start line, indented frames, the exception's line)
#   becomes one record; other lines stay one record each.  A chained exception is one record
#   per traceback.
# - @CONTAINER_RECORDS: the record of the log stream: the run's identity from the pod's labels,
#   the pod's name as the attempt (as the SDK's records in a pod), the level from where it was
#   printed, the message with the contract's escapes and length bound, the logger and extra's
#   source naming stdout or stderr.  An empty line is dropped.
"""

OUTPUT = """
# ---- to the aggregators ---------------------------------------------------------------------

# Every event of ours, the SDK's and the tailed lines alike, goes to the aggregators with the
# Forward protocol and the shared key, and waits for their ack (require_ack_response); a chunk
# without an ack in 30 s is sent again.  The aggregators are the IPs of their headless Service,
# one picked per connection (dns_round_robin, resolved afresh each time: expire_dns_cache 0), so
# a restarted or added aggregator is found at once.  Fluentd's SRV discovery is not used: it
# refuses to start when the Service has no ready aggregator, and this tier must start then.
# The buffer is a file buffer on the node's disk (the chart's hostPath), so what it holds
# outlives this pod; its size is the chart's forwarder.bufferSize (total_limit_size); when it is
# full, new events are refused and not acknowledged, so the SDK keeps them in its spool.
# flush_at_shutdown is off: a stopping forwarder leaves its chunks on disk for the next one.
<label @AGGREGATORS>
  <match {tags}>
    @type forward
    @id forward_to_aggregators
    require_ack_response true
    ack_response_timeout 30s
    heartbeat_type none
    dns_round_robin true
    expire_dns_cache 0
    ignore_network_errors_at_startup true
    <security>
      self_hostname "#{{Socket.gethostname}}"
      shared_key "#{{ENV.fetch('{shared_key}')}}"
    </security>
    <server>
      host "#{{ENV.fetch('{host}')}}"
      port {port}
    </server>
    <buffer tag>
      @type file
      path {root}/forward
      flush_mode interval
      flush_interval 1s
      flush_at_shutdown false
      chunk_limit_size 8m
      total_limit_size "#{{ENV.fetch('{limit}')}}"
{policy}    </buffer>
  </match>
  # A tag that is not ours (a client that sends without the prefix): printed, not forwarded.
  <match **>
    @type stdout
    @id unknown_tag_stdout
  </match>
</label>
"""


def _record_block(record: dict[str, str]) -> str:
    return "".join(f"      {key} {value}\n" for key, value in record.items())


def generated() -> str:
    """The generated part of forwarder.conf, after its header line."""
    run_id = "".join(f"['{part}']" for part in ("kubernetes", "labels", c.LABEL_RUN_ID))
    containers = f"""
<label @CONTAINERS>
  <filter {TAILED}>
    @type kubernetes_metadata
    @id containers_metadata
    skip_master_url true
    skip_namespace_metadata true
    skip_container_metadata true
  </filter>
  <filter {TAILED}>
    @type grep
    @id containers_of_runs
    <regexp>
      key ${run_id}
      pattern /./
    </regexp>
  </filter>
  <filter {TAILED}>
    @type concat
    @id containers_partial_lines
    key {LINE_KEY}
    use_partial_cri_logtag true
    partial_cri_logtag_key {LOGTAG_KEY}
    partial_cri_stream_key {LOGTAG_KEY}
    stream_identity_key {STREAM_KEY}
    separator ""
    flush_interval 5s
    timeout_label @CONTAINER_LINES
  </filter>
  <match {TAILED}>
    @type relabel
    @id containers_to_lines
    @label @CONTAINER_LINES
  </match>
</label>

<label @CONTAINER_LINES>
  <filter {TAILED}>
    @type concat
    @id containers_tracebacks
    key {LINE_KEY}
    stream_identity_key {STREAM_KEY}
    multiline_start_regexp /{TRACEBACK_START}/
    continuous_line_regexp /{TRACEBACK_FRAME}/
    multiline_end_regexp /{TRACEBACK_END}/
    flush_interval 2s
    timeout_label @CONTAINER_RECORDS
  </filter>
  <match {TAILED}>
    @type relabel
    @id containers_to_records
    @label @CONTAINER_RECORDS
  </match>
</label>

<label @CONTAINER_RECORDS>
  <filter {TAILED}>
    @type record_transformer
    @id containers_log_records
    enable_ruby true
    renew_record true
    <record>
{_record_block(log_record())}    </record>
  </filter>
  <filter {TAILED}>
    @type grep
    @id containers_empty_lines
    <exclude>
      key {c.FIELD_MESSAGE}
      pattern /\\A\\z/
    </exclude>
  </filter>
  <match {TAILED}>
    @type relabel
    @id containers_to_aggregators
    @label @AGGREGATORS
  </match>
</label>
"""
    output = OUTPUT.format(
        tags=f"{c.TAG_PREFIX}**",
        shared_key=c.ENV_FLUENTD_SHARED_KEY,
        host=AGGREGATOR_HOST_VAR,
        port=c.DEFAULT_FLUENTD_PORT,
        root=BUFFER_ROOT,
        limit=BUFFER_LIMIT_VAR,
        policy=buffer_policy("      "),
    )
    return PREAMBLE + containers + output
