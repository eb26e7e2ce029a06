"""The verdict as a picture (``kpx check --plot FILE.png``; matplotlib, the ``plot`` extra).

One row per runtime: the distribution of keypoint displacements (every input set, in the pixels the verdict
judges, log scale, the tolerance drawn), then the worst keypoint's decoder input around both peaks: PyTorch's
(or the float64 reference's) and the runtime's, with the reference peak (white circle) and the runtime's peak
(red cross) marked on each. Heatmaps show an 11x11 neighbourhood covering both peaks where they are close; SimCC
shows both rows' x and y vectors.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from export_tools.errors import RunnerUnavailableError


def check_plotting() -> None:
    """Raises :class:`RunnerUnavailableError` with the install command unless matplotlib is importable."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RunnerUnavailableError("--plot needs matplotlib; fix: pip install 'kpx[plot]' (or matplotlib)") from None


def plot_report(report: Any, path: str | Path, *, overwrite: bool = True) -> str:
    """Draws ``report`` (a :class:`~export_tools.parity.ParityReport` whose keypoint outputs were analysed:
    ``check_parity(..., analyse_keypoints=True)``) into a PNG at ``path``, atomically. Returns what was drawn."""
    check_plotting()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from export_tools.files import write_atomic

    runtimes: dict[str, list[Any]] = {}
    for case in report.cases:
        for out in case.outputs:
            kp = out.keypoints
            if kp is not None and kp.detail is not None:
                runtimes.setdefault(f"{case.runtime} vs {case.reference}", []).append((case, out.name, kp))
    rows = max(len(runtimes), 1)
    figure = Figure(figsize=(13, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    if not runtimes:
        ax = figure.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no keypoint output was judged in pixels", ha="center", va="center")
    for row, (label, items) in enumerate(runtimes.items()):
        _histogram(figure.add_subplot(rows, 3, 3 * row + 1), label, items)
        _worst(figure.add_subplot(rows, 3, 3 * row + 2), figure.add_subplot(rows, 3, 3 * row + 3), items)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    write_atomic(path, buffer.getvalue(), overwrite=overwrite)
    return f"{len(runtimes)} runtime row(s)"


def _histogram(ax: Any, label: str, items: list) -> None:
    values = np.concatenate([kp.detail.judged[kp.detail.finite] for _, _, kp in items])
    allowed = np.concatenate([kp.detail.allowed[kp.detail.finite] for _, _, kp in items])
    units, tol = items[0][2].units, items[0][2].px_tol
    rounding = " + float16 rounding" if items[0][2].output_dtype == "float16" else ""
    floor = 1e-9
    shown = np.clip(values, floor, None)
    low, high = np.log10(max(shown.min(), floor)), np.log10(max(shown.max(), tol * 10))
    ax.hist(shown, bins=np.logspace(low - 0.1, high + 0.1, 40), color="#4477aa")
    ax.set_xscale("log")
    ax.axvline(tol, color="#cc3311", linestyle="--", label=f"--px-tol {tol:g}")
    moved = int((values > allowed).sum())
    ax.set_title(f"{label}\n{values.size} keypoints, max {values.max():.3g} {units}, {moved} moved > tol{rounding}",
                 fontsize=9)  # fmt: skip
    ax.set_xlabel(f"displacement ({units}; 0 drawn at {floor:g})")
    ax.set_ylabel("keypoints")
    ax.legend(fontsize=8)


def _worst(left: Any, right: Any, items: list) -> None:
    case, name, kp = max(items, key=lambda item: float(np.max(item[2].detail.judged, initial=0.0)))
    detail = kp.detail
    n, k = np.unravel_index(int(np.argmax(np.where(detail.finite, detail.judged, -1.0))), detail.judged.shape)
    moved = float(detail.judged[n, k])
    title = f"worst: {case.inputs}, {name}[{n}, {k}] moved {moved:.3g} {kp.units}"
    values = detail.decoder
    if values is None:
        for ax in (left, right):
            ax.axis("off")
        left.text(0.0, 0.5, f"{title}\n\ndecoder inputs not read:\n{kp.analysis or 'no keypoint moved'}",
                  fontsize=8, va="center")  # fmt: skip
        return
    rows, count = detail.judged.shape
    sides = [(left, values.reference, "reference"), (right, values.runtime, case.runtime)]
    if values.kind == "heatmap":
        maps = [np.asarray(v[0], np.float64).reshape(rows, count, *np.shape(v[0])[-2:])[n, k] for _, v, _ in sides]
        peaks = [np.unravel_index(int(np.nanargmax(np.where(np.isnan(m), -np.inf, m))), m.shape) for m in maps]
        y0, x0 = _window(peaks, maps[0].shape)
        low = min(float(np.nanmin(m[y0, x0])) for m in maps)
        high = max(float(np.nanmax(m[y0, x0])) for m in maps)
        for (ax, _, who), m in zip(sides, maps):
            ax.imshow(m[y0, x0], cmap="magma", vmin=low, vmax=high, origin="upper",
                      extent=(x0.start - 0.5, x0.stop - 0.5, y0.stop - 0.5, y0.start - 0.5))  # fmt: skip
            ax.plot(peaks[0][1], peaks[0][0], "o", mfc="none", mec="#33bbee", mew=2, ms=14, label="reference's peak")
            ax.plot(peaks[1][1], peaks[1][0], "x", color="#ee3377", ms=11, mew=2.5, label=f"{case.runtime}'s peak")
            ax.set_title(f"{who}'s heatmap around both peaks", fontsize=9)
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
        figure_title(left, title)
        return
    for ax, axis in ((left, 0), (right, 1)):  # SimCC: the x vectors on the left, the y vectors on the right
        for v, side, marker in ((values.reference, "reference", "o"), (values.runtime, case.runtime, "x")):
            row = np.asarray(v[axis], np.float64).reshape(rows, count, -1)[n, k]
            clean = np.where(np.isnan(row), -np.inf, row)
            ax.plot(row, label=side, linewidth=1)
            ax.plot(int(np.argmax(clean)), float(clean.max()), marker, ms=8)
        ax.set_title(f"SimCC {'xy'[axis]} vectors, both sides", fontsize=9)
        ax.legend(fontsize=7)
    figure_title(left, title)


def figure_title(ax: Any, text: str) -> None:
    """The worst keypoint's line, above its two panels."""
    ax.annotate(text, (0.0, 1.12), xycoords="axes fraction", fontsize=8, annotation_clip=False)


def _window(peaks: list[tuple[int, int]], shape: tuple[int, int], half: int = 5) -> tuple[slice, slice]:
    """Rows and columns of a ``2 * half + 1`` window around the peaks (widened to hold both when they are apart)."""
    ys, xs = [p[0] for p in peaks], [p[1] for p in peaks]
    y0, y1 = max(min(ys) - half, 0), min(max(ys) + half + 1, shape[0])
    x0, x1 = max(min(xs) - half, 0), min(max(xs) + half + 1, shape[1])
    return slice(y0, y1), slice(x0, x1)
