"""Edge runtimes through the parity harness: OpenVINO (CPU plugin) and ONNX Runtime's mobile format (``.ort``).

Registry-driven: every registered op's export sample (the first sample with dynamic dims, so the
adversarial inputs of other shapes run through the same file), traced once per dtype and finalized per
emit mode (``to_onnx = finalize(trace(...))``), judged against PyTorch with the registry's tolerances.

- OpenVINO reads no ONNX local functions (:data:`OPENVINO_READS_LOCAL_FUNCTIONS`, re-measured below), so
  it runs ``emit="inline"`` exports, fp32 and fp16, and each op's adversarial suite in fp32. Float16
  exports are judged against the float32 model on the same (half) numbers, the registry's float16 rule.
- The ``.ort`` file is run for both emit modes in fp32, and each op's adversarial suite through the ``.ort``
  conversion of the function export.

OpenVINO tests skip when ``openvino`` is not installed (``pip install "kpx[openvino]"``).
"""

from __future__ import annotations

import functools
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from custom_ops import get_op, list_ops
from export_tools.exporter import finalize, trace
from export_tools.models import OpModel
from export_tools.parity import (
    OPENVINO_READS_LOCAL_FUNCTIONS,
    LocalFunctionsUnsupportedError,
    OpenVinoRunner,
    OrtFormatRunner,
    RunnerUnavailableError,
    check_parity,
)

OPS = [pytest.param(spec.name, id=spec.name) for spec in list_ops()]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}

#: ``(op, adversarial input)`` where OpenVINO departs from docs/spec.md, with what it does instead. Each is an
#: ``xfail(strict=True)``: when an OpenVINO release fixes it, the test fails and the entry must go.
OPENVINO_DEVIATIONS = {
    ("spatial_softmax2d", "nan_channel"): (
        "OpenVINO 2026.4.1 CPU (AVX2) Softmax with a NaN in the row returns NaN at the NaN's position (and at a "
        "few more positions that depend on the SIMD lanes, e.g. row of 35 with NaN at 24 -> NaN at 7, 15, 23, 24, "
        "31) and exactly 0 elsewhere; ONNX, ORT and PyTorch give NaN in the whole row, as docs/spec.md requires. "
        "Other channels are unchanged; ops that reduce the softmax (soft-argmax) still give NaN coordinates."
    ),
}


@pytest.fixture
def openvino():
    return pytest.importorskip("openvino")


@pytest.fixture
def onnxruntime():
    return pytest.importorskip("onnxruntime")


@functools.cache
def _traced(op: str, dtype: str) -> tuple[OpModel, onnx.ModelProto]:
    """The export sample's float32 model and its torch.onnx trace at ``dtype``."""
    spec = get_op(op)
    sample = spec.export_sample()
    model = OpModel(spec, sample)
    raw = trace(model, model.example_inputs(), dtype=DTYPES[dtype], dynamic_shapes=model.dynamic_shapes(sample),
                input_names=model.input_names())  # fmt: skip
    return model, raw


@functools.cache
def _export(op: str, emit: str, dtype: str = "fp32") -> bytes:
    """``to_onnx(OpModel(spec, spec.export_sample()), ..., emit=emit, dtype=dtype)``, one trace per op and dtype."""
    return finalize(_traced(op, dtype)[1], opset=18, emit=emit).SerializeToString()


def _tolerances(op: str, model: bytes, dtype: torch.dtype) -> dict[str, tuple[float, float]]:
    names = [o.name for o in onnx.load_from_string(model).graph.output]
    return dict.fromkeys(names, get_op(op).tolerances[dtype])  # per op and dtype, reasons in the op's file


def _sample_inputs(model: OpModel, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in model.example_inputs())


# --- OpenVINO ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("op", OPS)
def test_openvino_inline_export_matches_pytorch(openvino, op, dtype):
    """fp16: the half export against the float32 model on the same numbers (check_parity feeds PyTorch the
    rounded inputs in the module's float32)."""
    model, _ = _traced(op, "fp32")
    onnx_bytes = _export(op, "inline", dtype)
    torch_dtype = DTYPES[dtype]
    report = check_parity(model, {"export_sample": _sample_inputs(model, torch_dtype)}, runtimes=["openvino"],
                          model=onnx_bytes, tolerances=_tolerances(op, onnx_bytes, torch_dtype))  # fmt: skip
    assert report.passed, report.table()
    (described,) = [r for r in report.runtimes if r["runtime"] == "openvino-cpu"]
    assert described["inference_precision"] == "f32", described  # no silent bf16/f16
    assert {o.dtype for c in report.cases for o in c.outputs} == {
        str(np.dtype(np.float32 if dtype == "fp32" else np.float16))
    }


@functools.cache
def _openvino_adversarial(op: str):
    """One parity run of every adversarial input set of ``op`` on OpenVINO (fp32 inline)."""
    model, _ = _traced(op, "fp32")
    onnx_bytes = _export(op, "inline")
    return check_parity(model, get_op(op).adversarial(), runtimes=["openvino"], model=onnx_bytes,
                        tolerances=_tolerances(op, onnx_bytes, torch.float32))  # fmt: skip


ADVERSARIAL = [
    pytest.param(
        spec.name,
        case,
        id=f"{spec.name}-{case}",
        marks=[pytest.mark.xfail(strict=True, reason=OPENVINO_DEVIATIONS[spec.name, case])]
        if (spec.name, case) in OPENVINO_DEVIATIONS
        else [],
    )
    for spec in list_ops()
    if spec.adversarial
    for case in spec.adversarial()
]


@pytest.mark.parametrize(("op", "case"), ADVERSARIAL)
def test_openvino_adversarial_inputs_follow_the_spec(openvino, op, case):
    """docs/spec.md's bad inputs: the same values and the same NaN/Inf places as PyTorch."""
    report = _openvino_adversarial(op)
    (found,) = [c for c in report.cases if c.inputs == case]
    assert found.passed, f"{op} / {case} on OpenVINO:\n" + report.table()


def test_openvino_deviations_name_registered_cases():
    known = {(s.name, c) for s in list_ops() if s.adversarial for c in s.adversarial()}
    assert set(OPENVINO_DEVIATIONS) <= known


def _local_function_model() -> bytes:
    """The smallest model with an ONNX local function: ``local.MyRelu`` with a one-``Relu`` body."""
    body = helper.make_function("local", "MyRelu", ["x"], ["y"], [helper.make_node("Relu", ["x"], ["y"])],
                                [helper.make_opsetid("", 18)])  # fmt: skip
    graph = helper.make_graph([helper.make_node("MyRelu", ["a"], ["b"], domain="local")], "g",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])])  # fmt: skip
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("local", 1)]
    model = helper.make_model(graph, functions=[body], opset_imports=opsets, ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def test_openvino_local_function_support_is_as_recorded(openvino):
    """Re-measures :data:`OPENVINO_READS_LOCAL_FUNCTIONS` on a minimal model and on a kpx function export."""
    core = openvino.Core()
    for what, model in [("a one-Relu local function", _local_function_model()),
                        ("a kpx function export", _export("spatial_soft_argmax2d", "function"))]:  # fmt: skip
        try:
            core.read_model(model, b"")
            reads = True
        except Exception:  # OpenVINO raises RuntimeError / OpConversionFailure
            reads = False
        assert reads == OPENVINO_READS_LOCAL_FUNCTIONS, (
            f"openvino {openvino.__version__} {'reads' if reads else 'does not read'} {what}: update "
            "OPENVINO_READS_LOCAL_FUNCTIONS in export_tools/runtimes/openvino.py (and OpenVinoRunner's docs)"
        )


@pytest.mark.skipif(OPENVINO_READS_LOCAL_FUNCTIONS, reason="this OpenVINO reads local functions")
def test_openvino_function_export_is_a_clear_error(openvino):
    op = "spatial_soft_argmax2d"
    model, _ = _traced(op, "fp32")
    with pytest.raises(LocalFunctionsUnsupportedError, match=r'emit="inline" \(CLI: --emit inline\)') as raised:
        check_parity(model, model.example_inputs(), runtimes=["openvino"], model=_export(op, "function"))
    assert isinstance(raised.value, RunnerUnavailableError)
    assert "kpx.SpatialSoftArgmax2d" in str(raised.value) and openvino.__version__ in str(raised.value)


def test_openvino_unknown_device_is_unavailable(openvino):
    with pytest.raises(RunnerUnavailableError, match="fix: pass device='CPU'"):
        OpenVinoRunner(_local_function_model(), device="NPU-that-is-not-here")


def test_openvino_missing_is_an_error_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(RunnerUnavailableError, match=r'pip install "kpx\[openvino\]"'):
        OpenVinoRunner(_export("spatial_softmax2d", "inline"))


# --- ONNX Runtime mobile (.ort) -----------------------------------------------------------------------------


@pytest.mark.parametrize("emit", ["function", "inline"])
@pytest.mark.parametrize("op", OPS)
def test_ort_format_matches_pytorch(onnxruntime, op, emit):
    model, _ = _traced(op, "fp32")
    onnx_bytes = _export(op, emit)
    report = check_parity(model, {"export_sample": model.example_inputs()}, runtimes=["ort-mobile"],
                          model=onnx_bytes, tolerances=_tolerances(op, onnx_bytes, torch.float32))  # fmt: skip
    assert report.passed, report.table()
    assert [r["format"] for r in report.runtimes if r["runtime"] == "ort-mobile"] == ["ort"]


@pytest.mark.parametrize("op", [p for p in OPS if get_op(p.values[0]).adversarial])
def test_ort_format_adversarial_suite(onnxruntime, op):
    """docs/spec.md's bad inputs through the ``.ort`` conversion of the function export."""
    model, _ = _traced(op, "fp32")
    onnx_bytes = _export(op, "function")
    inputs = get_op(op).adversarial()
    report = check_parity(model, inputs, runtimes=["ort-mobile"], model=onnx_bytes,
                          tolerances=_tolerances(op, onnx_bytes, torch.float32))  # fmt: skip
    assert report.passed, report.table()
    assert [c.inputs for c in report.cases][: len(inputs)] == list(inputs)  # then the resized example, if any


def test_to_ort_format_inlines_kpx_functions(onnxruntime, tmp_path):
    """A function export converts: ORT inlines the kpx bodies at load, the .ort file needs standard kernels only."""
    from export_tools.mobile import to_ort_format

    op = "spatial_soft_argmax2d"
    source = tmp_path / "head.onnx"
    source.write_bytes(_export(op, "function"))
    path = to_ort_format(source, tmp_path / "out")
    assert path == tmp_path / "out" / "head.ort" and path.is_file()
    config = (tmp_path / "out" / "head.required_operators.config").read_text()
    domains = {line.split(";")[0] for line in config.splitlines() if line and not line.startswith("#")}
    assert domains and "kpx" not in domains and "ai.onnx" in domains, config
    assert to_ort_format(_export(op, "function"), tmp_path / "bytes", name="h").name == "h.ort"

    model, _ = _traced(op, "fp32")
    x = model.example_inputs()[0].numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # .ort by its suffix
    (expected,) = OrtFormatRunner(path).run([x])  # the runner also takes an .ort path
    np.testing.assert_array_equal(session.run(None, {session.get_inputs()[0].name: x})[0], expected)
    with torch.no_grad():
        np.testing.assert_allclose(expected, model(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_to_ort_format_missing_file(onnxruntime, tmp_path):
    from export_tools.mobile import to_ort_format

    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_ort_format(tmp_path / "missing.onnx", tmp_path)
