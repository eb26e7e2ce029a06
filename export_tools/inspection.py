"""What an ONNX file holds: inputs and outputs with symbolic dims, opsets, kpx ops, functions, node counts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from custom_ops.registry import DOMAIN
from export_tools.graph import iter_nodes, props


def load_onnx(path: str | Path):
    """Loads and checks an ONNX file (with its external data), or raises ``ValueError`` naming the problem
    (missing file, not ONNX, truncated, no outputs)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; check the path")
    try:
        model = onnx.load(str(path))  # external data, if any, relative to the file's directory
        onnx.checker.check_model(model)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ValueError(f"{str(path)!r} is not a readable ONNX file ({type(exc).__name__}: {first})") from None
    if not model.graph.output:
        raise ValueError(f"{str(path)!r} is not a usable ONNX model: its graph has no outputs")
    return model


def _value(value) -> dict[str, Any]:
    from onnx import helper

    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
    dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "?"
    return {"name": value.name, "dtype": dtype, "shape": dims}


def inspect_model(model) -> dict[str, Any]:
    """A JSON-ready summary of ``model`` (an ``onnx.ModelProto``)."""
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    functions = {(f.domain, f.name): f for f in model.functions}
    used = Counter((n.domain or "ai.onnx", n.op_type) for n in iter_nodes(model.graph))
    meta = props(model)
    kpx_nodes = sorted(op for (domain, op) in used if domain == DOMAIN)
    kpx_ops = [
        {
            "op_type": op,
            "count": used[(DOMAIN, op)],
            "domain_version": opsets.get(DOMAIN),
            "function": (DOMAIN, op) in functions,
        }
        for op in kpx_nodes
    ]
    try:  # the exporter records {op_type: count} of the kpx nodes before any inlining
        exported = sorted(json.loads(meta.get("kpx.ops", "{}")))
    except (ValueError, TypeError):
        exported = []
    if kpx_nodes:
        form = "function" if all(o["function"] for o in kpx_ops) else "kpx nodes without bodies"
    elif exported:
        form = "inline"
    else:
        form = "no kpx ops"
    problems = []
    if any(not op["function"] for op in kpx_ops):  # onnx.version_converter drops them
        problems.append(("kpx nodes without function bodies: no runtime can run them",
                         "kpx repair FILE -o FIXED.onnx (re-attaches the bodies at the file's opset)"))  # fmt: skip
    if kpx_nodes and "kpx.ops" not in meta:  # onnx-graphsurgeon and polygraphy drop metadata_props
        problems.append(("the kpx metadata is gone (a graph tool dropped it): kpx inspect --target tensorrt-* "
                         "has no export sizes for its shape profiles", "kpx repair FILE -o FIXED.onnx restores "
                         "kpx.version/kpx.ops; give the sizes with --profile NAME=MIN:OPT:MAX"))  # fmt: skip
    from export_tools.filemeta import OUTPUTS_KEY, POSE_KEY, read
    from export_tools.quantize import QUANTIZATION_KEY

    return {
        "pose": read(model, POSE_KEY) or None,
        "quantization": read(model, QUANTIZATION_KEY) or None,
        "keypoint_outputs": {k: v for k, v in read(model, OUTPUTS_KEY).items() if v.get("kind") == "keypoints"},
        "problems": problems,
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [_value(v) for v in model.graph.input],
        "outputs": [_value(v) for v in model.graph.output],
        "opset_imports": opsets,
        "kpx": {"form": form, "ops": kpx_ops, "exported_ops": exported, "version": meta.get("kpx.version")},
        "functions": [{"domain": d, "name": n, "nodes": len(f.node)} for (d, n), f in functions.items()],
        "nodes": len(model.graph.node),
        "node_counts": dict(sorted(Counter(n.op_type for n in model.graph.node).items(), key=lambda kv: -kv[1])),
        "initializers": len(model.graph.initializer),
        "metadata": meta,
    }


def pose_text(pose: dict[str, Any]) -> str:
    """A file's recorded decode settings (``kpx.pose``) on one line."""
    parts = [str(pose.get("decode")), f"input {pose['input_size'][0]}x{pose['input_size'][1]}"]
    if pose.get("udp"):
        parts.append("udp")
    if pose.get("crop"):
        layout = "NHWC" if pose.get("channels_last") else "NCHW"
        parts.append(f"crop from frames ({layout}), padding {pose['padding']:g}")
    if pose.get("boxes"):
        parts.append(f"boxes {pose['boxes']}")
    if pose.get("mean") is not None:
        parts.append(f"mean {pose['mean']} std {pose['std']}")
    return ", ".join(parts)


def format_inspection(info: dict[str, Any]) -> str:
    """The human-readable form of :func:`inspect_model`."""

    def values(items):
        return [f"  {v['name']}: {v['dtype']}[{', '.join(str(d) for d in v['shape'])}]" for v in items]

    kpx = info["kpx"]
    lines = ["inputs:", *values(info["inputs"]), "outputs:", *values(info["outputs"])]
    lines.append("opsets: " + ", ".join(f"{d} {v}" for d, v in info["opset_imports"].items()))
    lines.append(f"kpx: {kpx['form']}" + (f" (kpx {kpx['version']})" if kpx["version"] else ""))
    for op in kpx["ops"]:
        body = "function body attached" if op["function"] else "NO function body"
        lines.append(f"  {DOMAIN}.{op['op_type']} v{op['domain_version']} x{op['count']}: {body}")
    for problem, fix in info["problems"]:
        lines += [f"PROBLEM: {problem}", f"  fix: {fix}"]
    if kpx["form"] == "inline":
        lines.append(f"  inlined into standard ONNX: {', '.join(kpx['exported_ops'])}")
    if info.get("pose"):
        lines.append(f"decode: {pose_text(info['pose'])}")
    quantized = info.get("quantization")
    if quantized:
        lines.append(f"quantized: {quantized.get('format')} by {quantized.get('tool')}, weights "
                     f"{quantized.get('weights')}, activations {quantized.get('activations')}, calibration "
                     f"{quantized.get('calibration')}; {quantized.get('float_nodes')} node(s) kept float")  # fmt: skip
    for name, out in info.get("keypoint_outputs", {}).items():
        lines.append(f"keypoints: {name} in {out.get('space', 'input')} pixels"
                     + (" (normalized coordinates)" if out.get("units") == "normalized" else ""))  # fmt: skip
    if info["functions"]:
        lines.append(
            "functions: " + ", ".join(f"{f['domain']}.{f['name']} ({f['nodes']} nodes)" for f in info["functions"])
        )
    counts = ", ".join(f"{op} {n}" for op, n in info["node_counts"].items())
    lines.append(f"nodes: {info['nodes']} ({counts})")
    return "\n".join(lines)
