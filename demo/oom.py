"""``python -m demo.oom``: a pipeline step that runs out of memory.

It allocates memory in chunks, touching every page, until the kernel's OOM killer
stops it with SIGKILL at the container's memory limit.  A killed process cannot
report its own end: the run stays ``started`` in its events, and the pipeline
exporter sees the container terminate with reason ``OOMKilled`` and reports the
run as failed, which alerts.  That is what this step demonstrates.

Before each chunk it flushes its events (bounded by ``--flush-timeout``), so the
last progress it recorded reaches Fluentd before the kill.

``--max-mb`` bounds it, for a run outside a container: it stops at that many MiB,
releases them and exits 0 (the run succeeds).  Without ``--max-mb`` it needs a
memory limit to be killed by: with no cgroup memory limit in sight it refuses to
start (exit 2) rather than eat the machine's memory.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pipeline_sdk

from ._cli import identity, positive_float, positive_int, setup_logging

log = logging.getLogger("demo.oom")

MIB = 1024 * 1024
CGROUP = Path("/sys/fs/cgroup")
_UNLIMITED = 1 << 60  # cgroup v1 says "no limit" with a number near 2**63


def memory_limit(root: Path = CGROUP) -> int | None:
    """This process's cgroup memory limit in bytes (v2 ``memory.max``, else v1), None if none is set."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit() or int(text) >= _UNLIMITED:
            return None
        return int(text)
    return None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.oom", description=__doc__.splitlines()[0])
    p.add_argument("--chunk-mb", type=positive_int, default=8, help="MiB allocated per step (default 8)")
    p.add_argument(
        "--max-mb",
        type=positive_int,
        default=None,
        help="stop at this many MiB and exit 0 (default: no bound; the container's memory limit kills it)",
    )
    p.add_argument(
        "--flush-timeout",
        type=positive_float,
        default=2.0,
        help="seconds to wait for delivery per step (default 2)",
    )
    return p


def allocate(args: argparse.Namespace) -> int:
    """Allocate until killed, or up to ``--max-mb``; the MiB held at the end."""
    pipeline, step = identity("demo-oom", "embed")
    params = {"chunk_mb": args.chunk_mb, "max_mb": args.max_mb}
    with pipeline_sdk.run(pipeline=pipeline, step=step, params=params) as run:
        log.info("run %s of %s/%s: %s", run.run_id, pipeline, step, run.client.describe())
        held: list[bytearray] = []
        allocated = 0
        while args.max_mb is None or allocated + args.chunk_mb <= args.max_mb:
            run.log_metric("allocated_mb", allocated, step=len(held))
            log.info("holding %d MiB, allocating %d more", allocated, args.chunk_mb)
            run.client.flush(args.flush_timeout)
            held.append(bytearray(b"\xa5") * (args.chunk_mb * MIB))  # written, so every page is resident
            allocated += args.chunk_mb
        run.log_metric("allocated_mb", allocated, step=len(held))
        log.info(
            "reached --max-mb=%d with %d MiB held and was not killed; releasing them", args.max_mb, allocated
        )
        held.clear()
        return allocated


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    setup_logging()
    if args.max_mb is None:
        limit = memory_limit()
        if limit is None:
            cli.error(
                "no cgroup memory limit is set for this process, so nothing would stop it before the"
                " machine runs out of memory: pass --max-mb N to stop at N MiB (the chart's pod has a limit)"
            )
        log.info("memory limit %d MiB: allocating until the kernel kills this process", limit // MIB)
    allocate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
