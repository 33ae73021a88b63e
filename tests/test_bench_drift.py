"""bench/drift_bench.py runs at tiny sizes and prints its tables (the figures are for make bench)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bench import drift_bench

TINY = ["--rows", "2500", "--chunks", "1000,2500", "--compare-rows", "5000", "--calls", "1050"]


def cells(out: str, first: str) -> list[str]:
    [line] = [ln for ln in out.splitlines() if ln.startswith(f"| {first} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_benchmark_prints_its_three_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert drift_bench.main(TINY) == 0
    out = capsys.readouterr().out
    for chunk in ("1,000", "2,500"):  # one row per chunk size, every row counted
        row = cells(out, chunk)
        assert row[1] == "2,500"
        seconds, rate = float(row[2]), float(row[3].replace(",", ""))  # seconds printed to 1 ms
        assert 2500 / (seconds + 0.0005) <= rate <= 2500 / (seconds - 0.0005)
        assert re.fullmatch(r"\d[\d,]* B", row[6])
    # the side by side: Evidently chose the same tests and found the same columns drifted
    assert "verdicts equal on 25 of 25 columns, the same test on 25; drifted (7): " in out
    assert out.count("drifted (7): cat0, cat1, num0, num1, num2, num3, num4\n") == 1
    [ratio] = re.findall(
        r"^\| Evidently 0\.7\.23 DataDriftPreset \| [0-9.]+ \| [0-9.,]+ MiB \| ([0-9.]+) \|$", out, re.M
    )
    assert re.search(rf"^mlobs is {ratio}x faster than Evidently, (within|short of) the 50x goal$", out, re.M)
    # log_features: 1,000 calls timed (whole blocks of 100) plus the one that starts the thread
    tight = cells(out, "tight loop")
    assert tight[1] == "1,000"
    assert int(tight[5].replace(",", "")) + int(tight[6].replace(",", "")) == 1001
    paced = cells(out, "paced (each 1024-row batch profiled before the next)")
    assert (paced[1], paced[5], paced[6]) == ("1,000", "1,001", "0")
    assert re.search(r"^log_features: [\d,]+ ns a call, (within|over) the 2,000 ns goal$", out, re.M)


def test_without_evidently_only_ours_is_timed(capsys: pytest.CaptureFixture[str]) -> None:
    assert drift_bench.main([*TINY, "--no-evidently", "--chunks", "500"]) == 0
    out = capsys.readouterr().out
    assert cells(out, "500")[1] == "2,500"
    assert "| mlobs: profile both + compare |" in out
    assert "Evidently" not in out and "verdicts" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--calls", "99"], "argument --calls: must be at least 100, got 99"),
        (["--rows", "0"], "argument --rows: must be at least 1, got 0"),
        (["--chunks", "100,0"], "argument --chunks: expected numbers of at least 1, got '100,0'"),
        (["--chunks", "1e6"], "argument --chunks: expected whole numbers separated by commas, got '1e6'"),
    ],
)
def test_bad_sizes_are_named(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        drift_bench.main(argv)
    assert message in capsys.readouterr().err


def test_peak_growth_sees_an_allocation_and_not_what_came_before() -> None:
    before = np.ones(40 * 2**20 // 8)  # 40 MiB resident before the measurement starts
    quiet = drift_bench.PeakGrowth()
    assert quiet.reset, "this Linux resets the peak through /proc/self/clear_refs"
    assert quiet.bytes() < 4 * 2**20
    held = np.ones(32 * 2**20 // 8)  # 32 MiB, touched
    assert 32 * 2**20 <= quiet.bytes() < 40 * 2**20
    del held, before


def test_the_profile_worker_counts_a_last_partial_chunk() -> None:
    result = drift_bench.profile_worker(rows=2500, chunk=1000)
    assert (result["rows"], result["chunk"]) == (2500, 1000)
    assert 0 <= result["first_chunk_growth"] <= result["growth"]
    assert result["profile_bytes"] > 0


def test_agreement_names_each_column_where_the_verdicts_differ() -> None:
    ours = {
        "a": ["wasserstein", 0.4, True],
        "b": ["wasserstein", 0.02, False],
        "c": ["jensenshannon", 0.2, True],
    }
    same = {name: list(v) for name, v in ours.items()}
    assert drift_bench.agreement(ours, same) == (
        ["verdicts equal on 3 of 3 columns, the same test on 3; drifted (2): a, c"],
        True,
    )
    theirs = {**same, "b": ["ks", 0.01, True]}
    lines, agreed = drift_bench.agreement(ours, theirs)
    assert not agreed
    assert lines == [
        "verdicts equal on 2 of 3 columns, the same test on 2; drifted (2): a, c",
        "  b: mlobs ['wasserstein', 0.02, False], Evidently ['ks', 0.01, True]",
    ]
    assert drift_bench.agreement(ours, {"a": same["a"], "c": same["c"]})[1] is False  # a column missing
