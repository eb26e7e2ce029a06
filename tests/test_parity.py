"""The parity harness: comparator statistics, reports, runners, and the op x emit x dtype x runtime matrix."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import custom_ops
from custom_ops import list_ops
from export_tools import to_onnx
from export_tools.models import OpModel
from export_tools.parity import SCHEMA, OrtRunner, RunnerUnavailableError, assert_parity, check_parity, compare_output

REQUIRE_CUDA = os.environ.get("KPX_REQUIRE_CUDA") == "1"


def cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


# --- comparator -------------------------------------------------------------------------------------------


def test_compare_passes_within_tolerance_and_reports_the_worst_index():
    expected = np.zeros((2, 3), np.float32)
    actual = expected.copy()
    actual[1, 2] = 5e-6
    stats = compare_output("y", expected, actual, rtol=0.0, atol=1e-5)
    assert stats.passed and stats.worst_index == [1, 2]
    assert stats.max_abs == pytest.approx(5e-6)
    assert not compare_output("y", expected, actual, rtol=0.0, atol=1e-6).passed


def test_compare_nan_and_inf_patterns_must_match():
    expected = np.array([1.0, np.nan, np.inf], np.float32)
    assert compare_output("y", expected, expected.copy(), 1e-5, 1e-5).passed
    moved_nan = np.array([np.nan, 1.0, np.inf], np.float32)
    stats = compare_output("y", expected, moved_nan, 1e-5, 1e-5)
    assert not stats.passed and not stats.nan_pattern_equal
    flipped_inf = np.array([1.0, np.nan, -np.inf], np.float32)
    stats = compare_output("y", expected, flipped_inf, 1e-5, 1e-5)
    assert not stats.passed and not stats.inf_pattern_equal


def test_compare_shape_mismatch_and_empty():
    assert not compare_output("y", np.zeros((2, 3)), np.zeros((3, 2)), 1e-5, 1e-5).passed
    assert compare_output("y", np.zeros((0, 3)), np.zeros((0, 3)), 1e-5, 1e-5).passed


def test_p99_and_mean_are_statistics_of_the_finite_errors():
    expected = np.zeros(1000)
    actual = np.zeros(1000)
    actual[:5] = 1.0  # 0.5% of the values
    stats = compare_output("y", expected, actual, 0.0, 2.0)
    assert stats.p99_abs == 0.0 and stats.max_abs == 1.0 and stats.mean_abs == pytest.approx(0.005)


# --- harness and report ---------------------------------------------------------------------------------


def test_assert_parity_on_adversarial_inputs_writes_a_versioned_report(tmp_path):
    model = custom_ops.SpatialSoftArgmax2d(normalized_coordinates=False)
    x = torch.randn(2, 3, 6, 5)
    nan_channel = x.clone()
    nan_channel[0, 1] = float("nan")
    inputs = {"random": (x,), "nan_channel": (nan_channel,), "empty_batch": (torch.randn(0, 3, 6, 5),)}
    report = assert_parity(model, inputs, runtimes=["cpu", "reference"], dynamic_shapes=({0: "B"},))
    assert report.passed and len(report.cases) == 8  # 3 sets + the example resized (B=3), on 2 runtimes
    doc = json.loads(report.write_json(tmp_path / "report.json").read_text())
    assert doc["schema"] == SCHEMA and doc["verdict"] == "pass"
    assert [i["name"] for i in doc["inputs"]] == ["random", "nan_channel", "empty_batch", "resized B=3"]
    assert doc["inputs"][-1]["shapes"] == [[3, 3, 6, 5]]
    assert {r["runtime"] for r in doc["runtimes"]} == {"torch", "ort-cpu", "onnx-reference"}
    assert "verdict: PASS" in report.table()


def test_a_departing_runtime_fails_with_the_table():
    """The ONNX file of a different temperature must not pass as the PyTorch model's."""
    x = torch.randn(2, 3, 6, 5)
    other = to_onnx(custom_ops.SpatialSoftArgmax2d(3.0), (x,)).SerializeToString()
    with pytest.raises(AssertionError, match="verdict: FAIL"):
        assert_parity(custom_ops.SpatialSoftArgmax2d(1.0), (x,), model=other)


def test_tolerance_overrides_by_output_name():
    # a 0.1 % temperature change moves each soft-argmax by ~1e-4 map px: the pixel verdict accepts that; a float
    # tolerance given for the output judges it in its own units instead
    x = torch.randn(1, 2, 4, 4)
    other = to_onnx(custom_ops.SpatialSoftArgmax2d(1.001), (x,)).SerializeToString()
    model = custom_ops.SpatialSoftArgmax2d(1.0)
    report = check_parity(model, (x,), model=other)
    keypoints = report.cases[0].outputs[0].keypoints
    assert report.passed and keypoints.units == "map px" and 0 < keypoints.max_px < 1e-3
    assert not check_parity(model, (x,), model=other, tolerances={"spatial_soft_argmax2d": (0.0, 1e-6)}).passed
    assert check_parity(model, (x,), model=other, tolerances={"spatial_soft_argmax2d": (0.0, 0.1)}).passed


def test_unknown_runtime_is_a_value_error():
    with pytest.raises(ValueError, match="runtime must be"):
        check_parity(custom_ops.SpatialSoftmax2d(), (torch.randn(1, 1, 2, 2),), runtimes=["tpu"])


@pytest.mark.skipif(cuda_available(), reason="this machine has a CUDA EP; the error path cannot be shown")
def test_cuda_requested_without_cuda_ep_is_an_error_with_the_fix():
    model = to_onnx(custom_ops.SpatialSoftmax2d(), (torch.randn(1, 1, 2, 2),)).SerializeToString()
    with pytest.raises(RunnerUnavailableError, match="fix: "):
        OrtRunner(model, "cuda")


# --- the matrix: every op x emit x dtype x runtime ------------------------------------------------------

MATRIX = [
    pytest.param(spec, sample, id=f"{spec.name}-{sample.name}") for spec in list_ops() for sample in spec.samples()[:1]
]


@pytest.mark.parametrize("runtime", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("emit", ["function", "inline"])
@pytest.mark.parametrize(("spec", "sample"), MATRIX)
def test_parity_matrix(spec, sample, emit, dtype, runtime):
    if runtime == "cuda" and not cuda_available():
        if REQUIRE_CUDA:
            pytest.fail("KPX_REQUIRE_CUDA=1 but onnxruntime has no CUDAExecutionProvider")
        pytest.skip("no CUDA execution provider (set KPX_REQUIRE_CUDA=1 to make this a failure)")
    model = OpModel(spec, sample).to(dtype)
    inputs = tuple(t.to(dtype) if t.is_floating_point() else t for t in model.example_inputs())
    model.args = [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in model.args]
    model.kwargs = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                    for k, v in model.kwargs.items()}  # fmt: skip
    proto = to_onnx(model, inputs, emit=emit, input_names=model.input_names())
    tolerance = spec.tolerances[dtype]  # from the registry, per op and dtype
    names = [o.name for o in proto.graph.output]
    report = check_parity(model, inputs, runtimes=[runtime], model=proto.SerializeToString(),
                          tolerances=dict.fromkeys(names, tolerance))  # fmt: skip
    assert report.passed, report.table()


# --- localisation ---------------------------------------------------------------------------------------


def _argmax_model() -> bytes:
    """Relu -> ArgMax -> Cast. With a NaN in a row ORT's ArgMax skips it, onnx.reference (numpy) picks it."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node("ArgMax", ["r"], ["a"], name="argmax", axis=1, keepdims=0),
            helper.make_node("Cast", ["a"], ["y"], name="cast", to=TensorProto.FLOAT),
        ],
        "argmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10).SerializeToString()


class TorchArgmax(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.argmax(torch.relu(x), dim=1).float()  # torch picks the NaN, like numpy


def test_first_divergence_names_the_node_where_ort_departs():
    from export_tools.parity import first_divergence

    x = np.array([[1.0, np.nan, 3.0, 2.0], [0.0, 1.0, 2.0, 3.0]], np.float32)
    found = first_divergence(_argmax_model(), [x])
    assert found is not None
    assert (found.node, found.op_type, found.output) == ("argmax", "ArgMax", "a")  # not relu (NaN in place)
    assert first_divergence(_argmax_model(), [np.nan_to_num(x)]) is None


def _cancellation_model(dtype: int = 1) -> bytes:
    """(x*x + 1e4) - 1e4 - x*x: zero in exact arithmetic; float32/float16 round x at the Add and show it at the Sub."""
    from onnx import helper, numpy_helper

    big = numpy_helper.from_array(np.array(1e4, helper.tensor_dtype_to_np_dtype(dtype)), "big")
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "x"], ["sq"], name="square"),
            helper.make_node("Add", ["sq", "big"], ["shifted"], name="shift"),
            helper.make_node("Sub", ["shifted", "big"], ["back"], name="unshift"),
            helper.make_node("Sub", ["back", "sq"], ["y"], name="residual"),
        ],
        "cancellation",
        [helper.make_tensor_value_info("x", dtype, ["B"])],
        [helper.make_tensor_value_info("y", dtype, ["B"])],
        [big],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10).SerializeToString()


def test_localisation_compares_against_float64_not_the_graph_precision():
    """ORT and a float32 numpy evaluation agree on the rounded values; the float64 truth names the node."""
    from onnx.reference import ReferenceEvaluator

    from export_tools.parity import first_divergence

    x = np.array([0.123456, 0.5, 0.987654], np.float32)
    model = _cancellation_model()
    float32_ref = ReferenceEvaluator(model).run(None, {"x": x}, intermediate=True)
    runner = OrtRunner(model)
    np.testing.assert_array_equal(runner.run([x])[0], float32_ref["y"])  # same-precision oracle sees nothing
    found = first_divergence(model, [x])
    assert found is not None
    # x*x + 1e4 keeps ~7 digits of the sum: relative error ~1e-8 passes; the Sub exposes it as ~1e-4 relative.
    assert (found.node, found.op_type, found.dtype) == ("unshift", "Sub", "float32")
    assert found.max_abs > 1e-5
    assert "float64 reference" in str(found)


def test_localisation_of_a_float16_graph_finds_the_overflowing_node():
    """x*x overflows float16 at x = 300 (90000 > 65504): the Mul is named, by its Inf pattern.

    (ORT CPU runs chains of float16 elementwise ops in float32 between inserted Casts, so the cancellation
    of the float32 test does not show in float16 on ORT; an overflow does.)"""
    from export_tools.parity import first_divergence

    model = _cancellation_model(10)  # 10 = FLOAT16
    found = first_divergence(model, [np.array([0.5, 300.0], np.float16)])
    assert found is not None
    assert (found.node, found.dtype, found.inf_pattern_equal) == ("square", "float16", False)
    assert first_divergence(model, [np.array([0.0, 4.0], np.float16)]) is None  # exact all the way


def test_promote_to_float64_changes_floats_only():
    import onnx
    import onnx.inliner

    from export_tools.graph import promote_to_float64

    x = torch.randn(2, 3, 5, 4)
    model = onnx.inliner.inline_local_functions(to_onnx(custom_ops.SpatialSoftArgmax2d(0.5), (x,)))
    promoted = promote_to_float64(model)
    onnx.checker.check_model(promoted)
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE for i in promoted.graph.input)
    casts = [a.i for n in promoted.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"]
    assert onnx.TensorProto.FLOAT not in casts
    assert onnx.TensorProto.BOOL in casts  # non-float casts untouched
    with pytest.raises(ValueError, match="inlined"):
        promote_to_float64(to_onnx(custom_ops.SpatialSoftArgmax2d(0.5), (x,)))


def test_failing_case_is_localised_in_the_report():
    x = torch.tensor([[1.0, float("nan"), 3.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    report = check_parity(TorchArgmax(), (x,), model=_argmax_model())
    assert not report.passed
    case, resized = report.cases  # the resized set (B=3, random values without NaN) agrees
    assert resized.inputs == "resized B=3" and resized.passed and resized.divergence is None
    assert case.divergence is not None and case.divergence.op_type == "ArgMax"
    assert "first diverging node" in report.table()


def test_kpx_functions_are_inlined_and_agree_node_by_node():
    """Every node inside the kpx function bodies agrees with onnx.reference on ORT CPU."""
    from export_tools.parity import first_divergence

    x = torch.randn(2, 3, 6, 5)
    x[0, 1] = float("nan")
    model = to_onnx(custom_ops.SpatialSoftArgmax2d(0.5, temperature_mode="divide"), (x,)).SerializeToString()
    assert first_divergence(model, [x.numpy()]) is None


# --- adversarial suites from the registry ---------------------------------------------------------------


@pytest.mark.parametrize("spec", [s for s in list_ops() if s.adversarial], ids=lambda s: s.name)
def test_adversarial_suite_parity_on_ort_cpu(spec):
    """Every op's SPEC bad inputs, through one dynamic export: same values and the same NaN/Inf places."""
    sample = spec.export_sample()
    model = OpModel(spec, sample)
    inputs = {"export_sample": model.example_inputs(), **spec.adversarial()}
    proto = to_onnx(model, model.example_inputs(), dynamic_shapes=model.dynamic_shapes(sample),
                    input_names=model.input_names())  # fmt: skip
    tolerance = spec.tolerances[torch.float32]
    names = [o.name for o in proto.graph.output]
    report = check_parity(model, inputs, runtimes=["cpu"], model=proto.SerializeToString(),
                          tolerances=dict.fromkeys(names, tolerance))  # fmt: skip
    assert report.passed, report.table()
    assert [c.inputs for c in report.cases][: len(inputs)] == list(inputs)  # then the resized example, if any


# --- inputs from the model: seeded random, .npz ---------------------------------------------------------


def _dynamic_head() -> tuple[torch.nn.Module, bytes]:
    model = custom_ops.SpatialSoftArgmax2d(normalized_coordinates=False)
    proto = to_onnx(model, (torch.randn(2, 3, 6, 5),), dynamic_shapes=({0: "B", 2: "H", 3: "W"},))
    return model, proto.SerializeToString()


def test_random_inputs_follow_the_specs_and_the_seed():
    from export_tools.parity import input_specs, random_inputs

    model, onnx_bytes = _dynamic_head()
    ((name, dtype, dims),) = input_specs(onnx_bytes)
    assert name == "input"
    assert dtype == np.float32 and dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))
    sizes = dict(zip((dims[0], dims[2], dims[3]), (4, 9, 7)))
    (a,) = random_inputs(onnx_bytes, dims=sizes, seed=3)
    (b,) = random_inputs(onnx_bytes, dims=sizes, seed=3)
    (c,) = random_inputs(onnx_bytes, dims=sizes, seed=4)
    assert a.shape == (4, 3, 9, 7) and np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="symbolic dims"):
        random_inputs(onnx_bytes)
    report = check_parity(model, {"random": (a,)}, model=onnx_bytes, input_meta={"random": {"seed": 3}})
    assert report.passed and report.as_dict()["inputs"][0]["seed"] == 3


def test_npz_inputs_are_matched_by_name_and_checked(tmp_path):
    from export_tools.parity import load_npz

    model, onnx_bytes = _dynamic_head()
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "ok.npz", input=x)
    (loaded,) = load_npz(tmp_path / "ok.npz", onnx_bytes)
    assert np.array_equal(loaded, x)
    assert check_parity(model, {"user": (loaded,)}, model=onnx_bytes).passed
    np.savez(tmp_path / "wrong_name.npz", images=x)
    with pytest.raises(ValueError, match="has no array 'input'"):
        load_npz(tmp_path / "wrong_name.npz", onnx_bytes)
    np.savez(tmp_path / "wrong_shape.npz", input=x[:, :2])
    with pytest.raises(ValueError, match="the model expects"):
        load_npz(tmp_path / "wrong_shape.npz", onnx_bytes)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_npz(tmp_path / "missing.npz", onnx_bytes)


# --- float64 truth and errors in pixels -----------------------------------------------------------------


def test_truth_adds_cases_against_float64_for_the_reference_and_each_runtime():
    x = torch.randn(2, 3, 16, 12) * 3
    report = check_parity(custom_ops.SpatialSoftArgmax2d(), {"random": (x,)}, runtimes=["cpu"], truth=True)
    pairs = [(c.runtime, c.reference) for c in report.cases]
    assert pairs == [("torch", "torch-float64"), ("ort-cpu", "torch-float64"), ("ort-cpu", "torch")]
    assert report.passed
    assert {r["runtime"] for r in report.runtimes} == {"torch", "torch-float64", "ort-cpu"}


def test_float16_model_is_judged_against_float64_truth_with_half_tolerances():
    model = custom_ops.SpatialSoftArgmax2d(normalized_coordinates=False).half()
    x = (torch.randn(2, 3, 8, 6) * 4).half()
    report = check_parity(model, (x,), runtimes=["cpu"], truth=True)
    truth_cases = [c for c in report.cases if c.reference == "torch-float64"]
    assert truth_cases and all(c.passed for c in truth_cases), report.table()
    assert all(o.dtype == "float16" and o.rtol == 1e-3 for c in truth_cases for o in c.outputs)


def test_coordinate_errors_in_pixels():
    expected = np.zeros((1, 2, 2))
    actual = np.array([[[0.01, 0.0], [0.0, 0.02]]])  # normalized units
    stats = compare_output("xy", expected, actual, 0.0, 1.0, pixels_per_unit=(47 / 2, 63 / 2))
    assert stats.max_abs == pytest.approx(0.02)
    assert stats.max_abs_px == pytest.approx(0.02 * 63 / 2)  # the y error dominates once scaled
    assert compare_output("xy", expected, actual, 0.0, 1.0).max_abs_px is None


# --- arguments -----------------------------------------------------------------------------------------------

_X = torch.randn(2, 3, 6, 5)
_SOFT = custom_ops.SpatialSoftArgmax2d()
BAD_PARITY_CALLS = {
    "a path as the module": (lambda: ("m.onnx", (_X,), {}), TypeError, "pass module=None, model=<path or bytes>"),
    "no input set": (lambda: (_SOFT, {}, {}), ValueError, "inputs is empty"),
    "an empty tuple": (lambda: (_SOFT, (), {}), ValueError, "input set 'inputs' is empty"),
    "inputs not tensors": (lambda: (_SOFT, ([1, 2],), {}), TypeError, "holds list"),
    "runtimes as a string": (lambda: (_SOFT, (_X,), {"runtimes": "cpu"}), TypeError, "list of names"),
    "no runtime": (lambda: (_SOFT, (_X,), {"runtimes": []}), ValueError, "runtimes is empty"),
    "a negative tolerance": (
        lambda: (_SOFT, (_X,), {"tolerances": {"spatial_soft_argmax2d": (-1e-5, 0.0)}}),
        ValueError,
        "finite and >= 0",
    ),
    "a tolerance for no output": (
        lambda: (_SOFT, (_X,), {"tolerances": {"coords": (1e-5, 1e-5)}}),
        ValueError,
        "outputs ['coords'] that the model does not have",
    ),
    "a tolerance that is not a pair": (
        lambda: (_SOFT, (_X,), {"tolerances": {"spatial_soft_argmax2d": 1e-5}}),
        ValueError,
        "must be (rtol, atol)",
    ),
    "truth without a module": (lambda: (None, (_X,), {"model": b"", "truth": True}), ValueError, "truth=True"),
    "neither module nor model": (lambda: (None, (_X,), {}), ValueError, "needs a module"),
    "too many inputs for the file": (
        lambda: (_SOFT, (_X, _X), {"model": to_onnx(_SOFT, (_X,))}),
        ValueError,
        "2 tensors; the model has 1 inputs (input)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PARITY_CALLS), ids=lambda c: c.replace(" ", "_"))
def test_bad_check_parity_arguments_name_the_argument(case):
    make, error, message = BAD_PARITY_CALLS[case]
    module, inputs, kwargs = make()
    with pytest.raises(error) as raised:
        check_parity(module, inputs, **kwargs)
    assert message in str(raised.value)


def test_check_parity_reads_a_model_path(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(to_onnx(custom_ops.SpatialSoftArgmax2d(), (_X,)).SerializeToString())
    assert check_parity(None, (_X,), model=path).passed
    assert check_parity(custom_ops.SpatialSoftArgmax2d(), (_X,), model=str(path)).passed


def test_fp16_file_is_judged_against_the_float32_module_on_rounded_inputs():
    """float32 inputs with an fp16 file: the runtime gets them rounded to half, PyTorch the same values in float32."""
    model = custom_ops.SpatialSoftArgmax2d(normalized_coordinates=False)
    x = torch.randn(2, 3, 8, 6) * 4
    half = to_onnx(model, (x,), dtype="float16").SerializeToString()
    report = check_parity(model, (x,), model=half, resized=False)
    assert report.passed, report.table()
    assert report.inputs[0]["dtypes"] == ["float16"] and report.cases[0].outputs[0].dtype == "float16"


# --- the float64 reference at the sizes people deploy ------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 48), (256, 192)])
@pytest.mark.parametrize("refine", ["none", "quarter", "dark"])
def test_float64_reference_runs_decode_heatmaps_at_real_sizes(size, refine):
    """onnx.reference's GatherElements used numpy.choose (at most 64 choices): every DecodeHeatmaps file with
    maps of 8x8 or more failed. The float64 evaluation now agrees with PyTorch in float64."""
    from export_tools.runtimes import ReferenceRunner

    x = torch.rand(2, 17, *size, generator=torch.Generator().manual_seed(0))
    model = custom_ops.DecodeHeatmaps(refine=refine)
    proto = to_onnx(model, (x,), dynamic_shapes=({0: "B", 1: "K", 2: "H", 3: "W"},)).SerializeToString()
    keypoints, scores = ReferenceRunner(proto, float64=True).run([x.numpy()])
    expected = model(x.double())
    # float64 throughout; DARK's blur kernel is stored as float32 constants, and its Newton step divides by
    # a Hessian: measured 1.5e-6 px at 256x192
    np.testing.assert_allclose(keypoints, expected[0].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(scores, expected[1].numpy())


def test_replacement_gather_elements_equals_onnx_s_own_where_it_runs():
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    from export_tools.runtimes.reference import evaluator

    rng = np.random.default_rng(0)
    for axis, shape in [(0, (5, 4)), (1, (3, 6)), (-1, (2, 3, 7)), (2, (2, 3, 7))]:
        data = rng.standard_normal(shape).astype(np.float32)
        n = shape[axis]
        indices = rng.integers(-n, n, size=shape).astype(np.int64)  # negative indices count from the end
        node = helper.make_node("GatherElements", ["d", "i"], ["y"], axis=axis)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("d", TensorProto.FLOAT, shape),
                                                helper.make_tensor_value_info("i", TensorProto.INT64, shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        ours = evaluator(model).run(None, {"d": data, "i": indices})[0]
        theirs = ReferenceEvaluator(model).run(None, {"d": data, "i": indices})[0]
        np.testing.assert_array_equal(ours, theirs)


def test_kpx_check_of_a_decode_file_at_real_size_against_float64(tmp_path, capsys):
    from export_tools import cli

    path = tmp_path / "decode.onnx"
    assert cli.main(["export", "builtin:decode_heatmaps", "-o", str(path)]) == 0
    code = cli.main(["check", str(path), "--dim", "B=2", "--dim", "K=17", "--dim", "H=64", "--dim", "W=48"])
    out = capsys.readouterr().out
    assert code == 0 and "onnx-ref-float64" in out and "verdict: PASS" in out


def test_fp16_argmax_flips_are_an_explained_fail_not_a_crash(tmp_path, capsys):
    """An fp16 export on near-flat maps (values 1 +- 3e-4, below float16's resolution at 1) moves keypoints by up to
    ~1.4 heatmap px through DARK: exit 1 with the table and the explanation (it once ended in 'ValueError: Need at
    least 0 and at most 64 array objects', exit 2). With weights 10x larger the same head moves them by 0.04 px and
    passes: that was a float-tolerance false alarm."""
    from export_tools import cli

    (tmp_path / "flat.py").write_text(
        "import torch, custom_ops\n\nclass Head(torch.nn.Module):  # a conv head whose maps are nearly flat\n"
        "    def __init__(self):\n        super().__init__()\n        torch.manual_seed(0)\n"
        "        self.conv = torch.nn.Conv2d(8, 17, 1)\n        torch.nn.init.constant_(self.conv.bias, 1.0)\n"
        "        self.conv.weight.data *= 1e-4\n        self.decode = custom_ops.DecodeHeatmaps(refine='dark')\n"
        "    def forward(self, features):\n        return self.decode(self.conv(features))\n\n"
        "def build():\n    return Head()\n"
    )
    code = cli.main(["export", f"{tmp_path / 'flat.py'}:build", "-o", str(tmp_path / "f.onnx"), "--input",
                     "features:2x8x64x48", "--dtype", "fp16", "--check"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1 and "verdict: FAIL" in out, out
    assert "rounding drift" in out or "ambiguous peak" in out, out


def test_localisation_that_fails_leaves_the_table_and_the_verdict(monkeypatch):
    import export_tools.parity as parity

    def broken(*args, **kwargs):
        raise ValueError("Need at least 0 and at most 64 array objects.")

    monkeypatch.setattr(parity, "first_divergence", broken)
    x = torch.tensor([[1.0, float("nan"), 3.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    report = check_parity(TorchArgmax(), (x,), model=_argmax_model(), resized=False)
    assert not report.passed
    assert report.cases[0].localisation.startswith("localisation unavailable: ValueError: Need at least 0")
    assert "localisation unavailable" in report.table() and "verdict: FAIL" in report.table()


def test_check_parity_restores_the_modules_training_mode():
    model = custom_ops.SpatialSoftArgmax2d().train()
    check_parity(model, (_X,), resized=False, isolate=False)
    assert model.training


def test_a_list_of_input_tuples_is_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"list of 2 input tuples; name the sets in a dict"):
        check_parity(_SOFT, [(_X,), (_X,)])


def test_a_tolerance_pair_with_none_keeps_that_default():
    """``tolerances={out: (rtol, None)}``: the given rtol, the output dtype's default atol (what ``--rtol`` alone
    means on the CLI); a float16 output keeps its own default, not float32's."""
    from export_tools.parity.compare import DEFAULT_TOLERANCES

    for dtype, key in ((None, "float32"), (torch.float16, "float16")):
        report = check_parity(_SOFT, (_X,), dtype=dtype, resized=False,
                              tolerances={"spatial_soft_argmax2d": (0.25, None)})  # fmt: skip
        (case,) = [c for c in report.cases if c.runtime == "ort-cpu"]
        (out,) = case.outputs
        assert (out.rtol, out.atol) == (0.25, DEFAULT_TOLERANCES[key][1]), (dtype, out)
    with pytest.raises(ValueError, match="finite and >= 0"):
        check_parity(_SOFT, (_X,), tolerances={"spatial_soft_argmax2d": (None, float("nan"))})


def test_model_bytes_that_are_not_onnx_are_a_usage_error_naming_them(tmp_path):
    from export_tools.errors import UsageError

    with pytest.raises(UsageError, match="model= holds 13 bytes that are not a readable ONNX model"):
        check_parity(None, (torch.randn(1, 2, 3, 3),), model=b"garbage bytes")
    (tmp_path / "bad.onnx").write_bytes(b"garbage bytes")
    with pytest.raises(UsageError, match=r"bad\.onnx' is not a readable ONNX file"):
        check_parity(None, (torch.randn(1, 2, 3, 3),), model=tmp_path / "bad.onnx")
