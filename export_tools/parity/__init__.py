"""Parity harness: run an exported model on several runtimes and compare with PyTorch.

``assert_parity(module, inputs)`` is the entry point for users' own test suites.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from export_tools.exporter import to_onnx
from export_tools.parity.compare import OutputStats, compare_output, tolerance_for
from export_tools.parity.inputs import input_specs, load_npz, random_inputs
from export_tools.parity.localize import Divergence, first_divergence
from export_tools.parity.report import SCHEMA, Case, ParityReport
from export_tools.parity.runners import (
    OPENVINO_READS_LOCAL_FUNCTIONS,
    LocalFunctionsUnsupportedError,
    OpenVinoRunner,
    OrtFormatRunner,
    OrtRunner,
    ReferenceRunner,
    RunnerUnavailableError,
    TorchRunner,
)

__all__ = [
    "OPENVINO_READS_LOCAL_FUNCTIONS",
    "RUNTIMES",
    "SCHEMA",
    "Case",
    "Divergence",
    "LocalFunctionsUnsupportedError",
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
    "first_divergence",
    "input_specs",
    "load_npz",
    "random_inputs",
]


RUNTIMES = ("cpu", "cuda", "reference", "openvino", "ort-mobile")
"""Runtime names that :func:`check_parity` accepts."""


def _runner(kind: str, model: bytes):
    if kind in ("cpu", "cuda"):
        return OrtRunner(model, kind)
    if kind == "reference":
        return ReferenceRunner(model)
    if kind == "openvino":  # the CPU plugin; needs an emit="inline" export (no local functions)
        return OpenVinoRunner(model)
    if kind == "ort-mobile":  # the model converted to ONNX Runtime's .ort format, run on the CPU provider
        return OrtFormatRunner(model)
    raise ValueError(f"runtime must be one of {', '.join(repr(r) for r in RUNTIMES)}; got {kind!r}")


def check_parity(
    module: torch.nn.Module | None,
    inputs: Mapping[str, Sequence[torch.Tensor]] | Sequence[torch.Tensor],
    *,
    runtimes: Sequence[str] = ("cpu",),
    emit: str = "function",
    opset: int = 18,
    dynamic_shapes: Any = None,
    tolerances: Mapping[str, tuple[float, float]] | None = None,
    model: bytes | None = None,
    localize: bool = True,
    input_meta: Mapping[str, Mapping[str, Any]] | None = None,
    truth: bool = False,
    pixels_per_unit: Mapping[str, tuple[float, float]] | None = None,
    reference_dtype: torch.dtype | None = None,
) -> ParityReport:
    """Exports ``module`` (unless ``model`` bytes are given) and compares every runtime with PyTorch.

    Args:
        module: the PyTorch reference, run at its own dtype. ``None`` (with ``model`` given): the
            reference is a float64 evaluation of the ONNX graph itself with onnx.reference.
        inputs: one input tuple, or named input tuples (``{"peaked": (x,), "empty": (x0,)}``); the
            first set is the export example.
        runtimes: any of ``"cpu"``, ``"cuda"`` (ONNX Runtime), ``"reference"`` (onnx.reference),
            ``"openvino"`` (OpenVINO CPU, float32 inference precision; ``emit="inline"`` exports only) and
            ``"ort-mobile"`` (the model converted to ONNX Runtime's ``.ort`` format, run on its CPU provider).
            A runtime that cannot run raises :class:`RunnerUnavailableError`.
        tolerances: ``{output_name: (rtol, atol)}`` overrides (names of the ONNX graph outputs);
            defaults by output dtype.
        localize: on an ORT mismatch, name the first node that departs from ``onnx.reference``.
        input_meta: per input set, extra facts for the report (``{"random": {"seed": 0}}``).
        truth: also run PyTorch in float64 and compare the model-dtype reference and every runtime
            with it (cases whose ``reference`` is ``torch-float64``).
        pixels_per_unit: ``{output_name: (sx, sy)}`` for coordinate outputs: errors also in pixels.
        reference_dtype: cast floating inputs to this dtype for PyTorch (e.g. ``torch.float32`` to judge
            a float16 export against the float32 model).

    Input tensors may be torch tensors or numpy arrays (from :func:`random_inputs`, :func:`load_npz`).
    """
    sets = dict(inputs) if isinstance(inputs, Mapping) else {"inputs": tuple(inputs)}
    sets = {k: tuple(torch.as_tensor(t) for t in v) for k, v in sets.items()}
    first = next(iter(sets.values()))
    if module is None and model is None:
        raise ValueError("check_parity needs a module, or model bytes to judge against their float64 evaluation")
    if model is None:
        model = to_onnx(module, tuple(first), emit=emit, opset=opset, dynamic_shapes=dynamic_shapes).SerializeToString()
    reference = ReferenceRunner(model, float64=True) if module is None else TorchRunner(module, dtype=reference_dtype)
    runners = [_runner(kind, model) for kind in runtimes]
    truth_runner = TorchRunner(module, float64=True) if truth and module is not None else None
    described = [r.describe() for r in [reference, truth_runner, *runners] if r is not None]
    report = ParityReport(model=type(module).__name__ if module is not None else "onnx", runtimes=described)
    import onnx

    names = [o.name for o in onnx.load_from_string(model).graph.output]
    for set_name, tensors in sets.items():
        feeds = [t.detach().cpu().numpy() for t in tensors]
        shapes, dtypes = [list(f.shape) for f in feeds], [str(f.dtype) for f in feeds]
        meta = (input_meta or {}).get(set_name, {})
        report.inputs.append({"name": set_name, "shapes": shapes, "dtypes": dtypes, **meta})
        expected = reference.run(feeds)

        def compare(against: list, actual: list) -> list[OutputStats]:
            stats = []
            for n, e, a in zip(names, against, actual, strict=True):
                tol = tolerance_for(a.dtype, (tolerances or {}).get(n))  # the dtype of the output under test
                stats.append(compare_output(n, e, a, *tol, pixels_per_unit=(pixels_per_unit or {}).get(n)))
            return stats

        if truth_runner is not None:
            exact = truth_runner.run(feeds)
            report.cases.append(Case(set_name, reference.name, truth_runner.name, compare(exact, expected)))
        for runner in runners:
            actual = runner.run(feeds)
            if truth_runner is not None:
                report.cases.append(Case(set_name, runner.name, truth_runner.name, compare(exact, actual)))
            case = Case(set_name, runner.name, reference.name, compare(expected, actual))
            if localize and not case.passed and isinstance(runner, OrtRunner):
                case.divergence = first_divergence(model, feeds, runner.provider)
            report.cases.append(case)
    return report


def assert_parity(module: torch.nn.Module, inputs: Any, **kwargs: Any) -> ParityReport:
    """:func:`check_parity`, raising ``AssertionError`` with the table when any output departs."""
    report = check_parity(module, inputs, **kwargs)
    if not report.passed:
        raise AssertionError("parity check failed:\n" + report.table())
    return report
