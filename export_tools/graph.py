"""ONNX graph plumbing shared by the exporter, the lowering, the parity harness and the inspectors.

Walking subgraphs (``If``/``Loop``/``Scan`` bodies), the default opset, kpx nodes, model metadata,
and the float64 copy of a graph that localisation and the float64 reference evaluate.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from onnx import TensorProto

DEFAULT_DOMAINS = ("", "ai.onnx")

#: ONNX element type -> numpy dtype, for the types kpx generates and compares
NUMPY_TYPES = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64,
               TensorProto.INT32: np.int32, TensorProto.INT64: np.int64, TensorProto.BOOL: np.bool_,
               TensorProto.UINT8: np.uint8}  # fmt: skip
_FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)


def subgraphs(node) -> list[Any]:
    """The graphs held by ``node``'s attributes (``If`` branches, ``Loop``/``Scan`` bodies)."""
    out = []
    for attr in node.attribute:
        if attr.HasField("g"):
            out.append(attr.g)
        out.extend(attr.graphs)
    return out


def iter_graphs(graph) -> Iterator[Any]:
    """``graph`` and every graph nested in it, parents first."""
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from iter_graphs(sub)


def iter_nodes(graph, where: str | None = None) -> Iterator[Any]:
    """Every node of ``graph`` and of its subgraphs, each before the nodes of its own subgraphs.

    With ``where`` (a label such as ``"graph"``), yields ``(node, path)`` pairs, the path naming the
    subgraph a node sits in (``"graph > If cond subgraph"``)."""
    for node in graph.node:
        yield node if where is None else (node, where)
        for sub in subgraphs(node):
            inner = None if where is None else f"{where} > {node.op_type} {node.name or '?'} subgraph"
            yield from iter_nodes(sub, inner)


def kpx_nodes(model) -> list[Any]:
    """The ``kpx`` nodes of the main graph (and its subgraphs)."""
    from custom_ops.registry import DOMAIN  # imported here: runtime workers load this module without torch

    return [n for n in iter_nodes(model.graph) if n.domain == DOMAIN]


def default_opset(model, missing: int | None = None) -> int:
    """The model's default-domain opset version; ``missing`` (or ``ValueError`` if ``None``) when it has none."""
    for o in model.opset_import:
        if o.domain in DEFAULT_DOMAINS:
            return o.version
    if missing is None:
        raise ValueError("the model imports no default-domain opset")
    return missing


def props(holder) -> dict[str, str]:
    """``holder.metadata_props`` as a dict (a model's metadata, or a node's)."""
    return {p.key: p.value for p in holder.metadata_props}


def set_props(holder, values: dict[str, str]) -> None:
    """Sets (or replaces) ``values`` in ``holder.metadata_props`` (a model's or a node's), keeping the others."""
    kept = [p for p in holder.metadata_props if p.key not in values]
    del holder.metadata_props[:]
    holder.metadata_props.extend(kept)
    for key, value in values.items():
        holder.metadata_props.add(key=key, value=value)


def promote_to_float64(model):
    """A copy of an (inlined) ``ModelProto`` that computes every float value in float64.

    Graph inputs and outputs, initializers, ``Constant``/``ConstantOfShape`` values and ``Cast`` targets of
    float16/bfloat16/float32 become float64 (subgraphs included); value infos are dropped so that shapes
    and types are inferred again. Raises ``ValueError`` if the graph still holds local functions (inline
    them first)."""
    import onnx
    from onnx import helper, numpy_helper

    if model.functions:
        raise ValueError("promote_to_float64 needs an inlined model; call onnx.inliner.inline_local_functions first.")
    out = onnx.ModelProto()
    out.CopyFrom(model)

    def tensor64(t):
        if t.data_type not in _FLOAT_TYPES:
            return t
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name)

    for g in iter_graphs(out.graph):
        for vi in list(g.input) + list(g.output):
            if vi.type.tensor_type.elem_type in _FLOAT_TYPES:
                vi.type.tensor_type.elem_type = TensorProto.DOUBLE
        del g.value_info[:]
        for i, t in enumerate(g.initializer):
            g.initializer[i].CopyFrom(tensor64(t))
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR and node.op_type in ("Constant", "ConstantOfShape"):
                    attr.t.CopyFrom(tensor64(attr.t))
                elif node.op_type == "Cast" and attr.name == "to" and attr.i in _FLOAT_TYPES:
                    attr.i = TensorProto.DOUBLE
            if node.op_type == "Constant":  # value_float(s) would make float32 tensors
                for attr in list(node.attribute):
                    if attr.name in ("value_float", "value_floats"):
                        values = np.asarray(attr.f if attr.name == "value_float" else list(attr.floats), np.float64)
                        node.attribute.remove(attr)
                        node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(values)))
    return out


def feeds_to_float64(feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Float inputs as float64 (for a :func:`promote_to_float64` graph); others unchanged."""
    return [np.asarray(f).astype(np.float64) if np.asarray(f).dtype.kind == "f" else np.asarray(f) for f in feeds]


# --- where ONNX nodes came from (the torch exporter's node metadata) ------------------------------------------

#: node ``metadata_props`` written by torch.onnx (dynamo) that lead back to the PyTorch module and line
TORCH_ORIGIN_KEYS = (
    "pkg.torch.onnx.name_scopes",
    "pkg.torch.onnx.class_hierarchy",
    "pkg.torch.onnx.fx_node",
    "pkg.torch.onnx.stack_trace",
)
#: node metadata written by kpx on the nodes that inlining a kpx function created: JSON ``{"op_type", "node"}``
KPX_OP_KEY = "kpx.op"
#: model metadata holding the node origins of a file below IR 10 (nodes have no ``metadata_props`` there)
NODE_ORIGINS_KEY = "kpx.node_origins"
_ORIGIN_KEYS = (*TORCH_ORIGIN_KEYS[:2], TORCH_ORIGIN_KEYS[3], KPX_OP_KEY)


def node_origins(model) -> dict[str, dict[str, str]]:
    """``{node name: origin metadata}`` for the main graph's nodes: each node's own ``metadata_props``, else the
    copy kpx keeps in the model metadata (:data:`NODE_ORIGINS_KEY`) for files below IR 10."""
    import contextlib
    import json

    out: dict[str, dict[str, str]] = {}
    stored = props(model).get(NODE_ORIGINS_KEY)
    if stored:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            out.update({k: dict(v) for k, v in json.loads(stored).items() if isinstance(v, dict)})
    for node in model.graph.node:
        tags = {k: v for k, v in props(node).items() if k in TORCH_ORIGIN_KEYS or k == KPX_OP_KEY}
        if tags:
            out[node.name] = tags
    return out


def compact_origins(model, max_frames: int = 3) -> dict[str, dict[str, str]]:
    """The origin metadata of the main graph's nodes, small enough for the model metadata: scopes, classes, the
    kpx op, and the last ``max_frames`` frames of the stack trace that are not in torch itself."""
    out = {}
    for node in model.graph.node:
        tags = {k: v for k, v in props(node).items() if k in _ORIGIN_KEYS}
        if not tags:
            continue
        trace = tags.get(TORCH_ORIGIN_KEYS[3])
        if trace:
            frames = [f for f in split_stack_trace(trace) if not is_library_frame(f[0], torch_only=True)]
            tags[TORCH_ORIGIN_KEYS[3]] = "\n".join(
                f'  File "{p}", line {n}, in {f}\n    {c}' for p, n, f, c in frames[-max_frames:]
            )
        out[node.name] = tags
    return out


def split_stack_trace(text: str) -> list[tuple[str, int, str, str]]:
    """``[(path, line, function, code)]``, outermost first, from a Python traceback text (torch's
    ``pkg.torch.onnx.stack_trace``)."""
    import re

    frames = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r'\s*File "(.*)", line (\d+), in (.*)$', line)
        if m:
            code = lines[i + 1].strip() if i + 1 < len(lines) and not lines[i + 1].lstrip().startswith("File ") else ""
            frames.append((m.group(1), int(m.group(2)), m.group(3).strip(), code))
    return frames


def is_library_frame(path: str, *, torch_only: bool = False) -> bool:
    """True for a frame in torch itself (and, unless ``torch_only``, in kpx's own packages)."""
    import os

    parts = set(os.path.normpath(path).split(os.sep)[:-1])
    return bool(parts & ({"torch"} if torch_only else {"torch", "custom_ops", "export_tools"}))


#: kpx decoders whose inputs a keypoint verdict reads (heatmaps; SimCC x and y), by ONNX op type
DECODERS = {"DecodeHeatmaps": ("heatmap", 1), "DecodeSimCC": ("simcc", 2)}


def decoder_inputs(model) -> tuple[str, list[str]] | str:
    """``(kind, value names)`` of the inputs of the file's one kpx decoder (``"heatmap"``: the heatmaps;
    ``"simcc"``: the x and y vectors, in that order where the graph says it), or why they cannot be named.

    Function files: the ``kpx`` node's inputs. Inline files: the values that the nodes tagged with the decoder's
    call (``kpx.op``) read and that other nodes (or the graph's inputs) produce, in graph order."""
    import json

    from custom_ops.registry import DOMAIN

    nodes = [n for n in model.graph.node if n.domain == DOMAIN and n.op_type in DECODERS]
    if len(nodes) == 1:
        kind, count = DECODERS[nodes[0].op_type]
        return kind, list(nodes[0].input[:count])
    if len(nodes) > 1:
        return f"the file has {len(nodes)} kpx decoder nodes: which keypoints each made is not known"
    origins = node_origins(model)
    calls: dict[str, tuple[str, list[Any]]] = {}
    for node in model.graph.node:
        try:
            tag = json.loads(origins.get(node.name, {}).get(KPX_OP_KEY, "null"))
        except ValueError:
            continue
        if isinstance(tag, dict) and tag.get("op_type") in DECODERS:
            calls.setdefault(str(tag.get("node")), (tag["op_type"], []))[1].append(node)
    if len(calls) != 1:
        return ("the file has no kpx decoder (or its nodes carry no kpx.op tags)" if not calls else
                f"the file has {len(calls)} kpx decoder calls: which keypoints each made is not known")  # fmt: skip
    op_type, group = next(iter(calls.values()))
    inside = {o for n in group for o in n.output}
    constants = {t.name for t in model.graph.initializer}
    produced = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    reads = [v for n in group for v in n.input if v and v not in inside and v not in constants and v in produced]
    types = _value_types(model)
    reads = [v for v in reads if types.get(v) in (None, *_FLOAT_TYPES, TensorProto.DOUBLE)]  # not shapes, indices
    kind, count = DECODERS[op_type]
    found = list(dict.fromkeys(reads))
    if len(found) != count:
        return f"the inlined {op_type} reads {len(found)} outside value(s), not {count}: its inputs are not known"
    return kind, found


def _value_types(model) -> dict[str, int]:
    """``{value: ONNX element type}`` for the main graph, by shape inference (``{}`` where it fails)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph shape inference cannot read: no types, no filtering
        return {}
    graph = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
