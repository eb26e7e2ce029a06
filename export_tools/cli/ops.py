"""list the registered ops

One block per op (name, ONNX node, inputs, outputs, attributes, conventions), or ``--json``.
"""

from __future__ import annotations

import argparse
import json

from export_tools.cli._common import Log
from export_tools.errors import OK, USAGE


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", help="glob or substring of the op name or ONNX op type")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, log: Log) -> int:
    from export_tools.opsdoc import matching_ops, op_record, ops_text

    specs = matching_ops(args.pattern)
    if not specs:
        log.error(f"no op matches {args.pattern!r}; run `kpx ops` for the list")
        return USAGE
    print(json.dumps([op_record(s) for s in specs], indent=2) if args.json else ops_text(specs))
    return OK
