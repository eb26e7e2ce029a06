"""The exporter's guarantees: one node per call, metadata, atomic files, inline purity."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import torch

import custom_ops
from custom_ops import DOMAIN, __version__
from export_tools import ExportError, export, kpx_nodes, to_onnx
from export_tools.exporter import finalize, resolve_dtype, trace
from tests.conftest import ort_session, run_ort


class TwoHeads(torch.nn.Module):
    """Two soft-argmax calls and one softmax: three kpx nodes, two function bodies."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(x)
        a = custom_ops.spatial_soft_argmax2d(h, 2.0, normalized_coordinates=False)
        b = custom_ops.spatial_soft_argmax2d(custom_ops.spatial_softmax2d(h).log(), align_corners=False)
        return a, b


@torch.library.custom_op("kpxtest::untranslatable", mutates_args=())
def _untranslatable(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@_untranslatable.register_fake
def _(x):
    return torch.empty_like(x)


class Broken(torch.nn.Module):
    """Calls an op that has no ONNX translation: the export fails in step 3 of 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.kpxtest.untranslatable(x) + 1


def test_one_kpx_node_per_call_and_metadata(tmp_path):
    model, x = TwoHeads(), torch.randn(2, 3, 8, 6)
    proto = export(model, (x,), tmp_path / "m.onnx", dynamic_shapes=({0: "B", 2: "H", 3: "W"},))
    calls = sorted(n.op_type for n in kpx_nodes(proto))
    assert calls == ["SpatialSoftArgmax2d", "SpatialSoftArgmax2d", "SpatialSoftmax2d"]
    assert sorted(f.name for f in proto.functions) == ["SpatialSoftArgmax2d", "SpatialSoftmax2d"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["kpx.version"] == __version__
    assert json.loads(meta["kpx.ops"]) == {"SpatialSoftArgmax2d": 1, "SpatialSoftmax2d": 1}
    assert {o.domain: o.version for o in proto.opset_import}[DOMAIN] == 1
    on_disk = onnx.load(tmp_path / "m.onnx")
    onnx.checker.check_model(on_disk, full_check=True)
    session = ort_session(on_disk)
    x2 = torch.randn(3, 3, 11, 5)
    for actual, expected in zip(run_ort(session, x2), model(x2)):
        np.testing.assert_allclose(actual, expected.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_inline_has_no_kpx_domain_anywhere():
    proto = to_onnx(TwoHeads(), (torch.randn(1, 3, 5, 5),), emit="inline")
    text = str(proto)
    assert f'domain: "{DOMAIN}"' not in text
    assert not proto.functions
    assert not kpx_nodes(proto)


def test_failed_export_leaves_no_file_and_keeps_existing(tmp_path):
    path = tmp_path / "out.onnx"
    with pytest.raises(ExportError):
        export(Broken(), (torch.randn(4),), path)
    assert os.listdir(tmp_path) == []
    path.write_bytes(b"precious")
    with pytest.raises(ExportError):
        export(Broken(), (torch.randn(4),), path)
    assert path.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["out.onnx"]


def test_overwrite_false_refuses_existing(tmp_path):
    path = tmp_path / "out.onnx"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export(custom_ops.SpatialSoftmax2d(), (torch.randn(1, 1, 2, 2),), path, overwrite=False)
    assert path.read_bytes() == b"keep"


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export(custom_ops.SpatialSoftmax2d(), (torch.randn(1, 1, 2, 2),), tmp_path / "nope" / "m.onnx")


@pytest.mark.parametrize("kwargs", [{"opset": 14}, {"opset": 22}, {"emit": "fused"}, {"dtype": "int8"}])
def test_bad_options_name_the_argument(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        to_onnx(custom_ops.SpatialSoftmax2d(), (torch.randn(1, 1, 2, 2),), **kwargs)


def test_to_onnx_is_finalize_of_trace_and_one_trace_serves_opsets_15_to_18():
    model, x = TwoHeads(), torch.randn(1, 3, 5, 5)
    raw = trace(model, (x,), opset=17)
    assert {o.domain: o.version for o in raw.opset_import}[""] == 18  # torch.onnx writes >= 18
    before = raw.SerializeToString()
    for emit in ("function", "inline"):
        direct = to_onnx(model, (x,), opset=17, emit=emit)
        assert finalize(raw, opset=17, emit=emit).SerializeToString() == direct.SerializeToString()
    assert raw.SerializeToString() == before  # finalize leaves the trace alone
    for opset in (15, 16, 18):
        assert {o.domain: o.version for o in finalize(raw, opset=opset).opset_import}[""] == opset
    with pytest.raises(ExportError, match="opset 18 and cannot be written at 19"):
        finalize(raw, opset=19)


def test_dtype_names():
    assert resolve_dtype("float16") is torch.float16
    assert resolve_dtype("fp16") is torch.float16
    assert resolve_dtype(torch.bfloat16) is torch.bfloat16
    assert resolve_dtype(None) is None


def test_export_dtype_float16_runs_in_half():
    model = custom_ops.SpatialSoftArgmax2d(normalized_coordinates=False)
    x = torch.randn(2, 3, 6, 7) * 4
    proto = to_onnx(model, (x,), dtype="float16")
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    (actual,) = run_ort(ort_session(proto), x.half())
    assert actual.dtype == np.float16
    # float32 inside, one rounding to half at the end: half-ulp of coordinates up to 6 px is ~2e-3
    np.testing.assert_allclose(actual.astype(np.float32), model(x).numpy(), rtol=2e-3, atol=2e-3)


def test_export_dtype_leaves_the_callers_model_alone():
    model = TwoHeads()
    to_onnx(model, (torch.randn(1, 3, 4, 4),), dtype="float16")
    assert model.conv.weight.dtype is torch.float32


def test_model_left_in_training_mode_is_restored():
    model = TwoHeads().train()
    to_onnx(model, (torch.randn(1, 3, 4, 4),))
    assert model.training


# --- arguments torch.onnx would take silently (or fail on deep inside) -----------------------------------------

X = torch.randn(2, 3, 8, 6)
BAD_API_CALLS = {
    "a lambda": (lambda: (lambda x: x, (X,), {}), TypeError, "wrap a function in a module"),
    "a model name": (lambda: ("model", (X,), {}), TypeError, "load the model first"),
    "args not a tuple": (lambda: (custom_ops.SpatialSoftmax2d(), {"x": X}, {}), TypeError, "args must be a tuple"),
    "output_names as a string": (
        lambda: (custom_ops.SpatialSoftmax2d(), (X,), {"output_names": "abc"}),
        TypeError,
        "list of strings",
    ),
    "input_names as a string": (
        lambda: (custom_ops.SpatialSoftmax2d(), (X,), {"input_names": "x"}),
        TypeError,
        "list of strings",
    ),
    "three input names for one input": (
        lambda: (custom_ops.SpatialSoftmax2d(), (X,), {"input_names": ["a", "b", "c"]}),
        ValueError,
        "3 names for 1 input",
    ),
    "two output names for one output": (
        lambda: (custom_ops.SpatialSoftmax2d(), (X,), {"output_names": ["p", "q"]}),
        ValueError,
        "2 names but the model returns 1",
    ),
    "duplicate names": (
        lambda: (TwoHeads(), (torch.randn(1, 3, 4, 4),), {"output_names": ["a", "a"]}),
        ValueError,
        "distinct",
    ),
    "one symbol for two sizes": (
        lambda: (custom_ops.SpatialSoftmax2d(), (X,), {"dynamic_shapes": ({2: "H", 3: "H"},)}),
        ValueError,
        "different example sizes (8 at [0][2], 6 at [0][3])",
    ),
    "a symbol that is not a name": (
        lambda: (custom_ops.SpatialSoftmax2d(), (X,), {"dynamic_shapes": ({0: "1B"},)}),
        ValueError,
        "'1B' is not a valid dim name",
    ),
    "a dim that does not exist": (
        lambda: (custom_ops.SpatialSoftmax2d(), (X,), {"dynamic_shapes": ({4: "B"},)}),
        ValueError,
        "dim 4 does not exist",
    ),
    "dynamic_shapes for two inputs, model has one": (
        lambda: (custom_ops.SpatialSoftmax2d(), (X,), {"dynamic_shapes": ({0: "B"}, {0: "B"})}),
        ValueError,
        "2 entries for 1 inputs",
    ),
}


@pytest.mark.parametrize("case", list(BAD_API_CALLS), ids=lambda c: c.replace(" ", "_"))
def test_bad_api_arguments_name_the_argument_and_write_nothing(case, tmp_path):
    make, error, message = BAD_API_CALLS[case]
    model, args, kwargs = make()
    with pytest.raises(error) as raised:
        export(model, args, tmp_path / "m.onnx", **kwargs)
    assert message in str(raised.value)
    assert not list(tmp_path.iterdir())


def test_export_errors_carry_no_terminal_escapes(monkeypatch):
    """torch colours parts of its messages; an ExportError is plain text."""

    def coloured(*args, **kwargs):
        raise RuntimeError("\x1b[31mUnsupported\x1b[0m op \x1b[1maten::foo\x1b[0m")

    monkeypatch.setattr(torch.onnx, "export", coloured)
    with pytest.raises(ExportError) as raised:
        to_onnx(custom_ops.SpatialSoftmax2d(), (X,))
    assert "\x1b" not in str(raised.value) and "Unsupported op aten::foo" in str(raised.value)


# --- traps real models walk into ---------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", ["DataParallel", "compile", "both"])
def test_wrapped_models_export_the_module_inside(wrap):
    """DataParallel used to give a file 0.34 off eager PyTorch; compiled modules lose nothing either."""
    inner = TwoHeads().eval()
    wrapped = {
        "DataParallel": lambda m: torch.nn.DataParallel(m),
        "compile": lambda m: torch.compile(m),
        "both": lambda m: torch.compile(torch.nn.DataParallel(m)),
    }[wrap](inner)
    x = torch.randn(2, 3, 8, 6)
    with pytest.warns(UserWarning, match="exporting the TwoHeads inside"):
        proto = to_onnx(wrapped, (x,), dynamic_shapes=({0: "B"},))
    session = ort_session(proto)
    for feed in (x, torch.randn(5, 3, 8, 6)):
        for got, want in zip(run_ort(session, feed), inner(feed)):
            np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_meta_device_model_is_refused_with_the_fix(tmp_path):
    with torch.device("meta"):
        model = TwoHeads()
    with pytest.raises(ValueError, match=r"meta device .* model.to_empty"):
        export(model, (torch.randn(1, 3, 4, 4),), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


class _TopDown(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Conv2d(3, 5, 3, stride=4, padding=1)
        self.decode = custom_ops.DecodeHeatmaps()
        self.to_image = custom_ops.HeatmapToImage((16, 12))

    def forward(self, images, boxes):
        keypoints, scores = self.decode(self.net(images))
        return self.to_image(keypoints, boxes), scores


def test_a_heatmap_size_that_would_go_stale_is_refused():
    x, boxes = torch.randn(2, 3, 64, 48), torch.rand(2, 4) * 100
    proto = to_onnx(_TopDown(), (x, boxes), dynamic_shapes=({0: "B"}, {0: "B"}))  # batch only: fine
    assert [o.name for o in proto.graph.output] == ["heatmap_to_image", "scores"]  # named after kpx outputs
    with pytest.raises(ExportError, match=r"fixed heatmap_size \(16, 12\).*dynamic size"):
        to_onnx(_TopDown(), (x, boxes), dynamic_shapes=({0: "B", 2: "H", 3: "W"}, {0: "B"}))


def test_tuple_outputs_of_kpx_ops_are_named_after_them_unless_named():
    heads = custom_ops.DecodeHeatmaps()
    x = torch.rand(2, 17, 16, 12)
    assert [o.name for o in to_onnx(heads, (x,)).graph.output] == ["keypoints", "scores"]
    named = to_onnx(heads, (x,), output_names=["kp", "sc"])
    assert [o.name for o in named.graph.output] == ["kp", "sc"]

    class Twice(torch.nn.Module):
        def forward(self, a, b):
            return (*custom_ops.decode_heatmaps(a), *custom_ops.decode_heatmaps(b))

    proto = to_onnx(Twice(), (x, x.clone()))
    assert [o.name for o in proto.graph.output] == ["keypoints", "scores", "keypoints_1", "scores_1"]
    outs = run_ort(ort_session(proto), x, x * 2)
    np.testing.assert_allclose(outs[2], custom_ops.decode_heatmaps(x * 2)[0].numpy())


def test_bfloat16_conv_is_a_clear_export_error_and_kpx_ops_export_in_bfloat16():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), custom_ops.SpatialSoftArgmax2d())
    with pytest.raises(ExportError, match=r"node_conv2d.*no bfloat16 form of that op: export in float16"):
        to_onnx(model, (torch.randn(2, 3, 16, 16),), dtype="bfloat16")
    proto = to_onnx(custom_ops.SpatialSoftArgmax2d(), (torch.randn(2, 3, 16, 16),), dtype="bfloat16")
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16


def test_a_stale_heatmap_size_is_found_behind_any_input_of_the_keypoints_path():
    class Detour(_TopDown):
        def forward(self, images, boxes):
            keypoints, scores = self.decode(self.net(images))
            shifted = boxes[:, None, :2] * 0 + keypoints  # the keypoints enter through the second input of Add
            return self.to_image(shifted, boxes), scores

    x, boxes = torch.randn(2, 3, 64, 48), torch.rand(2, 4) * 100
    with pytest.raises(ExportError, match="fixed heatmap_size"):
        to_onnx(Detour(), (x, boxes), dynamic_shapes=({0: "B", 2: "H", 3: "W"}, {0: "B"}))


@pytest.mark.parametrize("args", [(3,), ("x",), ([torch.randn(1, 2, 3, 3), 2.0],)], ids=["int", "str", "nested"])
def test_non_tensor_example_inputs_are_named(args):
    with pytest.raises(TypeError, match=r"args\[0\](\[1\])? is (int|str|float).*example inputs must be tensors"):
        to_onnx(custom_ops.SpatialSoftmax2d(), args)


def test_an_input_the_model_rejects_is_named_not_torch_exports_pages():
    from export_tools.parity import assert_parity

    ints = torch.ones(1, 2, 3, 3, dtype=torch.int64)
    for call in (lambda: to_onnx(custom_ops.SpatialSoftmax2d(), (ints,)),
                 lambda: assert_parity(custom_ops.SpatialSoftmax2d(), (ints,))):  # fmt: skip
        with pytest.raises(ValueError, match=r"fails on its example inputs \(args\[0\]: int64 \(1, 2, 3, 3\)\)"):
            call()
