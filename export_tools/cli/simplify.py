"""simplify an ONNX file with onnxslim or onnxsim, safely

Runs the tool, puts back what it drops from kpx files (function bodies, kpx metadata), and writes the
result only if ONNX Runtime computes the same outputs as the original on seeded inputs (at the export sizes
kpx recorded and one larger, or --dim). Prints the node-count and load-time change. Exit 1 (nothing
written) when the outputs changed.
"""

from __future__ import annotations

import argparse

from export_tools.cli._common import Log, add_file_options, file_inputs, output_path, read_onnx, write_onnx
from export_tools.errors import OK


def configure(p: argparse.ArgumentParser) -> None:
    from export_tools.postprocess import SIMPLIFIERS

    add_file_options(p, "simplified")
    p.add_argument("--tool", choices=SIMPLIFIERS, default=SIMPLIFIERS[0], help="the simplifier (default onnxslim)")


def run(args: argparse.Namespace, log: Log) -> int:
    from export_tools.postprocess import simplify

    out = output_path(args)
    model = read_onnx(args.model)
    sets = {name: feeds for name, (feeds, _) in file_inputs(args, model).items()}
    simplified, report = simplify(model, args.tool, sets)
    write_onnx(simplified, out, args)
    print(f"wrote {out}: {report.text()}")
    return OK
