"""CUDA report: every kpx op on a GPU, in PyTorch and on ONNX Runtime's CUDA execution provider, in one command.

Run: ``python benchmarks/cuda_report.py --out DIR [--quick] [--device {auto,cuda,cpu}]``.

Writes ``DIR/cuda_report.md`` and ``DIR/cuda_report.json`` (schema :data:`SCHEMA`) and prints a summary.
Exit status 1 when a check that ran failed, else 0 (also when everything was skipped for want of a GPU).

Checks (registry-driven: every op of ``custom_ops.list_ops()``):

- ``pytorch``: each sample and adversarial input set of each op, run in PyTorch on the device in float32,
  against the float64 CPU reference (every float input promoted to float64), within the op's float32
  tolerances; NaN and +-inf must sit at the same places. ``pytorch-fp16``: the same with the main
  inputs in float16, against float64 on the same (widened) half numbers, within the float16 tolerances.
- ``ort``: each op's parity sample (``OpSpec.export_sample``) exported with kpx's exporter, emit modes
  ``function`` and ``inline``, opsets 17 and 18, float32 and float16, run on the CUDA execution provider
  with its adversarial sets, against the float64 reference. Each session is made by kpx's own
  ``export_tools.runtimes.ort_session`` (CPU fallback disabled: a node that ORT would place on the CPU
  makes the load fail) and once more with ORT's profiler on (fallback allowed) to list the execution
  provider of every node that ran; nodes on the CPU are reported.
- ``render``: ``gaussian_heatmaps`` training targets rendered on the device (B 32, K 17 and 133, 64x48
  and 256x192) under ``torch.cuda.set_sync_debug_mode("error")`` (a host synchronisation raises),
  compared with the CPU result.
- timings (no pass/fail): spatial_soft_argmax2d, gaussian_heatmaps and decode_heatmaps(dark) on the
  device (CUDA events, warm-up, median of N runs) against kornia's equivalents where kornia imports, and a
  device-to-device copy of the same bytes (``dst.copy_(src)``) as the floor.

Modes: ``--device auto`` (default) uses CUDA when ``torch.cuda.is_available()``; without it nothing CUDA
runs, both files and stdout say what was skipped and why, and only a CPU sanity check of the comparison
code runs (one op, float32 against its float64 reference). ``--device cpu`` is a dry run of the whole
flow on the CPU and ONNX Runtime's CPU execution provider (smaller render and timing sizes), labelled as
such everywhere, to prove the script before GPU time is spent.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

import custom_ops  # noqa: E402
from custom_ops.registry import OpSpec  # noqa: E402
from export_tools.models import OpModel  # noqa: E402
from export_tools.parity.compare import compare_output  # noqa: E402

SCHEMA = "kpx.cuda_report/1"
EMITS = ("function", "inline")
OPSETS = (17, 18)
ORT_DTYPES = ("float32", "float16")
HALF_MAX = float(torch.finfo(torch.float16).max)
#: gaussian_heatmaps on the device: (K, H, W) at batch RENDER_BATCH (CPU dry run: DRY_BATCH)
RENDER_SHAPES = [(17, 64, 48), (133, 64, 48), (17, 256, 192), (133, 256, 192)]
RENDER_BATCH, DRY_BATCH = 32, 2
SANITY_OP = "spatial_soft_argmax2d"
PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
FLOAT_TYPES = {"float", "float16", "double", "bfloat16"}


# --- the record -------------------------------------------------------------------------------------------------------


@dataclass
class Check:
    """One pass/fail check: what ran, the verdict, the largest errors and why it failed."""

    group: str
    name: str
    passed: bool
    max_abs: float | None = None
    max_rel: float | None = None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    mode: str  # "cuda", "dry-run-cpu" or "no-cuda"
    device: str
    quick: bool
    checks: list[Check] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    complete: bool = False  # False in the files written after each section, until the last one
    deadline: float | None = None  # time.perf_counter() after which no further section or op starts

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        if not check.passed:
            print(f"  FAIL [{check.group}] {check.name}: {check.detail}", flush=True)
        return check

    def skip(self, what: str, why: str) -> None:
        self.skipped.append({"what": what, "why": why})
        print(f"  SKIP {what}: {why}", flush=True)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def as_dict(self) -> dict[str, Any]:
        groups: dict[str, dict[str, int]] = {}
        for c in self.checks:
            g = groups.setdefault(c.group, {"passed": 0, "failed": 0})
            g["passed" if c.passed else "failed"] += 1
        return {
            "schema": SCHEMA,
            "date": self.environment.get("date"),
            "hostname": self.environment.get("hostname"),
            "mode": self.mode,
            "device": self.device,
            "quick": self.quick,
            "dry_run": self.mode == "dry-run-cpu",
            "complete": self.complete,
            "environment": self.environment,
            "summary": {
                "checks": len(self.checks),
                "passed": len(self.checks) - len(self.failed),
                "failed": len(self.failed),
                "skipped": len(self.skipped),
                "groups": groups,
                "ops": [s.name for s in custom_ops.list_ops()],
            },
            "checks": [_finite_json(asdict(c)) for c in self.checks],
            "skipped": self.skipped,
            "timings": self.timings,
            "notes": self.notes,
            "seconds": self.seconds,
            "exit_code": self.exit_code(),
        }


def _finite_json(value: Any) -> Any:
    """JSON has no NaN or inf: such floats become strings."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_json(v) for v in value]
    return value


# --- the comparison ---------------------------------------------------------------------------------------------------


def _numpy(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def compare_outputs(
    group: str,
    name: str,
    got: Sequence[Any],
    want: Sequence[Any],
    tolerance: tuple[float, float],
    *,
    dtype: Any = None,
    device: str | None = None,
    half_rounding: bool = False,
    names: Sequence[str] | None = None,
) -> Check:
    """``got`` (the run under test) against ``want`` (the float64 reference), output by output.

    Passes when every output has ``want``'s shape (and ``dtype`` / ``device`` when given), non-finite values
    at the same places with the same signs, and ``|got - want| <= atol + rtol * |want|`` elsewhere
    (``export_tools.parity.compare.compare_output``). ``half_rounding``: a finite reference value beyond the
    float16 range counts as the +-inf it rounds to (that is the rounding, not the op).
    """
    rtol, atol = tolerance
    if len(got) != len(want):
        return Check(group, name, False, detail=f"{len(got)} outputs, expected {len(want)}")
    problems, max_abs, max_rel = [], 0.0, 0.0
    for i, (g, w) in enumerate(zip(got, want)):
        label = names[i] if names and i < len(names) else f"output {i}"
        if dtype is not None and isinstance(g, torch.Tensor) and g.dtype != dtype:
            problems.append(f"{label} is {g.dtype}, expected {dtype}")
        if device is not None and isinstance(g, torch.Tensor) and g.device.type != device:
            problems.append(f"{label} is on {g.device}, expected {device}")
        w_np = _numpy(w).astype(np.float64)
        if half_rounding:
            with np.errstate(over="ignore"):
                rounded = w_np.astype(np.float16).astype(np.float64)
            w_np = np.where(np.isfinite(rounded), w_np, rounded)
        stats = compare_output(label, w_np, _numpy(g), rtol, atol)
        if stats.shape_equal:
            max_abs, max_rel = max(max_abs, stats.max_abs), max(max_rel, stats.max_rel)
        if not stats.passed:
            why = []
            if not stats.shape_equal:
                why.append(f"shape {tuple(_numpy(g).shape)} != {tuple(w_np.shape)}")
            else:
                if not stats.nan_pattern_equal:
                    why.append("NaN positions differ")
                if not stats.inf_pattern_equal:
                    why.append("inf positions differ")
                why.append(f"max_abs {stats.max_abs:.3g} max_rel {stats.max_rel:.3g} at {stats.worst_index}")
            problems.append(f"{label}: {', '.join(why)} (rtol {rtol:g}, atol {atol:g})")
    return Check(group, name, not problems, max_abs, max_rel, "; ".join(problems))


def _error_check(group: str, name: str, exc: BaseException) -> Check:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:400]
    return Check(group, name, False, detail=f"raised {text}", extra={"traceback": traceback.format_exc()[-2000:]})


# --- inputs -----------------------------------------------------------------------------------------------------------


def _to_float64(x: Any) -> Any:
    return x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def _half(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float16, finite values clamped into the half range first (NaN and +-inf kept)."""
    if not t.is_floating_point():
        return t
    return torch.where(torch.isfinite(t), t.clamp(-HALF_MAX, HALF_MAX), t).half()


def main_input_names(spec: OpSpec) -> set[str]:
    """The ONNX inputs of type ``T``: they set the output dtype (docs/spec.md, 'Dtypes')."""
    return {p.name for p in spec.inputs if p.type_str == "T"}


def input_sets(spec: OpSpec) -> list[tuple[str, OpModel, tuple]]:
    """``(name, model, inputs)``: every sample, then every adversarial set through the export sample's model."""
    out = []
    for sample in spec.samples():
        model = OpModel(spec, sample)
        out.append((f"sample {sample.name}", model, model.example_inputs()))
    if spec.adversarial:
        model = OpModel(spec, spec.export_sample())
        out += [(f"adversarial {name}", model, tuple(inputs)) for name, inputs in spec.adversarial().items()]
    return out


def _outputs(value: Any) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _run(model: OpModel, inputs: Sequence[Any]) -> tuple:
    with torch.no_grad():
        return _outputs(model(*inputs))


# --- PyTorch on the device against the float64 CPU reference ----------------------------------------------------------


def pytorch_checks(
    report: Report, device: str, specs: Sequence[OpSpec], *, half: bool, corrupt: bool, group: str = ""
) -> None:
    """Every sample and adversarial set of ``specs`` on ``device`` against float64 on the CPU."""
    group = group or ("pytorch-fp16" if half else "pytorch")
    dtype = torch.float16 if half else torch.float32
    for spec in specs:
        tolerance = spec.tolerances[dtype]
        mains = main_input_names(spec)
        for set_name, model, inputs in input_sets(spec):
            name = f"{spec.name} {set_name}"
            try:
                names = model.input_names()
                if half:  # main inputs in half; the reference sees the same (widened) numbers
                    inputs = tuple(_half(x) if n in mains else x for n, x in zip(names, inputs))
                want = _run(model, [_to_float64(x) for x in inputs])
                on_device = [x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]
                got = _run(model, on_device)
                if corrupt:  # --self-test-fail: a wrong result must be reported as a failure
                    got = tuple(g + 1e-2 * (1 + g.abs()) if g.is_floating_point() else g for g in got)
                out_names = [o.name for o in spec.outputs]
                check = compare_outputs(group, name, got, want, tolerance, dtype=dtype, device=device,
                                        half_rounding=half, names=out_names)  # fmt: skip
                if not check.passed and device == "cuda":  # diagnosis: is it TF32 (cuDNN convolutions by default)?
                    with tf32_off():
                        again = compare_outputs(group, name, _run(model, on_device), want, tolerance,
                                                half_rounding=half, names=out_names)  # fmt: skip
                    check.extra["with_tf32_off"] = "passes" if again.passed else f"still fails: {again.detail}"
            except Exception as exc:
                check = _error_check(group, name, exc)
            check.extra["op"] = spec.name
            report.add(check)


@contextlib.contextmanager
def tf32_off():
    """TF32 off for cuDNN convolutions and matmuls inside (PyTorch allows it for convolutions by default)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# --- ONNX Runtime: the parity matrix ----------------------------------------------------------------------------------


def ort_status(device: str) -> tuple[Any, str | None]:
    """``(onnxruntime, None)`` when ORT can run on ``device``'s execution provider, else ``(None, why)``."""
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError as exc:
        return None, f"onnxruntime does not import ({exc})"
    if device == "cpu":
        return ort, None
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as exc:
            return None, f"onnxruntime.preload_dlls() failed: {exc}"
    providers = ort.get_available_providers()
    if PROVIDER_NAMES["cuda"] not in providers:
        return None, (
            f"onnxruntime {ort.__version__} lists no CUDAExecutionProvider (providers: {providers}); install "
            "onnxruntime-gpu (see the doc of this script) and put it first on PYTHONPATH"
        )
    return ort, None


def _profile_nodes(ort: Any, data: bytes, provider: str, feeds: list[np.ndarray], tmp: str) -> tuple[list, list]:
    """The session's providers and ``[(node, op_type, provider, kind)]`` for every node that ran, from ORT's
    profiler (CPU fallback allowed, so that a node ORT would move to the CPU shows up); ``kind`` is
    ``"data"`` when a float tensor comes out of the node, else ``"shape"`` (integer shape arithmetic)."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tmp, "profile")
    session = ort.InferenceSession(data, options, providers=[PROVIDER_NAMES[provider]])
    names = [i.name for i in session.get_inputs()]
    session.run(None, dict(zip(names, feeds)))
    path = session.end_profiling()
    try:
        events = json.loads(Path(path).read_text())
    finally:
        Path(path).unlink(missing_ok=True)
    nodes, seen = [], set()
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") != "Node" or "provider" not in args:
            continue
        node = event.get("name", "").removesuffix("_kernel_time")
        if node in seen:
            continue
        seen.add(node)
        out_types = {k for o in args.get("output_type_shape") or [] for k in o}
        kind = "data" if out_types & FLOAT_TYPES else "shape"
        nodes.append((node, args.get("op_name", "?"), args["provider"], kind))
    return session.get_providers(), nodes


def _feeds(session_inputs: Sequence[Any], inputs: Sequence[Any]) -> tuple[list[np.ndarray], list[Any]]:
    """The ORT feeds (float tensors in the graph input's type) and the same numbers for the float64 reference."""
    feeds, reference = [], []
    for info, x in zip(session_inputs, inputs):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            x = _half(x) if info.type == "tensor(float16)" else x.float()
        feeds.append(_numpy(x))
        reference.append(_to_float64(x) if isinstance(x, torch.Tensor) else x)
    return feeds, reference


Combo = tuple[str, str, int]  # (dtype, emit, opset)
FULL_MATRIX: list[Combo] = [(d, e, o) for d in ORT_DTYPES for e in EMITS for o in OPSETS]


def ort_matrix(spec: OpSpec, reduced: bool) -> list[Combo]:
    """The (dtype, emit, opset) cases of ``spec``: all 8, or in a quick CPU dry run float32 at (function, 18) and
    (inline, 17), plus float16 for :data:`SANITY_OP` only (the traces are most of the dry run's time)."""
    if not reduced:
        return FULL_MATRIX
    dtypes = ORT_DTYPES if spec.name == SANITY_OP else ("float32",)
    return [(d, e, o) for d in dtypes for e, o in (("function", 18), ("inline", 17))]


def ort_checks(report: Report, ort: Any, provider: str, specs: Sequence[OpSpec], *, reduced: bool = False) -> None:
    """The parity matrix: op x dtype x emit x opset, each on ``provider``, sample and adversarial sets."""
    from export_tools.exporter import finalize, trace
    from export_tools.runtimes import ort_session

    wanted = PROVIDER_NAMES[provider]
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(specs):
            if report.out_of_time():
                report.skip(f"ort: {', '.join(s.name for s in specs[i:])}", "--time-limit reached")
                return
            sample = spec.export_sample()
            model = OpModel(spec, sample)
            sets = [("sample", model.example_inputs())] + [
                (f"adversarial {k}", tuple(v)) for k, v in (spec.adversarial() if spec.adversarial else {}).items()
            ]
            matrix = ort_matrix(spec, reduced)
            for dtype in dict.fromkeys(d for d, _, _ in matrix):
                combos = [(e, o) for d, e, o in matrix if d == dtype]
                try:
                    half = None if dtype == "float32" else dtype
                    raw = trace(model, model.example_inputs(), dtype=half, dynamic_shapes=model.dynamic_shapes(sample),
                                input_names=model.input_names())  # fmt: skip
                except Exception as exc:
                    for emit, opset in combos:
                        check = _error_check("ort", f"{spec.name} {dtype} {emit} opset{opset}: export", exc)
                        check.extra.update(op=spec.name, dtype=dtype, emit=emit, opset=opset)
                        report.add(check)
                    continue
                for emit, opset in combos:
                    name = f"{spec.name} {dtype} {emit} opset{opset}"
                    try:
                        proto = finalize(raw, opset=opset, emit=emit)
                        check = _ort_case(ort, ort_session, proto, spec, sets, provider, dtype, name, tmp)
                    except Exception as exc:
                        check = _error_check("ort", name, exc)
                    check.extra.update(op=spec.name, dtype=dtype, emit=emit, opset=opset, provider=wanted)
                    report.add(check)


def _ort_case(ort, ort_session, proto, spec: OpSpec, sets, provider: str, dtype: str, name: str, tmp: str) -> Check:
    """One session: strict load (kpx's helper), node placement (profiler), every input set's numbers."""
    wanted = PROVIDER_NAMES[provider]
    data = proto.SerializeToString()
    problems: list[str] = []
    extra: dict[str, Any] = {}
    try:  # kpx's own helper: CPU fallback disabled for a non-CPU provider
        session = ort_session(data, provider)
        extra["strict_load"] = "ok" if provider != "cpu" else "n/a (CPU provider: no fallback to disable)"
    except Exception as exc:
        extra["strict_load"] = " ".join(str(exc).split())[:300]
        problems.append(f"session with CPU fallback disabled failed to load: {extra['strict_load']}")
        # the numbers from a session with fallback allowed, so that they are still reported
        session = ort.InferenceSession(data, providers=[wanted])
        extra["numbers_from"] = "session with CPU fallback allowed"
    feeds, _ = _feeds(session.get_inputs(), sets[0][1])
    try:
        providers, nodes = _profile_nodes(ort, data, provider, feeds, tmp)
    except Exception as exc:  # placement unknown; a strict session that loaded has no node on the CPU anyway
        providers, nodes = session.get_providers(), []
        extra["profile_error"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        if "numbers_from" in extra:
            problems.append(f"ORT's profiler failed; the nodes placed on the CPU are unknown: {extra['profile_error']}")
    extra["providers"] = session.get_providers()
    extra["nodes"] = len(nodes)
    off = [n for n in nodes if n[2] != wanted]
    extra["nodes_off_provider"] = [{"node": n, "op_type": o, "provider": p, "kind": k} for n, o, p, k in off]
    for which, names in (("session", session.get_providers()), ("profiled session", providers)):
        if names[0] != wanted:
            problems.append(f"{which} providers {names}: the first is not {wanted}")
    if off:
        kinds = ", ".join(f"{o}@{p} ({k})" for _, o, p, k in off[:12])
        problems.append(f"{len(off)} of {len(nodes)} nodes ran outside {wanted}: {kinds}")
    tolerance = spec.tolerances[torch.float16 if dtype == "float16" else torch.float32]
    out_dtype = np.float16 if dtype == "float16" else np.float32
    names = [i.name for i in session.get_inputs()]
    model = OpModel(spec, spec.export_sample())
    max_abs = max_rel = 0.0
    failed_sets = []
    for set_name, inputs in sets:
        feeds, reference = _feeds(session.get_inputs(), inputs)
        want = _run(model, reference)
        got = [np.asarray(g) for g in session.run(None, dict(zip(names, feeds)))]
        bad_dtype = [str(g.dtype) for g in got if g.dtype != out_dtype]
        check = compare_outputs("ort", set_name, [torch.from_numpy(g) for g in got], want, tolerance,
                                half_rounding=dtype == "float16", names=[o.name for o in spec.outputs])  # fmt: skip
        max_abs, max_rel = max(max_abs, check.max_abs or 0.0), max(max_rel, check.max_rel or 0.0)
        if not check.passed or bad_dtype:
            failed_sets.append(f"{set_name}: {check.detail}{' dtypes ' + str(bad_dtype) if bad_dtype else ''}")
    extra["input_sets"] = len(sets)
    if failed_sets:
        problems.append(f"{len(failed_sets)} of {len(sets)} input sets differ: " + " | ".join(failed_sets[:4]))
    return Check("ort", name, not problems, max_abs, max_rel, "; ".join(problems), extra)


# --- gaussian_heatmaps rendered on the device, no host synchronisation ------------------------------------------------


@contextlib.contextmanager
def no_host_sync(device: str):
    """``torch.cuda.set_sync_debug_mode("error")`` inside (CUDA only; the CPU dry run has nothing to sync)."""
    if device != "cuda":
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


RENDER_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "visibility subpixel mmpose-window": {"subpixel": True, "window": "mmpose", "visibility_weights": True},
}


def render_checks(report: Report, device: str, batch: int) -> None:
    spec = custom_ops.get_op("gaussian_heatmaps")
    g = torch.Generator().manual_seed(3)
    for k, h, w in RENDER_SHAPES:
        keypoints = torch.rand(batch, k, 2, generator=g) * torch.tensor([w + 4.0, h + 4.0]) - 2.0  # some off-map
        visibility = (torch.rand(batch, k, generator=g) > 0.2).float()
        for variant, options in RENDER_VARIANTS.items():
            name = f"gaussian_heatmaps B{batch} K{k} {h}x{w} {variant}"
            kwargs = dict(options, visibility=visibility) if "visibility" in variant else dict(options)
            try:
                want = custom_ops.gaussian_heatmaps(keypoints, (h, w), 2.0, **kwargs)
                kp_dev = keypoints.to(device)
                kw_dev = {n: v.to(device) if isinstance(v, torch.Tensor) else v for n, v in kwargs.items()}
                if device == "cuda":
                    torch.cuda.synchronize()
                with torch.no_grad(), no_host_sync(device):
                    got = custom_ops.gaussian_heatmaps(kp_dev, (h, w), 2.0, **kw_dev)
                check = compare_outputs("render", name, got, want, spec.tolerances[torch.float32],
                                        dtype=torch.float32, device=device, names=["heatmaps", "weights"])  # fmt: skip
                check.extra["sync_debug_mode"] = "error" if device == "cuda" else "n/a (CPU dry run)"
                del got, want
            except Exception as exc:
                check = _error_check("render", name, exc)
                if "synchroniz" in str(exc).lower():
                    check.detail = "host synchronisation under set_sync_debug_mode('error'): " + check.detail
            report.add(check)


# --- timings ----------------------------------------------------------------------------------------------------------


def median_ms(fn: Callable[[], Any], device: str, warmup: int, reps: int) -> float:
    """Median milliseconds of ``fn``: CUDA events around each call on the GPU, perf_counter on the CPU."""
    for _ in range(warmup):
        fn()
    times = []
    if device == "cuda":
        torch.cuda.synchronize()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        times = [start.elapsed_time(end) for start, end in events]
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _kornia() -> tuple[Any, Any, str]:
    """kornia's ``(spatial_soft_argmax2d, render_gaussian2d, version)``, or ``(None, None, why not)``."""
    try:
        from kornia.geometry.subpix import render_gaussian2d, spatial_soft_argmax2d

        return spatial_soft_argmax2d, render_gaussian2d, importlib.import_module("kornia").__version__
    except Exception as exc:
        return None, None, f"not importable ({type(exc).__name__}: {exc})"


def _time_shape(report: Report, device: str, shape: tuple[int, ...], warmup: int, reps: int, g) -> None:
    """One row per op at ``shape = (B, K, H, W)``: kpx, kornia where it has the op, the copy floor."""
    b, k, h, w = shape
    soft_argmax, render, _ = _kornia()
    logits = (torch.randn(b, k, h, w, generator=g) * 3).to(device)
    keypoints = (torch.rand(b, k, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])).to(device)
    std = torch.full((b, k, 2), 2.0, device=device)
    with torch.inference_mode():
        heatmaps = custom_ops.gaussian_heatmaps(keypoints, (h, w), 2.0)[0]
        heatmaps = heatmaps + 0.01 * torch.rand(heatmaps.shape, device=device)
    src, dst = torch.empty_like(logits), torch.empty_like(logits)  # the bytes read (or, rendering, written)
    rows: dict[str, dict[str, Callable[[], Any] | None]] = {
        "spatial_soft_argmax2d": {
            "kpx": lambda: custom_ops.spatial_soft_argmax2d(logits),
            "kornia": (lambda: soft_argmax(logits)) if soft_argmax else None,
        },
        "gaussian_heatmaps": {
            "kpx": lambda: custom_ops.gaussian_heatmaps(keypoints, (h, w), 2.0),
            "kornia": (lambda: render(keypoints, std, (h, w), normalized_coordinates=False)) if render else None,
        },
        "decode_heatmaps(dark)": {"kpx": lambda: custom_ops.decode_heatmaps(heatmaps, refine="dark")},
    }
    with torch.inference_mode():
        floor = median_ms(lambda: dst.copy_(src), device, warmup, reps)
        for op, candidates in rows.items():
            row = {"op": op, "shape": [b, k, h, w], "device": device, "floor_ms": floor,
                   "floor": f"dst.copy_(src), {src.numel() * src.element_size() / 1e6:.1f} MB"}  # fmt: skip
            for who, fn in candidates.items():
                if fn is None:
                    continue
                try:
                    row[f"{who}_ms"] = median_ms(fn, device, warmup, reps)
                except Exception as exc:
                    row[f"{who}_error"] = " ".join(str(exc).split())[:200]
            if "kpx_ms" in row:
                row["kpx_over_floor"] = row["kpx_ms"] / floor
                if "kornia_ms" in row:
                    row["kornia_over_kpx"] = row["kornia_ms"] / row["kpx_ms"]
            report.timings.append(row)
            kpx_ms = row.get("kpx_ms", float("nan"))
            kornia = f", kornia {row['kornia_ms']:.4f} ms" if "kornia_ms" in row else ""
            print(f"  time {op} {(b, k, h, w)}: kpx {kpx_ms:.4f} ms{kornia}, floor {floor:.4f} ms", flush=True)


def timings(report: Report, device: str, shapes: Sequence[tuple[int, ...]], warmup: int, reps: int) -> None:
    soft_argmax, _, version = _kornia()
    report.environment["kornia"] = version
    if soft_argmax is None:
        report.skip("timings: kornia rows", f"kornia is {version}")
    report.notes.append("decode_heatmaps(dark) has no kornia equivalent: timed against the copy floor only")
    g = torch.Generator().manual_seed(5)
    for shape in shapes:
        if report.out_of_time():
            report.skip(f"timings at {shape}", "--time-limit reached")
            continue
        _time_shape(report, device, shape, warmup, reps, g)


# --- the environment --------------------------------------------------------------------------------------------------


def _run_text(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except Exception as exc:
        return f"failed: {exc}"
    return done.stdout.strip() or done.stderr.strip()


def environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "kpx": custom_ops.__version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
        "ops": [s.name for s in custom_ops.list_ops()],
    }
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            env[module] = importlib.import_module(module).__version__
        except Exception as exc:
            env[module] = f"not importable ({type(exc).__name__})"
    with contextlib.suppress(Exception):
        import onnxruntime

        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
        env["onnxruntime_path"] = str(Path(onnxruntime.__file__).parent)
    commit = _run_text(["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "--short", "HEAD"])
    env["git_commit"] = commit if commit and " " not in commit else None
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["cudnn"] = torch.backends.cudnn.version()
        env["tf32"] = (f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
                       f"cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
                       f"float32_matmul_precision={torch.get_float32_matmul_precision()}")  # fmt: skip
    env["nvidia_smi"] = _run_text(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    return env


# --- output -----------------------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def markdown(report: Report) -> str:
    data = report.as_dict()
    env = report.environment
    title = {"cuda": "CUDA report", "dry-run-cpu": "CUDA report: DRY RUN on the CPU (no GPU was used)",
             "no-cuda": "CUDA report: NO CUDA DEVICE, CUDA checks skipped"}[report.mode]  # fmt: skip
    lines = [f"# kpx {title}", ""]
    if not report.complete:
        lines += ["> **INCOMPLETE**: written after a section; the run did not finish (or is still running).", ""]
    if report.mode == "dry-run-cpu":
        lines += ["> Dry run: every check ran with device `cpu` and ONNX Runtime's CPU execution provider, at reduced",
                  "> render and timing sizes. It proves the script, not CUDA.", ""]  # fmt: skip
    if report.mode == "no-cuda":
        lines += ["> torch.cuda.is_available() is False: nothing CUDA ran. Only the CPU sanity check of the",
                  "> comparison code ran. See 'Skipped'.", ""]  # fmt: skip
    s = data["summary"]
    verdict = "PASS" if not report.failed else "FAIL"
    lines += [f"**{verdict}**: {s['passed']} of {s['checks']} checks passed, {s['failed']} failed, "
              f"{s['skipped']} skipped; exit code {data['exit_code']}.", ""]  # fmt: skip
    lines += ["## Environment", "", "| what | value |", "|---|---|"]
    keys = ["date", "hostname", "gpu", "nvidia_smi", "gpu_capability", "gpu_memory_gib", "platform", "python", "kpx",
            "git_commit", "torch", "torch_cuda", "cudnn", "tf32", "ort_cuda_probe", "onnx", "onnxscript", "onnxruntime",
            "onnxruntime_providers", "onnxruntime_path", "kornia", "cpu_threads"]  # fmt: skip
    lines += [f"| {k} | {_fmt(env.get(k))} |" for k in keys if k in env]
    lines += [f"| mode | {report.mode} (device `{report.device}`{', --quick' if report.quick else ''}) |", ""]
    lines += ["## Checks by group", "", "| group | passed | failed |", "|---|---:|---:|"]
    lines += [f"| {g} | {c['passed']} | {c['failed']} |" for g, c in s["groups"].items()]
    lines.append("")
    if report.failed:
        lines += ["## Failures", ""]
        lines += [f"- **[{c.group}] {c.name}**: {c.detail}" for c in report.failed]
        lines.append("")
    lines += ["## Skipped", ""]
    lines += [f"- {s['what']}: {s['why']}" for s in report.skipped] or ["- nothing"]
    lines.append("")
    if report.timings:
        lines += ["## Timings (median ms)", "",
                  f"Device `{report.device}`; floor: a device-to-device copy of the same bytes (`dst.copy_(src)`).", "",
                  "| op | (B, K, H, W) | kpx | kornia | floor | kpx / floor | kornia / kpx |",
                  "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for t in report.timings:
            kornia = _fmt(t.get("kornia_ms")) or t.get("kornia_error", "")
            lines.append(f"| {t['op']} | {tuple(t['shape'])} | {_fmt(t.get('kpx_ms')) or t.get('kpx_error', '')} | "
                         f"{kornia} | {_fmt(t['floor_ms'])} | {_fmt(t.get('kpx_over_floor'))} | "
                         f"{_fmt(t.get('kornia_over_kpx'))} |")  # fmt: skip
        lines.append("")
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    lines += ["## Every check", "", "| group | check | result | max abs | max rel | detail |"]
    lines += ["|---|---|---|---:|---:|---|"]
    for c in report.checks:
        detail = c.detail.replace("|", "/")[:300]
        if c.group == "ort":
            off = c.extra.get("nodes_off_provider")
            detail = (detail + f" providers {c.extra.get('providers')}, {c.extra.get('nodes')} nodes, "
                      f"{len(off or [])} off-provider").strip()  # fmt: skip
        lines.append(f"| {c.group} | {c.name} | {'pass' if c.passed else '**FAIL**'} | {_fmt(c.max_abs)} | "
                     f"{_fmt(c.max_rel)} | {detail} |")  # fmt: skip
    lines += ["", f"Sections (s): {json.dumps({k: round(v, 1) for k, v in report.seconds.items()})}", ""]
    return "\n".join(lines)


def write(report: Report, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "cuda_report.json").write_text(json.dumps(report.as_dict(), indent=1) + "\n")
    (out / "cuda_report.md").write_text(markdown(report))


# --- main -------------------------------------------------------------------------------------------------------------


def _timed(report: Report, out: Path, section: str, fn: Callable[[], None]) -> None:
    """Runs one section, then writes both files (so that a run stopped later still leaves a report)."""
    if report.out_of_time():
        report.skip(section, "--time-limit reached before this section")
        return
    print(f"# {section}", flush=True)
    t0 = time.perf_counter()
    try:
        fn()
    except Exception as exc:  # a crash of one section is a failed check, not a lost report
        report.add(_error_check(section, f"{section} (section crashed)", exc))
    report.seconds[section] = time.perf_counter() - t0
    print(f"#   {section}: {report.seconds[section]:.1f} s, {len(report.failed)} failed so far", flush=True)
    write(report, out)


def _ort_section(report: Report, out: Path, device: str, specs: Sequence[OpSpec], quick: bool) -> None:
    if report.out_of_time():
        report.skip("ort", "--time-limit reached before this section")
        return
    ort, why = ort_status(device)
    if ort is None:
        report.skip("ort: parity matrix", why)
        return
    provider = "cuda" if device == "cuda" else "cpu"
    if provider == "cuda":
        from export_tools.runtimes.ort import OrtCudaRunner

        probe = OrtCudaRunner.probe()
        report.environment["ort_cuda_probe"] = probe
        if probe != "works":
            report.add(Check("environment", "ORT CUDA EP runs a one-node model", False,
                             detail=f"OrtCudaRunner.probe(): {probe}"))  # fmt: skip
            report.skip("ort: parity matrix", f"the CUDA execution provider is listed but does not run: {probe}")
            return
    reduced = provider == "cpu" and quick
    if reduced:
        report.skip("ort: part of the parity matrix (dry run --quick)",
                    f"float32 at (function, 18) and (inline, 17) for every op, float16 for {SANITY_OP} only; the "
                    "CUDA run and a dry run without --quick run all 8 cases of every op")  # fmt: skip
    _timed(report, out, "ort", lambda: ort_checks(report, ort, provider, specs, reduced=reduced))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for cuda_report.md and cuda_report.json")
    parser.add_argument("--quick", action="store_true", help="fewer timing repetitions (and sizes on the CPU)")
    parser.add_argument(
        "--device",
        choices=("auto", "cuda", "cpu"),
        default="auto",
        help="auto: CUDA if there, else skip the CUDA checks; cpu: dry run of the whole flow",
    )
    parser.add_argument("--time-limit", type=float, default=0.0, metavar="S",
                        help="start no further section (or ORT op) after S seconds; the rest is listed as skipped "
                             "(0: no limit)")  # fmt: skip
    parser.add_argument("--self-test-fail", action="store_true", help=argparse.SUPPRESS)  # corrupts PyTorch results
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    start = time.perf_counter()

    if args.device == "cpu":
        mode, device = "dry-run-cpu", "cpu"
    elif torch.cuda.is_available():
        mode, device = "cuda", "cuda"
    elif args.device == "cuda":
        print("--device cuda: torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    else:
        mode, device = "no-cuda", "cpu"
    report = Report(mode=mode, device=device, quick=args.quick)
    report.deadline = start + args.time_limit if args.time_limit > 0 else None
    report.environment = environment(device)
    env, out = report.environment, args.out
    print(f"# kpx CUDA report: mode {mode}, device {device}, torch {env['torch']} (CUDA {env['torch_cuda']}), "
          f"onnxruntime {env.get('onnxruntime')}, {env.get('gpu') or env.get('nvidia_smi') or 'no GPU'}")  # fmt: skip
    if mode == "dry-run-cpu":
        print("# DRY RUN: device cpu and ONNX Runtime's CPU execution provider; no CUDA is exercised")
    specs = custom_ops.list_ops()
    corrupt = args.self_test_fail
    write(report, out)

    if mode == "no-cuda":
        why = "no CUDA device: torch.cuda.is_available() is False"
        for what in ("pytorch: ops on CUDA vs the float64 reference", "pytorch-fp16: ops on CUDA in float16",
                     "ort: parity matrix on CUDAExecutionProvider", "render: gaussian_heatmaps on CUDA, no host sync",
                     "timings on the GPU"):  # fmt: skip
            report.skip(what, why)
        sanity = [custom_ops.get_op(SANITY_OP)]
        report.notes.append(f"sanity: {SANITY_OP} on the CPU in float32 against its float64 reference, through the "
                            "same comparison code as the CUDA checks")  # fmt: skip
        _timed(
            report,
            out,
            "sanity",
            lambda: pytorch_checks(report, "cpu", sanity, half=False, corrupt=corrupt, group="sanity"),
        )
    else:
        batch = RENDER_BATCH if device == "cuda" else DRY_BATCH
        if device == "cuda":
            shapes = [(RENDER_BATCH, k, h, w) for k, h, w in RENDER_SHAPES]
            warmup, reps = (3, 20) if args.quick else (10, 100)
        else:
            shapes = [(DRY_BATCH, 17, 64, 48)]
            warmup, reps = (1, 3) if args.quick else (2, 10)
            report.notes.append(f"dry run: render checks at batch {DRY_BATCH} (CUDA: {RENDER_BATCH}), without "
                                "set_sync_debug_mode (CUDA only)")  # fmt: skip
            report.notes.append(f"dry run: timings on the CPU at {shapes} only; they say nothing about the GPU")
        _timed(report, out, "pytorch", lambda: pytorch_checks(report, device, specs, half=False, corrupt=corrupt))
        _timed(report, out, "render", lambda: render_checks(report, device, batch))
        _timed(report, out, "pytorch-fp16", lambda: pytorch_checks(report, device, specs, half=True, corrupt=corrupt))
        _ort_section(report, out, device, specs, args.quick)
        _timed(report, out, "timings", lambda: timings(report, device, shapes, warmup, reps))

    report.seconds["total"] = time.perf_counter() - start
    report.complete = True
    write(report, out)
    s = report.as_dict()["summary"]
    print(
        f"# {mode}: {s['passed']} of {s['checks']} checks passed, {s['failed']} failed, {s['skipped']} skipped "
        f"({report.seconds['total']:.0f} s); wrote {out / 'cuda_report.md'} and {out / 'cuda_report.json'}"
    )
    for item in report.skipped:
        print(f"# skipped: {item['what']}: {item['why']}")
    return report.exit_code()


if __name__ == "__main__":
    sys.exit(main())
