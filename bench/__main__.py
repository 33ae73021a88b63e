"""`make bench`: every benchmark in turn, each printing its table."""

from __future__ import annotations

import sys

from bench import exporter_bench, read_bench, sdk_bench, system_bench


def main() -> int:
    failed = sdk_bench.main([])
    failed |= exporter_bench.main([])
    failed |= read_bench.main([])
    failed |= system_bench.main([])
    return failed


if __name__ == "__main__":
    sys.exit(main())
