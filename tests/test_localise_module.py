"""Localising a PyTorch-vs-ONNX difference to the PyTorch module (export_tools/parity/where.py).

Each test builds a real divergence (a tampered weight, a tampered kpx constant in an inline file, an fp16
overflow, a wrong export rule, glue code between modules) and checks that the report names where it starts;
faithful exports (float32 and float16) must raise no alarm at their dtype's tolerance."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper

import custom_ops
from export_tools import to_onnx
from export_tools.graph import KPX_OP_KEY, NODE_ORIGINS_KEY, node_origins, props
from export_tools.parity import SCHEMA, assert_parity, check_parity, first_departing_module

pytest.importorskip("onnxruntime")

H, W, K = 64, 48, 17  # deployed heatmap size, COCO keypoints


class Head(torch.nn.Module):
    """Conv2d -> activation -> SpatialSoftArgmax2d, the issue's model."""

    def __init__(self, act: torch.nn.Module | None = None, channels: int = 32) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, K, 1)
        self.act = act if act is not None else torch.nn.Identity()
        self.soft = custom_ops.SpatialSoftArgmax2d(temperature=4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.soft(self.act(self.conv(x)))


def make_head(**kwargs) -> Head:
    torch.manual_seed(0)
    return Head(**kwargs).eval()


def features(batch: int = 2, channels: int = 32) -> torch.Tensor:
    return torch.randn(batch, channels, H, W, generator=torch.Generator().manual_seed(1))


def scale_initializer(model: onnx.ModelProto, name: str, factor: float) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, t in enumerate(out.graph.initializer):
        if t.name == name:
            scaled = numpy_helper.to_array(t) * np.float32(factor)
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(scaled, name))
            return out
    raise AssertionError(f"no initializer {name!r}")


def only_where(report):
    failed = [c for c in report.cases if not c.passed]
    assert failed, "the check should fail"
    assert all(c.where is not None for c in failed)
    return failed[0].where


# --- real divergences ------------------------------------------------------------------------------------


def test_tampered_conv_weight_names_the_conv_module_and_its_line(tmp_path):
    model = make_head()
    x = features()
    bad = scale_initializer(to_onnx(model, (x,)), "conv.weight", 1.05)
    report = check_parity(model, (x,), model=bad, resized=False)
    where = only_where(report)
    assert where.status == "module" and where.module == "conv" and where.cls == "Conv2d"
    assert where.op_types == ["Conv"] and where.kpx_op is None and where.inputs_agree is True
    assert where.max_abs / where.scale == pytest.approx(0.05, rel=0.2)  # the 5 % the weight was scaled by
    assert where.source.endswith(f"{__file__}:{Head.forward.__code__.co_firstlineno + 1}")
    assert where.code == "return self.soft(self.act(self.conv(x)))"
    assert [r.module for r in where.downstream] == ["soft", "output spatial_soft_argmax2d"]
    assert not any(r.passed for r in where.downstream)
    # the JSON report (schema 3) and assert_parity's message carry it
    assert SCHEMA == "kpx.parity/4"
    doc = json.loads(report.write_json(tmp_path / "r.json").read_text())
    assert doc["schema"] == SCHEMA and doc["cases"][0]["where"]["module"] == "conv"
    with pytest.raises(AssertionError, match=r"first departing module 'conv' \(Conv2d\)"):
        assert_parity(model, (x,), model=bad, resized=False)


def test_tampered_grid_constant_in_an_inline_file_names_the_kpx_op():
    model = make_head()
    x = features()
    good = to_onnx(model, (x,), emit="inline")  # static H, W: the coordinate grid is folded into an initializer
    origins = node_origins(good)
    tagged = [n for n in good.graph.node if KPX_OP_KEY in origins.get(n.name, {})]
    assert tagged and {json.loads(origins[n.name][KPX_OP_KEY])["op_type"] for n in tagged} == {"SpatialSoftArgmax2d"}
    inits = {t.name: t for t in good.graph.initializer}
    grid = next(i for n in tagged for i in n.input if i in inits and list(inits[i].dims) == [H * W, 2])
    bad = scale_initializer(good, grid, 1.02)
    where = only_where(check_parity(model, (x,), model=bad, resized=False))
    assert where.status == "module" and where.module == "soft" and where.kpx_op == "SpatialSoftArgmax2d"
    assert where.inputs_agree is True and set(where.nodes) >= {n.name for n in tagged if grid in n.input}
    assert "kpx op SpatialSoftArgmax2d in module 'soft'" in str(where)


def test_tampered_weight_is_found_below_ir_10_through_the_model_metadata():
    model = make_head()
    x = features()
    good = to_onnx(model, (x,), opset=17, emit="inline")
    assert good.ir_version < 10 and NODE_ORIGINS_KEY in props(good)
    assert all(len(n.metadata_props) == 0 for n in good.graph.node)  # IR 9 nodes hold no metadata
    bad = scale_initializer(good, "conv.weight", 0.9)
    where = only_where(check_parity(model, (x,), model=bad, resized=False, opset=17))
    assert where.module == "conv" and where.source.endswith(f":{Head.forward.__code__.co_firstlineno + 1}")


class Amplify(torch.nn.Module):
    """Brings large features back to heatmap logits: fine in float32, past fp16's 65504 on the way."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1e-3


def test_fp16_export_whose_intermediate_overflows_names_the_module():
    torch.manual_seed(0)
    model = make_head(act=Amplify())
    with torch.no_grad():
        model.conv.weight.mul_(5e4)  # conv outputs up to ~1.4e5: finite in float32, inf in float16
    x = features()
    with torch.no_grad():
        assert bool(torch.isfinite(model(x)).all()) and float(model.conv(x).abs().max()) > 65504
    report = check_parity(model, (x,), dtype=torch.float16, resized=False)
    where = only_where(report)
    assert where.status == "module" and where.module == "conv" and where.dtype == "float16"
    assert where.nan_inf_equal is False and "NaN/Inf at other places" in str(where)


class ExportSiLU(torch.nn.Module):
    """SiLU with an 'export-friendly' rule that is wrong on purpose: hard-swish while exporting."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            return x * F.hardsigmoid(x)  # the wrong rule
        return F.silu(x)


def test_a_wrong_export_rule_is_named_with_its_line():
    model = make_head(act=ExportSiLU())
    x = features() * 3
    where = only_where(check_parity(model, (x,), resized=False))
    assert where.status == "module" and where.module == "act" and where.cls == "ExportSiLU"
    assert where.inputs_agree is True
    assert where.code == "return x * F.hardsigmoid(x)  # the wrong rule"
    assert where.source.endswith(f":{ExportSiLU.forward.__code__.co_firstlineno + 2}")


class Glue(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(32, K, 1)
        self.soft = custom_ops.SpatialSoftArgmax2d()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.soft(self.conv(x) * 2.0)  # code between modules


def test_a_difference_between_modules_is_not_blamed_on_the_next_module():
    torch.manual_seed(0)
    model = Glue().eval()
    x = features()
    good = to_onnx(model, (x,))
    add = next(n for n in good.graph.node if n.op_type == "Mul")
    inits = {t.name for t in good.graph.initializer}
    const = next(i for i in add.input if i in inits)
    bad = scale_initializer(good, const, 1.5)
    where = only_where(check_parity(model, (x,), model=bad, resized=False))
    assert where.status == "glue" and add.name in where.nodes and "soft" not in where.nodes
    assert where.code == "return self.soft(self.conv(x) * 2.0)  # code between modules"


# --- no false alarms ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [None, torch.float16])
@pytest.mark.parametrize("emit", ["function", "inline"])
def test_a_faithful_export_raises_no_alarm(dtype, emit):
    model = make_head(act=torch.nn.ReLU())
    x = features(batch=32)
    proto = to_onnx(model, (x,), emit=emit, dtype=dtype, dynamic_shapes=({0: "B"},))
    feeds = [x.numpy().astype(np.float16 if dtype else np.float32)]
    torch_feeds = [feeds[0].astype(np.float32)]
    where = first_departing_module(model, proto.SerializeToString(), torch_feeds, feeds)
    assert where.status == "outputs agree" and where.compared >= 3, str(where)
    assert check_parity(model, (x,), model=proto, resized=False).passed


# --- metadata through kpx's passes ----------------------------------------------------------------------------


class Padded(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (1, 1, 1, 1), mode="reflect"))


def test_nodes_written_by_the_opset_lowering_keep_their_origin():
    x = torch.randn(1, 4, 8, 6)
    for opset in (18, 16):
        proto = to_onnx(Padded().eval(), (x,), opset=opset)
        origins = node_origins(proto)
        pad = [n for n in proto.graph.node if n.op_type == "Pad"]
        assert pad and all("pkg.torch.onnx.name_scopes" in origins.get(n.name, {}) for n in pad), opset


def test_a_failure_that_is_only_rounding_is_called_rounding_not_agreement():
    """A verdict tighter than rounding (``tolerances=(0, 0)`` on float32) fails on an export that is faithful: the
    localiser finds no module that departs, and its line says that the failure is rounding spread over the graph
    (it used to say only that everything agrees, beside a FAIL)."""
    model = make_head(act=torch.nn.ReLU())
    x = features(batch=32)
    proto = to_onnx(model, (x,), dynamic_shapes=({0: "B"},))
    name = proto.graph.output[0].name
    report = check_parity(model, (x,), model=proto, resized=False, tolerances={name: (0.0, 0.0)})
    failed = [case for case in report.cases if not case.passed]
    assert failed, "ORT and PyTorch agreed bit for bit: nothing to explain"
    where = failed[0].where
    assert where is not None and where.status == "outputs agree", str(where)
    assert "spread over the graph, typically rounding" in str(where) and "--rtol/--atol" in str(where)
    assert "spread over the graph, typically rounding" in report.table()


def test_a_graph_output_of_another_shape_departs_it_is_not_called_rounding():
    """A file whose output has another shape than PyTorch's (a ``Flatten`` appended): the verdict fails on the shape,
    and the localiser names that output as departing instead of calling the failure rounding."""
    model = make_head(act=torch.nn.ReLU())
    x = features(batch=2)
    proto = to_onnx(model, (x,))
    out = proto.graph.output[0]
    flat = onnx.helper.make_node("Flatten", [out.name], ["flat"], axis=1, name="appended_flatten")
    proto.graph.node.append(flat)
    proto.graph.output.remove(out)
    proto.graph.output.append(onnx.helper.make_tensor_value_info("flat", onnx.TensorProto.FLOAT, None))
    feeds = [x.numpy()]
    where = first_departing_module(model, proto.SerializeToString(), feeds, feeds)
    assert where.status == "glue" and where.value == "flat", str(where)
    assert "rounding" not in str(where)
