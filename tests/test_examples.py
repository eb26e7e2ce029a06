"""Every script under examples/ runs and reports success."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_dsnt_head_example_passes_parity(capsys, tmp_path):
    pytest.importorskip("onnxruntime")
    module = runpy.run_path(str(ROOT / "examples" / "dsnt_head.py"), run_name="kpx_example")
    assert module["main"](["--out", str(tmp_path / "head.onnx"), "--keypoints", "5"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out
    assert "SpatialSoftArgmax2d" in out
    assert (tmp_path / "head.onnx").stat().st_size > 0


def test_dsnt_head_example_runs_as_a_script(tmp_path):
    pytest.importorskip("onnxruntime")
    script = ROOT / "examples" / "dsnt_head.py"
    result = subprocess.run(
        [sys.executable, str(script), "--emit", "inline", "--out", str(tmp_path / "x.onnx")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "none (inlined)" in result.stdout


def test_heatmap_training_example_short_run(capsys):
    module = runpy.run_path(str(ROOT / "examples" / "heatmap_training.py"), run_name="kpx_example")
    assert module["main"](["--samples", "48", "--workers", "2", "--batch", "16", "--steps", "8"]) == 0
    out = capsys.readouterr().out
    assert "max |diff| vs worker targets 0.0e+00" in out
    assert "2 DataLoader workers" in out
