"""export a model to ONNX

MODEL is package.module:factory, path/to/file.py:factory or builtin:<op>. The file is written
atomically (nothing is left behind on failure); --check then runs the parity harness at the example
sizes and, where dims are dynamic, at every dynamic dim one larger.
"""

from __future__ import annotations

import argparse

from custom_ops.registry import DEFAULT_OPSET
from export_tools.cli._common import (
    Log,
    add_check_options,
    add_max_input,
    add_model_options,
    check_flags_given,
    check_report_path,
    export_model,
    load_pytorch,
    model_file,
    parity_options,
    parse_runtimes,
    tolerances,
    write_onnx,
    write_report,
)
from export_tools.errors import CHECK_FAILED, OK, UsageError


def configure(p: argparse.ArgumentParser) -> None:
    from export_tools.exporter import EMIT_MODES
    from export_tools.lowering import LOWERINGS
    from export_tools.postprocess import SIMPLIFIERS

    p.add_argument("model", metavar="MODEL", help="package.module:factory, path/to/file.py:factory or builtin:<op>")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    add_model_options(p)
    add_max_input(p)
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"default-domain opset (default {DEFAULT_OPSET})")
    p.add_argument("--emit", choices=EMIT_MODES, default=EMIT_MODES[0],
                   help="function: kpx nodes with bodies; inline: standard ONNX only")  # fmt: skip
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--force", action="store_true", help="overwrite an existing output (and --report)")
    p.add_argument("--simplify", choices=SIMPLIFIERS, help="simplify with this tool, keeping kpx bodies and "
                   "metadata; refused unless ONNX Runtime outputs stay equal (see `kpx simplify`)")  # fmt: skip
    p.add_argument("--output-key", metavar="KEY[,KEY]",
                   help="a model returning a dict or ModelOutput: export (or decode) these entries, named after "
                        "their keys (default: every tensor entry)")  # fmt: skip
    p.add_argument("--output-names", metavar="NAME[,NAME]", help="names for the file's outputs, in order")
    p.add_argument("--target", choices=tuple(LOWERINGS), help="lower the file for this runtime (rewrites of ops it "
                   "lacks, identical values; export_tools/lowering.py); see kpx inspect --target")  # fmt: skip
    p.add_argument("--check", action="store_true", help="run the parity harness right after the export")
    add_check_options(p)
    add_decode_options(p)


def add_decode_options(p: argparse.ArgumentParser) -> None:
    """``--decode`` and its options: keypoints and scores out of the file (export_tools/decoding.py)."""
    from export_tools.decoding import BOX_FORMATS, DECODE_CHOICES, NORMALIZE

    g = p.add_argument_group("decode in the graph", "outputs `keypoints` (N, K, 2) and `scores` (N, K)")
    g.add_argument("--decode", choices=DECODE_CHOICES, help="decode the model's heatmaps or SimCC pair in the file")
    g.add_argument("--split-ratio", type=float, default=2.0, help="SimCC bins per input pixel (default 2.0)")
    g.add_argument("--simcc-sigma", type=float, nargs="+", default=None, metavar="SIGMA",
                   help="SimCC label sigma in bins, one or x y (sets simcc:dark's blur; default 6.0)")  # fmt: skip
    g.add_argument("--blur-kernel", type=int, default=11, help="heatmap DARK blur size (default 11: sigma 2)")
    g.add_argument("--udp", action="store_true", help="UDP: the crop's UDP matrix and w - 1 heatmap scaling")
    g.add_argument("--boxes", choices=BOX_FORMATS, help="take boxes (N, 4) and output frame pixels")
    g.add_argument("--crop", metavar="WxH", help="crop the frames in the graph to the network's input size")
    g.add_argument("--padding", type=float, default=1.25, help="box padding before the crop (default 1.25)")
    g.add_argument("--batch-index", action="store_true", help="take batch_index (N,): each box's frame")
    g.add_argument("--mean", type=float, nargs="+", help="per-channel mean subtracted from the crops")
    g.add_argument("--std", type=float, nargs="+", help="per-channel std dividing the crops")
    g.add_argument("--normalize", choices=tuple(NORMALIZE),
                   help="preset --mean/--std of the crops: imagenet (mmpose, rtmlib), unit (/ 255), none")  # fmt: skip
    g.add_argument("--channels-last", action="store_true",
                   help="frames (B, H, W, C), as OpenCV decodes them, instead of (B, C, H, W)")  # fmt: skip
    g.add_argument("--frames-dtype", choices=("uint8",), help="the frames input's dtype (default: the network's)")


def decode_options(args: argparse.Namespace) -> dict | None:
    """:class:`~export_tools.decoding.PoseDecoder` options from the flags; ``None`` without ``--decode``."""
    from export_tools.decoding import parse_size

    given = [flag for flag, value in (("--boxes", args.boxes), ("--crop", args.crop), ("--udp", args.udp),
                                      ("--batch-index", args.batch_index), ("--mean", args.mean),
                                      ("--std", args.std), ("--simcc-sigma", args.simcc_sigma),
                                      ("--normalize", args.normalize),
                                      ("--channels-last", args.channels_last),
                                      ("--frames-dtype", args.frames_dtype)) if value]  # fmt: skip
    if args.decode is None:
        if given:
            raise UsageError(f"{', '.join(given)} configure --decode: add --decode (e.g. --decode simcc), or drop them")
        return None
    if args.simcc_sigma is not None and len(args.simcc_sigma) not in (1, 2):
        raise UsageError(f"--simcc-sigma takes one sigma or two (x y); got {len(args.simcc_sigma)}")
    sigma = 6.0 if args.simcc_sigma is None else (args.simcc_sigma[0] if len(args.simcc_sigma) == 1 else
                                                   tuple(args.simcc_sigma))  # fmt: skip
    return {
        "decode": args.decode, "split_ratio": args.split_ratio, "sigma": sigma, "blur_kernel": args.blur_kernel,
        "udp": args.udp, "boxes": args.boxes, "padding": args.padding, "batch_index": args.batch_index,
        "mean": args.mean, "std": args.std, "crop_size": None if args.crop is None else parse_size(args.crop, "--crop"),
        "channels_last": args.channels_last, "frames_dtype": args.frames_dtype, "normalize": args.normalize,
        "output_key": _keys(args.output_key),
    }  # fmt: skip


def _keys(text: str | None) -> list[str] | None:
    """``--output-key heatmaps`` / ``--output-names a,b``: a list of names."""
    if text is None:
        return None
    keys = [k.strip() for k in text.split(",")]
    if not all(keys) or len(set(keys)) != len(keys):
        raise UsageError(f"{text!r} must be distinct names separated by commas, e.g. heatmaps")
    return keys


def decode_notes(decode: dict, args: argparse.Namespace) -> list[str]:
    """What the export decided for the user and says (one line each)."""
    notes = []
    if decode["decode"] == "heatmap:dark_udp" and not args.udp:
        notes.append("heatmap:dark_udp is mmpose's UDPHeatmap decoder: it implies --udp (w - 1 heatmap scaling"
                     + (" and the UDP crop matrix)" if args.crop else ")"))  # fmt: skip
    if args.crop and args.mean is None and args.std is None and args.normalize is None:
        notes.append("the crops reach the network as 0-255 pixels (no --mean/--std); if it was trained on "
                     "normalised images add --normalize imagenet (or --mean/--std), or --normalize none to keep "
                     "them raw and silence this")  # fmt: skip
    return notes


def run(args: argparse.Namespace, log: Log) -> int:
    from export_tools.errors import LocalFunctionsUnsupportedError, ModelLoadError
    from export_tools.files import check_output_path
    from export_tools.graph import kpx_nodes
    from export_tools.parity import check_parity

    reads = [args.weights, model_file(args.model)]
    out = check_output_path(args.output, overwrite=args.force, inputs=reads, flag="-o")
    if not args.check and check_flags_given(args):
        raise UsageError(f"{', '.join(check_flags_given(args))} configure the parity check: add --check, or drop them")
    runtimes = parse_runtimes(args.providers, available=args.check)
    if args.check:
        check_report_path(args, [*reads, args.output])
    decode = decode_options(args)
    output_names = _keys(args.output_names)
    progress = log.progress("export", 4 + bool(args.check))
    loaded, example, dynamic, input_names = load_pytorch(args, log)
    if decode is None and args.output_key:
        import dataclasses

        from export_tools.models import SelectOutputs, pick_outputs

        keys = _keys(args.output_key)
        try:
            import torch

            with torch.no_grad():
                pick_outputs(loaded.module(*example), keys)
        except ValueError as exc:
            raise UsageError(f"--output-key: {exc}") from None
        loaded = dataclasses.replace(loaded, module=SelectOutputs(loaded.module, keys))
    if decode is not None:
        for note in decode_notes(decode, args):
            log.info(f"note: {note}")
        import dataclasses

        from export_tools.decoding import wrap

        try:
            wrapper, example, dynamic, input_names = wrap(loaded.module, example, dynamic, input_names, **decode)
        except UsageError:
            raise
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--decode: {exc}") from None
        loaded = dataclasses.replace(loaded, module=wrapper, input_names=input_names)
    progress.step("model ready")
    dtype = {"fp32": None, "fp16": "float16"}[args.dtype]
    log.debug(f"exporting {loaded.source} with opset {args.opset}, emit={args.emit}, dynamic={dynamic}")
    proto = export_model(loaded, example, dynamic, input_names, log, opset=args.opset, emit=args.emit, dtype=dtype,
                         output_names=output_names)  # fmt: skip
    progress.step("exported")
    if args.simplify:
        from export_tools.postprocess import simplify

        proto, simplified = simplify(proto, args.simplify)
        log.info(simplified.text())
    if args.target:
        from export_tools.lowering import lower_for_target, lowering_record

        proto = lower_for_target(proto, args.target)
        log.info(f"lowered for {args.target}: {lowering_record(proto)['rewrites'] or 'nothing to rewrite'}")
    write_onnx(proto, out, args)
    progress.step("written")
    progress.close()
    nodes = len(kpx_nodes(proto))
    print(f"wrote {out} ({out.stat().st_size} bytes; opset {args.opset}, emit {args.emit}, dtype {args.dtype}, "
          f"{nodes} kpx node(s))")  # fmt: skip
    if not args.check:
        return OK
    judged = tolerances(args, [o.name for o in proto.graph.output])
    try:  # an fp16 file is judged against the float32 model on the same (rounded) numbers
        report = check_parity(loaded.module, {"example": example}, runtimes=runtimes, model=proto,
                              tolerances=judged, **parity_options(args, runtimes))  # fmt: skip
    except (LocalFunctionsUnsupportedError, ModelLoadError) as exc:
        raise UsageError(f"{out} was written, but cannot be checked there: {exc}") from None
    print(report.table())
    write_report(report, args, log)
    return OK if report.passed else CHECK_FAILED
