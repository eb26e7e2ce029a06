"""Lowering exported graphs to opset 15-17 (TensorRT 8.x, older runtimes): same results, valid ONNX."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import custom_ops
from custom_ops.registry import MIN_OPSET
from export_tools import ExportError, kpx_nodes, to_onnx
from export_tools.downgrade import OpsetConversionError, default_opset, downgrade
from export_tools.exporter import finalize, trace
from tests.conftest import ort_session, run_ort


class Backbone(torch.nn.Module):
    """The ops torch.onnx writes differently at opset 18 than at 15-17, around two kpx calls."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3, padding=1)
        self.norm = torch.nn.LayerNorm(6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.conv(x)  # (B, 5, H, 6)
        a, b = torch.split(h, [2, 3], dim=1)  # Split with sizes
        c = torch.chunk(h, 4, dim=3)[-1]  # width 6 in chunks of 2: three even parts
        d = torch.chunk(h, 4, dim=1)[-1]  # 5 channels in chunks of 2: 2, 2, 1
        h = torch.nn.functional.mish(self.norm(h)) + h.amax(dim=1, keepdim=True) - h.mean(dim=(2, 3), keepdim=True)
        h = torch.nn.functional.pad(h, (1, 1, 2, 0), mode="reflect")
        h = torch.nn.functional.interpolate(h, scale_factor=2.0, mode="bilinear")
        xy = custom_ops.spatial_soft_argmax2d(h, 2.0, normalized_coordinates=False)
        maps, _ = custom_ops.gaussian_heatmaps(xy, (8, 8), 1.5)
        return xy, maps, a.std(dim=1), b.amin(dim=(2, 3)), c, d


@functools.cache
def _backbone() -> tuple[Backbone, torch.Tensor, onnx.ModelProto]:
    """One trace serves every opset and emit mode (``to_onnx`` is ``finalize(trace(...))``)."""
    torch.manual_seed(0)
    model, x = Backbone().eval(), torch.randn(2, 3, 7, 6)
    return model, x, trace(model, (x,), opset=17, dynamic_shapes=({0: "B", 2: "H"},))


@pytest.mark.parametrize("opset", [17, MIN_OPSET])
@pytest.mark.parametrize("emit", ["function", "inline"])
def test_lowered_backbone_matches_pytorch(emit, opset):
    model, x, raw = _backbone()
    proto = finalize(raw, opset=opset, emit=emit)
    onnx.checker.check_model(proto, full_check=True)
    assert default_opset(proto) == opset
    # opset <= 17 needs IR 8; function attribute defaults need IR 9 (old runtimes refuse newer IR)
    assert proto.ir_version == (9 if emit == "function" else 8)
    assert all(not n.metadata_props for n in proto.graph.node)
    used = {n.op_type for n in proto.graph.node}
    assert "Mish" not in used  # new in opset 18
    assert "LayerNormalization" not in used or opset >= 17
    if emit == "function":
        assert sorted(n.op_type for n in kpx_nodes(proto)) == ["GaussianHeatmaps", "SpatialSoftArgmax2d"]
        assert all({o.domain: o.version for o in f.opset_import}[""] == opset for f in proto.functions)
    session = ort_session(proto)
    for feed in (x, torch.randn(3, 3, 9, 6)):
        with torch.no_grad():
            expected = model(feed)
        for got, want in zip(run_ort(session, feed), expected, strict=True):
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


class Sampler(torch.nn.Module):
    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return custom_ops.spatial_softmax2d(torch.nn.functional.grid_sample(x, grid, align_corners=False))


def test_op_without_an_older_form_is_an_export_error_naming_it():
    args = (torch.randn(1, 2, 5, 5), torch.rand(1, 4, 4, 2) * 2 - 1)
    raw = trace(Sampler(), args)
    assert default_opset(finalize(raw, opset=16)) == 16  # GridSample is opset 16
    with pytest.raises(ExportError, match=r"GridSample .*opset 18 to 15.*Export at opset 18"):
        finalize(raw, opset=15)


def test_opset_below_the_floor_names_the_floor_and_the_fix():
    with pytest.raises(ValueError, match=r"opset must be >= 15.*CastLike.*Pass opset=15"):
        to_onnx(custom_ops.SpatialSoftmax2d(), (torch.randn(1, 1, 2, 2),), opset=13)


# --- hand-made opset-18 graphs: the lowered graph gives the same values on ORT ----------------------------


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _ints(name, values):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def _value(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _same_on_ort(model, target, *feeds):
    lowered = downgrade(model, target)
    onnx.checker.check_model(lowered, full_check=True)
    assert default_opset(lowered) == target and default_opset(model) == 18  # the input is left alone
    want = ort_session(model).run(None, dict(zip((i.name for i in model.graph.input), feeds)))
    got = ort_session(lowered).run(None, dict(zip((i.name for i in lowered.graph.input), feeds)))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    return lowered


@pytest.mark.parametrize("target", [15, 16, 17])
def test_reduce_split_pad_lowered_by_hand(target):
    nodes = [
        helper.make_node("ReduceMax", ["x", "axes"], ["m"], keepdims=0),
        helper.make_node("ReduceL2", ["x"], ["l2"], keepdims=0, noop_with_empty_axes=0),
        helper.make_node("ReduceMean", ["x", "none"], ["same"], noop_with_empty_axes=1),
        helper.make_node("Split", ["x"], ["s0", "s1", "s2"], axis=1, num_outputs=3),  # 7 = 3 + 3 + 1
        helper.make_node("Pad", ["x", "pads", "", "pad_axes"], ["p"], mode="reflect"),
    ]
    inits = [_ints("axes", [1]), _ints("none", []), _ints("pads", [1, 2, 0, 1]), _ints("pad_axes", [-1, 1])]
    ranks = {"m": 2, "l2": 0, "same": 3, "s0": 3, "s1": 3, "s2": 3, "p": 3}
    outs = [_value(name, [None] * rank) for name, rank in ranks.items()]
    model = _model(nodes, [_value("x", [2, 7, 4])], outs, inits)
    lowered = _same_on_ort(model, target, np.random.default_rng(0).normal(size=(2, 7, 4)).astype(np.float32))
    assert not lowered.graph.initializer  # axes and pads now live in attributes and new constants


def test_uneven_split_of_a_dynamic_axis_is_refused():
    node = helper.make_node("Split", ["x"], ["a", "b"], axis=0, num_outputs=2)
    model = _model([node], [_value("x", ["N"])], [_value("a", [None]), _value("b", [None])])
    with pytest.raises(OpsetConversionError, match=r"Split .*not static"):
        downgrade(model, 17)


def test_computed_reduce_axes_are_refused():
    node = helper.make_node("ReduceMax", ["x", "axes"], ["y"])
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    model = _model([node], [_value("x", [2, 3]), axes], [_value("y", [None])])
    with pytest.raises(OpsetConversionError, match="axes must be a constant"):
        downgrade(model, 17)


def test_subgraphs_are_lowered_too():
    branch = helper.make_graph(
        [helper.make_node("ReduceMin", ["x", "axes"], ["r"], keepdims=0)], "then", [], [_value("r", [None])]
    )
    other = helper.make_graph(
        [helper.make_node("ReduceMax", ["x", "axes0"], ["r2"], keepdims=0)], "else", [], [_value("r2", [None])]
    )
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)]
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    model = _model(nodes, [_value("x", [2, 3]), cond], [_value("y", [None])], [_ints("axes", [1]), _ints("axes0", [0])])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    _same_on_ort(model, 15, x, np.array(True))
    _same_on_ort(model, 15, x, np.array(False))
