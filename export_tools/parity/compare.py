"""Per-output comparison: error statistics, NaN/Inf pattern equality, a verdict against tolerances.

The rule, per output (``e`` the reference, ``a`` the runtime, ``S`` the largest finite ``|e|`` of the output)::

    |a - e| <= rtol * |e| + atol + scale_tol * S

``scale_tol`` is the part that follows the output's scale: a network's float rounding grows with the size of the
values it sums, so an output reaching 5e3 carries ~1e-2 of float32 noise in its small elements too, which no
per-element ``rtol`` covers. Measured (2026-12-06, ORT 1.32 CPU vs PyTorch on four real networks at 256x192,
docs/parity.md): float32 files depart by at most 1.6e-6 of ``S``, float16 files (against the float32 model) by at
most 1.6e-3; the defaults are 1e-5 (6x the worst float32 case) and 5e-3 (3x the worst float16 case). A wrong
weight, constant or export rule moves outputs by far more (a 1 % weight change: ~1e-2 of ``S``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

#: default ``(rtol, atol)`` by output dtype when neither the registry nor the caller gives one
DEFAULT_TOLERANCES = {"float64": (1e-5, 1e-5), "float32": (1e-5, 1e-5), "float16": (1e-3, 1e-3)}
#: default ``scale_tol`` by output dtype: the share of the output's largest |value| added to ``atol`` (see above)
SCALE_TOLERANCES = {"float64": 1e-5, "float32": 1e-5, "float16": 5e-3}


@dataclass
class OutputStats:
    """How ``actual`` departs from ``expected`` for one output."""

    name: str
    shape: list[int]
    dtype: str
    rtol: float
    atol: float
    max_abs: float
    max_rel: float
    mean_abs: float
    p99_abs: float
    worst_index: list[int] | None
    nan_pattern_equal: bool
    inf_pattern_equal: bool
    shape_equal: bool
    passed: bool
    #: keypoint outputs: the largest displacement in the pixels the verdict judges (see ``keypoints``)
    max_abs_px: float | None = None
    scale: float = 0.0  # S: the largest finite |expected|
    scale_tol: float = 0.0
    #: keypoint outputs: the keypoint verdict (an ``export_tools.parity.keypoints.KeypointStats``)
    keypoints: Any = None

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "keypoints"}
        out["keypoints"] = self.keypoints.as_dict() if self.keypoints is not None else None
        return out

    @property
    def bound(self) -> float:
        """The largest error the verdict allows at an element whose reference is 0: ``atol + scale_tol * S``."""
        return self.atol + self.scale_tol * self.scale


def compare_output(
    name: str,
    expected: np.ndarray,
    actual: np.ndarray,
    rtol: float,
    atol: float,
    pixels_per_unit: tuple[float, float] | None = None,
    *,
    scale_tol: float = 0.0,
) -> OutputStats:
    """Compares one output. Non-finite values must sit at the same places (and infinities have the same sign);
    finite ones must satisfy ``|actual - expected| <= rtol * |expected| + atol + scale_tol * S`` (``S`` the largest
    finite ``|expected|``).

    ``max_rel`` is ``|a - e| / |e|`` with ``|e|`` floored at ``eps(dtype) * S`` (elements that are rounding noise
    around zero do not report 1e300). For a coordinate output ``(..., 2)`` as ``(x, y)``,
    ``pixels_per_unit=(sx, sy)`` also reports the largest displacement in pixels (normalized coordinates with
    ``align_corners=True`` on an ``H x W`` map: ``((W - 1) / 2, (H - 1) / 2)``; pixel coordinates: ``(1, 1)``)."""
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    base = {"name": name, "shape": list(actual.shape), "dtype": str(actual.dtype), "rtol": rtol, "atol": atol,
            "scale_tol": scale_tol}  # fmt: skip
    if expected.shape != actual.shape:
        return OutputStats(**base, max_abs=math.inf, max_rel=math.inf, mean_abs=math.inf, p99_abs=math.inf,
                           worst_index=None, nan_pattern_equal=False, inf_pattern_equal=False, shape_equal=False,
                           passed=False)  # fmt: skip
    e = expected.astype(np.float64)
    a = actual.astype(np.float64)
    nan_equal = bool(np.array_equal(np.isnan(e), np.isnan(a)))
    inf_equal = bool(np.array_equal(np.isposinf(e), np.isposinf(a)) and np.array_equal(np.isneginf(e), np.isneginf(a)))
    finite = np.isfinite(e) & np.isfinite(a)
    err = np.abs(np.subtract(a, e, out=np.zeros_like(e), where=finite))
    magnitude = np.abs(np.where(finite, e, 0.0))
    scale = float(magnitude.max()) if magnitude.size else 0.0
    eps = float(np.finfo(actual.dtype).eps) if actual.dtype.kind == "f" else float(np.finfo(np.float64).eps)
    floor = max(eps * scale, np.finfo(np.float64).tiny)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # err / tiny may be inf: a true answer
        rel = err / np.maximum(magnitude, floor)
    worst = np.unravel_index(int(np.argmax(err)), err.shape) if err.size else None
    within = bool(np.all(err <= rtol * magnitude + atol + scale_tol * scale))
    max_px = None
    if pixels_per_unit is not None and err.ndim and err.shape[-1] == 2:
        moved = np.sqrt(((err * np.asarray(pixels_per_unit, np.float64)) ** 2).sum(-1))
        max_px = float(moved.max()) if moved.size else 0.0
    return OutputStats(
        **base,
        max_abs=float(err.max()) if err.size else 0.0,
        max_rel=float(rel.max()) if rel.size else 0.0,
        mean_abs=float(err[finite].mean()) if finite.any() else 0.0,
        p99_abs=float(np.percentile(err[finite], 99)) if finite.any() else 0.0,
        worst_index=[int(i) for i in worst] if worst is not None else None,
        nan_pattern_equal=nan_equal,
        inf_pattern_equal=inf_equal,
        shape_equal=True,
        passed=within and nan_equal and inf_equal,
        max_abs_px=max_px,
        scale=scale,
    )


def tolerance_for(dtype: np.dtype, overrides: tuple[float, float] | None = None) -> tuple[float, float]:
    """``(rtol, atol)``: the override, else the default for the dtype of the output under test."""
    if overrides is not None:
        return overrides
    return DEFAULT_TOLERANCES.get(str(np.dtype(dtype)), DEFAULT_TOLERANCES["float32"])


def scale_tolerance_for(dtype: np.dtype) -> float:
    """The default ``scale_tol`` for an output of ``dtype`` (0 for integers and booleans: they must be exact)."""
    if np.dtype(dtype).kind != "f":
        return 0.0
    return SCALE_TOLERANCES.get(str(np.dtype(dtype)), SCALE_TOLERANCES["float32"])
