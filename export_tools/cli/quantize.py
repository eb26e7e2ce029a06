"""static INT8 through ONNX Runtime, with everything kpx added kept float

The network is quantized (QDQ, int8 weights per channel, int8 activations calibrated on --calibration DATA: a .npz
whose arrays are named after the model's inputs, samples along the first axis, or a folder of images); the
decoding, crop and mapping (every node with a kpx tag) and the network's last layer before them stay float, so
heatmaps and SimCC vectors reach the decoder in float and coordinates are never quantized. Without --calibration,
kpx's generated inputs are used: a smoke test, loudly. Then the INT8 file is compared with the float32 one on the
calibration inputs, in keypoint terms (displacement median / p95, confident keypoints moved more than one heatmap
pixel, ambiguous flips apart); with --px-tol the comparison decides (exit 1, nothing written, when it fails).
"""

from __future__ import annotations

import argparse
import warnings

from export_tools.cli._common import Log, fraction, non_negative, read_onnx, write_onnx
from export_tools.errors import CHECK_FAILED, OK, UsageError


def configure(p: argparse.ArgumentParser) -> None:
    from export_tools.decoding import NORMALIZE
    from export_tools.quantize import ACTIVATION_TYPES, METHODS

    p.add_argument("model", metavar="MODEL.onnx", help="a float32 file kpx exported (function or inline)")
    p.add_argument("-o", "--output", required=True, help="the INT8 .onnx file to write")
    p.add_argument("--calibration", metavar="DATA",
                   help=".npz with one array per model input (samples along the first axis), or a folder of images "
                        "(default: kpx's generated inputs, a smoke test only)")  # fmt: skip
    p.add_argument("--samples", type=int, metavar="N", help="use at most N calibration samples (default: all; 16 "
                   "generated)")  # fmt: skip
    g = p.add_argument_group("images", "a folder of images for a file that takes the network's input (a file that "
                             "crops normalises by itself)")  # fmt: skip
    g.add_argument("--normalize", choices=tuple(NORMALIZE), help="the network's input normalisation preset")
    g.add_argument("--mean", type=float, nargs="+", help="per-channel mean on 0-255 pixels")
    g.add_argument("--std", type=float, nargs="+", help="per-channel std on 0-255 pixels")
    g.add_argument("--bgr", action="store_true", help="feed images in OpenCV's BGR order (default RGB)")
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor (default: per channel)")
    p.add_argument("--activations", choices=ACTIVATION_TYPES, default="int8", help="activation type (default int8)")
    p.add_argument("--method", choices=METHODS, default="minmax", help="calibration method (default minmax)")
    p.add_argument("--px-tol", type=non_negative, metavar="PX",
                   help="keypoint budget: a keypoint that stayed on its peak may move this far from the float32 "
                        "file's, in network-input pixels (default: report only)")  # fmt: skip
    p.add_argument("--allow-flips", type=fraction, metavar="FRACTION", default=0.0,
                   help="with --px-tol: share of keypoints allowed to change peak where the float32 file's two "
                        "peaks are within the maps' difference (ambiguous; default 0)")  # fmt: skip
    p.add_argument("--min-score", type=non_negative, metavar="SCORE",
                   help="confident keypoints: float32 score at least this (default: half the largest "
                        "score)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="overwrite an existing output")


def run(args: argparse.Namespace, log: Log) -> int:
    from export_tools.files import check_output_path
    from export_tools.quantize import SyntheticCalibrationWarning, load_calibration, quantize, quantized_nodes

    out = check_output_path(args.output, overwrite=args.force, inputs=[args.model, args.calibration], flag="-o")
    if args.samples is not None and args.samples < 1:
        raise UsageError(f"--samples must be at least 1; got {args.samples}")
    model = read_onnx(args.model)
    image_options = _image_options(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SyntheticCalibrationWarning)
        samples, source = load_calibration(args.calibration, model, limit=args.samples, **image_options)
    for warning in caught:
        if issubclass(warning.category, SyntheticCalibrationWarning):
            log.info(f"WARNING: {warning.message}")
    log.info(f"calibration: {source}")
    quantized, excluded = quantize(model, samples, per_channel=not args.per_tensor, activations=args.activations,
                                   method=args.method, source=source)  # fmt: skip
    print(f"kept float: {len(excluded.nodes)} node(s): {excluded.tagged} added by kpx, {len(excluded.heads)} of the "
          f"network's last layer ({', '.join(excluded.heads) or 'none'}); {quantized_nodes(quantized)} node(s) "
          "quantized")  # fmt: skip
    passed = _compare(model, quantized, samples, args, log)
    if args.px_tol is not None and not passed:
        log.error(f"the INT8 file moves keypoints beyond --px-tol {args.px_tol:g}; nothing written")
        return CHECK_FAILED
    write_onnx(quantized, out, args)
    weights = "per tensor" if args.per_tensor else "per channel"
    print(f"wrote {out} ({out.stat().st_size} bytes; INT8 QDQ, int8 weights {weights}, {args.activations} "
          f"activations, {args.method} calibration on {source})")  # fmt: skip
    return OK


def _image_options(args: argparse.Namespace) -> dict:
    """``calibration_from_images`` options from ``--normalize``/``--mean``/``--std``/``--bgr``."""
    from export_tools.decoding import NORMALIZE

    if args.normalize and (args.mean or args.std):
        raise UsageError("--normalize sets --mean and --std: give one or the other")
    mean, std = NORMALIZE[args.normalize] if args.normalize else (args.mean, args.std)
    if args.normalize == "none":
        mean, std = (0.0,), (1.0,)
    if (mean is None) != (std is None):
        raise UsageError("--mean and --std go together; give both (or --normalize)")
    given = args.normalize or args.mean or args.bgr
    if given and (args.calibration is None or not _is_dir(args.calibration)):
        raise UsageError("--normalize, --mean, --std and --bgr apply to a folder of images (--calibration FOLDER)")
    return {"mean": mean, "std": std, "bgr": args.bgr}


def _is_dir(path: str) -> bool:
    from pathlib import Path

    return Path(path).is_dir()


def _compare(model, quantized, samples, args: argparse.Namespace, log: Log) -> bool:
    """The INT8 file against the float32 one on the calibration samples, in keypoint terms; the verdict at
    ``--px-tol`` (report only without it: True)."""
    from export_tools.parity import check_parity
    from export_tools.quantize import evaluation_sets

    sets = evaluation_sets(samples, model)
    judged = args.px_tol is not None
    report = check_parity(None, sets, model=quantized, reference_model=model, isolate=False, localize=False,
                          px_tol=args.px_tol if judged else 0.1, allow_flips=args.allow_flips if judged else 1.0,
                          min_score=args.min_score)  # fmt: skip
    lines = [f"{label}: {text}" for label, text in _pooled(report, judged)]
    lines += [f"{c.inputs}: FAILED: {c.failure['what']} during {c.failure['phase']}" for c in report.cases
              if c.failure is not None]  # fmt: skip
    print(f"INT8 vs float32 ({report.runtimes[0]['runtime'] if report.runtimes else 'reference'}), on the calibration "
          "inputs:")  # fmt: skip
    for line in lines:
        print(f"  {line}")
    if judged:
        print(f"verdict at --px-tol {args.px_tol:g}: {'PASS' if report.passed else 'FAIL'}")
    if not any(c.outputs and any(o.keypoints is not None for o in c.outputs) for c in report.cases):
        log.info("note: the file has no keypoint output kpx knows (kpx.outputs); only max |diff| is reported")
    return report.passed


def _pooled(report, judged: bool) -> list[tuple[str, str]]:
    """One line per output over every input set: keypoints pooled (displacement median / p95 / max, confident ones
    moved > 1 grid step, flips), float outputs by their largest difference; with ``judged``, each set's verdict."""
    import numpy as np

    cases = [c for c in report.cases if c.failure is None]
    label = cases[0].inputs if len(cases) == 1 else f"{len(cases)} calibration inputs"
    out = []
    for name in [o.name for o in cases[0].outputs] if cases else []:
        found = [o for c in cases for o in c.outputs if o.name == name]
        stats = [o.keypoints for o in found if o.keypoints is not None]
        if not stats:
            out.append((label, f"{name}: max |diff| {max(o.max_abs for o in found):.3g} (reported)"))
            continue
        px = np.concatenate([k.detail.judged[k.detail.finite] for k in stats if k.detail is not None] or [[]])
        kp = stats[0]
        text = (
            f"{name}: {px.size} keypoints, displacement median {np.median(px):.3g}, p95 "
            f"{np.percentile(px, 95):.3g}, max {px.max():.3g} {kp.units}"
            if px.size
            else f"{name}: none"
        )
        if all(k.confident is not None for k in stats) and kp.grid_px is not None:
            moved, confident = sum(k.confident_moved_grid for k in stats), sum(k.confident for k in stats)
            same = len({k.min_score for k in stats}) == 1
            score = f"score >= {kp.min_score:.3g}" if same else "score >= half of each input's largest"
            text += f"; {moved} of {confident} confident ({score}) moved > 1 {kp.grid_name} "
            text += f"({kp.grid_px:.3g} {kp.units})"
        flips = [f for k in stats for f in k.flips]
        ambiguous = sum(f.ambiguous for f in flips)
        if flips:
            text += f"; {ambiguous} ambiguous flip(s) (the float32 file's own two peaks within the maps' difference)"
            text += f", {len(flips) - ambiguous} to a clearly lower peak" if len(flips) > ambiguous else ""
        if judged:
            text += f"; {'PASS' if all(k.passed for k in stats) else 'FAIL'} at --px-tol {kp.px_tol:g}"
            text += "".join(f"\n    {c.inputs}: {o.keypoints.summary()}" for c in cases for o in c.outputs
                            if o.name == name and o.keypoints is not None and not o.keypoints.passed)  # fmt: skip
        out.append((label, text))
    return out
