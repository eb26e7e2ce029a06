"""LiteRT (onnx2tf + LiteRT's interpreter) in its separate environment, where it is installed.

CI does not carry tensorflow (2.4 GB): these tests skip unless ``python -m export_tools.runtimes._litert_env
--create-env`` has made the environment (``$KPX_LITERT_ENV`` or ``~/.cache/kpx/litert-env``). The parts that need
no tensorflow (the output transposition, the unavailable message) always run.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import onnx
import pytest
import torch

from custom_ops import get_op
from export_tools.errors import LocalFunctionsUnsupportedError, RunnerUnavailableError
from export_tools.exporter import finalize, trace
from export_tools.models import OpModel
from export_tools.parity import check_parity
from export_tools.runtimes import availability, make_runner
from export_tools.runtimes._litert_env import CREATE_COMMAND
from export_tools.runtimes.litert import LiteRtRunner, untranspose
from export_tools.targets import check_target

installed = pytest.mark.skipif(
    availability("litert") != "available", reason=f"no LiteRT environment ({CREATE_COMMAND})"
)


@functools.cache
def _op(op: str, emit: str = "inline") -> tuple[OpModel, onnx.ModelProto]:
    spec = get_op(op)
    sample = spec.export_sample()
    model = OpModel(spec, sample)
    raw = trace(model, model.example_inputs(), dynamic_shapes=model.dynamic_shapes(sample),
                input_names=model.input_names())  # fmt: skip
    return model, finalize(raw, opset=17 if emit == "inline" else 18, emit=emit)


def test_missing_environment_names_the_command(monkeypatch, tmp_path):
    monkeypatch.setenv("KPX_LITERT_ENV", str(tmp_path / "nowhere"))
    with pytest.raises(RunnerUnavailableError, match=r"python -m export_tools\.runtimes\._litert_env --create-env"):
        make_runner("litert", b"")
    assert "nowhere" in availability("litert")


def test_outputs_are_transposed_back_only_when_unambiguous():
    a = np.arange(2 * 2 * 5).reshape(2, 2, 5)  # LiteRT's (B, 2, K) for an ONNX (B, K, 2)
    np.testing.assert_array_equal(untranspose(a, (2, 5, 2)), a.transpose(0, 2, 1))
    same = np.zeros((3, 3))
    assert untranspose(same, (3, 3)) is same
    assert untranspose(np.zeros((4, 6)), (6, 4)).shape == (6, 4)


@installed
@pytest.mark.parametrize("op", ["spatial_soft_argmax2d", "decode_heatmaps", "topdown_crop"])
def test_ops_match_pytorch_on_litert(op):
    """The image-input crop (NCHW kept, no calibration download) and the decoders, within registry tolerances."""
    model, proto = _op(op)
    names = [o.name for o in proto.graph.output]
    report = check_parity(model, {"export_sample": model.example_inputs()}, runtimes=["litert"], resized=False,
                          model=proto.SerializeToString(), localize=False,
                          tolerances=dict.fromkeys(names, get_op(op).tolerances[torch.float32]))  # fmt: skip
    assert report.passed, report.table()
    assert check_target(proto, "litert").accepted


@installed
def test_a_converter_failure_is_a_failed_case_and_the_users_file_is_untouched(tmp_path):
    """onnx2tf 1.28.8 fails on kpx's standalone decode_simcc ("axes don't match array"): a recorded failed case.
    The converter rewrites its input in place: it only ever sees a private copy."""
    model, proto = _op("decode_simcc")
    path = tmp_path / "decode_simcc.onnx"
    onnx.save(proto, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    report = check_parity(model, {"export_sample": model.example_inputs()}, runtimes=["litert"], resized=False,
                          model=str(path), localize=False)  # fmt: skip
    (case,) = report.cases
    assert case.failure and "ConversionFailedError" in case.failure["what"], case.failure
    assert "axes don't match array" in case.failure["detail"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert [f.rule for f in check_target(proto, "litert").findings] == ["converter"]


@installed
def test_function_mode_is_refused_with_the_fix():
    _, proto = _op("spatial_soft_argmax2d", "function")
    with pytest.raises(LocalFunctionsUnsupportedError, match='emit="inline"'):
        LiteRtRunner(proto.SerializeToString())
