"""list the registered ops

One block per op (name, ONNX node, inputs, outputs, attributes, conventions), or ``--json``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
from typing import Any

from custom_ops import list_ops
from custom_ops.registry import DOMAIN, OpSpec
from export_tools.cli._common import Log
from export_tools.errors import OK, USAGE


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", help="glob or substring of the op name or ONNX op type")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, log: Log) -> int:
    specs = matching_ops(args.pattern)
    if not specs:
        log.error(f"no op matches {args.pattern!r}; run `kpx ops` for the list")
        return USAGE
    print(json.dumps([op_record(s) for s in specs], indent=2) if args.json else ops_text(specs))
    return OK


def op_record(spec: OpSpec) -> dict[str, Any]:
    """Everything ``kpx ops --json`` says about one op (the README's ops table, export_tools/opsdoc.py, shows a
    subset)."""
    return {
        "name": spec.name,
        "onnx_op_type": spec.onnx_op_type,
        "domain": DOMAIN,
        "domain_version": spec.version,
        "description": spec.description,
        "inputs": [{"name": p.name, "type": p.type_str, "doc": p.doc} for p in spec.inputs],
        "outputs": [{"name": p.name, "type": p.type_str, "doc": p.doc} for p in spec.outputs],
        "attributes": [{"name": a.name, "kind": a.kind, "default": a.default, "doc": a.doc} for a in spec.attributes],
        "conventions": spec.conventions,
    }


def matching_ops(pattern: str | None = None) -> list[OpSpec]:
    """Registered ops whose name or ONNX op type matches ``pattern`` (a glob, or a substring)."""
    if not pattern:
        return list_ops()
    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    return [s for s in list_ops() if fnmatch.fnmatch(s.name, glob.lower()) or fnmatch.fnmatch(s.onnx_op_type, glob)]


def ops_text(specs: list[OpSpec]) -> str:
    """The ``kpx ops`` listing: one block per op."""
    blocks = []
    for spec in specs:
        r = op_record(spec)
        attrs = ", ".join(f"{a['name']}={a['default']!r}" for a in r["attributes"]) or "-"
        blocks.append("\n".join([
            f"{r['name']}  ({DOMAIN}.{r['onnx_op_type']} v{r['domain_version']})",
            f"  {r['description']}",
            f"  inputs:      {', '.join(i['name'] for i in r['inputs'])}",
            f"  outputs:     {', '.join(o['name'] for o in r['outputs'])}",
            f"  attributes:  {attrs}",
            f"  conventions: {r['conventions'] or '-'}",
        ]))  # fmt: skip
    return "\n\n".join(blocks)
