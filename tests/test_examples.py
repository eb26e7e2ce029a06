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


def test_pose_pipeline_example_short_run(capsys, tmp_path):
    """Train briefly, export image + boxes -> frame keypoints in both emit modes, check parity and learning on ORT."""
    pytest.importorskip("onnxruntime")
    import re

    import onnx
    import torch

    module = runpy.run_path(str(ROOT / "examples" / "pose_pipeline.py"), run_name="kpx_example")
    threads = torch.get_num_threads()
    try:
        assert module["main"](["--quick", "--emit", "both", "--out", str(tmp_path / "pose.onnx")]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "kpx nodes: ['DecodeHeatmaps', 'HeatmapToImage']" in out
    assert "kpx nodes: none (inlined)" in out
    worst = float(re.search(r"keypoints max \|diff\| (\S+) px \(tolerance", out).group(1))
    assert worst <= module["TOLERANCE"]
    dark, baseline = (float(x) for x in re.search(r"ORT dark (\S+);.*baseline (\S+)$", out, re.M).groups())
    assert dark < module["MAX_ERROR_RATIO"] * baseline
    function, inline = onnx.load(tmp_path / "pose.onnx"), onnx.load(tmp_path / "pose_inline.onnx")
    for proto in (function, inline):
        assert [i.name for i in proto.graph.input] == ["images", "boxes"]
        assert [o.name for o in proto.graph.output] == ["keypoints", "scores"]
        assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert {n.op_type for n in function.graph.node if n.domain == "kpx"} == {"DecodeHeatmaps", "HeatmapToImage"}
    assert not [n for n in inline.graph.node if n.domain == "kpx"]


def test_vit_pose_example_survives_the_onnx_runtime_crash(capsys):
    pytest.importorskip("onnxruntime")
    module = runpy.run_path(str(ROOT / "examples" / "vit_pose.py"), run_name="kpx_example")
    assert module["main"]([]) == 0
    out = capsys.readouterr().out
    assert "verdict:" in out and "ort-cpu" in out


def test_rtmpose_example_short_run(capsys, tmp_path):
    """Train briefly, export frames + boxes -> frame keypoints with `kpx export --decode simcc --crop`, run on ORT
    (and OpenVINO: inline), check parity, learning, and the one file's interface."""
    pytest.importorskip("onnxruntime")
    import re

    import onnx
    import torch

    module = runpy.run_path(str(ROOT / "examples" / "rtmpose.py"), run_name="kpx_example")
    threads = torch.get_num_threads()
    try:
        assert module["main"](["--quick", "--emit", "inline", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "--decode simcc:dark" in out and "--crop 48x64 --boxes xyxy" in out
    diffs = [float(d) for d in re.findall(r"PyTorch vs runtime max \|diff\| (\S+) px", out)]
    assert len(diffs) >= 2 and max(diffs) <= module["TOLERANCE"]
    none, dark = (float(x) for x in re.search(r"error / baseline: none (\S+), dark (\S+) ", out).groups())
    assert min(none, dark) < module["MAX_ERROR_RATIO"]
    proto = onnx.load(tmp_path / "rtmpose-simcc-dark-inline.onnx")
    assert [i.name for i in proto.graph.input] == ["frames", "boxes"]
    assert [o.name for o in proto.graph.output] == ["keypoints", "scores"]
    assert proto.graph.input[1].type.tensor_type.shape.dim[0].dim_param == "N"  # any number of boxes
    assert not [n for n in proto.graph.node if n.domain == "kpx"]
