"""The op contract of docs/spec.md, checked once for every registered op.

One table-driven file, in the spirit of onnxscript's ``ops_test_data``: every test runs over
``custom_ops.list_ops()`` and the ops' ``samples()`` and knows nothing about any one op. What differs
between ops comes from the registry record (``custom_ops/registry.py``):

- the ONNX inputs: their names (the functional's parameter names), their type (``"T"``: a main
  input, computed in and setting the output dtype; ``"tensor(float)"``: a side input) and the shape
  legend at the start of their doc (``"logits (B, N, H, W)"``, ``"centres (*, 2) as (x, y)"``);
- the samples: the arguments of each call, the ranks of its tensors, and the dims that a dynamic
  sample names with docs/spec.md's shape letters (``B`` batch; ``N``/``K`` channels or keypoints);
- ``tolerances[torch.float32]``, for ONNX Runtime against PyTorch.

An op or argument that cannot take part in a test is listed in ``EXCEPTIONS`` with the reason;
those cases are collected and skipped with that reason (``pytest -rs`` lists them). The files
under tests/ops/ keep what is specific to one op: golden values, oracles (kornia, dsntnn, numpy
reimplementations), its own bad inputs and its own options.

Exports are shared: each op is traced once, as one module that calls the op once per sample
(dynamic samples keep their dynamic dims, renamed per call), and that trace is finalized as
``emit="function"`` and as ``emit="inline"``; every ONNX Runtime test here feeds those two sessions.
Half-precision exports are checked registry-wide in tests/test_fp16.py and the op x sample x opset
matrix in tests/test_export_matrix.py; they are not repeated here.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from custom_ops import DOMAIN, get_op, kpx_export, list_ops
from custom_ops.registry import DEFAULT_OPSET, OpSpec, Sample
from export_tools import EMIT_MODES, kpx_nodes
from export_tools.exporter import finalize, trace
from export_tools.models import OpModel
from tests.ops._ort import OrtModel

# --- exceptions: (test, op, argument) -> why that argument of that op does not take part ---------------------

EXCEPTIONS: dict[tuple[str, str, str], str] = {
    ("non_float_input_raises", "gaussian_heatmaps", "visibility"): (
        "docs/spec.md, 'visibility': any numeric or bool dtype is accepted (COCO's 0/1/2 flags work as they "
        "are); tests/ops/test_gaussian_heatmaps.py::test_integer_and_bool_visibility checks that"
    ),
    ("non_float_input_raises", "simcc_targets", "visibility"): (
        "docs/spec.md, 'visibility': any numeric or bool dtype is accepted, as for gaussian_heatmaps; "
        "tests/ops/test_simcc_targets.py checks bool and integer visibility"
    ),
    ("non_float_input_raises", "topdown_crop", "batch_index"): (
        "an index tensor: int64 (int32 accepted) is its valid dtype; float/bool/list/numpy raise, "
        "tests/ops/test_topdown_crop.py::test_bad_input_is_a_value_error_naming_the_argument checks that"
    ),
}

# --- the contract's vocabulary (docs/spec.md) -----------------------------------------------------------------

SPECS = list_ops()
EMITS = EMIT_MODES
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HALF_DTYPES = (torch.float16, torch.bfloat16)
#: "B == 0 or N/K == 0: empty outputs of the right shape" (shape letters: B batch, N channels, K keypoints)
EMPTY = {"batch": {"B"}, "channels": {"N", "K"}, "both": {"B", "N", "K"}}


def _swap_layout(x: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """The same values and shape, stored with axes ``a`` and ``b`` swapped in memory."""
    return x.transpose(a, b).contiguous().transpose(a, b)


#: non-contiguous forms of a tensor with the same values (None: the layout does not apply to that rank)
LAYOUTS: dict[str, Callable[[torch.Tensor], torch.Tensor | None]] = {
    "last_axes_swapped": lambda x: _swap_layout(x, -1, -2) if x.dim() >= 2 else None,
    "first_axes_swapped": lambda x: _swap_layout(x, 0, 1) if x.dim() >= 2 else None,
    "strided": lambda x: torch.stack([x, x], -1)[..., 0] if x.dim() >= 1 else None,  # every other element
    "channels_last": lambda x: x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else None,
}

#: non-float forms of a tensor argument
NON_FLOAT: dict[str, Callable[[torch.Tensor], Any]] = {
    "int64": lambda x: x.to(torch.int64),
    "int32": lambda x: x.to(torch.int32),
    "bool": lambda x: x > 0,
    "list": lambda x: x.tolist(),
    "numpy": lambda x: x.numpy(),
}


# --- helpers: everything from the spec and its samples ---------------------------------------------------------


def arguments(spec: OpSpec, sample: Sample) -> dict[str, Any]:
    """The sample's call as ``{parameter name: value}`` of the functional (what the sample passes)."""
    return dict(inspect.signature(spec.functional).bind(*sample.args, **sample.kwargs).arguments)


def outputs(value: Any) -> tuple[torch.Tensor, ...]:
    return value if isinstance(value, tuple) else (value,)


def call(spec: OpSpec, args: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return outputs(spec.functional(**args))


def main_inputs(spec: OpSpec) -> list[str]:
    """The ONNX inputs of type ``T`` (the others are float32 side inputs, docs/spec.md)."""
    return [p.name for p in spec.inputs if p.type_str == "T"]


def tensors(args: dict[str, Any]) -> list[str]:
    return [k for k, v in args.items() if isinstance(v, torch.Tensor)]


def legend(spec: OpSpec, name: str) -> str:
    """The shape legend an input's doc starts with, e.g. ``(B, N, H, W)`` or ``(*, 2)``."""
    doc = next(p.doc for p in spec.inputs if p.name == name)
    found = re.search(r"\([^()]*\)", doc)
    assert found, f"{spec.name}: the doc of input {name!r} gives no shape legend: {doc!r}"
    return found.group(0)


def legend_axes(spec: OpSpec, name: str) -> list[str]:
    """The legend's axes: ``["B", "K", "2"]``, ``["*", "2"]``."""
    return [a.strip() for a in legend(spec, name)[1:-1].split(",")]


def named_dims(spec: OpSpec, sample: Sample) -> dict[str, dict[int, str]]:
    """``{input name: {dim: shape letter}}`` of a dynamic sample."""
    names = OpModel(spec, sample).input_names()
    return {name: dict(dims or {}) for name, dims in zip(names, sample.dynamic or ())}


def resized(args: dict[str, Any], dims: dict[str, dict[int, str]], letters: set[str], size) -> dict[str, Any]:
    """``args`` with every dim named by one of ``letters`` resized to ``size(n)`` (repeating its first entry)."""
    out = dict(args)
    for name, named in dims.items():
        x = args[name]
        for dim, letter in named.items():
            if letter in letters:
                n, have = size(x.shape[dim]), x.shape[dim]
                x = x.narrow(dim, 0, n) if n <= have else torch.cat([x] + [x.narrow(dim, 0, 1)] * (n - have), dim)
        out[name] = x
    return out


def empty_shapes(spec: OpSpec, args: dict[str, Any], dims, letters: set[str]) -> list[tuple[int, ...]]:
    """The output shapes when the dims named by ``letters`` are 0: the output dims that grow with them."""
    base = call(spec, args)
    grown = call(spec, resized(args, dims, letters, lambda n: n + 1))
    shapes = []
    for b, g in zip(base, grown, strict=True):
        assert b.dim() == g.dim()
        shapes.append(tuple(0 if m != n else n for n, m in zip(b.shape, g.shape)))
    assert any(0 in s for s in shapes), f"{spec.name}: no output follows the dims named {sorted(letters)}"
    return shapes


def relayout(args: dict[str, Any], layout: str) -> dict[str, Any] | None:
    """Every tensor argument in ``layout`` (where it applies); None when no argument changes."""
    out, changed = dict(args), False
    for name in tensors(args):
        y = LAYOUTS[layout](args[name])
        if y is not None and not y.is_contiguous():
            out[name], changed = y, True
    return out if changed else None


def contiguous(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in args.items()}


def numbers_as_tensors(spec: OpSpec, args: dict[str, Any]) -> dict[str, Any]:
    """Python numbers passed for ONNX inputs (temperature, sigma) as 0-d tensors (docs/spec.md, 'Scalars')."""
    names = {p.name for p in spec.inputs}
    return {
        k: torch.tensor(float(v)) if k in names and isinstance(v, (int, float)) and not isinstance(v, bool) else v
        for k, v in args.items()
    }


def with_rank(x: torch.Tensor, rank: int) -> torch.Tensor:
    """``x``'s values with ``rank`` axes: leading axes merged, or leading axes of size 1 added."""
    if rank == 0:
        return x.flatten()[0]
    if rank < x.dim():
        return x.flatten(0, x.dim() - rank)
    return x.reshape((1,) * (rank - x.dim()) + tuple(x.shape))


def module_parameters(spec: OpSpec) -> tuple[dict, dict]:
    """The ``nn.Module`` twin's constructor and forward parameters (without ``self``)."""
    init = dict(inspect.signature(spec.module.__init__).parameters)
    forward = dict(inspect.signature(spec.module.forward).parameters)
    init.pop("self", None)
    forward.pop("self", None)
    return init, forward


def module_call(spec: OpSpec, args: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """The same call through the module twin: options to the constructor, tensors to forward, by name."""
    init, forward = module_parameters(spec)
    module = spec.module(**{k: v for k, v in args.items() if k in init})
    with torch.no_grad():
        return outputs(module(**{k: v for k, v in args.items() if k in forward}))


def assert_same(got, want, what: str = "") -> None:
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True, msg=lambda m, i=i: f"{what} output {i}: {m}")


def excepted(test: str, spec: OpSpec, arg: str = "*") -> list:
    """Marks for a case listed in EXCEPTIONS."""
    reason = EXCEPTIONS.get((test, spec.name, arg)) or EXCEPTIONS.get((test, spec.name, "*"))
    return [pytest.mark.skip(reason=f"exception: {reason}")] if reason else []


# --- parameters ----------------------------------------------------------------------------------------------------


def _case_id(spec: OpSpec, sample: Sample) -> str:
    return f"{spec.name}-{sample.name}"


CASES = [pytest.param(spec, sample, id=_case_id(spec, sample)) for spec in SPECS for sample in spec.samples()]
DYNAMIC_CASES = [
    pytest.param(spec, sample, id=_case_id(spec, sample))
    for spec in SPECS
    for sample in spec.samples()
    if sample.dynamic is not None
]
LAYOUT_CASES = [
    pytest.param(spec, sample, layout, id=f"{_case_id(spec, sample)}-{layout}")
    for spec in SPECS
    for sample in spec.samples()
    for layout in LAYOUTS
    if relayout(arguments(spec, sample), layout) is not None
]
SPEC_PARAMS = [pytest.param(spec, id=spec.name) for spec in SPECS]


def _has_numbers(spec: OpSpec, args: dict[str, Any]) -> bool:
    """Whether the call passes a Python number for an ONNX input."""
    converted = numbers_as_tensors(spec, args)
    return any(isinstance(converted[k], torch.Tensor) and not isinstance(v, torch.Tensor) for k, v in args.items())


def _variants(spec: OpSpec, sample: Sample) -> list[str]:
    return ["sample"] + (["numbers_as_tensors"] if _has_numbers(spec, arguments(spec, sample)) else [])


VARIANT_CASES = [
    pytest.param(spec, sample, variant, id=f"{_case_id(spec, sample)}-{variant}")
    for spec in SPECS
    for sample in spec.samples()
    for variant in _variants(spec, sample)
]
NUMBER_CASES = [
    pytest.param(spec, sample, id=_case_id(spec, sample))
    for spec in SPECS
    for sample in spec.samples()
    if _has_numbers(spec, arguments(spec, sample))
]


def _first_sample_with_tensor(spec: OpSpec, name: str) -> Sample:
    return next(s for s in spec.samples() if isinstance(arguments(spec, s).get(name), torch.Tensor))


def _tensor_arguments(spec: OpSpec) -> list[str]:
    names: list[str] = []
    for sample in spec.samples():
        names += [n for n in tensors(arguments(spec, sample)) if n not in names]
    return names


def _wrong_ranks(spec: OpSpec, name: str) -> list[int]:
    """Ranks next to the samples' that the input's legend rules out (``*``: any number of leading axes)."""
    seen = {arguments(spec, s)[name].dim() for s in spec.samples() if name in tensors(arguments(spec, s))}
    axes = legend_axes(spec, name)
    if "*" in axes:
        return [r for r in range(max(seen) + 2) if r < len(axes) - 1]
    return [r for r in range(max(seen) + 2) if r not in seen]


RANK_CASES = [
    pytest.param(spec, name, rank, id=f"{spec.name}-{name}-rank{rank}")
    for spec in SPECS
    for name in main_inputs(spec)
    if name in _tensor_arguments(spec)
    for rank in _wrong_ranks(spec, name)
]


def _last_axis_cases(spec: OpSpec, name: str) -> list:
    """Last axes other than the legend's number (the 2 of ``(B, K, 2)``), at the samples' rank and, for a
    legend with ``*``, at the lowest rank it allows."""
    axes = legend_axes(spec, name)
    if not axes[-1].isdigit():
        return []
    rank = arguments(spec, _first_sample_with_tensor(spec, name))[name].dim()
    ranks = sorted({rank, len(axes) - 1} if "*" in axes else {rank})
    n = int(axes[-1])
    return [(size, r) for r in ranks for size in (n - 1, n + 1) if size >= 1]


LAST_AXIS_CASES = [
    pytest.param(spec, name, size, rank, id=f"{spec.name}-{name}-rank{rank}-last{size}")
    for spec in SPECS
    for name in main_inputs(spec)
    if name in _tensor_arguments(spec)
    for size, rank in _last_axis_cases(spec, name)
]
NON_FLOAT_CASES = [
    pytest.param(
        spec, name, kind, id=f"{spec.name}-{name}-{kind}", marks=excepted("non_float_input_raises", spec, name)
    )
    for spec in SPECS
    for name in _tensor_arguments(spec)
    for kind in NON_FLOAT
]


def _mode_arguments(spec: OpSpec) -> list[str]:
    """The functional's mode strings: the parameters whose default is a str (``refine="none"``)."""
    return [n for n, p in inspect.signature(spec.functional).parameters.items() if isinstance(p.default, str)]


#: what a mode-string argument must refuse, by the default it replaces
BAD_MODES: dict[str, Callable[[str], Any]] = {
    "unknown": lambda default: "no-such-mode",
    "upper_case": lambda default: default.upper(),
    "none": lambda default: None,
    "number": lambda default: 1,
}
MODE_CASES = [
    pytest.param(spec, name, bad, id=f"{spec.name}-{name}-{bad}")
    for spec in SPECS
    for name in _mode_arguments(spec)
    for bad in BAD_MODES
]


def _size_arguments(spec: OpSpec) -> list[str]:
    """The static sizes: ``ints`` attributes that the functional takes by the same name (``size``, ``input_size``)."""
    parameters = inspect.signature(spec.functional).parameters
    return [a.name for a in spec.attributes if a.kind == "ints" and a.name in parameters]


#: sizes that are not two ints >= 1, and what the message must say about each (besides the argument's name)
BAD_SIZES: dict[str, tuple[Any, str]] = {
    "fraction": ((8.5, 8), "8.5 is a float, not an int"),
    "whole_float": ((8.0, 8), "8.0 is a float, not an int"),
    "numpy_float": ((np.float32(8.0), 8), "is a float32, not an int"),
    "float_tensor": (torch.tensor([8.0, 8.0]), "torch.float32 tensor, not an int"),
    "bool": ((True, 8), "True is a bool, not an int"),
    "zero": ((0, 8), "ints >= 1"),
    "negative": ((8, -3), "ints >= 1"),
    "one_value": ((8,), "two ints"),
    "three_values": ((8, 8, 8), "two ints"),
    "string": ("88", "two ints"),
    "number": (8, "two ints"),
    "none": (None, "two ints"),
}
SIZE_CASES = [
    pytest.param(spec, name, bad, id=f"{spec.name}-{name}-{bad}")
    for spec in SPECS
    for name in _size_arguments(spec)
    for bad in BAD_SIZES
]


# --- the nn.Module twin ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPEC_PARAMS)
def test_module_twin_takes_the_functionals_options_with_the_same_defaults(spec):
    """docs/spec.md: 'Each op also has an nn.Module twin with the same options.' Constructor and forward split
    the functional's parameters between them, by name, with the functional's defaults."""
    functional = dict(inspect.signature(spec.functional).parameters)
    init, forward = module_parameters(spec)
    assert not set(init) & set(forward), f"{spec.name}: {sorted(set(init) & set(forward))} in __init__ and forward"
    assert set(init) | set(forward) == set(functional)
    for name, param in (*init.items(), *forward.items()):
        assert param.default == functional[name].default, f"{spec.name}: default of {name!r}"


@pytest.mark.parametrize(("spec", "sample", "variant"), VARIANT_CASES)
def test_module_equals_functional(spec, sample, variant):
    args = arguments(spec, sample)
    if variant == "numbers_as_tensors":
        args = numbers_as_tensors(spec, args)
    assert_same(module_call(spec, args), call(spec, args))


@pytest.mark.parametrize(("spec", "sample"), CASES)
def test_module_defaults_equal_functional_defaults(spec, sample):
    """Only the arguments without a default: the module's defaults give the functional's result."""
    params = inspect.signature(spec.functional).parameters
    required = {k: v for k, v in arguments(spec, sample).items() if params[k].default is inspect.Parameter.empty}
    assert_same(module_call(spec, required), call(spec, required))


@pytest.mark.parametrize(("spec", "sample"), NUMBER_CASES)
def test_one_element_tensor_equals_the_number(spec, sample):
    """docs/spec.md, 'Scalars': a Python number or a 0-d tensor (e.g. a learned temperature), same result."""
    args = arguments(spec, sample)
    for got, want in zip(call(spec, numbers_as_tensors(spec, args)), call(spec, args), strict=True):
        torch.testing.assert_close(got, want, equal_nan=True)


# --- dtypes ---------------------------------------------------------------------------------------------------------


def _dtype_cases() -> list:
    cases = []
    for spec in SPECS:
        which = ["main"] + (["every_T_input"] if len(main_inputs(spec)) > 1 else [])
        for sample in spec.samples():
            for variant in _variants(spec, sample):
                for cast in which:
                    for dtype in DTYPES:
                        name = f"{_case_id(spec, sample)}-{variant}-{cast}-{str(dtype).removeprefix('torch.')}"
                        cases.append(pytest.param(spec, sample, variant, cast, dtype, id=name))
    return cases


@pytest.mark.parametrize(("spec", "sample", "variant", "cast", "dtype"), _dtype_cases())
def test_output_dtype_is_the_main_inputs(spec, sample, variant, cast, dtype):
    """docs/spec.md, 'Dtypes': every output has the dtype of the main input, the op's first ONNX input
    (``mean`` for render_gaussian2d, ``keypoints`` for gaussian_heatmaps and heatmap_to_image), whatever the
    dtype of the side inputs (float32 tensors, or Python numbers)."""
    assert spec.inputs[0].type_str == "T", f"{spec.name}: the first ONNX input must be the main input (type T)"
    args = arguments(spec, sample)
    if variant == "numbers_as_tensors":
        args = numbers_as_tensors(spec, args)
    names = [spec.inputs[0].name] if cast == "main" else main_inputs(spec)
    args = {k: v.to(dtype) if k in names and isinstance(v, torch.Tensor) else v for k, v in args.items()}
    for out, p in zip(call(spec, args), spec.outputs, strict=True):
        assert out.dtype == dtype, f"{spec.name}: output {p.name!r} is {out.dtype} for a {dtype} {names[0]}"


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=["float16", "bfloat16"])
@pytest.mark.parametrize(("spec", "sample"), CASES)
def test_half_precision_is_float32_rounded_once(spec, sample, dtype):
    """docs/spec.md, 'Dtypes': float16 and bfloat16 are computed in float32 and rounded to the output dtype once at
    the end, so the result is the float32 result on the same (widened) numbers, rounded: bit for bit."""
    half = {k: v.to(dtype) if k in main_inputs(spec) and isinstance(v, torch.Tensor) else v
            for k, v in arguments(spec, sample).items()}  # fmt: skip
    widened = {k: v.float() if k in main_inputs(spec) and isinstance(v, torch.Tensor) else v for k, v in half.items()}
    got, want = call(spec, half), call(spec, widened)
    for out in got:
        assert out.dtype == dtype
    assert_same(got, [w.to(dtype) for w in want], f"{spec.name} {dtype}")


# --- layouts and empty inputs in PyTorch ------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "sample", "layout"), LAYOUT_CASES)
def test_non_contiguous_input_gives_the_contiguous_result_in_pytorch(spec, sample, layout):
    """docs/spec.md, 'Bad input': non-contiguous or channels-last input gives the numbers of ``.contiguous()``."""
    strided = relayout(arguments(spec, sample), layout)
    assert_same(call(spec, strided), call(spec, contiguous(strided)), layout)


@pytest.mark.parametrize("which", EMPTY)
@pytest.mark.parametrize(("spec", "sample"), DYNAMIC_CASES)
def test_empty_batch_or_channels_in_pytorch(spec, sample, which):
    """docs/spec.md, 'Bad input': ``B == 0`` or ``N``/``K == 0`` gives empty outputs of the right shape."""
    args, dims = arguments(spec, sample), named_dims(spec, sample)
    if not any(letter in EMPTY[which] for named in dims.values() for letter in named.values()):
        pytest.skip(f"sample names no {sorted(EMPTY[which])} dim")
    expected = empty_shapes(spec, args, dims, EMPTY[which])
    got = call(spec, resized(args, dims, EMPTY[which], lambda n: 0))
    assert [tuple(o.shape) for o in got] == expected
    dtype = args[spec.inputs[0].name].dtype
    assert all(o.dtype == dtype for o in got)


# --- wrong input ----------------------------------------------------------------------------------------------------


def _assert_names(error: ValueError, *parts: str) -> None:
    message = str(error)
    for part in parts:
        assert part in message, f"{part!r} is not in the error message: {message}"


@pytest.mark.parametrize(("spec", "name", "rank"), RANK_CASES)
def test_wrong_rank_raises_naming_the_argument_and_the_shapes(spec, name, rank):
    """docs/spec.md, 'Bad input': a wrong rank is a ValueError naming the expected shape and the shape received.
    The ranks are the main inputs' (type T); side inputs have op-specific shapes, tested in the op's file."""
    args = arguments(spec, _first_sample_with_tensor(spec, name))
    bad = with_rank(args[name], rank)
    with pytest.raises(ValueError) as info:
        spec.functional(**{**args, name: bad})
    _assert_names(info.value, name, legend(spec, name), str(tuple(bad.shape)))


@pytest.mark.parametrize(("spec", "name", "size", "rank"), LAST_AXIS_CASES)
def test_wrong_last_axis_raises_naming_the_argument_and_the_shapes(spec, name, size, rank):
    """docs/spec.md, 'Bad input': a wrong last axis (the legend's number, e.g. the 2 of ``(B, K, 2)``) is a
    ValueError naming the expected shape and the shape received."""
    args = arguments(spec, _first_sample_with_tensor(spec, name))
    x = with_rank(args[name], rank) if rank < args[name].dim() else args[name]
    bad = torch.cat([x, x], -1).narrow(-1, 0, size)
    with pytest.raises(ValueError) as info:
        spec.functional(**{**args, name: bad})
    _assert_names(info.value, name, legend(spec, name), str(tuple(bad.shape)))


@pytest.mark.parametrize(("spec", "name", "kind"), NON_FLOAT_CASES)
def test_non_float_input_raises(spec, name, kind):
    """docs/spec.md, 'Dtypes': a non-floating tensor (or no tensor at all) is a ValueError naming the argument."""
    args = arguments(spec, _first_sample_with_tensor(spec, name))
    with pytest.raises(ValueError) as info:
        spec.functional(**{**args, name: NON_FLOAT[kind](args[name])})
    _assert_names(info.value, name)


def _module_arguments(spec: OpSpec) -> dict[str, Any]:
    """The first sample's arguments that the module's constructor takes."""
    init, _ = module_parameters(spec)
    return {k: v for k, v in arguments(spec, spec.samples()[0]).items() if k in init}


@pytest.mark.parametrize(("spec", "name", "bad"), MODE_CASES)
def test_bad_mode_string_raises_naming_the_argument_and_every_choice(spec, name, bad):
    """docs/spec.md, 'Bad input': a bad mode string is a ValueError listing the accepted values, each with its
    meaning, and what came; in the functional and at the module's construction."""
    default = inspect.signature(spec.functional).parameters[name].default
    value = BAD_MODES[bad](default)
    with pytest.raises(ValueError) as info:
        spec.functional(**{**arguments(spec, spec.samples()[0]), name: value})
    _assert_names(info.value, f"{name} must be ", f"{default!r} (", f"; got {value!r}")
    if name in module_parameters(spec)[0]:
        with pytest.raises(ValueError) as info:
            spec.module(**{**_module_arguments(spec), name: value})
        _assert_names(info.value, f"{name} must be ", f"{default!r} (", f"; got {value!r}")


@pytest.mark.parametrize(("spec", "name", "bad"), SIZE_CASES)
def test_bad_static_size_raises_naming_the_argument(spec, name, bad):
    """docs/spec.md, 'Bad input': a static size that is not two ints >= 1 is a ValueError naming the argument, in
    the functional and at the module's construction; a float or a bool is refused, never rounded (``(8.5, 8)``
    rendered 8x8 before)."""
    value, says = BAD_SIZES[bad]
    args = arguments(spec, spec.samples()[0])
    with pytest.raises(ValueError) as info:
        spec.functional(**{**args, name: value})
    _assert_names(info.value, f"{name}", says)
    assert str(info.value).startswith(name), str(info.value)
    with pytest.raises(ValueError) as info:
        spec.module(**{**_module_arguments(spec), name: value})
    _assert_names(info.value, f"{name}", says)


# --- exported: one node per call, layouts and empty inputs on ONNX Runtime --------------------------------------------


class Calls(torch.nn.Module):
    """Calls the op once per sample; its inputs are the samples' tensors, one sample after the other."""

    def __init__(self, spec: OpSpec) -> None:
        super().__init__()
        self.spec = spec
        self.samples = spec.samples() * (2 if len(spec.samples()) == 1 else 1)  # at least two calls
        self.calls = torch.nn.ModuleList(OpModel(spec, s) for s in self.samples)
        self.names = [m.input_names() for m in self.calls]

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs, start = [], 0
        for model, names in zip(self.calls, self.names):
            outs += outputs(model(*inputs[start : start + len(names)]))
            start += len(names)
        return tuple(outs)

    def feeds(self, per_sample: list[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
        """The model inputs from one ``{name: value}`` per sample."""
        return tuple(args[n] for args, names in zip(per_sample, self.names) for n in names)

    def sample_arguments(self) -> list[dict[str, Any]]:
        """Each sample's arguments, tensors cloned (samples may share a tensor; inputs may not alias)."""
        return [{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in arguments(self.spec, s).items()}
                for s in self.samples]  # fmt: skip

    def dynamic_shapes(self) -> tuple:
        """The samples' dynamic dims, each letter renamed per call (``B`` of call 2 is ``B_2``)."""
        dims: list = []
        for i, (sample, names) in enumerate(zip(self.samples, self.names)):
            named = list(sample.dynamic or ()) + [None] * len(names)
            dims += [{d: f"{letter}_{i}" for d, letter in n.items()} if n else None for n in named[: len(names)]]
        return (tuple(dims),)

    def split(self, flat: list) -> list[list]:
        """The flat outputs, one list per call."""
        k = len(self.spec.outputs)
        return [list(flat[i * k : (i + 1) * k]) for i in range(len(self.samples))]


@functools.cache
def calls_model(name: str) -> Calls:
    return Calls(get_op(name))


@functools.cache
def _traced(name: str):
    model = calls_model(name)
    return model, trace(model, model.feeds(model.sample_arguments()), dynamic_shapes=model.dynamic_shapes())


@functools.cache
def exported(name: str, emit: str) -> tuple[Calls, OrtModel]:
    """The op's all-samples module, traced once, finalized in ``emit`` mode and loaded on ORT CPU."""
    model, raw = _traced(name)
    return model, OrtModel.from_proto(finalize(raw, opset=DEFAULT_OPSET, emit=emit))


@functools.cache
def torch_op_attributes(name: str) -> list[dict[str, Any]]:
    """Per call of the all-samples module, the attributes its torch op call encodes (``torch.export``)."""
    spec, model = get_op(name), calls_model(name)
    with kpx_export():  # inside kpx's exporter a kpx op is its torch custom op (elsewhere: the reference)
        program = torch.export.export(model, model.feeds(model.sample_arguments()), strict=False)
    names = [p.name for p in spec.inputs] + [a.name for a in spec.attributes]
    calls = [n for n in program.graph.nodes if n.op == "call_function" and n.target == spec.torch_op.default]
    out = []
    for node in calls:
        bound = dict(zip(names, node.args)) | dict(node.kwargs)
        values = {a.name: a.encode(bound[a.name]) for a in spec.attributes}
        # an ONNX float attribute is a float32
        out.append({k: float(np.float32(v)) if isinstance(v, float) else v for k, v in values.items()})
    return out


def node_attributes(spec: OpSpec, node) -> dict[str, Any]:
    """The node's attributes, with the spec's defaults for those it leaves out."""
    values = {a.name: a.default for a in spec.attributes}
    for attr in node.attribute:
        values[attr.name] = list(attr.ints) if attr.type == attr.INTS else attr.f if attr.type == attr.FLOAT else attr.i
    return values


@pytest.mark.parametrize("emit", EMITS)
@pytest.mark.parametrize("spec", SPEC_PARAMS)
def test_one_kpx_node_per_call_and_ort_parity(spec, emit):
    """docs/spec.md, 'One node per call': a module calling the op once per sample exports one ``kpx`` node per
    call, each with its own call's attributes, and the function body once; ``emit="inline"`` leaves no kpx node,
    function or domain. Both run on ONNX Runtime CPU like PyTorch (the op's float32 tolerances)."""
    model, ort = exported(spec.name, emit)
    proto = ort.proto
    if emit == "function":
        nodes = kpx_nodes(proto)
        assert [n.op_type for n in nodes] == [spec.onnx_op_type] * len(model.samples)
        assert [(f.domain, f.name) for f in proto.functions] == [(DOMAIN, spec.onnx_op_type)]
        expected = torch_op_attributes(spec.name)
        assert len(expected) == len(nodes)
        for node, want, sample in zip(nodes, expected, model.samples, strict=True):
            assert len(node.output) == len(spec.outputs)
            assert node_attributes(spec, node) == want, f"{spec.name} sample {sample.name!r}"
    else:
        assert not proto.functions and not kpx_nodes(proto)
        assert DOMAIN not in {o.domain for o in proto.opset_import}
    feeds = model.feeds(model.sample_arguments())
    with torch.no_grad():
        want = model(*feeds)
    got = ort(*feeds)
    rtol, atol = spec.tolerances[torch.float32]  # reasons beside the table in the op's file
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=rtol, atol=atol, err_msg=f"{spec.name} output {i}")


ORT_LAYOUT_CASES = [
    pytest.param(spec, emit, layout, id=f"{spec.name}-{emit}-{layout}")
    for spec in SPECS
    for emit in EMITS
    for layout in LAYOUTS
    if any(relayout(arguments(spec, s), layout) is not None for s in spec.samples())
]


@pytest.mark.parametrize(("spec", "emit", "layout"), ORT_LAYOUT_CASES)
def test_non_contiguous_input_gives_the_contiguous_result_on_ort(spec, emit, layout):
    """docs/spec.md, 'Bad input': the same numbers as ``.contiguous()``, also through ORT's input binding."""
    model, ort = exported(spec.name, emit)
    per_sample = [relayout(args, layout) or args for args in model.sample_arguments()]
    assert_same(ort(*model.feeds(per_sample)), ort(*model.feeds([contiguous(a) for a in per_sample])), layout)


@pytest.mark.parametrize("which", EMPTY)
@pytest.mark.parametrize("emit", EMITS)
@pytest.mark.parametrize("spec", SPEC_PARAMS)
def test_empty_batch_or_channels_on_ort(spec, emit, which):
    """docs/spec.md, 'Bad input': empty outputs of the right shape (bodies use only non-negative reduce axes).
    Every dynamic sample's dims named by the letters are 0 at once; static samples keep their inputs."""
    model, ort = exported(spec.name, emit)
    per_sample, expected = [], []
    for sample, args in zip(model.samples, model.sample_arguments()):
        dims = named_dims(spec, sample) if sample.dynamic is not None else {}
        if any(letter in EMPTY[which] for named in dims.values() for letter in named.values()):
            expected.append(empty_shapes(spec, args, dims, EMPTY[which]))
            args = resized(args, dims, EMPTY[which], lambda n: 0)
        else:
            expected.append([tuple(o.shape) for o in call(spec, args)])
        per_sample.append(args)
    got = model.split(ort(*model.feeds(per_sample)))
    for sample, outs, shapes, args in zip(model.samples, got, expected, per_sample, strict=True):
        assert [tuple(o.shape) for o in outs] == shapes, f"{spec.name} sample {sample.name!r}"
        assert all(o.dtype == args[spec.inputs[0].name].dtype for o in outs)
