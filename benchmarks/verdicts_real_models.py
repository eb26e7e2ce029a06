"""``kpx export --check`` verdicts on real networks, beside an independent ONNX Runtime comparison.

    python benchmarks/verdicts_real_models.py [--models vitpose_s hrnet convnext_simcc own] [--kpx-root DIR]

For each network (benchmarks/real_models.py, random init, 256x192) and file kind (plain network; decoded; decoded
with ``--crop``; decoded inline at opset 17; float16 decoded; float16 with ``--crop``) this runs the command line
``python -m export_tools export ... --check`` (from ``--kpx-root``, default this checkout: point it at another
checkout to see another version's verdicts on the same files) and prints its exit code and verdict. Beside it, the
written file is run on ONNX Runtime directly (not through kpx) against PyTorch on new inputs: for the plain network,
max |diff| over the output's largest |value|; for decoded files, the largest keypoint displacement in network-input
pixels (frame pixels divided by each box's frame pixels per input pixel) and how many keypoints moved further than
a refinement of the same peak can (two heatmap pixels, two SimCC bins, per axis: another peak). The independent
verdict applies the documented rule, written out here: PASS when no keypoint moved to another peak and every one
moved at most 0.1 network-input px plus half the output dtype's spacing at its coordinates (a float16 file cannot
say x = 612.3). With ``--same-inputs``, ``kpx check FILE --reference MODEL --inputs`` then judges the file on the
very inputs of the independent comparison, so that the two verdicts are on the same numbers (kpx's own check
generates other inputs; a float16 near-tie shows on some inputs and not on others).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models import MODELS, available

from export_tools.decoding import wrap
from export_tools.parity.keypoints import box_pixels_per_input_pixel
from export_tools.runtimes.ort import ort_session

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = ["123.675", "116.28", "103.53"], ["58.395", "57.12", "57.375"]
BOXES = np.array([[100.0, 80, 260, 400], [300, 50, 420, 300], [500, 200, 630, 470], [20, 20, 620, 460]], np.float32)


def kinds(decode: str) -> dict[str, list[str]]:
    """File kinds: the flags of each (written so that older kpx versions take them too)."""
    udp = ["--udp"] if decode.endswith("dark_udp") else []
    crop = ["--crop", "192x256", "--boxes", "xyxy", "--mean", *MEAN, "--std", *STD]
    return {
        "plain": [],
        "decode": ["--decode", decode, *udp],
        "crop": ["--decode", decode, *udp, *crop],
        "inline17": ["--decode", decode, *udp, "--emit", "inline", "--opset", "17"],
        "fp16 decode": ["--decode", decode, *udp, "--dtype", "fp16"],
        "fp16 crop": ["--decode", decode, *udp, *crop, "--dtype", "fp16"],
    }


def verdict(root: Path, model: str, flags: list[str], out: Path) -> tuple[int, str]:
    spec = f"{ROOT / 'benchmarks' / 'real_models.py'}:{model}"
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "export_tools", "export", spec, "--input", "images:2x3x256x192", "-o", str(out),
               "--force", "--check", *flags]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root)
    lines = done.stdout.splitlines()
    final = next((line for line in lines if line.startswith("verdict:")), done.stderr.strip()[-160:])
    failed = []
    for line in lines:  # table rows: ... RUNTIME torch|onnx-ref-float64 OUTPUT ... NO
        tokens = line.split()
        vs = next((i for i, t in enumerate(tokens) if t in ("torch", "onnx-ref-float64")), None)
        if vs is not None and tokens[-1] == "NO" and vs + 1 < len(tokens):
            failed.append(tokens[vs + 1])
    if failed:
        final += f" (failing: {', '.join(dict.fromkeys(failed))})"
    return done.returncode, final


def independent(net: torch.nn.Module, decode: str, flags: list[str], path: Path, npz: Path) -> str:
    """The file on ONNX Runtime directly against PyTorch (kpx's wrapper for the decoding), on new inputs (saved to
    ``npz``)."""
    session = ort_session(str(path))
    rng = np.random.default_rng(7)
    half = "--dtype" in flags
    if "--decode" not in flags:
        x = rng.standard_normal((2, 3, 256, 192)).astype(np.float16 if half else np.float32)
        got = session.run(None, {session.get_inputs()[0].name: x})
        with torch.no_grad():
            want = net(torch.from_numpy(x.astype(np.float32)))
        want = want if isinstance(want, tuple) else (want,)
        share = max(float(np.abs(g.astype(np.float64) - w.numpy()).max() / np.abs(w.numpy()).max())
                    for g, w in zip(got, want))  # fmt: skip
        return f"max |diff| {share:.2g} of max|value|"
    crop = "--crop" in flags
    options = dict(decode=decode, split_ratio=2.0, sigma=6.0, blur_kernel=11, udp="--udp" in flags, padding=1.25,
                   boxes="xyxy" if crop else None, batch_index=False, mean=[float(m) for m in MEAN] if crop else None,
                   std=[float(s) for s in STD] if crop else None, crop_size=(192, 256) if crop else None,
                   channels_last=False, frames_dtype=None)  # fmt: skip
    example = torch.randn(2, 3, 256, 192)
    wrapper = wrap(net, (example,), None, ["images"], **options)[0].eval()
    feeds = ([rng.uniform(0, 255, (1, 3, 480, 640)).astype(np.float32), BOXES] if crop else
             [rng.standard_normal((2, 3, 256, 192)).astype(np.float32)])  # fmt: skip
    if half:
        feeds = [f.astype(np.float16) for f in feeds]
    names = [i.name for i in session.get_inputs()]
    np.savez(npz, **dict(zip(names, feeds)))
    raw = session.run(None, dict(zip(names, feeds)))[0]
    got = raw.astype(np.float64)
    with torch.no_grad():
        want = wrapper(*[torch.from_numpy(f.astype(np.float32)) for f in feeds])[0].numpy()
    per_px = (box_pixels_per_input_pixel(BOXES.astype(np.float64), "xyxy", 1.25, True, (192, 256)) if crop else
              np.ones((want.shape[0], 2)))  # fmt: skip
    moved = np.sqrt((((got - want) / per_px[:, None, :]) ** 2).sum(-1))
    reach = 2 * 4 * 2**0.5 if decode.startswith("heatmap") else 2 * 0.5 * 2**0.5
    other = int((moved > reach).sum())
    same = moved[moved <= reach]
    top = f"{same.max():.2g}" if same.size else "-"
    # what the output dtype cannot resolve: half its spacing at PyTorch's coordinates, in input px
    spacing = np.spacing(np.abs(want).astype(raw.dtype)).astype(np.float64)
    allowance = np.sqrt(((0.5 * spacing / per_px[:, None, :]) ** 2).sum(-1))
    beyond = int(((moved > 0.1 + allowance) & (moved <= reach)).sum())
    said = "PASS" if other == 0 and beyond == 0 else "FAIL"
    return (
        f"{said}: max {top} input px on the same peak, {beyond} beyond 0.1 + half the spacing (up to "
        f"{allowance.max():.2g}); {other}/{moved.size} on another peak"
    )


def same_inputs(root: Path, model: str, path: Path, npz: Path) -> str:
    """``kpx check FILE --reference MODEL --inputs NPZ``: kpx's verdict on the independent comparison's inputs."""
    spec = f"{ROOT / 'benchmarks' / 'real_models.py'}:{model}"
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "export_tools", "check", str(path), "--reference", spec, "--inputs", str(npz)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root)
    lines = [line for line in done.stdout.splitlines() if ": PASS" in line or ": FAIL" in line or "verdict:" in line]
    said = next((line for line in lines if line.startswith("verdict:")), done.stderr.strip()[-120:])
    moved = next((line.split(": ", 1)[1] for line in lines if "keypoints" in line and not line.startswith("verdict")),
                 "")  # fmt: skip
    return f"exit {done.returncode}, {said}; {moved}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["vitpose_s", "hrnet", "convnext_simcc", "own"])
    parser.add_argument("--kinds", nargs="+", default=None, help="file kinds (default: all)")
    parser.add_argument("--kpx-root", type=Path, default=ROOT, help="the kpx checkout whose command line judges")
    parser.add_argument("--same-inputs", action="store_true",
                        help="also run kpx check on the independent comparison's inputs (decoded files)")  # fmt: skip
    args = parser.parse_args(argv)
    import onnxruntime

    print(f"# verdicts by {args.kpx_root}; independent comparison by ONNX Runtime {onnxruntime.__version__}")
    print(f"{'model':<15} {'file':<12} {'exit':>4}  {'verdict':<58} independent")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            why = available(name)
            if why is not None:
                print(f"{name:<15} skipped: {why}")
                continue
            factory, kind = MODELS[name]
            net = factory()
            decode = {"heatmap": "heatmap:dark_udp" if name.startswith("vitpose") else "heatmap:dark",
                      "simcc": "simcc:dark"}[kind]  # fmt: skip
            for label, flags in kinds(decode).items():
                if args.kinds and label not in args.kinds:
                    continue
                out = Path(tmp) / f"{name}-{label.replace(' ', '-')}.onnx"
                code, text = verdict(args.kpx_root.resolve(), name, flags, out)
                npz = out.with_suffix(".npz")
                seen = independent(net, decode, flags, out, npz) if out.exists() else "no file"
                print(f"{name:<15} {label:<12} {code:>4}  {text[:58]:<58} {seen}", flush=True)
                if args.same_inputs and out.exists() and "--decode" in flags:
                    again = same_inputs(args.kpx_root.resolve(), name, out, npz)
                    print(f"{'':<15} {'':<12} kpx check on these inputs: {again}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
