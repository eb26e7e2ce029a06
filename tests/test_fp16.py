"""Half-precision exports: kpx ops compute in float32 inside and return half (docs/spec.md, "Common rules").

``export(..., dtype="float16")`` gives a model with float16 inputs and outputs. Each kpx body casts its
half inputs to float32 first and its results back to half last, so an fp16 model on ORT CPU must
equal the float32 PyTorch reference *on the same numbers* (the half inputs, widened) up to one final
rounding to half: 2^-11 = 4.9e-4 relative. The registry's float16 tolerances say why each op's bound
holds (and why gaussian_heatmaps' is wider).

Inputs are rounded to half before the reference sees them, so the comparison measures the op, not
the input's quantisation. Bad inputs (docs/spec.md's table, each op's ``adversarial()`` suite) must keep
their fp32 behaviour in fp16: same NaN and Inf pattern as the reference, no NaN where it has none.
A finite input beyond the half range is clamped to +-65504, the half form of "huge".

Each sample is traced once and finalized as the default export (function, opset 18) and as what
TensorRT 8.x reads (inline, opset 17); the graph check and the bad inputs reuse the traces.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from custom_ops import get_op, list_ops
from export_tools.exporter import finalize, trace
from export_tools.models import OpModel
from tests.conftest import ort_session, run_ort

CASES = [pytest.param(spec, i, id=f"{spec.name}-{s.name}") for spec in list_ops() for i, s in enumerate(spec.samples())]
HALF_MAX = float(torch.finfo(torch.float16).max)

#: ops that only move or select values: exact in any dtype, allowed on half tensors in every body
MOVES = {"Cast", "CastLike", "Shape", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Transpose"}
#: further ops an op's graph may run on half values, with the reason (any other op on half is a bug)
HALF_EXCEPTIONS = {
    # The per-axis factors are cast to half before the outer product (a full-size Cast after a float32
    # product measured 2x the product itself, see the op's body); MatMul's inner dim is 1, so each pixel
    # is one rounded product and no sum runs in half. Max and ReduceMax select values: exact.
    "gaussian_heatmaps": {"MatMul", "Max", "ReduceMax"},
}


def _half(t: torch.Tensor) -> torch.Tensor:
    """``t`` as half: finite values clamped into the half range first (NaN and +-inf kept)."""
    if not t.is_floating_point():
        return t
    return torch.where(torch.isfinite(t), t.clamp(-HALF_MAX, HALF_MAX), t).half()


@functools.cache
def _traced(op: str, index: int) -> tuple[OpModel, onnx.ModelProto]:
    """The sample's float32 model and its float16 trace (``dtype="float16"``, as ``export`` does it)."""
    spec = get_op(op)
    sample = spec.samples()[index]
    model = OpModel(spec, sample)
    raw = trace(model, model.example_inputs(), dtype="float16", dynamic_shapes=model.dynamic_shapes(sample))
    return model, raw


def _assert_matches_reference(spec, model: OpModel, proto, inputs: tuple[torch.Tensor, ...], what: str) -> None:
    halves = tuple(_half(t) for t in inputs)
    with torch.no_grad():
        expected = model(*(h.float() if h.is_floating_point() else h for h in halves))  # float32, same numbers
    expected = expected if isinstance(expected, tuple) else (expected,)
    actual = run_ort(ort_session(proto), *halves)
    rtol, atol = spec.tolerances[torch.float16]  # reasons beside the table in the op's file
    for name, got, want in zip([o.name for o in spec.outputs], actual, expected, strict=True):
        want = want.numpy()
        assert got.dtype == np.float16, f"{what}: {name} is {got.dtype}, not float16"
        assert got.shape == want.shape, f"{what}: {name} has shape {got.shape}, expected {want.shape}"
        got = got.astype(np.float32)
        # a float32 result beyond the half range is +-inf in half: that is the rounding, not the op
        with np.errstate(over="ignore"):
            rounded = want.astype(np.float16).astype(np.float32)
        want = np.where(np.isfinite(rounded), want, rounded)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN pattern of {name}")
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg=f"{what}: +inf pattern of {name}")
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=f"{what}: -inf pattern of {name}")
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"{what}: {name}")


@pytest.mark.parametrize(("emit", "opset"), [("function", 18), ("inline", 17)], ids=["function-18", "inline-17"])
@pytest.mark.parametrize(("spec", "index"), CASES)
def test_fp16_export_matches_float32_reference(spec, index, emit, opset):
    """The default export (kpx functions, opset 18) and what TensorRT 8.x reads (inline, opset 17)."""
    model, raw = _traced(spec.name, index)
    proto = finalize(raw, opset=opset, emit=emit)
    for io in (*proto.graph.input, *proto.graph.output):
        if io.type.tensor_type.elem_type in (TensorProto.INT64, TensorProto.INT32):
            continue  # index inputs (topdown_crop's batch_index) keep their type
        assert io.type.tensor_type.elem_type == TensorProto.FLOAT16, f"{io.name} is not float16"
    inputs = model.example_inputs()
    _assert_matches_reference(spec, model, proto, inputs, f"{spec.name} sample {index}")
    sample = spec.samples()[index]
    if sample.dynamic is not None:  # grids and sums from the runtime shape, in float32, at another size
        dynamic = list(sample.dynamic) + [None] * len(inputs)
        bigger = tuple(torch.cat([t, t[:1]]) if dims and 0 in dims else t for t, dims in zip(inputs, dynamic))
        _assert_matches_reference(spec, model, proto, bigger, f"{spec.name} sample {index}, batch + 1")


@pytest.mark.parametrize(("spec", "index"), CASES)
def test_fp16_graph_computes_in_float32(spec, index):
    """In the inlined fp16 model, only casts and data movement touch half values (and listed exceptions)."""
    _, raw = _traced(spec.name, index)
    proto = onnx.shape_inference.infer_shapes(finalize(raw, opset=18, emit="inline"))
    types: dict[str, int] = {}
    _collect_types(proto.graph, types)
    allowed = MOVES | HALF_EXCEPTIONS.get(spec.name, set())
    on_half = set()
    for node in _nodes(proto.graph):
        assert all(types.get(name) for name in node.output if name), f"untyped output of {node.op_type}"
        if any(types.get(name) == TensorProto.FLOAT16 for name in (*node.input, *node.output) if name):
            on_half.add(node.op_type)
    assert on_half <= allowed, f"{spec.name} computes {sorted(on_half - allowed)} in half; cast to float32 first"
    assert "Cast" in on_half  # the float32 round trip is there


@pytest.mark.parametrize("spec", [s for s in list_ops() if s.adversarial], ids=lambda s: s.name)
def test_bad_inputs_keep_their_fp32_behaviour_in_fp16(spec):
    index = [s.name for s in spec.samples()].index(spec.export_sample().name)
    model, raw = _traced(spec.name, index)
    proto = finalize(raw, opset=18, emit="function")
    for name, inputs in spec.adversarial().items():
        _assert_matches_reference(spec, model, proto, inputs, f"{spec.name} adversarial {name!r}")


def _collect_types(graph, types: dict[str, int]) -> None:
    for value in (*graph.input, *graph.output, *graph.value_info):
        types[value.name] = value.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
        for attr in node.attribute:
            for sub in (attr.g, *attr.graphs) if attr.HasField("g") else attr.graphs:
                _collect_types(sub, types)


def _nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in (attr.g, *attr.graphs) if attr.HasField("g") else attr.graphs:
                yield from _nodes(sub)
