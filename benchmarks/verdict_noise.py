"""How far a faithful kpx file is from PyTorch on real networks: the measurements behind the default verdicts.

    python benchmarks/verdict_noise.py [--models vitpose_s hrnet convnext_simcc vitpose_b own] [--seeds 3]

For each network (benchmarks/real_models.py; the ones whose packages import here), exported by kpx (function mode,
opset 18) in float32 and float16 and run on ONNX Runtime CPU directly (not through kpx's harness):

- ``share``: max |ORT - PyTorch float32| of the raw network output over its largest |value| (the scale rule's
  ``scale_tol``: the defaults 1e-5 float32, 5e-3 float16 come from the worst rows here);
- ``max px`` / ``p99 px``: keypoint displacement of the decoded file (``--decode`` DARK / SimCC, and with
  ``--crop``), in network-input pixels (frame pixels divided by each box's frame pixels per input pixel), for
  the other keypoints;
- ``flips``: keypoints further from PyTorch's than a refinement of the same peak can move them (two heatmap
  pixels per axis, two SimCC bins): their peak changed (float16 rounding tied or swapped two near-equal peaks).

Inputs: standard normal images (the network's input) or 0-255 frames normalised in the file (``--normalize
imagenet``) with four boxes, every seed new values.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models import MODELS, available

from export_tools import to_onnx
from export_tools.decoding import wrap
from export_tools.parity.keypoints import box_pixels_per_input_pixel
from export_tools.runtimes.ort import ort_session

BOXES = np.array([[100.0, 80, 260, 400], [300, 50, 420, 300], [500, 200, 630, 470], [20, 20, 620, 460]], np.float32)


def share(net: torch.nn.Module, dtype: str, seeds: int) -> float:
    """Worst max |ORT - PyTorch| / max |PyTorch| of the raw network output over ``seeds`` inputs."""
    example = torch.randn(2, 3, 256, 192, generator=torch.Generator().manual_seed(0))
    session = ort_session(to_onnx(net, (example,), dtype=None if dtype == "fp32" else "float16").SerializeToString())
    worst = 0.0
    for seed in range(seeds):
        x = torch.randn(2, 3, 256, 192, generator=torch.Generator().manual_seed(10 + seed))
        feed = x.numpy().astype(np.float16 if dtype == "fp16" else np.float32)
        got = session.run(None, {session.get_inputs()[0].name: feed})
        with torch.no_grad():
            want = net(torch.from_numpy(feed.astype(np.float32)))
        for g, w in zip(got, want if isinstance(want, tuple) else (want,)):
            w = w.numpy().astype(np.float64)
            worst = max(worst, float(np.abs(g.astype(np.float64) - w).max() / np.abs(w).max()))
    return worst


def displacement(
    net: torch.nn.Module, decode: str, crop: bool, dtype: str, seeds: int
) -> tuple[float, float, int, int]:
    """``(max px, p99 px, flips, keypoints)`` of the decoded file against PyTorch over ``seeds`` inputs."""
    options = dict(decode=decode, split_ratio=2.0, sigma=6.0, blur_kernel=11, udp=False, padding=1.25,
                   boxes="xyxy" if crop else None, batch_index=False, mean=None, std=None, channels_last=False,
                   crop_size=(192, 256) if crop else None, frames_dtype=None, output_key=None,
                   normalize="imagenet" if crop else None)  # fmt: skip
    example = torch.randn(2, 3, 256, 192, generator=torch.Generator().manual_seed(0))
    wrapper, inputs, dynamic, names = wrap(net, (example,), None, ["images"], **options)
    proto = to_onnx(wrapper, inputs, dtype=None if dtype == "fp32" else "float16", dynamic_shapes=dynamic,
                    input_names=names)  # fmt: skip
    session = ort_session(proto.SerializeToString())
    # a keypoint further than this from PyTorch's (input px) sits on another peak: DARK moves each side at most
    # 1 heatmap px (4 input px at stride 4) per axis from its argmax; SimCC's argmax is 0.5 input px per bin
    reach = 2 * 4 * 2**0.5 if decode.startswith("heatmap") else 2 * 0.5 * 2**0.5
    moved, flips, count = [], 0, 0
    for seed in range(seeds):
        rng = np.random.default_rng(10 + seed)
        feeds = ([rng.uniform(0, 255, (1, 3, 480, 640)).astype(np.float32), BOXES] if crop else
                 [rng.standard_normal((2, 3, 256, 192)).astype(np.float32)])  # fmt: skip
        if dtype == "fp16":
            feeds = [f.astype(np.float16) for f in feeds]
        got = session.run(None, dict(zip([i.name for i in session.get_inputs()], feeds)))[0].astype(np.float64)
        with torch.no_grad():
            want = wrapper.eval()(*[torch.from_numpy(f.astype(np.float32)) for f in feeds])[0].numpy()
        per_px = (box_pixels_per_input_pixel(BOXES.astype(np.float64), "xyxy", 1.25, True, (192, 256)) if crop else
                  np.ones((want.shape[0], 2)))  # fmt: skip
        d = np.sqrt((((got - want) / per_px[:, None, :]) ** 2).sum(-1))
        same = d <= reach
        flips += int((~same).sum())
        count += d.size
        moved.append(d[same])
    values = np.concatenate(moved)
    return float(values.max()), float(np.percentile(values, 99)), flips, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["vitpose_s", "hrnet", "convnext_simcc", "own"])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"# {platform.machine()}, torch {torch.__version__}, python {platform.python_version()}")
    print(f"{'model':<16} {'dtype':<5} {'share':>9}  {'decode':<22} {'max px':>8} {'p99 px':>8} {'flips':>9}")
    for name in args.models:
        why = available(name)
        if why is not None:
            print(f"{name:<16} skipped: {why}")
            continue
        factory, kind = MODELS[name]
        net = factory()
        for dtype in ("fp32", "fp16"):
            print(f"{name:<16} {dtype:<5} {share(net, dtype, args.seeds):>9.2e}", flush=True)
            decodes = ["heatmap:dark", "heatmap:dark_udp"] if kind == "heatmap" else ["simcc", "simcc:dark"]
            for decode in decodes:
                for crop in (False, True):
                    top, p99, flips, count = displacement(net, decode, crop, dtype, args.seeds)
                    label = decode + (" + crop" if crop else "")
                    print(f"{'':<16} {dtype:<5} {'':>9}  {label:<22} {top:>8.3g} {p99:>8.3g} {flips:>4}/{count:<4}",
                          flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
