"""Keypoint outputs judged in pixels, and what moved a keypoint: an ambiguous peak, rounding, or a departure.

A keypoint output ``(..., K, 2)`` as ``(x, y)`` is judged by each keypoint's displacement ``|actual - expected|``
(Euclidean), in **network-input pixels** where the file says how to get there: a file that maps keypoints to frame
pixels through boxes (``--boxes``, ``--crop``) has each displacement divided by its box's frame pixels per input
pixel (the crop's scale after padding and the aspect fix), so that one tolerance means the same for a person of 40
and of 400 pixels (as COCO's OKS, which scales with the person). Keypoints in heatmap pixels (a bare decoder) and
normalized coordinates (a soft-argmax head: ``((W - 1) / 2, (H - 1) / 2)`` px per unit) are judged in map pixels.

A keypoint may move ``px_tol`` plus what its output dtype cannot resolve (half the dtype's spacing at its
coordinates: 0.25 px at x = 600 in float16, 3e-5 px in float32). One that moved further is explained, when the
file's decoder input (heatmaps, SimCC vectors) can be read on both sides (:class:`DecoderValues`):

- **ambiguous peak**: the argmax changed between two places whose values are closer than the rounding of the file
  (the decoder inputs agree within the float tolerance): a real difference, caused by a near-tie, not by the file;
  reported with the top-2 gap against the dtype's resolution at the peak; accepted with ``allow_flips``;
- **rounding drift**: the same argmax, the decoder inputs agree, and PyTorch's own decoding of the runtime's decoder
  inputs lands where the runtime did: the refinement (DARK's Newton step on a flat peak) amplified rounding;
- **departure**: the decoder inputs do not agree (the network departs: localisation names where), or the runtime's
  keypoints differ from PyTorch's decoding of the runtime's own decoder inputs (the decoding or mapping departs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

#: the default keypoint tolerance, in network-input pixels (or map pixels where the file has no input scale)
DEFAULT_PX_TOL = 0.1
"""0.1 network-input pixel. Why (docs/parity.md): COCO's OKS scores a keypoint with ``exp(-d^2 / (2 s^2 k^2))``; for
its most precise keypoint (an eye, ``k = 0.05``) of a person filling a 192x256 crop (``s = sqrt(192 * 256)``),
0.1 input px changes that keypoint's OKS by 4e-5, whatever the person's size in the frame (OKS scales with the
person as input pixels do); even 0.1 *frame* px on a 32x32 person changes it by 0.2 %.
Every export bug kpx has met moved keypoints by 0.5 px or more (a half-pixel convention, MSRA vs UDP scaling: up to
5 px, a box format: tens of px), while float32 files of real networks moved them by at most ~4e-3 input px outside
DARK's discontinuities on flat peaks (measured, docs/parity.md)."""


@dataclass
class KeypointOutput:
    """What the file says of one keypoint output (its ``kpx.outputs`` metadata): how to read its pixels."""

    name: str
    space: str = "input"  # "input" (network-input px), "frame" (through boxes), "heatmap", "map", "image", "px"
    units: str = "px"  # "px" or "normalized"
    per_unit: tuple[float, float] | None = None  # px per unit (x, y), when given (``pixels_per_unit=``)
    map_size: tuple[Any, Any] | None = None  # normalized: the map's (H, W), ints or symbolic dims
    align_corners: bool = True  # normalized: kornia's convention (True) or dsntnn's (False)
    boxes: str | None = None  # the input holding each keypoint row's box (frame space)
    box_format: str = "xyxy"
    padding: float = 1.0
    crop: bool = False  # the box is padded and aspect-fixed before the crop (topdown_crop), else used as is
    input_size: tuple[int, int] | None = None  # (w, h) of the network input

    @classmethod
    def from_metadata(cls, name: str, info: Mapping[str, Any]) -> KeypointOutput:
        fields = {k: v for k, v in info.items() if k in cls.__dataclass_fields__ and k != "name"}
        for key in ("per_unit", "input_size", "map_size"):
            if fields.get(key) is not None:
                fields[key] = tuple(fields[key])
        return cls(name, **fields)

    @property
    def judged_units(self) -> str:
        if self.space == "frame" and self.input_size:
            return "input px"
        return {"frame": "frame px", "heatmap": "heatmap px", "map": "map px", "image": "image px", "px": "px"}.get(
            self.space, "input px"
        )

    def pixel_scale(self, feeds: Mapping[str, np.ndarray], dims: Mapping[str, int], rows: int) -> np.ndarray | None:
        """``(rows, 2)`` output units per judged pixel (x, y), or ``None`` when the output cannot be read in pixels
        (normalized coordinates on a map whose size is not known)."""
        if self.per_unit is not None:
            return np.broadcast_to(1.0 / np.asarray(self.per_unit, np.float64), (rows, 2))
        if self.units == "normalized":
            sizes = [resolve_dim(v, dims) for v in (self.map_size or (None, None))]
            if any(s is None or s < 1 for s in sizes):
                return None
            (h, w), span = sizes, (1.0 if self.align_corners else 0.0)
            per_unit = ((w - span) / 2 or 1.0, (h - span) / 2 or 1.0)  # a 1-px axis: coordinate 0, any scale
            return np.broadcast_to(1.0 / np.asarray(per_unit, np.float64), (rows, 2))
        if self.space != "frame" or self.boxes is None or self.input_size is None or self.boxes not in feeds:
            return np.ones((rows, 2))
        box = np.asarray(feeds[self.boxes], np.float64).reshape(-1, 4)
        if box.shape[0] != rows:
            return np.ones((rows, 2))
        return box_pixels_per_input_pixel(box, self.box_format, self.padding, self.crop, self.input_size)


def resolve_dim(dim: Any, dims: Mapping[str, int]) -> int | None:
    """A dim of a graph value at one input set: an int, a symbolic dim of the inputs, or integer arithmetic of them
    as torch.export writes it (``((H - 1)//4) + 1``); ``None`` when it cannot be known."""
    import ast
    import operator

    if isinstance(dim, int):
        return dim
    if not isinstance(dim, str):
        return None
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
           ast.Mod: operator.mod}  # fmt: skip

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in dims:
            return int(dims[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        raise ValueError(dim)

    try:
        return value(ast.parse(dim, mode="eval").body)
    except (ValueError, SyntaxError, ZeroDivisionError):
        return None


def box_pixels_per_input_pixel(
    boxes: np.ndarray, box_format: str, padding: float, crop: bool, input_size: tuple[int, int]
) -> np.ndarray:
    """``(N, 2)`` frame pixels per network-input pixel (x, y) of each box. With ``crop`` the box is padded and
    aspect-fixed first, as ``topdown_crop`` does (mmpose's ``bbox_xyxy2cs`` and ``_fix_aspect_ratio``); without,
    the box is the region that was warped into the input."""
    # "xywh" and "cs" both carry the size in the last two columns
    size = boxes[:, 2:] - boxes[:, :2] if box_format == "xyxy" else boxes[:, 2:].copy()
    w_in, h_in = input_size
    if crop:
        size = size * padding
        aspect = w_in / h_in
        wide = size[:, 0] > size[:, 1] * aspect
        size = np.stack([np.where(wide, size[:, 0], size[:, 1] * aspect),
                         np.where(wide, size[:, 0] / aspect, size[:, 1])], 1)  # fmt: skip
    with np.errstate(invalid="ignore"):
        scale = np.abs(size) / np.asarray([w_in, h_in], np.float64)
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


@dataclass
class DecoderValues:
    """The decoder's inputs on both sides: ``kind`` ``"heatmap"`` (one ``(N, K, H, W)``) or ``"simcc"`` (x and y
    vectors ``(N, K, L)``), whether they agree, and where available each side's keypoints in the decoder's own units
    (heatmap pixels; SimCC: input pixels, ``bins_per_unit`` bins each), found by following PyTorch's mapping from
    the decoder to the output backwards; and PyTorch's decoding of the runtime's own decoder inputs."""

    kind: str
    reference: list[np.ndarray]
    runtime: list[np.ndarray]
    agree: bool  # the decoder inputs agree within the float tolerance of the file's dtype
    error: str  # how they compare, for the report ("max abs 8.4e-03 of max|value| 5.0e+03")
    dtype: str  # the file's dtype of the decoder input ("float16")
    reference_keypoints: np.ndarray | None = None  # (N, K, 2), decoder units
    runtime_keypoints: np.ndarray | None = None  # (N, K, 2), decoder units (the output mapped back)
    bins_per_unit: float = 1.0
    counterfactual: np.ndarray | None = None  # PyTorch's output keypoints from the runtime's decoder inputs
    runtime_output: np.ndarray | None = None  # the runtime's output keypoints in the same run
    #: (rows, K) each keypoint's largest |reference - runtime| over its decoder input, when the two sides are
    #: expected to differ (an ONNX reference: an INT8 file against its float32 original); peaks are judged against it
    noise: np.ndarray | None = None


@dataclass
class Flip:
    """A keypoint whose peak changed: ``index`` (row, keypoint), where each side's peak is (map or bin
    coordinates), the reference's gap between them, and the file dtype's resolution at the peak."""

    index: list[int]
    displacement: float
    reference_peak: list[int]
    runtime_peak: list[int]
    gap: float
    resolution: float
    ambiguous: bool

    @property
    def ulps(self) -> float:
        return self.gap / self.resolution if self.resolution > 0 else math.inf


@dataclass
class KeypointStats:
    """The keypoint verdict of one output on one runtime."""

    units: str
    count: int
    max_px: float
    p95_px: float
    median_px: float
    px_tol: float
    moved: int
    allow_flips: float = 0.0
    max_output_px: float | None = None  # the same displacement in the output's own units (frame px)
    output_units: str | None = None
    flips: list[Flip] = field(default_factory=list)
    drift: int = 0
    departures: int = 0
    departure_kind: str | None = None  # "decoder inputs" (the network) or "decoding" (after the decoder input)
    decoder: str | None = None  # how the decoder inputs compare
    analysis: str | None = None  # why the moved keypoints could not be classified
    nan_pattern_equal: bool = True
    max_non_flip: float = 0.0  # the largest displacement of a moved keypoint whose peak did not change
    output_dtype: str = "float32"  # the keypoints' dtype: its rounding is allowed on top of px_tol
    decides: bool = True  # False: a float tolerance judges this output (given, or the op's registry entry)
    decoding_checked: bool = False  # PyTorch decoded the runtime's decoder inputs (float32 files)
    decoder_dtype: str = "float"
    #: quantized files: one step of the decoder's grid (a heatmap pixel, a SimCC bin) in the judged units, and how
    #: many confident keypoints (reference score >= ``min_score``) moved by more than one step
    grid_px: float | None = None
    grid_name: str = "heatmap px"
    min_score: float | None = None
    confident: int | None = None
    confident_moved_grid: int | None = None
    noise_judged: bool = False  # flips judged against the decoder inputs' own difference (an ONNX reference)
    judged_only: str | None = None  # the keypoints the verdict counts, when not all ("929 confident keypoints ...")
    detail: Any = field(default=None, repr=False, compare=False)  # KeypointDetail, for plots (not in as_dict)

    @property
    def passed(self) -> bool:
        if not self.nan_pattern_equal:
            return False
        if not self.moved:
            return True
        if self.analysis is not None or self.drift or self.departures:
            return False
        return all(f.ambiguous for f in self.flips) and len(self.flips) <= self.allow_flips * max(self.count, 1)

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("detail", "flips")}
        out["flips"] = [{**asdict(f), "ulps": f.ulps} for f in self.flips]
        out["passed"] = self.passed
        return out

    def summary(self) -> str:
        """One line (or a few) for the table."""
        shown = f"max {self.max_px:.3g} {self.units}"
        if self.max_output_px is not None and self.output_units and self.output_units != self.units:
            shown += f" ({self.max_output_px:.3g} {self.output_units})"
        rounding = f" + {self.output_dtype} rounding" if self.output_dtype == "float16" else ""
        counted = f" of the {self.judged_only}" if self.judged_only else ""
        head = (f"{self.count} keypoints, {shown}, p95 {self.p95_px:.3g}, median {self.median_px:.3g}; "
                f"{self.moved}{counted} moved > {self.px_tol:g} {self.units}{rounding}")  # fmt: skip
        if self.confident is not None and self.grid_px is not None:
            head += (f"; {self.confident_moved_grid} of {self.confident} confident (score >= {self.min_score:.3g}) "
                     f"moved > 1 {self.grid_name} ({self.grid_px:.3g} {self.units})")  # fmt: skip
        if not self.nan_pattern_equal:
            head += "; NaN keypoints at other places"
        if not self.decides:
            head += " (reported; the output's float tolerance decides)"
        if not self.moved:
            return head + (": PASS" if self.passed else ": FAIL")
        if self.analysis is not None:
            return f"{head}: FAIL (not classified: {self.analysis})"
        ambiguous = [f for f in self.flips if f.ambiguous]
        clear = [f for f in self.flips if not f.ambiguous]
        parts = []
        if ambiguous and self.noise_judged:
            gaps = sorted(f.ulps for f in ambiguous)
            parts.append(f"{len(ambiguous)} ambiguous peak(s) (the argmax changed between two peaks whose reference "
                         f"values differ by {gaps[0]:.2g}{'' if len(gaps) == 1 else f'-{gaps[-1]:.2g}'} times the "
                         "decoder inputs' own difference there: the reference itself is ambiguous)")  # fmt: skip
        elif ambiguous:
            gaps = sorted(f.ulps for f in ambiguous)
            parts.append(f"{len(ambiguous)} ambiguous peak(s) (the argmax changed between two peaks {gaps[0]:.2g}"
                         f"{'' if len(gaps) == 1 else f'-{gaps[-1]:.2g}'} {self.decoder_dtype} resolution apart; "
                         "the decoder inputs agree)")  # fmt: skip
        if clear:
            parts.append(f"{len(clear)} flip(s) to a peak the reference ranks clearly lower (beyond the decoder "
                         "inputs' difference: the file changed the maps, not a near-tie)")  # fmt: skip
        if self.drift and self.noise_judged:
            parts.append(f"{self.drift} drift (same peak, moved by the difference of the decoder inputs, up to "
                         f"{self.max_non_flip:.3g} {self.units})")  # fmt: skip
        elif self.drift:
            also = ", PyTorch's decoding of the runtime's inputs lands there too" if self.decoding_checked else ""
            parts.append(f"{self.drift} rounding drift (same peak, decoder inputs agree{also}: the refinement "
                         "amplified rounding)")  # fmt: skip
        if self.departures:
            where = {
                "decoder inputs": "the decoder inputs depart (the network: see where)",
                "decoding": "the runtime's decoding departs from PyTorch's on the same decoder inputs",
            }
            parts.append(f"{self.departures} departure(s): {where.get(self.departure_kind or '', 'departs')}")
        verdict = "PASS" if self.passed else "FAIL"
        hint = ""
        if not self.passed and ambiguous and not clear and not self.departures and not self.drift:
            share = len(ambiguous) / max(self.count, 1)
            hint = f"; accept with --allow-flips {math.ceil(share * 1000) / 1000:g}"
        elif not self.passed and self.drift and not self.departures and self.noise_judged:
            hint = f"; a budget of --px-tol {_round_up(self.max_non_flip):g} would accept the drift"
        elif not self.passed and self.drift and not self.departures:
            hint = f"; within rounding: judge with --px-tol {_round_up(self.max_non_flip):g}"
        return f"{head}: {'; '.join(parts)}: {verdict}{hint}"


def _round_up(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return value
    exp = math.floor(math.log10(value))
    return math.ceil(value / 10**exp * 10) / 10 * 10**exp


def judge_keypoints(
    output: KeypointOutput,
    expected: np.ndarray,
    actual: np.ndarray,
    feeds: Mapping[str, np.ndarray],
    dims: Mapping[str, int],
    *,
    px_tol: float,
    allow_flips: float = 0.0,
    analyse: Callable[[], DecoderValues | str] | None = None,
    always: bool = False,
    only: tuple[np.ndarray, str] | None = None,
) -> KeypointStats | None:
    """Judges one keypoint output in pixels (see the module doc); ``None`` when it cannot be read in pixels.

    ``analyse()`` is called when some keypoint moved more than ``px_tol`` (or ``always``, for a plot): the decoder
    inputs on both sides (:class:`DecoderValues`), or why they cannot be had (a string). The stats keep the
    displacements and the decoder values for plotting (``stats.detail``, not part of the report). ``only``: a mask
    of the keypoints the verdict counts (``(rows, K)``, and what they are: the confident keypoints of a quantized
    file); the statistics still cover every keypoint."""
    e = np.asarray(expected, np.float64)
    a = np.asarray(actual, np.float64)
    if e.shape != a.shape or e.ndim < 2 or e.shape[-1] != 2:
        return None
    rows = int(np.prod(e.shape[:-2])) if e.ndim > 2 else 1
    per_px = output.pixel_scale(feeds, dims, rows)
    if per_px is None:
        return None
    e3, a3 = e.reshape(rows, e.shape[-2], 2), a.reshape(rows, e.shape[-2], 2)
    nan_equal = bool(np.array_equal(np.isnan(e3).any(-1), np.isnan(a3).any(-1)))
    finite = np.isfinite(e3).all(-1) & np.isfinite(a3).all(-1)
    delta = np.where(finite[..., None], a3 - e3, 0.0)
    judged = np.sqrt(((delta / per_px[:, None, :]) ** 2).sum(-1))  # (rows, K)
    shown = np.sqrt((delta**2).sum(-1))
    allowed = px_tol + _rounding(np.asarray(actual).dtype, e3, per_px)  # what the output dtype cannot resolve
    values = judged[finite]
    decisive = judged > allowed
    if only is not None and np.size(only[0]) != decisive.size:
        only = None  # a mask of other rows: every keypoint counts
    if only is not None:
        decisive &= np.asarray(only[0], bool).reshape(decisive.shape)
    stats = KeypointStats(
        units=output.judged_units, count=int(finite.sum()), max_px=float(values.max()) if values.size else 0.0,
        p95_px=float(np.percentile(values, 95)) if values.size else 0.0,
        median_px=float(np.median(values)) if values.size else 0.0, px_tol=float(px_tol),
        moved=int(decisive.sum()), allow_flips=float(allow_flips),
        max_output_px=float(shown[finite].max()) if values.size else 0.0,
        output_units={"frame": "frame px"}.get(output.space), nan_pattern_equal=nan_equal,
        output_dtype=str(np.asarray(actual).dtype),
    )  # fmt: skip
    stats.detail = KeypointDetail(judged, finite, None, e3, a3, allowed)
    if only is not None:
        stats.judged_only = only[1]
    if not stats.moved and not always:
        return stats
    found = analyse() if analyse is not None else "the file's decoder inputs were not found"
    if isinstance(found, str):
        stats.analysis = found if stats.moved else None
        return stats
    stats.detail.decoder = found
    try:
        _classify(stats, found, judged, a3, per_px, allowed, decisive)
    except ValueError as exc:  # decoder inputs whose rows are not the keypoints' rows
        stats.flips, stats.drift, stats.departures = [], 0, 0
        stats.analysis = f"the decoder inputs do not align with the keypoints ({exc})" if stats.moved else None
    return stats


def grid_moves(stats: KeypointStats, scores: np.ndarray | None, grid_px: float | None, grid_name: str,
               min_score: float | None = None) -> None:  # fmt: skip
    """Adds to ``stats`` how many confident keypoints moved by more than one step of the decoder's grid
    (``grid_px`` judged px: one heatmap pixel, one SimCC bin). Confident: the reference's score is at least
    ``min_score`` (default: half the largest finite score of the input set). Needs ``stats.detail``."""
    detail = stats.detail
    if detail is None or scores is None or grid_px is None:
        return
    found = confident_keypoints(scores, detail.judged.shape, min_score)
    if found is None:
        return
    mask, min_score = found
    confident = mask & detail.finite
    stats.grid_px, stats.grid_name, stats.min_score = float(grid_px), grid_name, float(min_score)
    stats.confident = int(confident.sum())
    stats.confident_moved_grid = int((detail.judged[confident] > grid_px).sum())


def confident_keypoints(
    scores: np.ndarray, shape: tuple[int, ...], min_score: float | None = None
) -> tuple[np.ndarray, float] | None:
    """``(mask, threshold)``: the keypoints whose reference score is at least ``min_score`` (default: half the largest
    finite score), as a ``shape`` mask; ``None`` when the scores do not hold one per keypoint."""
    s = np.asarray(scores, np.float64)
    if s.size != int(np.prod(shape)):
        return None
    s = s.reshape(shape)
    finite = np.isfinite(s)
    if min_score is None:
        min_score = 0.5 * float(s[finite].max()) if finite.any() else 0.0
    return finite & (s >= min_score), float(min_score)


@dataclass
class KeypointDetail:
    """Arrays behind a :class:`KeypointStats`, for plots: judged displacements ``(rows, K)``, which were finite,
    the decoder values, both sides' keypoints ``(rows, K, 2)`` and each keypoint's allowed displacement."""

    judged: np.ndarray
    finite: np.ndarray
    decoder: DecoderValues | None
    expected: np.ndarray
    actual: np.ndarray
    allowed: np.ndarray  # px_tol plus the output dtype's rounding, per keypoint


def _classify(
    stats: KeypointStats, values: DecoderValues, judged: np.ndarray, actual: np.ndarray, per_px: np.ndarray,
    allowed: np.ndarray, decisive: np.ndarray,
) -> None:  # fmt: skip
    stats.decoder, stats.decoder_dtype = values.error, values.dtype
    stats.noise_judged = values.noise is not None
    rows, k = judged.shape
    reference = [_rows(v, rows, k) for v in values.reference]
    runtime = [_rows(v, rows, k) for v in values.runtime]
    if [r.shape for r in reference] != [t.shape for t in runtime]:
        raise ValueError("the two sides' decoder inputs differ in shape")
    width = np.asarray(values.reference[0]).shape[-1]
    own = None
    if values.counterfactual is not None and values.runtime_output is not None:
        stats.decoding_checked = True
        cf = np.asarray(values.counterfactual, np.float64).reshape(actual.shape)
        out = np.asarray(values.runtime_output, np.float64).reshape(actual.shape)
        own = np.sqrt((((out - cf) / per_px[:, None, :]) ** 2).sum(-1))
    resolution = np.finfo(np.dtype(values.dtype)).eps if np.dtype(values.dtype).kind == "f" else 0.0
    for n, j in zip(*np.nonzero(decisive)):
        if own is not None and (not np.isfinite(own[n, j]) or own[n, j] > allowed[n, j]):
            stats.departures += 1
            stats.departure_kind = stats.departure_kind or "decoding"
            continue
        if not values.agree and values.noise is None:
            stats.departures += 1
            stats.departure_kind = stats.departure_kind or "decoder inputs"
            continue
        peaks = _peaks_of(values, reference, runtime, n, j)
        if all(p == q for p, q in peaks):
            stats.drift += 1
            stats.max_non_flip = max(stats.max_non_flip, float(judged[n, j]))
            continue
        gap = max(float(r[n, j, p] - r[n, j, q]) for r, (p, q) in zip(reference, peaks) if p != q)
        where = [_peak(peaks, values.kind, width, side) for side in (0, 1)]
        if values.noise is not None:  # the peaks' reference gap against the two maps' own difference there
            noise = float(values.noise[n, j])
            stats.flips.append(Flip([int(n), int(j)], float(judged[n, j]), *where, max(gap, 0.0), noise,
                                    gap <= 2.0 * noise))  # fmt: skip
            continue
        peak = max(abs(float(r[n, j, p])) for r, (p, _) in zip(reference, peaks))
        ulp = float(2.0 ** math.floor(math.log2(peak)) * resolution) if peak > 0 and resolution else 0.0
        stats.flips.append(Flip([int(n), int(j)], float(judged[n, j]), *where, max(gap, 0.0), ulp, True))


def _peaks_of(values: DecoderValues, reference: list[np.ndarray], runtime: list[np.ndarray], n: int,
              j: int) -> list[tuple[int, int]]:  # fmt: skip
    """``[(reference peak, runtime peak)]`` per decoder input, as flat indices into the reference's values: the
    local maxima of the reference's map (vector) that each side's keypoint climbs to; without the keypoints in
    decoder units, each side's own argmax."""
    if values.noise is not None and (values.reference_keypoints is None or values.runtime_keypoints is None):
        # no mapping to follow: each side's argmax, the runtime's climbed on the reference's map to its peak there
        if values.kind == "heatmap":
            shape = np.asarray(values.reference[0]).shape[-2:]
            grid = reference[0][n, j].reshape(shape)
            start = np.unravel_index(_argmax(runtime[0][n, j]), shape)
            return [(_argmax(reference[0][n, j]), _climb2d(grid, np.asarray([start[1], start[0]], np.float64)))]
        return [(_argmax(r[n, j]), _climb1d(r[n, j], float(_argmax(t[n, j])))) for r, t in zip(reference, runtime)]
    if values.reference_keypoints is None or values.runtime_keypoints is None:
        return [(_argmax(r[n, j]), _argmax(t[n, j])) for r, t in zip(reference, runtime)]
    ref_kp, rt_kp = values.reference_keypoints[n, j], values.runtime_keypoints[n, j]
    if values.kind == "heatmap":
        shape = np.asarray(values.reference[0]).shape[-2:]
        grid = reference[0][n, j].reshape(shape)
        return [(_climb2d(grid, ref_kp), _climb2d(grid, rt_kp))]
    return [(_climb1d(r[n, j], ref_kp[axis] * values.bins_per_unit), _climb1d(r[n, j], rt_kp[axis] *
             values.bins_per_unit)) for axis, r in enumerate(reference)]  # fmt: skip


def _climb2d(grid: np.ndarray, xy: np.ndarray) -> int:
    """The flat index of the local maximum of ``grid`` reached by climbing from the pixel nearest ``xy``."""
    clean = np.where(np.isnan(grid), -np.inf, grid)
    h, w = clean.shape
    if not np.all(np.isfinite(xy)):
        return _argmax(clean.ravel())
    y, x = int(np.clip(round(float(xy[1])), 0, h - 1)), int(np.clip(round(float(xy[0])), 0, w - 1))
    while True:
        window = clean[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
        dy, dx = np.unravel_index(int(np.argmax(window)), window.shape)
        ny, nx = max(y - 1, 0) + int(dy), max(x - 1, 0) + int(dx)
        if clean[ny, nx] <= clean[y, x]:
            return y * w + x
        y, x = ny, nx


def _climb1d(vector: np.ndarray, position: float) -> int:
    """The index of the local maximum of ``vector`` reached by climbing from the bin nearest ``position``."""
    clean = np.where(np.isnan(vector), -np.inf, vector)
    if not np.isfinite(position):
        return _argmax(clean)
    i = int(np.clip(round(float(position)), 0, clean.size - 1))
    while True:
        window = clean[max(i - 1, 0) : i + 2]
        best = max(i - 1, 0) + int(np.argmax(window))
        if clean[best] <= clean[i]:
            return i
        i = best


def _rows(values: np.ndarray, rows: int, k: int) -> np.ndarray:
    """Decoder inputs as ``(rows, K, everything else)``; ``ValueError`` when they do not hold ``rows x K``."""
    values = np.asarray(values, np.float64)
    if values.ndim < 3 or int(np.prod(values.shape[:2])) != rows * k:
        raise ValueError(f"decoder input of shape {list(values.shape)} for {rows} x {k} keypoints")
    return values.reshape(rows, k, -1)


def _rounding(dtype: np.dtype, expected: np.ndarray, per_px: np.ndarray) -> np.ndarray:
    """``(rows, K)``: half the output dtype's spacing at each keypoint's coordinates, in judged pixels (a float16
    file cannot say x = 612.3: its nearest values there are 0.5 px apart)."""
    if np.dtype(dtype).kind != "f":
        return np.zeros(expected.shape[:-1])
    with np.errstate(invalid="ignore"):
        spacing = np.spacing(np.abs(np.nan_to_num(expected, posinf=0.0, neginf=0.0)).astype(dtype)).astype(np.float64)
    return np.sqrt(((0.5 * spacing / per_px[:, None, :]) ** 2).sum(-1))


def _argmax(values: np.ndarray) -> int:
    """First index of the maximum, NaN ignored (the decoders' rule)."""
    clean = np.where(np.isnan(values), -np.inf, values)
    return int(np.argmax(clean))


def _peak(peaks: Sequence[tuple[int, int]], kind: str, width: int, side: int) -> list[int]:
    """One side's peak as ``[x, y]``: map pixel of a heatmap's flat argmax, or the x and y bins of SimCC."""
    if kind == "heatmap":
        flat = peaks[0][side]
        return [flat % width, flat // width]
    return [int(p[side]) for p in peaks]


__all__ = [
    "DEFAULT_PX_TOL",
    "DecoderValues",
    "Flip",
    "KeypointOutput",
    "KeypointStats",
    "box_pixels_per_input_pixel",
    "confident_keypoints",
    "grid_moves",
    "judge_keypoints",
]
