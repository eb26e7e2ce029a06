"""parity of an ONNX file against PyTorch or float64

The reference is --reference MODEL (a PyTorch model spec), --reference FP32.onnx (another ONNX file, run
on ONNX Runtime CPU: an INT8 file against its float32 original) or, by default, a float64 evaluation of the
ONNX graph itself with onnx.reference. Inputs come from --inputs x.npz or are seeded random values
sized by --dim.
"""

from __future__ import annotations

import argparse

from export_tools.cli._common import (
    Log,
    add_check_options,
    add_input_file_options,
    add_max_input,
    check_report_path,
    file_inputs,
    model_file,
    non_negative,
    parity_options,
    parse_runtimes,
    read_onnx,
    tolerances,
    write_report,
)
from export_tools.errors import CHECK_FAILED, OK, UsageError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--reference", metavar="MODEL", help="PyTorch model spec, or an .onnx file (run on ONNX Runtime "
                   "CPU: e.g. the float32 file an INT8 file came from), to compare with (default: float64 "
                   "evaluation of the ONNX graph with onnx.reference)")  # fmt: skip
    p.add_argument("--weights", help="checkpoint for --reference")
    add_input_file_options(p)
    add_max_input(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing --report")
    add_check_options(p)
    p.add_argument("--min-score", type=non_negative, metavar="SCORE",
                   help="keypoints whose reference score is at least this are confident: reported apart (how many "
                        "moved more than one heatmap pixel); default half the largest score")  # fmt: skip


def run(args: argparse.Namespace, log: Log) -> int:
    from export_tools.errors import LocalFunctionsUnsupportedError, ModelLoadError
    from export_tools.parity import check_parity

    check_report_path(args, [args.model, args.inputs, args.weights, model_file(args.reference)])
    if args.weights and not args.reference:
        raise UsageError("--weights applies to --reference; give the PyTorch model with --reference MODEL")
    model = read_onnx(args.model)
    runtimes = parse_runtimes(args.providers)
    sets = file_inputs(args, model)
    module, reference_model = None, None
    if args.reference and args.reference.lower().endswith(".onnx"):
        if args.weights:
            raise UsageError("--weights applies to a PyTorch --reference; an .onnx reference holds its weights")
        reference_model = read_onnx(args.reference)
    elif args.reference:
        from export_tools.loading import load_model

        module = load_model(args.reference, args.weights).module
    names = [o.name for o in model.graph.output]
    against = (f"PyTorch {args.reference}" if module is not None else f"{args.reference} on ONNX Runtime CPU"
               if reference_model is not None else "a float64 onnx.reference evaluation")  # fmt: skip
    log.info(f"checking {args.model} on {', '.join(runtimes)} against {against}")
    try:
        report = check_parity(module, {name: feeds for name, (feeds, _) in sets.items()}, runtimes=runtimes,
                              model=model, input_meta={name: meta for name, (_, meta) in sets.items()},
                              tolerances=tolerances(args, names), resized=False,  # sets holds the resized one
                              reference_model=reference_model, min_score=args.min_score,
                              **parity_options(args, runtimes))  # fmt: skip
    except (LocalFunctionsUnsupportedError, ModelLoadError) as exc:  # the file, not the machine
        raise UsageError(str(exc)) from None
    print(report.table())
    write_report(report, args, log)
    return OK if report.passed else CHECK_FAILED
