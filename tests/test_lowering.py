"""Target lowering (export_tools/lowering.py): every rewrite computes what it replaces, on ONNX Runtime (and
OpenVINO where it is free there), for every registered op, its export sample and its adversarial inputs."""

from __future__ import annotations

import functools
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from custom_ops import get_op, list_ops
from export_tools.exporter import finalize, trace
from export_tools.lowering import (
    LOWERINGS,
    REWRITES,
    apply_rewrites,
    lower_for_target,
    lowering_record,
    needed_rewrites,
)
from export_tools.models import OpModel
from export_tools.runtimes import make_runner

OPS = [s.name for s in list_ops()]


@functools.cache
def _raw(op: str) -> onnx.ModelProto:
    spec = get_op(op)
    sample = spec.export_sample()
    model = OpModel(spec, sample)
    return trace(model, model.example_inputs(), dynamic_shapes=model.dynamic_shapes(sample),
                 input_names=model.input_names())  # fmt: skip


def _sets(op: str) -> dict[str, list[np.ndarray]]:
    spec = get_op(op)
    sample = spec.export_sample()
    sets = {"export_sample": OpModel(spec, sample).example_inputs(), **(spec.adversarial() if spec.adversarial else {})}
    return {
        name: [t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in ts] for name, ts in sets.items()
    }


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal values, NaN at the same places (a zero's sign aside: see the Round rewrite)."""
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@pytest.mark.parametrize("emit,opset", [("inline", 17), ("function", 18)])
@pytest.mark.parametrize("op", OPS)
def test_lowered_files_compute_the_same_on_ort(op, emit, opset):
    """Every lowering, ORT CPU, export sample and every docs/spec.md bad input: the same bits, except that a zero
    out of the Round rewrite may lose its sign (values compared there)."""
    proto = finalize(_raw(op), opset=opset, emit=emit)
    before = make_runner("cpu", proto.SerializeToString())
    for target in LOWERINGS:
        lowered = lower_for_target(proto, target)
        assert lowering_record(lowered)["target"] == target
        after = make_runner("cpu", lowered.SerializeToString())
        exact = "round" not in needed_rewrites(proto, target)
        for name, feeds in _sets(op).items():
            for x, y in zip(before.run(feeds), after.run(feeds), strict=True):
                same = _bits(x) == _bits(y) if exact else _same_values(x, y)
                assert same, f"{op} {emit} lowered for {target}, input set {name!r}"


@pytest.mark.parametrize("op", OPS)
def test_isnan_and_mod_rewrites_are_free_on_openvino(op):
    """IsNaN and Mod rewritten (the ncnn lowering): OpenVINO's outputs keep their bits on every input set."""
    pytest.importorskip("openvino")
    proto = finalize(_raw(op), opset=17, emit="inline")
    before = make_runner("openvino", proto.SerializeToString())
    after = make_runner("openvino", lower_for_target(proto, "ncnn").SerializeToString())
    for name, feeds in _sets(op).items():
        for x, y in zip(before.run(feeds), after.run(feeds), strict=True):
            assert _bits(x) == _bits(y), f"{op}, input set {name!r}"


def _one_node(op: str, elem: int = TensorProto.FLOAT, out_elem: int | None = None, **attrs) -> onnx.ModelProto:
    inputs = ["a", "b"] if op in ("Mod", "Less") else ["a"]
    graph = helper.make_graph([helper.make_node(op, inputs, ["y"], **attrs)], "g",
                              [helper.make_tensor_value_info(n, elem, ["n"]) for n in inputs],
                              [helper.make_tensor_value_info("y", out_elem or elem, ["n"])])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


SPECIALS = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38, 1.0, -2.5])


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE])
def test_isnan_rewrite_on_nan_and_infinities(dtype):
    """``Not(LessOrEqual(x, +inf))`` is IsNaN for NaN, +inf, -inf, zeros, subnormals and the largest floats."""
    np_dtype = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}[dtype]
    model = _one_node("IsNaN", dtype, TensorProto.BOOL)
    lowered = lower_for_target(model, "mnn")
    assert [n.op_type for n in lowered.graph.node] == ["Constant", "LessOrEqual", "Not"]
    with np.errstate(over="ignore"):
        x = SPECIALS.astype(np_dtype)
    (got,) = make_runner("cpu", lowered.SerializeToString()).run([x])
    np.testing.assert_array_equal(got, np.isnan(x))


def test_mod_rewrite_is_mod_for_non_negative_dividends():
    """``a - (a / b) * b`` equals ``Mod`` (fmod=0) for a >= 0, b > 0 (kpx's uses); for a negative ``a`` it is
    C's remainder, not ONNX's (sign of ``b``): the documented limit."""
    model = _one_node("Mod", TensorProto.INT64)
    lowered = lower_for_target(model, "ncnn")
    assert [n.op_type for n in lowered.graph.node] == ["Div", "Mul", "Sub"]
    a, b = np.arange(0, 2000, dtype=np.int64), np.full(2000, 7, np.int64)
    b[::3] = 48
    (want,), (got,) = (
        make_runner("cpu", model.SerializeToString()).run([a, b]),
        make_runner("cpu", lowered.SerializeToString()).run([a, b]),
    )
    np.testing.assert_array_equal(got, want)
    (negative,) = make_runner("cpu", lowered.SerializeToString()).run([np.array([-7]), np.array([3])])
    assert negative.tolist() == [-1]  # ONNX Mod gives 2: why the rewrite is kept to kpx's non-negative indices


def test_float_mod_is_left_alone():
    model = _one_node("Mod", TensorProto.FLOAT, fmod=1)
    assert needed_rewrites(model, "ncnn") == {}
    assert [n.op_type for n in lower_for_target(model, "ncnn").graph.node] == ["Mod"]


def test_round_rewrite_rounds_half_to_even():
    """Halves go to the even neighbour, as ONNX's Round (MNN 3.6.1 rounds them away from zero)."""
    model = _one_node("Round")
    lowered = lower_for_target(model, "mnn")
    x = np.concatenate([np.arange(-40, 40) * 0.25, [2**23 + 0.5, 0.49999997, np.nan, np.inf, -np.inf]]).astype(
        np.float32
    )
    (want,) = make_runner("cpu", model.SerializeToString()).run([x])
    (got,) = make_runner("cpu", lowered.SerializeToString()).run([x])
    assert _same_values(got, want)
    assert got[x == 2.5].tolist() == [2.0] and got[x == -0.5].tolist() == [0.0]


def test_less_becomes_greater_with_the_operands_swapped():
    model = _one_node("Less", out_elem=TensorProto.BOOL)
    (node,) = lower_for_target(model, "mnn").graph.node
    assert (node.op_type, list(node.input)) == ("Greater", ["b", "a"])


def test_function_bodies_are_rewritten_with_castlike():
    """In a function-mode file the body's IsNaN is rewritten; its input type is the caller's: CastLike."""
    proto = finalize(_raw("decode_heatmaps"), opset=18, emit="function")
    assert needed_rewrites(proto, "mnn")["isnan"] == 1
    lowered = lower_for_target(proto, "mnn")
    body_ops = [n.op_type for f in lowered.functions for n in f.node]
    assert "IsNaN" not in body_ops and "CastLike" in body_ops and "Less" not in body_ops
    assert needed_rewrites(lowered, "mnn") == {}
    record = json.loads({p.key: p.value for p in lowered.metadata_props}["kpx.lowering"])
    assert record["rewrites"][REWRITES["isnan"]] == 1 and record["rewrites"][REWRITES["less"]] > 0


def test_node_metadata_and_names_survive():
    proto = finalize(_raw("spatial_soft_argmax2d"), opset=17, emit="inline")
    (mod,) = [n for n in proto.graph.node if n.op_type == "Mod"]
    lowered = lower_for_target(proto, "ncnn")
    (sub,) = [n for n in lowered.graph.node if n.name == mod.name]
    assert sub.op_type == "Sub" and list(sub.metadata_props) == list(mod.metadata_props)
    assert len({n.name for n in lowered.graph.node}) == len(lowered.graph.node)


def test_unknown_target_or_rewrite_is_an_error():
    model = _one_node("Relu")
    with pytest.raises(ValueError, match="target must be one of mnn, ncnn, litert; got 'tflite'"):
        lower_for_target(model, "tflite")
    with pytest.raises(ValueError, match="rewrites \\['floor'\\] are not known"):
        apply_rewrites(model, ("floor",))
    assert LOWERINGS["litert"] == ()  # onnx2tf converts every kpx op's IsNaN and Mod: nothing to rewrite


def test_the_input_model_is_not_changed():
    model = _one_node("IsNaN", out_elem=TensorProto.BOOL)
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(1, np.float32), "unused"))
    before = model.SerializeToString()
    lower_for_target(model, "mnn")
    assert model.SerializeToString() == before
