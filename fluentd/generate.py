"""Write the generated parts of ``fluentd/fluent.conf`` and ``fluentd/forwarder.conf``.

    python -m fluentd.generate          # rewrite the generated parts (make generate)
    python -m fluentd.generate --check  # fail if one differs from what the contract gives

``fluent.conf`` has two parts.  Everything above the line ``HEADER`` is written by hand: the
system settings, the inputs, Fluentd's own metrics and the time filter.  From that line to the
end the file is this module's output: one ``<match>`` per stream of ``contract.STREAMS``, in the
contract's order, each writing the stream's measurement with its tag keys and field keys
through the influxdb2 output on a file buffer of its own, then the catch-all for unknown tags.
A new stream in the contract is a new route after ``make generate``, and nothing else.
The log stream's route also takes ``mlobs.log.**``: the lines the node forwarders tail.

``forwarder.conf`` (the node forwarders) has the same two parts; ``fluentd/forwarder.py`` writes
its generated part.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fluentd import forwarder
from pipeline_sdk import contract as c

HERE = Path(__file__).resolve().parent
CONF = HERE / "fluent.conf"
FORWARDER_CONF = HERE / "forwarder.conf"
HEADER = "# ---- generated from pipeline_sdk/contract.py by `make generate`; do not edit below this line ----"

TIME_KEY = "_mlobs_time_ns"  # the record key the head's time filter sets and every route reads
BUFFER_ROOT = "/fluentd/buffer"  # the chart's buffer volume: every route's file buffer is under it
OUTPUT_LIMIT_MIB = 170  # total_limit_size of one route's buffer: 12 routes fit the 2 GiB volume
INFLUXDB_VARIABLES = {  # influxdb2 parameter -> the environment variable the chart sets for it
    "url": "INFLUXDB_URL",
    "token": "INFLUXDB_TOKEN",
    "org": "INFLUXDB_ORG",
    "bucket": "INFLUXDB_BUCKET",
}


def _preamble(count: int) -> str:
    total = count * OUTPUT_LIMIT_MIB
    return f"""{HEADER}
# fluentd/generate.py writes one route per stream of contract.STREAMS (tag -> InfluxDB
# measurement, with the stream's tag keys and field keys), then the catch-all.
#
# Every output has its own file buffer (Fluentd refuses two outputs on one buffer path):
# - @type file, so events survive an InfluxDB restart and a Fluentd restart; flush_at_shutdown
#   also writes what it can on a graceful stop, for the chart's default emptyDir buffer volume.
# - flush every second: dashboards show a run's events within a couple of seconds.
# - retry_forever with exponential backoff (1 s doubling, capped at 30 s): an InfluxDB outage
#   of any length loses nothing, and writes resume within 30 s of InfluxDB coming back.  The
#   price: a chunk InfluxDB keeps rejecting (HTTP 4xx) is retried forever and holds its
#   stream back; fluentd_output_status_retry_count shows it and the telemetry alerts fire.
#   The SDK validates and types every value against the contract, so such chunks should not
#   arise (fluentd/README.md says how to move one aside).
# - total_limit_size {OUTPUT_LIMIT_MIB}m per output: {count} outputs hold at most {total} MiB, which must fit
#   the chart's buffer volume (fluentd.persistence.size; tests/test_fluentd.py checks it).
# - overflow_action throw_exception: a full buffer refuses new events at once.  in_forward then
#   sends no ack and the sender keeps them in its spool (512 MiB by default) and sends them
#   again; `block` would stall in_forward's event loop for every stream, the SDK's ack wait
#   would time out, and it would resend anyway.
"""


def _env(variable: str) -> str:
    return f"\"#{{ENV.fetch('{variable}')}}\""


def route(stream: c.Stream) -> str:
    """The ``<match>`` block of one stream."""
    env = {key: _env(variable) for key, variable in INFLUXDB_VARIABLES.items()}
    https = f"\"#{{ENV.fetch('{INFLUXDB_VARIABLES['url']}').start_with?('https://')}}\""
    pattern = f"{stream.tag} {forwarder.TAILED}" if stream is c.LOG else stream.tag
    return f"""<match {pattern}>
  @type influxdb2
  @id influxdb_{stream.measurement}
  url {env["url"]}
  use_ssl {https}
  token {env["token"]}
  org {env["org"]}
  bucket {env["bucket"]}
  measurement {stream.measurement}
  tag_keys {json.dumps(list(stream.tags))}
  field_keys {json.dumps(list(stream.fields))}
  time_key {TIME_KEY}
  time_precision ns
  <buffer>
    @type file
    path {BUFFER_ROOT}/{stream.measurement}
    flush_mode interval
    flush_interval 1s
    flush_at_shutdown true
    chunk_limit_size 8m
    total_limit_size {OUTPUT_LIMIT_MIB}m
{forwarder.buffer_policy("    ")}  </buffer>
</match>
"""


CATCH_ALL = """
# ---- anything else --------------------------------------------------------------------------

# A tag no route above knows (a typo, a newer SDK): printed to Fluentd's log, where it can be
# seen, rather than dropped without a word.  Last, so that it never shadows a route of ours.
<match **>
  @type stdout
  @id unknown_tag_stdout
</match>
"""


def generated(streams: Sequence[c.Stream] = c.STREAMS) -> str:
    """The generated part of fluent.conf: the header line, the routes and the catch-all."""
    tags = [s.tag for s in streams]
    if len(set(tags)) != len(tags):
        raise ValueError(f"streams: a Fluentd tag is routed twice: {tags}")
    if TIME_KEY in {k for s in streams for k in s.keys}:
        raise ValueError(f"streams: {TIME_KEY} is the time filter's key, not a record key of a stream")
    return _preamble(len(streams)) + "\n" + "".join(route(s) for s in streams) + CATCH_ALL


def split(text: str) -> tuple[str, str]:
    """``(head, generated part)`` of a fluent.conf; the generated part starts at ``HEADER``."""
    lines = text.splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if line.rstrip("\n") == HEADER]
    if len(at) != 1:
        raise ValueError(f"fluent.conf: the line {HEADER!r} must be there once, found {len(at)} times")
    return "".join(lines[: at[0]]), "".join(lines[at[0] :])


def render(text: str, part: Callable[[], str] | None = None) -> str:
    """``text`` with its generated part (``part()``, by default the routes) written afresh."""
    head, _ = split(text)
    return head + (part or generated)()


def forwarder_generated() -> str:
    """The generated part of forwarder.conf: the header line and fluentd/forwarder.py's output."""
    return HEADER + "\n" + forwarder.generated()


CONFIGS: dict[Path, Callable[[], str]] = {CONF: generated, FORWARDER_CONF: forwarder_generated}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if a file differs instead")
    args = parser.parse_args(argv)
    failed = 0
    for path, part in CONFIGS.items():
        text = path.read_text()
        try:
            expected = render(text, part)
        except ValueError as exc:
            sys.stderr.write(f"{path}: {exc}\n")
            failed = 1
            continue
        if args.check:
            if text != expected:
                what = "its generated part differs from pipeline_sdk/contract.py"
                sys.stderr.write(f"{path.name}: {what}; run `make generate`\n")
                failed = 1
            continue
        if text != expected:
            path.write_text(expected)
    if not args.check and not failed:
        sys.stdout.write(
            f"fluentd: {len(c.STREAMS)} routes in {CONF.relative_to(HERE.parent)}, "
            f"the forwarder's pipeline in {FORWARDER_CONF.relative_to(HERE.parent)}\n"
        )
    return failed


if __name__ == "__main__":
    sys.exit(main())
