"""Per-runtime compatibility reports (kpx inspect --target) and trtexec command lines."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from custom_ops import list_ops
from export_tools import cli
from export_tools.exporter import finalize, trace
from export_tools.models import OpModel
from export_tools.targets import TARGETS, check_target, trtexec_commands

#: what kpx claims for its own exports: these targets accept the file with no finding at all
CLAIMS = {
    ("inline", 17): ["tensorrt-8.6", "tensorrt-10", "openvino", "ort-mobile", "generic"],
    ("inline", 18): ["tensorrt-10", "openvino", "ort-mobile", "generic"],
    ("function", 18): ["tensorrt-10", "ort-mobile"],
}


@functools.cache
def _raw(name: str):
    spec = next(s for s in list_ops() if s.name == name)
    sample = spec.export_sample()
    model = OpModel(spec, sample)
    return trace(model, model.example_inputs(), dynamic_shapes=model.dynamic_shapes(sample),
                 input_names=model.input_names())  # fmt: skip


@pytest.mark.parametrize("emit,opset", list(CLAIMS), ids=lambda v: str(v))
@pytest.mark.parametrize("name", [s.name for s in list_ops()])
def test_kpx_exports_pass_every_target_they_claim(name, emit, opset):
    model = finalize(_raw(name), opset=opset, emit=emit)
    for target in CLAIMS[(emit, opset)]:
        report = check_target(model, target)
        assert report.verdict == "accepted", report.text()


@pytest.mark.parametrize("name", [s.name for s in list_ops()])
def test_function_exports_are_refused_where_functions_are_not_read(name):
    model = finalize(_raw(name), opset=18, emit="function")
    for target in ("tensorrt-8.6", "openvino"):
        report = check_target(model, target)
        assert not report.accepted
        assert any(f.rule == "local-functions" and "--emit inline" in f.fix for f in report.findings)
    generic = check_target(model, "generic")
    assert generic.verdict == "accepted with warnings" and [f.rule for f in generic.findings] == ["local-functions"]


def _model(nodes, inputs, outputs, initializers=(), opset=17, ir=8):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)


def _float(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _int(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.INT64, shape)


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


HOSTILE = {
    "data-dependent-shape": _model(
        [helper.make_node("NonZero", ["x"], ["y"])], [_float("x", [4])], [_int("y", [1, "n"])]
    ),
    "maxpool-indices": _model(
        [helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2])],
        [_float("x", [1, 1, 4, 4])],
        [_float("y", [1, 1, 3, 3]), _int("i", [1, 1, 3, 3])],
    ),
    "float-range": _model(
        [helper.make_node("Range", ["start", "limit", "delta"], ["y"])],
        [_float("limit", [])],
        [_float("y", ["n"])],
        [_const("start", np.float32(0)), _const("delta", np.float32(1))],
    ),
    "topk-k": _model(
        [helper.make_node("TopK", ["x", "k"], ["v", "i"])],
        [_float("x", [1, 5000])],
        [_float("v", [1, 4000]), _int("i", [1, 4000])],
        [_const("k", np.array([4000], np.int64))],
    ),
    "dynamic-axes": _model(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"])],
        [_float("x", [2, 3]), _int("axes", [1])],
        [_float("y", None)],
    ),
    "float64": _model(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.DOUBLE)],
        [_float("x", [2])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2])],
    ),
    "opset": _model([helper.make_node("Relu", ["x"], ["y"])], [_float("x", [2])], [_float("y", [2])], opset=21, ir=10),
    "unknown-op": helper.make_model(
        helper.make_graph(
            [helper.make_node("Mystery", ["x"], ["y"], domain="acme")], "g", [_float("x", [2])], [_float("y", [2])]
        ),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)],
        ir_version=8,
    ),
}

#: expected severity of each hostile pattern per target (None: not reported)
EXPECTED = {
    "data-dependent-shape": {"tensorrt-8.6": "warning", "tensorrt-10": "warning", "ort-mobile": None},
    "maxpool-indices": {"tensorrt-8.6": "error", "tensorrt-10": "error", "openvino": None, "generic": "warning"},
    "float-range": {"tensorrt-8.6": "error", "tensorrt-10": "error", "ort-mobile": None},
    "topk-k": {"tensorrt-8.6": "error", "tensorrt-10": "error", "generic": "warning"},
    "dynamic-axes": {"tensorrt-8.6": "error", "tensorrt-10": "error", "openvino": None},
    # TensorRT casts DOUBLE down to FLOAT (its operator docs): a precision warning, not a refusal
    "float64": {"tensorrt-8.6": "warning", "tensorrt-10": "warning", "openvino": "warning", "ort-mobile": "warning"},
    "dynamic-topk-k": {"tensorrt-8.6": "warning", "tensorrt-10": "warning", "openvino": None},  # dynamic K: TRT >= 8.6
    "dynamic-slice-axes": {"tensorrt-8.6": "error", "tensorrt-10": "error"},
    "float-range-in-if": {"tensorrt-8.6": "error", "tensorrt-10": "error"},
    "opset": {"tensorrt-8.6": "error", "tensorrt-10": "error", "openvino": None, "generic": None},
    "unknown-op": {"tensorrt-10": "error", "generic": "error"},
}


def _branch_model():
    """A float Range on a graph input, inside an If branch."""
    branch = helper.make_graph(
        [helper.make_node("Range", ["zero", "limit", "one"], ["r"])], "then", [], [_float("r", ["n"])],
        [_const("zero", np.float32(0)), _const("one", np.float32(1))],
    )  # fmt: skip
    return _model(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)],
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []), _float("limit", [])],
        [_float("y", ["n"])],
    )


HOSTILE["dynamic-topk-k"] = _model(
    [helper.make_node("TopK", ["x", "k"], ["v", "i"])], [_float("x", [1, 50]), _int("k", [1])],
    [_float("v", [1, "k"]), _int("i", [1, "k"])],
)  # fmt: skip
HOSTILE["dynamic-slice-axes"] = _model(
    [helper.make_node("Slice", ["x", "s", "e", "axes"], ["y"])],
    [_float("x", [4, 4]), _int("s", [1]), _int("e", [1]), _int("axes", [1])], [_float("y", None)],
)  # fmt: skip
HOSTILE["float-range-in-if"] = _branch_model()
RULE_OF = {"dynamic-topk-k": "topk-k", "dynamic-slice-axes": "dynamic-axes", "float-range-in-if": "float-range"}


@pytest.mark.parametrize("rule", list(EXPECTED))
def test_each_hostile_pattern_is_found_with_a_fix(rule):
    for target, severity in EXPECTED[rule].items():
        report = check_target(HOSTILE[rule], target)
        found = [f for f in report.findings if f.rule == RULE_OF.get(rule, rule)]
        if severity is None:
            assert not found, report.text()
        else:
            assert found and {f.severity for f in found} == {severity}, report.text()
            assert found[0].fix
            assert report.accepted == (severity != "error")


def test_clean_model_and_a_constant_small_topk_pass_tensorrt():
    model = _model(
        [helper.make_node("TopK", ["x", "k"], ["v", "i"]), helper.make_node("ReduceSum", ["v", "axes"], ["s"])],
        [_float("x", [1, 100])],
        [_float("s", None), _int("i", [1, 3])],
        [_const("k", np.array([3], np.int64)), _const("axes", np.array([1], np.int64))],
    )
    assert check_target(model, "tensorrt-8.6").verdict == "accepted"


def test_constants_in_every_form_count_as_constants():
    """Constant(value_ints=...) as TopK k and Unsqueeze axes, Constant(value_float=...) as Range bounds."""
    model = _model(
        [
            helper.make_node("Constant", [], ["k"], value_ints=[3]),
            helper.make_node("TopK", ["x", "k"], ["v", "i"]),
            helper.make_node("Constant", [], ["axes"], value_ints=[0]),
            helper.make_node("Unsqueeze", ["v", "axes"], ["u"]),
            helper.make_node("Constant", [], ["a"], value_float=0.0),
            helper.make_node("Constant", [], ["b"], value_float=4.0),
            helper.make_node("Constant", [], ["d"], value_float=1.0),
            helper.make_node("Range", ["a", "b", "d"], ["r"]),
        ],
        [_float("x", [1, 10])],
        [_float("u", None), _int("i", [1, 3]), _float("r", [4])],
    )
    assert check_target(model, "tensorrt-8.6").verdict == "accepted", check_target(model, "tensorrt-8.6").text()


def test_functions_inside_are_checked_too():
    """A hostile node inside a local function body is found (it runs once inlined)."""
    body = helper.make_function("acme", "Bad", ["x"], ["y"], [helper.make_node("NonZero", ["x"], ["y"])],
                                [helper.make_opsetid("", 17)])  # fmt: skip
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Bad", ["x"], ["y"], domain="acme")], "g", [_float("x", [4])], [_int("y", [1, "n"])]
        ),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)],
        functions=[body],
        ir_version=8,
    )
    rules = {f.rule for f in check_target(model, "tensorrt-10").findings}
    assert rules == {"data-dependent-shape"}


def test_unknown_target_is_an_error():
    with pytest.raises(ValueError, match="target must be one of"):
        check_target(HOSTILE["opset"], "tensorrt-7")
    assert set(TARGETS) == {"tensorrt-8.6", "tensorrt-10", "openvino", "ort-mobile", "generic", "mnn", "ncnn", "litert"}


# --- trtexec lines ------------------------------------------------------------------------------------------


def test_trtexec_lines_with_profiles_from_the_export_sizes():
    name = "spatial_soft_argmax2d"
    model = finalize(_raw(name), opset=17, emit="inline")
    shape = json.loads({p.key: p.value for p in model.metadata_props}["kpx.example_shapes"])["input"]
    b, n, h, w = shape
    lo, opt, hi = f"1x{n // 2}x{h // 2}x{w // 2}", f"{b}x{n}x{h}x{w}", f"{4 * b}x{2 * n}x{2 * h}x{2 * w}"
    profile = f"--minShapes=input:{lo} --optShapes=input:{opt} --maxShapes=input:{hi}"
    assert trtexec_commands(model, "m.onnx", "tensorrt-8.6") == [
        f"trtexec --onnx=m.onnx {profile} --saveEngine=m.fp32.plan",
        f"trtexec --onnx=m.onnx {profile} --fp16 --saveEngine=m.fp16.plan  # TensorRT 8.6 may run kpx's float32 "
        "internals in fp16: compare this engine with the fp32 one before shipping it",
    ]
    lines = trtexec_commands(model, "m.onnx", "tensorrt-10", {"B": (1, 2, 8), "N": (17, 17, 17)})
    assert lines[0].startswith(f"trtexec --onnx=m.onnx --minShapes=input:1x17x{h // 2}x{w // 2} "
                               f"--optShapes=input:2x17x{h}x{w} --maxShapes=input:8x17x{2 * h}x{2 * w} ")  # fmt: skip


def test_trtexec_fp16_export_is_strongly_typed_on_tensorrt_10():
    spec = next(s for s in list_ops() if s.name == "spatial_softmax2d")
    sample = spec.export_sample()
    model = OpModel(spec, sample)
    proto = finalize(trace(model, model.example_inputs(), dtype="float16", input_names=model.input_names()),
                     opset=17, emit="inline")  # fmt: skip
    (line,) = trtexec_commands(proto, "h.onnx", "tensorrt-10")
    assert line.endswith("--stronglyTyped --saveEngine=h.fp16.plan") and "Shapes" not in line  # static: no profile
    (line,) = trtexec_commands(proto, "h.onnx", "tensorrt-8.6")
    assert "--fp16 --inputIOFormats=fp16:chw --outputIOFormats=fp16:chw" in line


def test_trtexec_quotes_paths_and_shares_one_profile_per_symbol():
    model = _model(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["z"], ["w"])],
        [_float("x", ["B", 3]), _float("z", ["B", 4])],
        [_float("y", ["B", 3]), _float("w", ["B", 4])],
    )
    line = trtexec_commands(model, "my models/h.onnx", "tensorrt-10", {"B": (1, 2, 4)})[0]
    assert line.startswith("trtexec --onnx='my models/h.onnx' --minShapes=x:1x3,z:1x4 --optShapes=x:2x3,z:2x4 ")
    assert line.endswith("--saveEngine='my models/h.fp32.plan'")
    with pytest.raises(ValueError, match=r"--profile \['Q'\]: not symbolic dims"):
        trtexec_commands(model, "m.onnx", "tensorrt-10", {"B": (1, 2, 4), "Q": (1, 1, 1)})


def test_trtexec_needs_sizes_for_dynamic_dims_without_export_sizes():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_float("x", ["B", 3])], [_float("y", ["B", 3])])
    with pytest.raises(ValueError, match="--profile B=MIN:OPT:MAX"):
        trtexec_commands(model, "m.onnx")
    assert "--minShapes=x:1x3 --optShapes=x:2x3 --maxShapes=x:4x3" in trtexec_commands(model, "m.onnx", "tensorrt-10",
                                                                                      {"B": (1, 2, 4)})[0]  # fmt: skip


# --- through the CLI ----------------------------------------------------------------------------------------


def test_cli_inspect_target_exit_codes_and_json(capsys, tmp_path):
    fn, inline = tmp_path / "fn.onnx", tmp_path / "inline.onnx"
    assert cli.main(["export", "builtin:spatial_soft_argmax2d", "-o", str(fn)]) == 0
    assert cli.main(["export", "builtin:spatial_soft_argmax2d", "-o", str(inline), "--emit", "inline",
                     "--opset", "17"]) == 0  # fmt: skip
    capsys.readouterr()
    assert cli.main(["inspect", str(fn), "--target", "tensorrt-8.6"]) == 1
    out = capsys.readouterr().out
    assert (
        "target tensorrt-8.6: REFUSED" in out
        and "fix: re-export with --emit inline (standard ONNX only) --opset 17" in out
    )
    assert cli.main(["inspect", str(inline), "--target", "tensorrt-8.6", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verdict"] == "accepted" and len(result["trtexec"]) == 2
    assert cli.main(["inspect", str(inline), "--target", "openvino"]) == 0
    assert cli.main(["inspect", str(inline), "--target", "tensorrt-10", "--profile", "B=4"]) == 2
    assert "NAME=MIN:OPT:MAX" in capsys.readouterr().err
