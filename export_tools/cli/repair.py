"""give a kpx file its function bodies and metadata back, or convert its opset the kpx way

For files a tool damaged: onnx.version_converter drops every kpx function body (ONNX Runtime then refuses
the file); onnx-graphsurgeon and polygraphy drop the kpx metadata. The kpx nodes get their bodies authored
at the file's opset (or --opset: the graph is converted with the bodies set aside, then bodies authored at
the target are attached), the metadata is rewritten from the nodes, and the result is checked on ONNX
Runtime against a float64 evaluation of itself before it is written. --tags-from ORIGINAL.onnx puts back the
kpx metadata and the kpx.op node tags (what kpx quantize keeps float) from the file kpx wrote, after a tool that
dropped or renamed them (onnxslim, onnxsim, onnx-graphsurgeon, polygraphy, ONNX Runtime's quant_pre_process).
"""

from __future__ import annotations

import argparse

from export_tools.cli._common import Log, add_file_options, file_inputs, output_path, read_onnx, write_onnx
from export_tools.errors import CHECK_FAILED, OK, UsageError


def configure(p: argparse.ArgumentParser) -> None:
    from export_tools.lowering import LOWERINGS

    add_file_options(p, "repaired")
    p.add_argument("--opset", type=int, help="convert to this default-domain opset (15-21; default: the file's)")
    p.add_argument("--target", choices=tuple(LOWERINGS), help="also lower the file for this runtime (rewrites of ops "
                   "it lacks, identical values; export_tools/lowering.py)")  # fmt: skip
    p.add_argument(
        "--tags-from",
        metavar="ORIGINAL.onnx",
        help="put back kpx metadata and node tags from the file kpx wrote (after a tool dropped them)",
    )


def run(args: argparse.Namespace, log: Log) -> int:
    from export_tools.graph import default_opset
    from export_tools.parity import check_parity
    from export_tools.postprocess import node_count, repair

    out = output_path(args, [args.tags_from])
    model = read_onnx(args.model)
    try:
        fixed = repair(model, opset=args.opset, target=args.target)
    except (ValueError, KeyError) as exc:
        raise UsageError(str(exc).strip("'\"")) from None
    if args.tags_from:
        from export_tools.postprocess import restore_from, tagged_count

        restored = restore_from(read_onnx(args.tags_from), fixed)
        log.info(f"from {args.tags_from}: {', '.join(restored) or 'nothing was missing'}; {tagged_count(fixed)} "
                 "node(s) carry a kpx tag")  # fmt: skip
    sets = file_inputs(args, fixed)
    report = check_parity(None, {name: feeds for name, (feeds, _) in sets.items()}, model=fixed,
                          input_meta={name: meta for name, (_, meta) in sets.items()})  # fmt: skip
    print(report.table())
    if not report.passed:
        log.error("the repaired file does not pass its check on ONNX Runtime; nothing written")
        return CHECK_FAILED
    write_onnx(fixed, out, args)
    print(f"wrote {out} (opset {default_opset(model)} -> {default_opset(fixed)}, {len(fixed.functions)} kpx "
          f"function bodies, {node_count(fixed)} nodes)")  # fmt: skip
    return OK
