"""benchmarks/bench_topdown.py runs in both of its modes and its pipelines agree (no timing is asserted: speed is
measured by running the script, docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mode", [[], ["--spinning"]], ids=["interleaved", "spinning"])
def test_bench_topdown_runs_and_its_pipelines_agree(mode):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_topdown.py"), "--repeats", "2",
                           "--boxes", "1", "3", *mode], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.split()[:1] in (["1"], ["3"])]
    assert [row[0] for row in rows] == ["1", "3"], done.stdout
    for row in rows:
        file_ms, batched_ms, diff_batched = float(row[1]), float(row[2]), float(row[6])
        assert file_ms > 0 and batched_ms > 0
        # the one file and the OpenCV pipeline give the same frame keypoints (OpenCV's uint8 warp rounds crop
        # values, which could move a SimCC argmax by a bin; with these untrained weights none moves)
        assert diff_batched < 1e-3, done.stdout
