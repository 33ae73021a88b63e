"""``make mutation``: do the tests pin values, or only survive?  Mutation testing with cosmic-ray.

For each target module, cosmic-ray changes one thing at a time (``<`` to ``<=``, a
constant, a boolean, a removed ``break``...) and runs the module's tests against each
mutant; a mutant the tests do not notice *survives*.  The score is the share of
mutants killed.  Work happens in a scratch copy of the working tree, so the checkout
is never touched, and no ``.pyc`` is written (a mutant must never run stale bytecode).
The tests' own child processes import the scratch copy too (``PYTHONPATH``), the tests
must pass on the unmutated copy first (or nothing is scored), and a seed picks the same
mutants on every run.

    python scripts/mutation.py                  # 60 sampled mutants per module, seed 1
    python scripts/mutation.py --sample 0       # every mutant (slow: about an hour)
    python scripts/mutation.py --only spool     # targets whose path contains "spool"

It prints each survivor's diff and exits 1 when a module scores under ``--goal``
(default 90%).  Survivors that cannot be killed because they change nothing a caller
can observe (equivalent mutants) are listed, with why, in docs/faults.md.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

ROOT = Path(__file__).resolve().parents[1]
COSMIC_RAY = str(Path(sys.executable).with_name("cosmic-ray"))  # installed beside this interpreter

_SPOOL_TESTS = ("tests/test_spool.py", "tests/test_spool_faults.py")
_SHIPPER_TESTS = ("tests/test_spool_faults.py", "tests/test_spool.py", "tests/test_shipper.py")
# module -> pytest arguments: the tests that pin its values (kept fast: each mutant runs them)
TARGETS: dict[str, tuple[str, ...]] = {
    "pipeline_sdk/validation.py": ("tests/test_validation.py",),
    # the spool, its frame format and its files
    **dict.fromkeys(
        ("pipeline_sdk/spool.py", "pipeline_sdk/frames.py", "pipeline_sdk/segments.py"), _SPOOL_TESTS
    ),
    # the shipper and its two threads
    **dict.fromkeys(
        ("pipeline_sdk/shipper.py", "pipeline_sdk/spooler.py", "pipeline_sdk/delivery.py"), _SHIPPER_TESTS
    ),
    "pipeline_sdk/backoff.py": ("tests/test_shipper.py",),  # the shipper's and the exporter's retries
    "exporters/pipeline_exporter/tracker.py": (
        "tests/test_exporter.py",
        "tests/test_exporter_faults.py",
        "-k",
        "not test_exporter_faults or flood or cap or idle or allow or expire",
    ),
    "pipeline_sdk/read/query.py": ("tests/test_query.py", "tests/test_read.py", "tests/test_read_influx.py"),
}
_IGNORED = shutil.ignore_patterns(
    ".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "__pycache__", ".bench"
)


@dataclass
class Score:
    module: str
    killed: int
    survived: list[str]  # diffs
    seconds: float

    @property
    def tested(self) -> int:
        return self.killed + len(self.survived)

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.tested if self.tested else 100.0


def _command(tests: tuple[str, ...]) -> str:
    existing = " ".join(
        f"'{t}'" if " " in t else t for t in tests if not t.startswith("tests/") or (ROOT / t).exists()
    )
    return f"{sys.executable} -m pytest -x -q -p no:cacheprovider -p no:randomly {existing}"


def _config(module: str, tests: tuple[str, ...], timeout: float) -> str:
    command = _command(tests)
    return (
        "[cosmic-ray]\n"
        f'module-path = "{module}"\n'
        f"timeout = {timeout}\n"
        "excluded-modules = []\n"
        f'test-command = "{command}"\n'
        "\n[cosmic-ray.distributor]\n"
        'name = "local"\n'
    )


def _sample(session: Path, size: int, seed: int) -> int:
    """Mark all but ``size`` randomly chosen mutants as skipped; the number left to run."""
    with use_db(str(session), WorkDB.Mode.open) as db:
        # cosmic-ray's job ids are random: order by what each mutant is, so a seed picks the same ones
        by_mutation = sorted(
            (tuple((str(m.module_path), m.operator_name, m.occurrence) for m in item.mutations), item.job_id)
            for item in db.work_items
        )
        ids = [job_id for _, job_id in by_mutation]
        if size <= 0 or size >= len(ids):
            return len(ids)
        keep = set(random.Random(seed).sample(ids, size))  # noqa: S311 - a reproducible sample, no secret
        skipped = WorkResult(worker_outcome=WorkerOutcome.SKIPPED)
        db.set_multiple_results([i for i in ids if i not in keep], skipped)
        return size


def _score(module: str, session: Path, seconds: float) -> Score:
    killed, survived = 0, []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for _, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            if result.test_outcome == TestOutcome.SURVIVED:
                survived.append(result.diff or "(no diff)")
            else:  # killed, incompetent (the mutant cannot even run) or timed out
                killed += 1
    return Score(module, killed, survived, seconds)


def run_target(module: str, tests: tuple[str, ...], scratch: Path, args: argparse.Namespace) -> Score:
    name = module.replace("/", "_").removesuffix(".py")
    cfg, session = scratch / f"{name}.toml", scratch / f"{name}.sqlite"
    cfg.write_text(_config(module, tests, args.timeout))
    # Child processes of the tests (the mlobs CLI, test servers) import the scratch copy too.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(scratch)}
    baseline = subprocess.run(  # noqa: S603 - our own test command
        shlex.split(_command(tests)), cwd=scratch, env=env, capture_output=True, text=True, check=False
    )
    if baseline.returncode != 0:  # every mutant would count as killed
        raise SystemExit(
            f"{module}: its tests fail before any mutation, so no score would mean anything:\n"
            f"{baseline.stdout[-3000:]}{baseline.stderr[-2000:]}"
        )
    subprocess.run([COSMIC_RAY, "init", str(cfg), str(session)], cwd=scratch, env=env, check=True)  # noqa: S603
    count = _sample(session, args.sample, args.seed)
    print(f"==> {module}: {count} mutants against {' '.join(tests)}", flush=True)
    started = time.monotonic()
    subprocess.run([COSMIC_RAY, "exec", str(cfg), str(session)], cwd=scratch, env=env, check=True)  # noqa: S603
    return _score(module, session, time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sample", type=int, default=60, help="mutants per module (0: all)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the sample")
    parser.add_argument("--only", default="", help="run only the targets whose path contains this")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant's test run")
    parser.add_argument("--goal", type=float, default=90.0, help="lowest acceptable score, in percent")
    args = parser.parse_args(argv)
    targets = {m: t for m, t in TARGETS.items() if args.only in m}
    if not targets:
        parser.error(f"--only {args.only!r} matches none of {sorted(TARGETS)}")
    scores = []
    with tempfile.TemporaryDirectory(prefix="mlobs-mutation-") as tmp:
        scratch = Path(tmp) / "tree"
        shutil.copytree(ROOT, scratch, ignore=_IGNORED, symlinks=True)
        for module, tests in targets.items():
            scores.append(run_target(module, tests, scratch, args))
    failed = False
    for score in scores:
        for diff in score.survived:
            print(f"\n--- survived in {score.module}:\n{diff}")
    print("\nmodule                                    killed  tested  score   time")
    for score in scores:
        mark = "" if score.percent >= args.goal else f"   below {args.goal:.0f}%"
        failed |= score.percent < args.goal
        print(
            f"{score.module:40}  {score.killed:6}  {score.tested:6}  {score.percent:5.1f}%"
            f"  {score.seconds:5.0f} s{mark}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
