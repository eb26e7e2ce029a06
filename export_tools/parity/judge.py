"""Judging one input set on one runtime: every output against its tolerance, keypoint outputs in pixels.

- Float outputs: ``|a - e| <= rtol * |e| + atol + scale_tol * S`` (:mod:`export_tools.parity.compare`), with
  ``(rtol, atol)`` from the caller, else a one-op model's registry entry, else the output dtype's default, and
  ``scale_tol`` by dtype (or the caller's).
- Keypoint outputs (the file's ``kpx.outputs``, or ``pixels_per_unit=``): each keypoint's displacement in pixels
  against ``px_tol``, ambiguous peaks apart (:mod:`export_tools.parity.keypoints`). Their float statistics are
  still reported; the pixel verdict is the output's verdict, unless a float tolerance was given for that output
  (``tolerances=``, ``--atol/--rtol``) or a one-op model's registry entry covers it (the op's contract, which
  kpx's own tests hold every op to): then the float verdict decides and the pixels are reported.
- The decoder's inputs on both sides, read when a keypoint moved (:class:`DecoderProbe`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from export_tools.errors import one_line
from export_tools.parity.compare import OutputStats, compare_output, scale_tolerance_for, tolerance_for
from export_tools.parity.keypoints import (
    DEFAULT_PX_TOL,
    DecoderValues,
    KeypointOutput,
    confident_keypoints,
    grid_moves,
    judge_keypoints,
)


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float
    scale_tol: float


class Judge:
    """How one file's outputs are judged (see the module doc)."""

    def __init__(
        self,
        proto: Any,
        module: Any = None,
        *,
        tolerances: Mapping[str, tuple[float | None, float | None]] | None = None,
        scale_tol: float | None = None,
        pixels_per_unit: Mapping[str, tuple[float, float]] | None = None,
        px_tol: float | None = None,
        allow_flips: float = 0.0,
        min_score: float | None = None,
        grid_stats: bool = False,
    ) -> None:
        from export_tools.filemeta import OUTPUTS_KEY, read

        self.names = [o.name for o in proto.graph.output]
        self.spec = getattr(module, "spec", None)
        self.overrides = _checked_tolerances(tolerances, self.names) if tolerances is not None else {}
        self.scale_tol = _fraction(scale_tol, "scale_tol", upper=math.inf) if scale_tol is not None else None
        self.px_tol = DEFAULT_PX_TOL if px_tol is None else _fraction(px_tol, "px_tol", upper=math.inf)
        self.allow_flips = _fraction(allow_flips, "allow_flips", upper=1.0)
        described = read(proto, OUTPUTS_KEY)
        self.keypoints = {
            name: KeypointOutput.from_metadata(name, info)
            for name, info in described.items()
            if isinstance(info, dict) and info.get("kind") == "keypoints" and name in self.names
        }
        for name, per_unit in _checked_pixels(pixels_per_unit, self.names).items():
            self.keypoints[name] = KeypointOutput(name, space="px", per_unit=per_unit)
        #: confident keypoints moved by more than one grid step (quantized files): the scores output and the step
        #: a quantized file (INT8 QDQ) against its float reference (an ONNX file or the PyTorch model): its confident
        #: keypoints decide, flips are judged against the maps' own difference, and its other float outputs (scores)
        #: differ by design: reported, and judged only where the caller gave a tolerance
        self.quantized = any(n.op_type == "DequantizeLinear" for n in proto.graph.node)
        self.min_score = None if min_score is None else _fraction(min_score, "min_score", upper=math.inf)
        wanted = grid_stats or self.quantized or min_score is not None
        self.grid = grid_step(proto) if wanted else None
        scores = [n for n, info in described.items() if isinstance(info, dict) and info.get("kind") == "scores"]
        self.scores = next((n for n in (*scores, "scores") if n in self.names), None)

    def tolerance(self, name: str, dtype: np.dtype) -> Tolerance:
        """The caller's ``(rtol, atol)`` for ``name`` (a ``None`` takes the default), else a one-op model's registry
        entry, else the dtype's default. ``scale_tol``: the caller's, else the dtype's where kpx's defaults judge
        (``(rtol, atol)`` given by the caller or the op's registry entry are taken as they are: 0)."""
        torch_dtype = getattr(torch, np.dtype(dtype).name, None)
        given = self.overrides.get(name, (None, None))
        registry = self.spec is not None and torch_dtype in self.spec.tolerances
        base = self.spec.tolerances[torch_dtype] if registry else tolerance_for(dtype)
        rtol, atol = base[0] if given[0] is None else given[0], base[1] if given[1] is None else given[1]
        if np.dtype(dtype).kind != "f":
            scale = 0.0
        elif self.scale_tol is not None:
            scale = self.scale_tol
        else:
            scale = 0.0 if registry or name in self.overrides else scale_tolerance_for(dtype)
        return Tolerance(rtol, atol, scale)

    def _confident(self, expected: Sequence[np.ndarray], keypoints: np.ndarray) -> tuple[np.ndarray, str] | None:
        """The keypoints a quantized file is judged on: those the float reference scores at least ``min_score``."""
        if not self.quantized or self.scores is None:
            return None
        shape = np.shape(keypoints)[:-1]
        found = confident_keypoints(expected[self.names.index(self.scores)], shape, self.min_score)
        if found is None:
            return None
        mask, threshold = found
        return mask, f"{int(mask.sum())} confident keypoints (score >= {threshold:.3g})"

    def _float_rule(self, name: str, dtype: np.dtype) -> bool:
        """A float tolerance decides a keypoint output when the caller gave one for it, or when a one-op model's
        registry entry (the op's contract) covers its dtype; the pixel stats are then reported only."""
        torch_dtype = getattr(torch, np.dtype(dtype).name, None)
        return name in self.overrides or (self.spec is not None and torch_dtype in self.spec.tolerances)

    def compare(self, name: str, expected: np.ndarray, actual: np.ndarray) -> OutputStats:
        t = self.tolerance(name, np.asarray(actual).dtype)
        return compare_output(name, expected, actual, t.rtol, t.atol, scale_tol=t.scale_tol)

    def outputs(
        self,
        expected: Sequence[np.ndarray],
        actual: Sequence[np.ndarray],
        feeds: Mapping[str, np.ndarray],
        dims: Mapping[str, int],
        analyse: Callable[[str], DecoderValues | str] | None = None,
        *,
        always: bool = False,
    ) -> list[OutputStats]:
        """Every output's stats and verdict; keypoint outputs judged in pixels (a quantized file's: its confident
        keypoints, the float reference's score at least ``min_score``, decide; every keypoint is reported)."""
        stats = []
        for name, e, a in zip(self.names, expected, actual):
            out = self.compare(name, e, a)
            output = self.keypoints.get(name)
            if output is not None and out.shape_equal:
                probe = (lambda n=name: analyse(n)) if analyse is not None else None
                kp = judge_keypoints(output, e, a, feeds, dims, px_tol=self.px_tol, allow_flips=self.allow_flips,
                                     analyse=probe, always=always, only=self._confident(expected, e))  # fmt: skip
                if kp is not None:
                    out.keypoints, out.max_abs_px = kp, kp.max_px
                    kp.decides = not self._float_rule(name, np.asarray(a).dtype)
                    if kp.decides:
                        out.passed = kp.passed
            elif self.quantized and name not in self.overrides and np.asarray(a).dtype.kind == "f" and out.shape_equal:
                out.passed = out.nan_pattern_equal and out.inf_pattern_equal  # reported (see __init__)
            stats.append(out)
        if self.grid is not None and self.scores is not None:
            reference_scores = expected[self.names.index(self.scores)]
            for out in stats:
                if out.keypoints is not None:
                    grid_moves(out.keypoints, reference_scores, *self.grid, min_score=self.min_score)
        return stats


def grid_step(proto: Any) -> tuple[float, str] | None:
    """One step of the decoder's grid in the pixels a file's keypoints are judged in, and its name: a heatmap pixel
    (network-input px per heatmap px, the larger axis; MSRA ``w_in / w``, UDP ``w_in / (w - 1)``) or a SimCC bin
    (``1 / split_ratio`` input px), from the file's ``kpx.pose``; one heatmap pixel for a bare heatmap decoder.
    ``None`` when the file does not say."""
    from export_tools.filemeta import OUTPUTS_KEY, POSE_KEY, read

    pose = read(proto, POSE_KEY)
    if isinstance(pose, dict) and pose.get("decode"):
        kind = str(pose["decode"]).partition(":")[0]
        if kind == "simcc" and pose.get("split_ratio"):
            return 1.0 / float(pose["split_ratio"]), "SimCC bin"
        size, heatmap = pose.get("input_size"), pose.get("heatmap_size")
        if kind == "heatmap" and size and heatmap:
            span = [d - 1 if pose.get("udp") else d for d in (heatmap[1], heatmap[0])]
            if min(span) > 0:
                return max(size[0] / span[0], size[1] / span[1]), "heatmap px"
        return None
    spaces = {info.get("space") for info in read(proto, OUTPUTS_KEY).values() if isinstance(info, dict)}
    return (1.0, "heatmap px") if "heatmap" in spaces else None


class DecoderProbe:
    """Reads the file's decoder inputs on a runtime and on the reference (see :class:`DecoderValues`).

    The runtime's decoder inputs are the values the graph names (made extra graph outputs). With PyTorch as the
    reference, each side's keypoints are also followed back into the decoder's units through PyTorch's own mapping
    (three runs with the decoder's keypoints replaced by probe points give each keypoint's affine map; a fourth
    checks that it is affine), so that a runtime's peak is the local maximum of PyTorch's map its keypoint lies on.
    PyTorch's decoding of the runtime's decoder inputs (the "decoding departs" test) is used for float32 and
    float64 inputs only: ONNX Runtime's CPU provider runs float16 ``Conv``/``MatMul`` in float32 between inserted
    casts and drops a cast pair on the way into a kpx body, so the float16 values a graph output shows are not
    what its decoder read (measured: on nearly flat float16 maps the decoded argmax is elsewhere).
    """

    def __init__(self, model: bytes, judge: Judge) -> None:
        import onnx

        from export_tools.graph import decoder_inputs

        proto = onnx.load_from_string(model)
        found = decoder_inputs(proto)
        self.why = found if isinstance(found, str) else None
        self.kind, self.values = (None, []) if isinstance(found, str) else found
        self.judge = judge
        self.exposed, self.positions = b"", []
        if self.why is not None:
            return
        known = [o.name for o in proto.graph.output]
        extra = [v for v in self.values if v not in known]
        proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(v) for v in extra)
        names = [o.name for o in proto.graph.output]
        self.exposed = proto.SerializeToString()
        self.positions = [names.index(v) for v in self.values]

    def read(
        self, open_runner: Callable[[bytes], Any], feeds: Sequence[np.ndarray], reference: Any,
        torch_feeds: Sequence[np.ndarray], output: str,
    ) -> DecoderValues | str:  # fmt: skip
        """Both sides' decoder inputs for one input set, or why they cannot be read."""
        from export_tools.parity.pytorch import TorchRunner
        from export_tools.runtimes import ReferenceRunner

        if self.why is not None:
            return self.why
        index = self.judge.names.index(output)
        try:
            runner = open_runner(self.exposed)
            try:
                outs = runner.run(list(feeds))
            finally:
                if hasattr(runner, "close"):
                    runner.close()
        except Exception as exc:
            return f"the decoder inputs could not be read on the runtime ({type(exc).__name__}: {one_line(exc)[:120]})"
        runtime = [outs[p] for p in self.positions]
        dtype = np.asarray(runtime[0]).dtype
        extra: dict[str, Any] = {}
        from export_tools.parity.onnxref import OnnxReference

        if isinstance(reference, OnnxReference):  # another file: its own decoder inputs, paired by the decoder nodes
            seen = reference.decoder_values(list(feeds))
            if isinstance(seen, str):
                return seen
            ref = _in_order(seen, runtime)
            if ref is None or (reference.decoder is not None and reference.decoder[0] != self.kind):
                return "the decoder inputs of the reference file and of the checked file do not pair"
            extra["noise"] = _difference(ref, runtime)
        elif isinstance(reference, TorchRunner):
            seen = reference.decoder_call(torch_feeds)
            if isinstance(seen, str):
                return seen
            ref = _in_order(seen[0], runtime)
            if ref is None:
                return "the decoder inputs of PyTorch and of the file do not pair by shape"
            extra = _follow(reference, torch_feeds, seen, index, outs[index])
            if self.judge.quantized:  # the network is quantized: its maps differ by design
                extra["noise"] = _difference(ref, runtime)
            if dtype.kind == "f" and dtype.itemsize >= 4:  # see the class doc: not for float16
                replaced = reference.decoder_call(torch_feeds, inputs=_in_order(runtime, seen[0]))
                if not isinstance(replaced, str):
                    extra.update(counterfactual=replaced[2][index], runtime_output=outs[index])
        else:
            ref_outs = ReferenceRunner(self.exposed, float64=True).run(list(feeds))
            ref = [ref_outs[p] for p in self.positions]
        stats = [self.judge.compare(v, r, t) for v, r, t in zip(self.values, ref, runtime)]
        worst = max(stats, key=lambda s: s.max_abs / s.bound if s.bound else s.max_abs)
        error = (f"decoder inputs ({dtype}): max abs {worst.max_abs:.3g} of max|value| {worst.scale:.3g} "
                 f"(allowed {worst.bound:.3g}{' + rtol' if worst.rtol else ''})")  # fmt: skip
        return DecoderValues(self.kind, ref, runtime, all(s.passed for s in stats), error, str(dtype), **extra)


def _difference(reference: Sequence[np.ndarray], runtime: Sequence[np.ndarray]) -> np.ndarray | None:
    """``(rows, K)``: each keypoint's largest ``|reference - runtime|`` over its decoder inputs (heatmap; both SimCC
    vectors), NaN where they are not finite."""
    worst = None
    for r, t in zip(reference, runtime):
        r64, t64 = np.asarray(r, np.float64), np.asarray(t, np.float64)
        if r64.ndim < 3 or r64.shape != t64.shape:
            return None
        with np.errstate(invalid="ignore"):
            diff = np.abs(r64 - t64).reshape(-1, r64.shape[1], int(np.prod(r64.shape[2:]))).max(-1)
        worst = diff if worst is None else np.maximum(worst, diff)
    return worst


def _follow(reference: Any, feeds: Sequence[np.ndarray], seen: tuple, index: int, actual: np.ndarray) -> dict:
    """Each side's keypoints in the decoder's units: PyTorch's from its decoder, the runtime's by inverting, per
    keypoint, the affine map PyTorch applies from the decoder to output ``index`` (``{}`` when it is not affine)."""
    decoded = np.asarray(seen[1][0], np.float64)
    ratio = float(getattr(_decoder_of(reference), "split_ratio", 1.0))
    out: dict[str, Any] = {"reference_keypoints": decoded.reshape(-1, decoded.shape[-2], 2), "bins_per_unit": ratio}
    probes = []
    for point in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (3.0, 5.0)):
        run = reference.decoder_call(feeds, keypoints=np.broadcast_to(np.asarray(point), decoded.shape).copy())
        if isinstance(run, str) or np.shape(run[2][index]) != np.shape(actual):
            return out
        probes.append(np.asarray(run[2][index], np.float64).reshape(-1, decoded.shape[-2], 2))
    f0, fx, fy, f3 = probes
    ax, ay = fx - f0, fy - f0
    with np.errstate(all="ignore"):
        if not np.allclose(f0 + 3 * ax + 5 * ay, f3, rtol=1e-4, atol=1e-3 * max(1.0, float(np.abs(f3).max()))):
            return out  # the mapping is not affine in the decoder's keypoints
        det = ax[..., 0] * ay[..., 1] - ay[..., 0] * ax[..., 1]
        d = np.asarray(actual, np.float64).reshape(f0.shape) - f0
        u = (d[..., 0] * ay[..., 1] - ay[..., 0] * d[..., 1]) / det
        v = (ax[..., 0] * d[..., 1] - d[..., 0] * ax[..., 1]) / det
    out["runtime_keypoints"] = np.stack([u, v], -1)
    return out


def _decoder_of(reference: Any) -> Any:
    from export_tools.parity.pytorch import _decoder_modules

    found = _decoder_modules(reference.module)
    return found[0] if found else None


def _cast_to_float(graph: Any, value: str) -> str | None:
    """The output of a ``Cast(to=FLOAT)`` node reading ``value`` (a kpx body's first step), if there is one."""
    from onnx import TensorProto

    for node in graph.node:
        reads = node.op_type == "Cast" and node.input and node.input[0] == value
        if reads and any(a.name == "to" and a.i == TensorProto.FLOAT for a in node.attribute):
            return node.output[0]
    return None


def _in_order(arrays: Sequence[np.ndarray], like: Sequence[np.ndarray]) -> list[np.ndarray] | None:
    """``arrays`` reordered to pair with ``like`` by shape (order kept where shapes repeat); ``None`` if they
    cannot pair."""
    if len(arrays) != len(like):
        return None
    if [a.shape for a in arrays] == [b.shape for b in like]:
        return list(arrays)
    if len(arrays) == 2 and arrays[0].shape == like[1].shape and arrays[1].shape == like[0].shape:
        return [arrays[1], arrays[0]]
    return None


def _fraction(value: Any, arg: str, *, upper: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= upper or math.isnan(value):
        bound = "between 0 and 1" if upper == 1.0 else "a finite number >= 0"
        raise ValueError(f"{arg} must be {bound}; got {value!r}")
    if math.isinf(value):
        raise ValueError(f"{arg} must be finite; got {value!r}")
    return float(value)


def _checked_tolerances(given: Any, names: list[str]) -> dict[str, tuple[float | None, float | None]]:
    if not isinstance(given, Mapping):
        raise TypeError(f"tolerances must be a dict {{output_name: (rtol, atol)}}; got {type(given).__name__}")
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"tolerances name outputs {unknown} that the model does not have; its outputs are {names}")
    out = {}
    for name, pair in given.items():
        try:
            rtol, atol = (None if v is None else float(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(f"tolerances[{name!r}] must be (rtol, atol); got {pair!r}") from None
        if not all(v is None or (v >= 0 and math.isfinite(v)) for v in (rtol, atol)):
            raise ValueError(f"tolerances[{name!r}] = {pair!r}: rtol and atol must be finite and >= 0 (or None)")
        out[name] = (rtol, atol)
    return out


def _checked_pixels(given: Any, names: list[str]) -> dict[str, tuple[float, float]]:
    """``pixels_per_unit`` checked: real outputs, two finite numbers > 0 each."""
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise TypeError(f"pixels_per_unit must be a dict {{output_name: (sx, sy)}}; got {type(given).__name__}")
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"pixels_per_unit names outputs {unknown} that the model does not have; its outputs are "
                         f"{names}")  # fmt: skip
    out = {}
    for name, pair in given.items():
        try:
            sx, sy = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(f"pixels_per_unit[{name!r}] must be (sx, sy); got {pair!r}") from None
        if not all(math.isfinite(v) and v > 0 for v in (sx, sy)):
            raise ValueError(f"pixels_per_unit[{name!r}] = {pair!r}: both must be finite and > 0")
        out[name] = (sx, sy)
    return out
