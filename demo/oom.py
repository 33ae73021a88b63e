"""``python -m demo.oom``: a pipeline step that runs out of memory.

It allocates memory in chunks, touching every page, until the kernel's OOM killer
stops it with SIGKILL at the container's memory limit.  A killed process cannot
report its own end: the run stays ``started`` in its events, and the pipeline
exporter sees the container terminate with reason ``OOMKilled`` and reports the
run as failed, which alerts.  That is what this step demonstrates.

Before each chunk it flushes its events (bounded by ``--flush-timeout``), so the
last progress it recorded reaches Fluentd before the kill.  If ``--max-mb`` is
reached without a kill (no memory limit), it raises ``MemoryError`` itself, so the
run still ends as a failure rather than eating the node.
"""

from __future__ import annotations

import argparse
import logging
import sys

import pipeline_sdk

from ._cli import identity, positive_float, positive_int, setup_logging

log = logging.getLogger("demo.oom")

MIB = 1024 * 1024


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.oom", description=__doc__.splitlines()[0])
    p.add_argument("--chunk-mb", type=positive_int, default=8, help="MiB allocated per step (default 8)")
    p.add_argument(
        "--max-mb",
        type=positive_int,
        default=2048,
        help="give up with MemoryError at this many MiB (default 2048)",
    )
    p.add_argument(
        "--flush-timeout",
        type=positive_float,
        default=2.0,
        help="seconds to wait for delivery per step (default 2)",
    )
    return p


def allocate(args: argparse.Namespace) -> None:
    pipeline, step = identity("demo-oom", "embed")
    params = {"chunk_mb": args.chunk_mb, "max_mb": args.max_mb}
    with pipeline_sdk.run(pipeline=pipeline, step=step, params=params) as run:
        log.info("run %s of %s/%s: %s", run.run_id, pipeline, step, run.client.describe())
        held: list[bytearray] = []
        allocated = 0
        while allocated + args.chunk_mb <= args.max_mb:
            run.log_metric("allocated_mb", allocated, step=len(held))
            log.info("holding %d MiB, allocating %d more", allocated, args.chunk_mb)
            run.client.flush(args.flush_timeout)
            held.append(bytearray(b"\xa5") * (args.chunk_mb * MIB))  # written, so every page is resident
            allocated += args.chunk_mb
        raise MemoryError(
            f"allocated {allocated} MiB without being OOM-killed: the step's memory limit is above"
            f" --max-mb={args.max_mb}, or there is none"
        )


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    allocate(parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
