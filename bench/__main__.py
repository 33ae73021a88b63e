"""`make bench`: every benchmark in turn, each printing its table."""

from __future__ import annotations

import sys

from bench import capacity, drift_bench, exporter_bench, read_bench, sdk_bench, system_bench


def main() -> int:
    failed = sdk_bench.main([])
    failed |= exporter_bench.main([])
    failed |= read_bench.main([])
    failed |= system_bench.main([])
    failed |= drift_bench.main([])
    failed |= capacity.main([])  # the capacity model of the three profiles, from figures measured here
    return failed


if __name__ == "__main__":
    sys.exit(main())
