"""Per-output comparison: error statistics, NaN/Inf pattern equality, a verdict against tolerances."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: default ``(rtol, atol)`` by output dtype when neither the registry nor the caller gives one
DEFAULT_TOLERANCES = {"float64": (1e-5, 1e-5), "float32": (1e-5, 1e-5), "float16": (1e-3, 1e-3)}


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
    max_abs_px: float | None = None  # coordinate outputs: the largest error in pixels, when a scale was given

    def as_dict(self) -> dict:
        return asdict(self)


def compare_output(
    name: str,
    expected: np.ndarray,
    actual: np.ndarray,
    rtol: float,
    atol: float,
    pixels_per_unit: tuple[float, float] | None = None,
) -> OutputStats:
    """Compares one output. Non-finite values must sit at the same places (and infinities have the same sign);
    finite ones must satisfy ``|actual - expected| <= atol + rtol * |expected|``.

    For a coordinate output ``(..., 2)`` as ``(x, y)``, ``pixels_per_unit=(sx, sy)`` also reports the
    largest error in pixels (normalized coordinates with ``align_corners=True`` on an ``H x W`` map:
    ``((W - 1) / 2, (H - 1) / 2)``; pixel coordinates: ``(1, 1)``)."""
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    shape_equal = expected.shape == actual.shape
    base = {"name": name, "shape": list(actual.shape), "dtype": str(actual.dtype), "rtol": rtol, "atol": atol}
    if not shape_equal:
        return OutputStats(**base, max_abs=float("inf"), max_rel=float("inf"), mean_abs=float("inf"),
                           p99_abs=float("inf"), worst_index=None, nan_pattern_equal=False,
                           inf_pattern_equal=False, shape_equal=False, passed=False)  # fmt: skip
    e = expected.astype(np.float64)
    a = actual.astype(np.float64)
    nan_equal = bool(np.array_equal(np.isnan(e), np.isnan(a)))
    inf_equal = bool(np.array_equal(np.isposinf(e), np.isposinf(a)) and np.array_equal(np.isneginf(e), np.isneginf(a)))
    finite = np.isfinite(e) & np.isfinite(a)
    err = np.abs(np.subtract(a, e, out=np.zeros_like(e), where=finite))
    rel = np.where(finite, err / np.maximum(np.abs(e), np.finfo(np.float64).tiny), 0.0)
    worst = np.unravel_index(int(np.argmax(err)), err.shape) if err.size else None
    within = bool(np.all(err <= atol + rtol * np.abs(np.where(finite, e, 0.0))))
    max_px = None
    if pixels_per_unit is not None and err.ndim and err.shape[-1] == 2:
        max_px = float((err * np.asarray(pixels_per_unit, np.float64)).max()) if err.size else 0.0
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
    )


def tolerance_for(dtype: np.dtype, overrides: tuple[float, float] | None = None) -> tuple[float, float]:
    """``(rtol, atol)``: the override, else the default for the dtype of the output under test."""
    if overrides is not None:
        return overrides
    return DEFAULT_TOLERANCES.get(str(np.dtype(dtype)), DEFAULT_TOLERANCES["float32"])
