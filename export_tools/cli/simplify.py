"""simplify an ONNX file with onnxslim or onnxsim, safely

Runs the tool, puts back what it drops from kpx files (function bodies, kpx metadata), and writes the
result only if ONNX Runtime computes the same outputs as the original on seeded inputs (at the export sizes
kpx recorded and one larger, or --dim). Prints the node-count and load-time change. Exit 1 (nothing
written) when the outputs changed.
"""

from __future__ import annotations

import argparse

from export_tools.cli._common import Log, add_input_file_options, add_max_input, file_inputs, read_model
from export_tools.errors import OK, UsageError


def configure(p: argparse.ArgumentParser) -> None:
    from export_tools.postprocess import SIMPLIFIERS

    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("-o", "--output", required=True, help="the simplified .onnx file to write")
    p.add_argument("--tool", choices=SIMPLIFIERS, default=SIMPLIFIERS[0], help="the simplifier (default onnxslim)")
    add_input_file_options(p)
    add_max_input(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing output")


def run(args: argparse.Namespace, log: Log) -> int:
    import onnx

    from export_tools.exporter import save_atomic
    from export_tools.files import check_output_path, describe_os_error
    from export_tools.postprocess import simplify

    out = check_output_path(args.output, overwrite=args.force, inputs=[args.model, args.inputs], flag="-o")
    model = onnx.load_from_string(read_model(args.model))
    sets = {name: feeds for name, (feeds, _) in file_inputs(args, model.SerializeToString()).items()}
    simplified, report = simplify(model, args.tool, sets)
    try:
        save_atomic(simplified, out, overwrite=args.force)
    except OSError as exc:
        raise UsageError(describe_os_error(exc, out, "the model")) from None
    print(f"wrote {out}: {report.text()}")
    return OK
