"""what an ONNX file holds; --target: will it load there

Inputs and outputs with symbolic dims, opsets, kpx ops (with or without bodies), functions and node
counts. With --target, the file is checked against what that runtime accepts (exit 1 if refused), and
for TensorRT the trtexec lines are printed. With --quantization, the nodes an INT8 quantizer must keep in
float (what kpx added, and the network's last layer before it), as ONNX Runtime's nodes_to_exclude, an NNCF
IgnoredScope and trtexec per-layer precisions (--json: one object).
"""

from __future__ import annotations

import argparse
import json

from export_tools.cli._common import Log
from export_tools.errors import CHECK_FAILED, OK, UsageError


def configure(p: argparse.ArgumentParser) -> None:
    from export_tools.targets import TARGETS

    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--target", choices=tuple(TARGETS),
                   help="check the file against what this runtime accepts (exit 1 if refused)")  # fmt: skip
    p.add_argument("--profile", action="append", default=[], metavar="NAME=MIN:OPT:MAX",
                   help="TensorRT shape profile of a symbolic dim (default: from the export sizes)")  # fmt: skip
    p.add_argument("--quantization", action="store_true",
                   help="the nodes to keep in float when quantizing to INT8, for ONNX Runtime, NNCF and "
                        "trtexec")  # fmt: skip
    p.add_argument("--json", action="store_true")


def _profile(text: str) -> tuple[str, tuple[int, int, int]]:
    name, eq, sizes = text.partition("=")
    parts = sizes.split(":")
    if not eq or len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise UsageError(f"--profile {text!r} is not NAME=MIN:OPT:MAX; e.g. --profile B=1:8:32")
    lo, opt, hi = map(int, parts)
    if not 0 < lo <= opt <= hi:
        raise UsageError(f"--profile {text!r}: need 0 < MIN <= OPT <= MAX")
    return name, (lo, opt, hi)


def run(args: argparse.Namespace, log: Log) -> int:
    from export_tools.inspection import format_inspection, inspect_model, load_onnx
    from export_tools.targets import check_target, trtexec_commands

    try:
        model = load_onnx(args.model)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if args.quantization:
        if args.target or args.profile:
            raise UsageError("--quantization lists nodes for a quantizer; give it without --target/--profile")
        from export_tools.quantize import exclusion

        excluded = exclusion(model)
        print(json.dumps(excluded.as_dict(), indent=2) if args.json else excluded.text(args.model))
        return OK
    info = inspect_model(model)
    if args.profile and not (args.target or "").startswith("tensorrt"):
        raise UsageError("--profile only applies with --target tensorrt-8.6 or tensorrt-10")
    if not args.target:
        print(json.dumps(info, indent=2) if args.json else format_inspection(info))
        return OK
    report = check_target(model, args.target)
    result = {"model": args.model, **report.as_dict()}
    if args.target.startswith("tensorrt") and report.accepted:
        try:
            result["trtexec"] = trtexec_commands(model, args.model, args.target, dict(map(_profile, args.profile)))
        except ValueError as exc:
            if str(exc).startswith("--profile"):
                raise UsageError(str(exc)) from None
            log.info(f"no trtexec lines: {exc}")  # the verdict stands; only the command lines need the sizes
    elif args.target.startswith("tensorrt"):
        log.info("no trtexec lines: apply the fixes above first")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(report.text())
        for line in result.get("trtexec", []):
            print(line)
    return OK if report.accepted else CHECK_FAILED
