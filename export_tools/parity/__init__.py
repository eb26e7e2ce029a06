"""Parity harness: run an exported model on several runtimes and compare with PyTorch.

``assert_parity(module, inputs)`` is the entry point for users' own test suites; ``kpx export --check``
and ``kpx check`` call :func:`check_parity` with the same defaults, so the library and the command line
judge a file the same way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from custom_ops.registry import DEFAULT_OPSET
from export_tools.errors import (
    KpxError,
    LocalFunctionsUnsupportedError,
    RunFailedError,
    RunnerUnavailableError,
    UsageError,
    one_line,
)
from export_tools.parity.compare import OutputStats, compare_output
from export_tools.parity.inputs import input_specs, load_npz, random_inputs
from export_tools.parity.judge import DecoderProbe, Judge
from export_tools.parity.keypoints import DEFAULT_PX_TOL, KeypointStats
from export_tools.parity.lanes import Lane
from export_tools.parity.localize import Divergence, first_divergence
from export_tools.parity.pytorch import TorchRunner, corresponding_module, flatten_outputs
from export_tools.parity.report import SCHEMA, Case, ParityReport
from export_tools.parity.where import ModuleDivergence, first_departing_module
from export_tools.runtimes import (
    OPENVINO_READS_LOCAL_FUNCTIONS,
    OpenVinoRunner,
    OrtFormatRunner,
    OrtRunner,
    ReferenceRunner,
    get_runner,
    runtime_names,
)

__all__ = [
    "DEFAULT_PX_TOL",
    "OPENVINO_READS_LOCAL_FUNCTIONS",
    "SCHEMA",
    "Case",
    "Divergence",
    "KeypointStats",
    "LocalFunctionsUnsupportedError",
    "ModuleDivergence",
    "OpenVinoRunner",
    "OrtFormatRunner",
    "OrtRunner",
    "OutputStats",
    "ParityReport",
    "ReferenceRunner",
    "RunnerUnavailableError",
    "TorchRunner",
    "assert_parity",
    "check_parity",
    "compare_output",
    "first_departing_module",
    "first_divergence",
    "flatten_outputs",
    "input_specs",
    "load_npz",
    "random_inputs",
    "runtime_names",
]


def check_parity(
    module: torch.nn.Module | None,
    inputs: Mapping[str, Sequence[Any]] | Sequence[Any],
    *,
    runtimes: Sequence[str] = ("cpu",),
    emit: str = "function",
    opset: int = DEFAULT_OPSET,
    dynamic_shapes: Any = None,
    dtype: torch.dtype | str | None = None,
    tolerances: Mapping[str, tuple[float | None, float | None]] | None = None,
    model: bytes | str | os.PathLike | Any = None,
    localize: bool = True,
    input_meta: Mapping[str, Mapping[str, Any]] | None = None,
    truth: bool = False,
    pixels_per_unit: Mapping[str, tuple[float, float]] | None = None,
    resized: bool = True,
    isolate: bool = True,
    timeout: float | None = None,
    memory_limit_mb: float | None = None,
    runtime_options: Mapping[str, Mapping[str, Any]] | None = None,
    px_tol: float | None = None,
    allow_flips: float = 0.0,
    scale_tol: float | None = None,
    analyse_keypoints: bool = False,
    reference_model: bytes | str | os.PathLike | Any = None,
    min_score: float | None = None,
) -> ParityReport:
    """Exports ``module`` (unless ``model`` is given) and compares every runtime with PyTorch.

    Args:
        module: the PyTorch reference. ``None`` (with ``model`` given): the reference is a float64
            evaluation of the ONNX graph itself with onnx.reference. For a file kpx exported with a decoder
            (``--decode``: ``kpx.pose`` in its metadata), the network alone will do: the same decoder is rebuilt
            around it. A module whose outputs do not correspond to the file's is a :class:`UsageError`.
        inputs: one input tuple, or named input tuples (``{"peaked": (x,), "empty": (x0,)}``); the
            first set is the export example. Tensors or numpy arrays.
        runtimes: names from the runtime table (:func:`runtime_names`: ``"cpu"``, ``"cuda"``, ``"openvino"``,
            ``"ort-mobile"``, ``"reference"``, ``"mnn"``, ``"ncnn"``, ``"executorch"``, ``"litert"``). One that
            cannot run here raises :class:`RunnerUnavailableError` naming the fix. ``"executorch"`` runs the
            PyTorch ``module`` lowered by ``torch.export`` to XNNPACK (at each input set's shapes), not the file.
        emit, opset, dynamic_shapes: export options when ``module`` is exported here.
        dtype: export dtype (e.g. ``torch.float16``) when ``module`` is exported here.
        tolerances: ``{output_name: (rtol, atol)}`` overrides (names of the ONNX graph outputs); ``None`` for
            either keeps its default. Default: the op's registry tolerances for a one-op model
            (``export_tools.models.OpModel``), else by output dtype. ``scale_tol``: the share of each output's
            largest |value| added to ``atol`` (default by dtype: 1e-5 float32, 5e-3 float16, docs/parity.md; 0 where
            ``tolerances`` or the registry set the output's tolerance).
        px_tol: keypoint outputs (the file's ``kpx.outputs``, or ``pixels_per_unit``) are judged by each
            keypoint's displacement in pixels (network-input pixels for files that map through boxes), at most
            ``px_tol`` (default 0.1). ``allow_flips``: the share of keypoints that may move further because their
            peak changed between two near-equal peaks (ambiguous peaks; default 0: they fail the check).
        model: the ONNX model to judge instead of exporting: bytes, an ``onnx.ModelProto`` or a path.
        localize: on a mismatch, name the first node that departs from a float64 evaluation and, against a
            PyTorch module, the first module whose output departs from PyTorch's (``Case.where``).
        input_meta: per input set, extra facts for the report (``{"random": {"seed": 0}}``).
        truth: also run PyTorch in float64 and compare the model-dtype reference and every runtime
            with it (cases whose ``reference`` is ``torch-float64``).
        pixels_per_unit: ``{output_name: (sx, sy)}``: judge these coordinate outputs in pixels (``(x, y)``
            units times ``(sx, sy)``), overriding what the file says.
        resized: with a PyTorch module and a graph with symbolic dims, also check an input set with every
            symbolic dim one larger than in the first set (a size baked into the graph shows there).
        isolate: run each runtime in a worker process (default), so that a crash, a hang past ``timeout``
            seconds (default 600 per load or run) or an allocation beyond ``memory_limit_mb`` becomes a failed
            case (``Case.failure``) while the other runtimes still report. A runtime that *crashed* is
            retried with its safer options (ONNX Runtime: lower graph optimisation levels), and both results
            are reported. ``isolate=False`` runs them in this process.
        runtime_options: options per runtime name, e.g. ``{"cpu": {"optimization_level": "extended"}}``.
        analyse_keypoints: read the decoder's inputs on both sides even when no keypoint moved (for
            :func:`export_tools.parity.plot.plot_report`).
        reference_model: an ONNX file as the reference instead of ``module`` (bytes, a path or a ``ModelProto``;
            CLI: ``kpx check QUANT.onnx --reference FP32.onnx``): run on ONNX Runtime CPU in this process
            (:class:`~export_tools.parity.onnxref.OnnxReference`), for an INT8 file against its float32 original.
            Keypoints then also report how many confident ones moved by more than one heatmap pixel (or SimCC bin),
            and a changed peak is an ambiguous flip when the reference's two peaks differ by less than twice the
            two files' heatmap difference there. ``min_score``: a keypoint is confident when the reference's score
            is at least this (default: half the largest score of the input set).

    Each input is fed to the runtimes in the graph input's dtype (float32 values are rounded to a
    float16 input, as a user of an fp16 file would feed them). PyTorch gets the same rounded values in
    the dtype it was given: float32 inputs with an fp16 file judge the export against the float32 model
    on the same numbers.
    """
    from export_tools.exporter import resolve_dtype, to_onnx

    if module is not None and not isinstance(module, torch.nn.Module):
        hint = " (to check an ONNX file, pass module=None, model=<path or bytes>)" if isinstance(module, str) else ""
        raise TypeError(f"module must be a torch.nn.Module or None; got {type(module).__name__}{hint}")
    sets = _input_sets(inputs)
    runtimes = _names(runtimes, "runtimes")
    if len(set(runtimes)) != len(runtimes):
        raise ValueError(f"runtimes names a runtime twice: {runtimes}")
    isolation = _isolation(isolate, timeout, memory_limit_mb)
    runtime_options = _runtime_options(runtime_options, runtimes)
    for kind in runtimes:
        get_runner(kind).check_available()  # before any work: a missing runtime names its fix
    dtype = resolve_dtype(dtype)
    if reference_model is not None and (module is not None or truth):
        raise ValueError("reference_model replaces module as the reference: give one of them (and no truth=True)")
    if module is None and model is None:
        raise ValueError("check_parity needs a module, or model=... to judge against its own float64 evaluation")
    if truth and module is None:
        raise ValueError("truth=True needs a PyTorch module (it runs the module in float64)")
    if model is None:
        first = tuple(torch.as_tensor(t) for t in next(iter(sets.values())))
        proto = to_onnx(module, first, emit=emit, opset=opset, dynamic_shapes=dynamic_shapes, dtype=dtype)
    else:
        proto = _load_model(model)
    data = proto.SerializeToString()
    judge = Judge(proto, module, tolerances=tolerances, scale_tol=scale_tol, pixels_per_unit=pixels_per_unit,
                  px_tol=px_tol, allow_flips=allow_flips, min_score=min_score,
                  grid_stats=reference_model is not None)  # fmt: skip
    names = judge.names
    specs = input_specs(data)
    for set_name, tensors in sets.items():
        if len(tensors) != len(specs):
            raise ValueError(f"input set {set_name!r} has {len(tensors)} tensors; the model has {len(specs)} inputs "
                             f"({', '.join(s[0] for s in specs)})")  # fmt: skip
    report = ParityReport(model=type(module).__name__ if module is not None else "onnx")
    reported = [n for n in names if judge.quantized and n not in judge.keypoints and n not in (tolerances or {})]
    if reported:
        report.notes.append(f"{', '.join(reported)}: a quantized file's float outputs differ from the float reference "
                            "by design; reported, not judged (give --atol/--rtol to judge them)")  # fmt: skip
    torch_dtype = _float_dtype(module)
    if module is not None:
        first_set = next(iter(sets.values()))
        given = [_numpy(t) for t in first_set]
        rounded = [_cast_float(_cast_float(a, dt), torch_dtype or a.dtype) for a, (_, dt, _) in zip(given, specs)]
        module = corresponding_module(module, proto, rounded)
        report.model = type(module).__name__
        if resized:
            extra, facts = _resized_set(module, data, specs, first_set, report)
            sets, input_meta = {**sets, **extra}, {**(input_meta or {}), **facts}

    if reference_model is not None:
        from export_tools.parity.onnxref import OnnxReference, load_reference

        reference: Any = OnnxReference(load_reference(reference_model), proto)
    else:
        reference = _float64_reference(data) if module is None else TorchRunner(module)
    truth_runner = TorchRunner(module, float64=True) if truth else None
    probe = DecoderProbe(data, judge) if judge.keypoints else None

    def record(set_name: str, runtime: str, failure: RunFailedError) -> None:
        report.cases.append(Case(set_name, runtime, reference.name, [], failure=failure.as_dict()))

    pytorch_lanes = [kind for kind in runtimes if get_runner(kind).source == "pytorch"]
    if pytorch_lanes and module is None:
        raise UsageError(f"{', '.join(pytorch_lanes)} runs a program lowered from the PyTorch model, not the ONNX "
                         "file: give the model (CLI: kpx check FILE --reference MODEL, or kpx export MODEL "
                         "--check)")  # fmt: skip
    lanes = [Lane(kind, data, runtime_options.get(kind, {}), isolation, record, module) for kind in runtimes]
    try:
        for set_name, tensors in sets.items():
            given = [_numpy(t) for t in tensors]
            feeds = [_cast_float(a, dt) for a, (_, dt, _) in zip(given, specs)]  # in the graph's input dtypes
            by_name = {spec[0]: f for spec, f in zip(specs, feeds)}
            dims = _symbol_sizes(specs, feeds)
            meta = (input_meta or {}).get(set_name, {})
            report.inputs.append({"name": set_name, "shapes": [list(f.shape) for f in feeds],
                                  "dtypes": [str(f.dtype) for f in feeds], **meta})  # fmt: skip
            # PyTorch gets the runtimes' (possibly rounded) values back in its own float dtype (else as given)
            torch_feeds = [_cast_float(f, torch_dtype or a.dtype) for f, a in zip(feeds, given)]
            expected = _reference_outputs(reference, torch_feeds, set_name, record)
            if expected is None:
                continue
            _check_count(expected, names)
            if truth_runner is not None:
                exact = truth_runner.run(feeds)
                report.cases.append(Case(set_name, reference.name, truth_runner.name,
                                         judge.outputs(exact, expected, by_name, dims)))  # fmt: skip
            for lane in lanes:
                actual = lane.run(feeds, set_name, torch_feeds)
                if actual is None:  # the runtime failed on this set: recorded
                    continue
                if len(actual) != len(names):
                    raise RuntimeError(f"{lane.name} returned {len(actual)} outputs; the graph declares {len(names)}")
                if truth_runner is not None:
                    report.cases.append(Case(set_name, lane.name, truth_runner.name,
                                             judge.outputs(exact, actual, by_name, dims)))  # fmt: skip
                analyse = None if probe is None else partial(probe.read, lane.opener(), feeds, reference, torch_feeds)
                if lane.from_pytorch:  # no ONNX file there: nothing to read or localise in it
                    analyse = partial(_no_decoder, lane.name)
                outputs = judge.outputs(expected, actual, by_name, dims, analyse, always=analyse_keypoints)
                case = Case(set_name, lane.name, reference.name, outputs)
                if localize and not case.passed and _departs(case) and not lane.from_pytorch:
                    _localise(case, module, data, torch_feeds, feeds, lane, report)
                report.cases.append(case)
    finally:
        for lane in lanes:
            lane.close()
    report.runtimes = [r.describe() for r in (reference, truth_runner) if r is not None]
    report.runtimes += [lane.description or {"runtime": lane.name, "failed": "never loaded"} for lane in lanes]
    return report


def _float_dtype(module: Any) -> np.dtype | None:
    """The numpy dtype of the module's first floating parameter or buffer (what it computes in), if any."""
    if module is None:
        return None
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return np.dtype(str(t.dtype).removeprefix("torch."))
    return None


def _no_decoder(runtime: str, _output: str) -> str:
    return f"{runtime} runs the program lowered from the PyTorch model: it has no ONNX decoder to read"


def _check_count(expected: list, names: list[str]) -> None:
    if len(expected) != len(names):
        raise UsageError(f"the PyTorch module returns {len(expected)} outputs; the ONNX graph has {len(names)} "
                         f"({', '.join(names)}); compare a module and the file exported from it")  # fmt: skip


def _departs(case: Case) -> bool:
    """Whether a failed case holds a departure worth localising: an output that failed other than by ambiguous
    peaks and rounding drift (with the decoder inputs agreeing, there is nothing to find)."""
    for o in case.outputs:
        if o.passed:
            continue
        kp = o.keypoints
        if kp is None or not kp.decides or kp.departures or kp.analysis is not None or not kp.nan_pattern_equal:
            return True
    return False


def _localise(case: Case, module: Any, data: bytes, torch_feeds: list, feeds: list, lane: Lane,
              report: ParityReport) -> None:  # fmt: skip
    """Names where a failed case departs: the first module (against PyTorch), the first node (against float64)."""
    if module is not None:
        try:  # where the file departs from PyTorch: the first module whose output differs
            case.where = first_departing_module(module, data, torch_feeds, feeds, lane.kind, open_runner=lane.opener())
        except Exception as exc:  # the verdict stands; only the explanation is missing
            report.notes.append(f"{case.inputs} on {lane.name}: module localisation unavailable: "
                                f"{type(exc).__name__}: {one_line(exc)[:200]}")  # fmt: skip
    if lane.kind != "reference":
        try:
            case.divergence = first_divergence(data, feeds, lane.kind, open_runner=lane.opener())
        except Exception as exc:  # the verdict stands; only the explanation is missing
            case.localisation = f"localisation unavailable: {type(exc).__name__}: {one_line(exc)[:200]}"


def _symbol_sizes(specs: list, feeds: list[np.ndarray]) -> dict[str, int]:
    """``{symbolic dim: size}`` in one input set."""
    sizes: dict[str, int] = {}
    for (_, _, shape), feed in zip(specs, feeds):
        for d, n in zip(shape, np.shape(feed)):
            if isinstance(d, str) and d != "?":
                sizes.setdefault(d, int(n))
    return sizes


def assert_parity(module: torch.nn.Module, inputs: Any, **kwargs: Any) -> ParityReport:
    """:func:`check_parity`, raising ``AssertionError`` with the table when any output departs."""
    report = check_parity(module, inputs, **kwargs)
    if not report.passed:
        raise AssertionError("parity check failed:\n" + report.table())
    return report


def _isolation(isolate: bool, timeout: float | None, memory_limit_mb: float | None) -> dict[str, Any] | None:
    for name, value in (("timeout", timeout), ("memory_limit_mb", memory_limit_mb)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a number > 0 (or None for the default); got {value!r}")
    if not isolate:
        if timeout is not None or memory_limit_mb is not None:
            raise ValueError("timeout and memory_limit_mb apply to runtimes in worker processes; drop them or "
                             "keep isolate=True")  # fmt: skip
        return None
    return {"timeout": timeout, "memory_limit_mb": memory_limit_mb}


def _runtime_options(options: Any, runtimes: list[str]) -> dict[str, dict[str, Any]]:
    """``{runtime: {option: value}}``, each for a runtime being checked and accepted by its runner class."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"runtime_options must be a dict {{runtime: {{option: value}}}}; got {type(options).__name__}")
    out = {}
    for kind, values in options.items():
        if kind not in runtimes:
            raise ValueError(f"runtime_options names {kind!r}, which is not among runtimes {runtimes}")
        out[kind] = dict(values)
        get_runner(kind).check_options(out[kind])
    return out


def _float64_reference(model: bytes) -> ReferenceRunner:
    """onnx.reference on a float64 copy of ``model``; a file it cannot evaluate is a :class:`UsageError`."""
    try:
        return ReferenceRunner(model, float64=True)
    except Exception as exc:
        raise UsageError(f"the float64 reference (onnx.reference) cannot evaluate this file ({type(exc).__name__}: "
                         f"{one_line(exc)[:200]}); compare against the PyTorch model instead (CLI: --reference "
                         "MODEL)") from exc  # fmt: skip


def _reference_outputs(reference: Any, feeds: list[np.ndarray], set_name: str, record: Any) -> list | None:
    """The reference's outputs for one set, or ``None`` (recorded as a failed case) when the ONNX reference fails.

    A PyTorch module that does not take the file's inputs is the caller's mistake: a :class:`UsageError`."""
    try:
        return reference.run(feeds)
    except KpxError:
        raise
    except Exception as exc:
        if isinstance(reference, TorchRunner):
            raise UsageError(
                f"the PyTorch model fails on input set {set_name!r} ({type(exc).__name__}: "
                f"{one_line(exc)[:300]}); compare a model with the file exported from it"
            ) from exc
        record(set_name, reference.name, RunFailedError(reference.name, "run", f"raised {type(exc).__name__}",
                                                        detail=one_line(exc)[:300]))  # fmt: skip
        return None


# --- argument checks and input preparation -----------------------------------------------------------------


def _names(value: Any, arg: str) -> list[str]:
    """A list of names; a bare string is refused (it would be read character by character)."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{arg} must be a list of names, e.g. ['cpu']; got {value!r}")
    if not value:
        raise ValueError(f"{arg} is empty; name at least one, e.g. ['cpu']")
    return list(value)


def _input_sets(inputs: Any) -> dict[str, tuple[Any, ...]]:
    example = "e.g. (torch.randn(1, 17, 64, 48),) or {'example': (x,)}"
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        inputs = (inputs,)
    if isinstance(inputs, Mapping):
        sets = dict(inputs)
    elif isinstance(inputs, Sequence) and not isinstance(inputs, str):
        if inputs and all(isinstance(t, (tuple, list)) and _all_tensors(t) for t in inputs):
            raise TypeError(f"inputs is a list of {len(inputs)} input tuples; name the sets in a dict, e.g. "
                            "{'a': (x,), 'b': (y,)}, or pass one tuple of the model's input tensors")  # fmt: skip
        sets = {"inputs": tuple(inputs)}
    else:
        raise TypeError(f"inputs must be a tuple of tensors or a dict of named tuples, {example}; got "
                        f"{type(inputs).__name__}")  # fmt: skip
    if not sets:
        raise ValueError(f"inputs is empty; pass at least one input set, {example}")
    out = {}
    for name, tensors in sets.items():
        if isinstance(tensors, (torch.Tensor, np.ndarray)):
            tensors = (tensors,)
        if not isinstance(name, str) or not isinstance(tensors, Sequence) or isinstance(tensors, str):
            raise TypeError(f"input set {name!r} must be a tuple of tensors, {example}")
        if not tensors:
            raise ValueError(f"input set {name!r} is empty; give the model's input tensors, {example}")
        bad = [type(t).__name__ for t in tensors if not isinstance(t, (torch.Tensor, np.ndarray))]
        if bad:
            raise TypeError(f"input set {name!r} holds {', '.join(bad)}; every input must be a tensor or numpy array")
        out[name] = tuple(t.detach().cpu() if isinstance(t, torch.Tensor) else t for t in tensors)
    return out


def _all_tensors(values: Any) -> bool:
    return bool(values) and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in values)


def _load_model(model: Any):
    """``model=`` as an ``onnx.ModelProto``: a proto, serialized bytes or a path; anything unreadable is a
    :class:`UsageError` naming it."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        try:
            return onnx.load_from_string(bytes(model))
        except Exception as exc:
            raise UsageError(f"model= holds {len(model)} bytes that are not a readable ONNX model "
                             f"({type(exc).__name__}: {one_line(exc)[:120]}); pass the bytes of an .onnx file, a path "
                             "or an onnx.ModelProto") from None  # fmt: skip
    if isinstance(model, (str, os.PathLike)):
        from export_tools.inspection import load_onnx

        try:
            return load_onnx(model)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(f"model=: {exc}") from None
    raise TypeError(f"model must be ONNX bytes, an onnx.ModelProto or a path; got {type(model).__name__}")


def _numpy(value: Any) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _cast_float(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``array`` in ``dtype`` when both are floating (e.g. float32 values fed to a float16 file), else as is."""
    if array.dtype != dtype and array.dtype.kind == np.dtype(dtype).kind == "f":
        return array.astype(dtype)
    return array


def _resized_set(module, model: bytes, specs, example, report: ParityReport) -> tuple[dict[str, tuple], dict]:
    """Every symbolic dim one larger than in the example (so that a size baked into the graph shows), when
    the model has symbolic dims and PyTorch accepts that size; with how its inputs were made."""
    from export_tools.parity.inputs import generate_inputs

    dims = {}
    for (_, _, shape), tensor in zip(specs, example):
        for i, d in enumerate(shape):
            if isinstance(d, str) and d != "?" and i < len(tensor.shape):
                dims.setdefault(d, int(tensor.shape[i]) + 1)
    if not dims:
        return {}, {}
    try:
        made = generate_inputs(model, dims=dims, seed=1)
    except ValueError as exc:  # e.g. the example was just under the input size limit
        report.notes.append(f"no resized input set: {exc}")
        return {}, {}
    feeds = [_cast_float(g.array, _numpy(t).dtype) for g, t in zip(made, example)]
    try:
        TorchRunner(module).run(feeds)
    except Exception as exc:
        report.notes.append(
            f"PyTorch rejects the example sizes + 1 ({type(exc).__name__}): checked at the example only"
        )
        return {}, {}
    name = "resized " + ",".join(f"{k}={v}" for k, v in dims.items())
    return {name: feeds}, {name: {"seed": 1, "dims": dims, "generated": [g.facts() for g in made]}}
