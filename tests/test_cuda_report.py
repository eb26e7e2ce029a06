"""benchmarks/cuda_report.py: the one prepared command for a lent GPU, proven here without one.

- Default mode on a machine without CUDA: exit 0, both files, every CUDA check listed as skipped with its
  reason, the JSON schema, and the CPU sanity check of the comparison code (which ran and passed).
- ``--device cpu --quick``: the whole flow as a dry run (PyTorch, fp16, the ORT matrix on the CPU execution
  provider with node placement from ORT's profiler, the render check, timings), labelled as a dry run;
  every registered op is checked in PyTorch and on ORT, and everything passes.
- The checker can fail: wrong numbers, NaN at other places, a wrong dtype or device and a wrong shape are
  failures, and ``--self-test-fail`` (corrupted results) makes the script report failures and exit 1.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from custom_ops import list_ops

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "cuda_report.py"
KEYS = {"schema", "date", "hostname", "mode", "device", "quick", "dry_run", "complete", "environment", "summary",
        "checks", "skipped", "timings", "notes", "seconds", "exit_code"}  # fmt: skip
CHECK_KEYS = {"group", "name", "passed", "max_abs", "max_rel", "detail", "extra"}
ENV_KEYS = {"date", "hostname", "torch", "torch_cuda", "onnx", "onnxruntime", "kpx", "nvidia_smi", "cuda_available"}
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA mode needs a machine without CUDA")


def _load_script():
    spec = importlib.util.spec_from_file_location("cuda_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cuda_report"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


cuda_report = _load_script()


def _run(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict, str]:
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)  # fmt: skip
    assert (out / "cuda_report.json").is_file(), done.stdout + done.stderr
    assert (out / "cuda_report.md").is_file(), done.stdout + done.stderr
    return done, json.loads((out / "cuda_report.json").read_text()), (out / "cuda_report.md").read_text()


@pytest.fixture(scope="module")
def no_cuda(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("no_cuda"))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("dry_run"), "--device", "cpu", "--quick")


@NO_CUDA
def test_no_cuda_mode_skips_every_cuda_check_with_its_reason_and_exits_0(no_cuda):
    done, report, md = no_cuda
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(report) == KEYS
    assert report["schema"] == cuda_report.SCHEMA and report["mode"] == "no-cuda" and report["exit_code"] == 0
    assert set(report["environment"]) >= ENV_KEYS
    assert report["environment"]["cuda_available"] is False
    skipped = {s["what"].split(":")[0]: s["why"] for s in report["skipped"]}
    assert set(skipped) >= {"pytorch", "pytorch-fp16", "ort", "render", "timings on the GPU"}
    for why in skipped.values():
        assert "torch.cuda.is_available() is False" in why
        assert why in md and why in done.stdout  # the reasons in both files and on stdout
    assert "NO CUDA DEVICE" in md
    # the sanity check of the comparison code ran, on one op, and passed
    groups = {c["group"] for c in report["checks"]}
    assert groups == {"sanity"} and len(report["checks"]) >= 4
    assert all(c["passed"] and set(c) == CHECK_KEYS for c in report["checks"])
    assert all(c["extra"]["op"] == cuda_report.SANITY_OP for c in report["checks"])
    assert any(c["max_abs"] > 0 for c in report["checks"])  # float32 against float64: real differences, measured


def test_dry_run_passes_and_checks_every_registered_op(dry_run):
    done, report, md = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert report["mode"] == "dry-run-cpu" and report["dry_run"] and report["device"] == "cpu" and report["complete"]
    assert "DRY RUN" in md and "DRY RUN" in done.stdout
    assert report["summary"]["failed"] == 0 and report["exit_code"] == 0
    ops = {s.name for s in list_ops()}
    assert set(report["summary"]["ops"]) == ops
    for group in ("pytorch", "pytorch-fp16", "ort"):
        checked = {c["extra"]["op"] for c in report["checks"] if c["group"] == group}
        assert checked == ops, f"{group}: {sorted(ops - checked)} missing"
    for spec in list_ops():  # every sample and adversarial set of every op, in PyTorch
        names = {c["name"] for c in report["checks"] if c["group"] == "pytorch"}
        expected = {f"{spec.name} sample {s.name}" for s in spec.samples()}
        expected |= {f"{spec.name} adversarial {a}" for a in (spec.adversarial() if spec.adversarial else {})}
        assert expected <= names
    for c in report["checks"]:
        if c["group"] == "ort":  # placement came from ORT's profiler: every node that ran, on the CPU EP here
            assert c["extra"]["providers"][0] == "CPUExecutionProvider"
            assert c["extra"]["nodes"] > 0 and c["extra"]["nodes_off_provider"] == []
            assert c["extra"]["input_sets"] >= 1
    dtypes = {c["extra"]["dtype"] for c in report["checks"] if c["group"] == "ort"}
    assert dtypes == {"float32", "float16"}
    render = [c for c in report["checks"] if c["group"] == "render"]
    assert len(render) == len(cuda_report.RENDER_SHAPES) * len(cuda_report.RENDER_VARIANTS)
    assert {t["op"] for t in report["timings"]} == {"spatial_soft_argmax2d", "gaussian_heatmaps",
                                                    "decode_heatmaps(dark)"}  # fmt: skip
    assert all(t["kpx_ms"] > 0 and t["floor_ms"] > 0 for t in report["timings"])


def test_wrong_numbers_nan_positions_dtype_device_and_shape_fail():
    want = (torch.tensor([1.0, 2.0, float("nan")], dtype=torch.float64),)
    same = (torch.tensor([1.0, 2.0, float("nan")]),)
    tol = (1e-5, 1e-5)
    assert cuda_report.compare_outputs("t", "same", same, want, tol, dtype=torch.float32, device="cpu").passed
    cases = {
        "value": ((torch.tensor([1.0, 2.001, float("nan")]),), {}),
        "nan moved": ((torch.tensor([1.0, float("nan"), 3.0]),), {}),
        "nan gone": ((torch.tensor([1.0, 2.0, 0.0]),), {}),
        "inf for finite": ((torch.tensor([float("inf"), 2.0, float("nan")]),), {}),
        "shape": ((torch.tensor([1.0, 2.0]),), {}),
        "dtype": (same, {"dtype": torch.float16}),
        "device": (same, {"device": "cuda"}),
        "missing output": ((), {}),
    }
    for what, (got, kwargs) in cases.items():
        check = cuda_report.compare_outputs("t", what, got, want, tol, **kwargs)
        assert not check.passed and check.detail, what
    assert "NaN positions differ" in cuda_report.compare_outputs("t", "n", cases["nan moved"][0], want, tol).detail
    # the half rule: a finite reference beyond the float16 range is the inf it rounds to, nothing else
    big = (torch.tensor([1e6], dtype=torch.float64),)
    assert cuda_report.compare_outputs("t", "h", (torch.tensor([float("inf")]),), big, tol, half_rounding=True).passed
    assert not cuda_report.compare_outputs("t", "h", (torch.tensor([float("inf")]),), big, tol).passed


@NO_CUDA
def test_self_test_fail_reports_failures_and_exits_1(tmp_path, capsys):
    code = cuda_report.main(["--out", str(tmp_path), "--self-test-fail"])
    report = json.loads((tmp_path / "cuda_report.json").read_text())
    assert code == 1 and report["exit_code"] == 1
    assert report["summary"]["failed"] > 0
    failed = [c for c in report["checks"] if not c["passed"]]
    assert all("max_abs" in c["detail"] for c in failed)
    assert "**FAIL**" in (tmp_path / "cuda_report.md").read_text()
    assert "FAIL [sanity]" in capsys.readouterr().out
