"""ExecuTorch as a runtime lane from the PyTorch model: torch.export -> XNNPACK -> ``.pte`` -> ExecuTorch's runtime.

Every registered op (its export sample) and a small pose network with ``DecodeHeatmaps(refine="dark")`` are
lowered with :meth:`ExecuTorchRunner.from_pytorch` and run in the runtime's worker process, against PyTorch eager
within the op's registry tolerance. Skips without ``executorch`` (``pip install "kpx[executorch]"``).
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest
import torch

import custom_ops
from custom_ops import get_op, list_ops
from export_tools.errors import ExportError, RunFailedError, UsageError
from export_tools.models import OpModel
from export_tools.runtimes import get_runner, make_runner
from export_tools.runtimes.executorch import ExecuTorchRunner, is_pte
from export_tools.runtimes.isolation import IsolatedRunner

pytestmark = pytest.mark.skipif(importlib.util.find_spec("executorch") is None, reason="executorch is not installed")


def _op(op: str) -> tuple[OpModel, tuple[torch.Tensor, ...]]:
    spec = get_op(op)
    model = OpModel(spec, spec.export_sample()).eval()
    return model, tuple(model.example_inputs())


@functools.cache
def _pte(op: str) -> bytes:
    model, inputs = _op(op)
    return ExecuTorchRunner.from_pytorch(model, inputs)


def _eager(module: torch.nn.Module, inputs) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*inputs)
    return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]


@pytest.mark.parametrize("op", [s.name for s in list_ops()])
def test_every_op_runs_on_executorch_like_eager(op):
    """In the worker process, within the op's float32 registry tolerance (measured: <= 9.5e-7)."""
    model, inputs = _op(op)
    runner = IsolatedRunner("executorch", _pte(op))
    got = runner.run([t.numpy() for t in inputs])
    rtol, atol = get_op(op).tolerances[torch.float32]
    for g, e in zip(got, _eager(model, inputs), strict=True):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    runner.close()


def test_torch_export_sees_the_plain_reference_not_kpx_custom_ops():
    """Outside kpx's exporter a kpx op traces its plain PyTorch reference: no ``kpx::`` op reaches ExecuTorch."""
    model, inputs = _op("decode_heatmaps")
    exported = torch.export.export(model, inputs)
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert targets and not any("kpx" in t for t in targets), sorted(targets)


class PoseNet(torch.nn.Module):
    """Six convolutions -> 5 heatmaps -> DARK decoding (custom_ops.DecodeHeatmaps(refine="dark"))."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers, c = [], 3
        for i, out in enumerate((16, 16, 32, 32, 32)):
            layers += [torch.nn.Conv2d(c, out, 3, stride=2 if i < 2 else 1, padding=1), torch.nn.ReLU()]
            c = out
        self.net = torch.nn.Sequential(*layers, torch.nn.Conv2d(c, 5, 1))
        self.decode = custom_ops.DecodeHeatmaps(refine="dark", blur_kernel=5)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(self.net(images))


def test_pose_net_with_dark_decoding_in_process_and_isolated():
    """A dynamic batch: the program exported at B=2 runs B=3; keypoints within 1e-4 px of eager (float32
    reassociation inside XNNPACK's convolutions, amplified by DARK's Newton step on these random-weight maps;
    measured 2.3e-5 px), scores 1e-5."""
    module = PoseNet().eval()
    images = torch.randn(2, 3, 64, 48)
    batch = torch.export.Dim("B", min=1, max=16)
    pte = ExecuTorchRunner.from_pytorch(module, (images,), dynamic_shapes=({0: batch},))
    assert is_pte(pte)
    more = torch.randn(3, 3, 64, 48)
    for runner in (make_runner("executorch", pte), IsolatedRunner("executorch", pte)):
        for x in (images, more):
            (keypoints, scores), (ek, es) = runner.run([x.numpy()]), _eager(module, (x,))
            np.testing.assert_allclose(keypoints, ek, rtol=0, atol=1e-4)
            np.testing.assert_allclose(scores, es, rtol=0, atol=1e-5)
    assert runner.describe()["backend"].startswith("XNNPACK")


def test_the_runner_is_a_pytorch_source_runner_in_the_table():
    assert get_runner("executorch") is ExecuTorchRunner and ExecuTorchRunner.source == "pytorch"
    assert get_runner("cpu").source == "onnx"


def test_onnx_bytes_are_refused_with_the_fix():
    """``kpx check FILE.onnx --providers executorch`` has no model to lower: a usage error that says what to run."""
    from export_tools.exporter import to_onnx

    model, inputs = _op("spatial_softmax2d")
    onnx_bytes = to_onnx(model, inputs).SerializeToString()
    with pytest.raises(UsageError, match=r"kpx export MODEL --check --providers executorch"):
        make_runner("executorch", onnx_bytes)
    with pytest.raises(UsageError, match="--reference MODEL"):  # the same error from the worker process
        IsolatedRunner("executorch", onnx_bytes)


def test_bad_arguments_and_export_failures():
    with pytest.raises(TypeError, match=r"module must be a torch\.nn\.Module"):
        ExecuTorchRunner.from_pytorch(lambda x: x, (torch.ones(1),))
    with pytest.raises(TypeError, match="example_inputs must be a tuple of tensors"):
        ExecuTorchRunner.from_pytorch(torch.nn.ReLU(), [1.0])

    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x[: int(x.sum())]  # a size from the data: torch.export refuses it

    with pytest.raises(ExportError, match=r"torch\.export failed for executorch"):
        ExecuTorchRunner.from_pytorch(DataDependent(), (torch.ones(4),))


def test_a_program_fed_the_wrong_inputs_is_a_failed_run_not_a_crash():
    """ExecuTorch rejects a feed of another rank: the worker reports it and stays usable."""
    runner = IsolatedRunner("executorch", _pte("spatial_softmax2d"))
    with pytest.raises(RunFailedError, match="executorch-xnnpack raised"):
        runner.run([np.ones((2, 3), np.float32)])
    model, inputs = _op("spatial_softmax2d")
    np.testing.assert_allclose(runner.run([t.numpy() for t in inputs])[0], _eager(model, inputs)[0], atol=1e-6)


# --- the lane in the parity harness and on the command line ------------------------------------------------------


def test_export_check_runs_executorch_beside_onnx_runtime(capsys, tmp_path):
    from export_tools import cli

    models = f"{__file__.rsplit('/', 1)[0]}/verdict_models.py"
    code = cli.main(["export", f"{models}:build", "--input", "images:2x3x64x48", "--decode", "heatmap:dark",
                     "-o", str(tmp_path / "p.onnx"), "--check", "--providers", "cpu,executorch"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "executorch-xnnpack" in out and "verdict: PASS" in out, out
    # kpx check of the file: executorch lowers the reference model; without one it is a usage error with the fix
    code = cli.main(["check", str(tmp_path / "p.onnx"), "--reference", f"{models}:build", "--providers",
                     "executorch"])  # fmt: skip
    assert code == 0 and "executorch-xnnpack" in capsys.readouterr().out
    code = cli.main(["check", str(tmp_path / "p.onnx"), "--providers", "executorch"])
    err = capsys.readouterr().err
    assert code == 2 and "--reference MODEL" in err, err


def test_a_model_torch_export_cannot_take_is_a_failed_case_not_a_crash():
    from export_tools import to_onnx
    from export_tools.parity import check_parity

    class DataDependent(torch.nn.Module):  # torch.export cannot trace a branch on values
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.clamp(min=0).sum().reshape(1) if bool((x > 0).any()) else x.sum().reshape(1)

    class Positive(torch.nn.Module):  # the same numbers on inputs with a positive value: the file to judge
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.clamp(min=0).sum().reshape(1)

    x = torch.randn(2, 3)
    report = check_parity(DataDependent(), (x,), model=to_onnx(Positive(), (x,)), runtimes=["cpu", "executorch"],
                          resized=False, localize=False)  # fmt: skip
    failed = [c for c in report.cases if c.failure is not None]
    assert not report.passed and failed and failed[0].failure["phase"] == "convert", report.table()
    assert [c.passed for c in report.cases if c.runtime == "ort-cpu"] == [True]
