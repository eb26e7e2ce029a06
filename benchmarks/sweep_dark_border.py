"""DARK near the heatmap edges: the border sweep behind ``decode_heatmaps``' border rule (issue 13).

Run: ``python benchmarks/sweep_dark_border.py [--keypoints 16] [--noise 0.0] [--size 64 48]``.

Noise-free UDP targets (``gaussian_heatmaps(subpixel=True)``, peak 1) on a 64x48 map: for each distance ``d``
from an edge (0 to ``1.5 * blur_kernel`` px in steps of 0.25 px; ``d`` is the keypoint's distance to the centre
of the first/last pixel, i.e. ``x = d``, ``x = W - 1 - d``, ``y = d`` or ``y = H - 1 - d``) and each of the four
edges, ``--keypoints`` keypoints whose other coordinate is uniform (sub-pixel) between ``blur_kernel // 2 + 2``
px from the two other edges. Sigma 1, 2, 3 with ``blur_kernel`` 5, 11, 17 (``6 sigma - 1``: mmpose's 11 for
sigma 2 and 17 for sigma 3). Each cell is the mean and the max, over the ``4 * keypoints`` keypoints at that
distance, of the Euclidean distance (px) from the decoded keypoint to the true centre, for:

- ``none``, ``quarter``, ``dark`` (kpx's rule: the blur narrows near the edges, per-axis step), ``dark_udp``: kpx;
- ``mmpose``: mmpose's ``refine_keypoints_dark`` written here in numpy: the map zero-padded by the kernel
  radius before the blur, rescaled to the map's maximum, ``log(max(., 1e-10))``, second derivatives over two
  pixels, a step only where ``1 < x < W - 2`` and ``1 < y < H - 2``, no definiteness test, no clamp.

The summary under each table counts the distances where ``dark``'s mean or max error exceeds ``quarter``'s
(the rule's target: none) and gives ``dark``'s interior error. float32 maps, decoded eagerly on the CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from custom_ops import decode_heatmaps, gaussian_heatmaps

PAIRS = ((1.0, 5), (2.0, 11), (3.0, 17))
"""(sigma, blur_kernel): ``k = 6 sigma - 1``."""
METHODS = ("none", "quarter", "dark", "dark_udp", "mmpose")


def targets(sigma: float, k: int, size: tuple[int, int], keypoints: int, noise: float, seed: int):
    """``(maps (N, E*n, H, W) float32, centres (N, E*n, 2) float64, distances (N,))``: N distances, E = 4 edges."""
    height, width = size
    g = torch.Generator().manual_seed(seed)
    distances = torch.arange(0, 1.5 * k + 1e-9, 0.25, dtype=torch.float64)
    margin = k // 2 + 2
    groups = []
    for edge in ("left", "right", "top", "bottom"):
        across = {"left": distances, "right": width - 1 - distances, "top": distances, "bottom": height - 1 - distances}
        extent = width if edge in ("top", "bottom") else height
        along = torch.rand(len(distances), keypoints, generator=g, dtype=torch.float64) * (extent - 1 - 2 * margin)
        along = along + margin
        fixed = across[edge][:, None].expand(-1, keypoints)
        xy = (fixed, along) if edge in ("left", "right") else (along, fixed)
        groups.append(torch.stack(xy, -1))
    centres = torch.cat(groups, 1).float().double()  # the float32 centres that are rendered
    maps, _ = gaussian_heatmaps(centres.float(), size, sigma, subpixel=True)
    if noise:
        maps = maps + noise * torch.rand(maps.shape, generator=g)
    return maps, centres, distances


def blur_zero_padded(maps: np.ndarray, k: int) -> np.ndarray:
    """mmpose's ``gaussian_blur`` without OpenCV: zero border of the kernel radius, separable Gaussian of
    OpenCV's sigma for ``k`` (the same kernel as cv2's for ``k > 7``), rescaled to each map's maximum."""
    r = k // 2
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    taps = np.exp(-((np.arange(k) - r) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    h, w = maps.shape[-2:]
    padded = np.pad(maps, [(0, 0)] * (maps.ndim - 2) + [(r, r), (r, r)])
    rows = np.zeros((*padded.shape[:-1], w))
    for i in range(k):
        rows += taps[i] * padded[..., :, i : i + w]
    out = np.zeros(maps.shape)
    for i in range(k):
        out += taps[i] * rows[..., i : i + h, :]
    return out * (maps.max(axis=(-2, -1), keepdims=True) / out.max(axis=(-2, -1), keepdims=True))


def mmpose_dark(maps: np.ndarray, k: int) -> np.ndarray:
    """``(N, H, W)`` -> ``(N, 2)``: argmax then mmpose's ``refine_keypoints_dark`` (module docstring)."""
    n, h, w = maps.shape
    index = maps.reshape(n, -1).argmax(-1)
    x, y = index % w, index // w
    xy = np.stack([x, y], -1).astype(np.float64)
    logs = np.log(np.maximum(blur_zero_padded(maps.astype(np.float64), k), 1e-10))
    inside = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)
    i = np.arange(n)[inside]
    xi, yi = x[inside], y[inside]

    def at(dx: int, dy: int) -> np.ndarray:
        return logs[i, yi + dy, xi + dx]

    dx = 0.5 * (at(1, 0) - at(-1, 0))
    dy = 0.5 * (at(0, 1) - at(0, -1))
    dxx = 0.25 * (at(2, 0) - 2 * at(0, 0) + at(-2, 0))
    dyy = 0.25 * (at(0, 2) - 2 * at(0, 0) + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy**2
    step = np.where(det != 0, 1.0, 0.0)[:, None] * np.stack([dyy * dx - dxy * dy, dxx * dy - dxy * dx], -1)
    xy[i] -= step / np.where(det != 0, det, 1.0)[:, None]
    return xy


def errors(maps: torch.Tensor, centres: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Per method, the Euclidean error ``(N, E*n)`` of every keypoint."""
    out = {}
    for refine in METHODS[:4]:
        keypoints, _ = decode_heatmaps(maps, refine=refine, blur_kernel=k)
        out[refine] = (keypoints.double() - centres).norm(dim=-1)
    keypoints = torch.from_numpy(np.stack([mmpose_dark(m.double().numpy(), k) for m in maps]))  # per distance
    out["mmpose"] = (keypoints - centres).norm(dim=-1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keypoints", type=int, default=16, help="keypoints per edge and distance (default 16)")
    parser.add_argument("--noise", type=float, default=0.0, help="uniform noise up to this fraction of the peak")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 48), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    size = tuple(args.size)
    print(f"torch {torch.__version__}; {size[0]}x{size[1]} maps, noise {args.noise}, {4 * args.keypoints} "
          f"keypoints per distance; cells: mean / max Euclidean error (px)")  # fmt: skip
    for sigma, k in PAIRS:
        maps, centres, distances = targets(sigma, k, size, args.keypoints, args.noise, args.seed)
        err = errors(maps, centres, k)
        print(f"\nsigma {sigma:g}, blur_kernel {k}")
        print(f"{'d (px)':>7} " + " ".join(f"{m:>15}" for m in METHODS))
        for i, d in enumerate(distances.tolist()):
            cells = " ".join(f"{float(err[m][i].mean()):6.4f} / {float(err[m][i].max()):6.4f}" for m in METHODS)
            print(f"{d:7.2f} {cells}")
        worse_mean = err["dark"].mean(1) > err["quarter"].mean(1)
        worse_max = err["dark"].amax(1) > err["quarter"].amax(1)
        bad = (worse_mean | worse_max).nonzero().flatten().tolist()
        interior = err["dark"][-1]
        print(f"dark worse than quarter (mean or max) at {len(bad)} of {len(distances)} distances"
              f"{': d = ' + ', '.join(f'{distances[i]:g}' for i in bad) if bad else ''}; worst dark mean "
              f"{float(err['dark'].mean(1).max()):.4f} px, max {float(err['dark'].max()):.4f} px; at d = "
              f"{distances[-1]:g}: dark mean {float(interior.mean()):.2e} px")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
