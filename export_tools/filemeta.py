"""What kpx writes into a file about its inputs and outputs, and reads back when it checks the file.

At export (:func:`name_outputs`, :func:`record`):

- output names: yours; else the model's ``output_names`` attribute; else the keys of a dict (or ``ModelOutput``)
  the model returns (``heatmaps``); else a kpx op's output name for an output torch calls ``getitem_N``;
- ``kpx.example_shapes``: the export sizes (``{input: shape}``), for later checks and TensorRT profiles;
- ``kpx.inputs``: ``{input: {"kind": ...}}`` where kpx knows what an input holds (``frames``, ``boxes`` in a box
  format, ``batch_index``, a kpx op's input), so that checks generate inputs that test something;
- ``kpx.outputs``: ``{output: {"kind": "keypoints", "space": ..., ...}}`` for keypoint outputs, so that checks
  judge them in pixels (:class:`export_tools.parity.keypoints.KeypointOutput` reads it);
- ``kpx.pose``: the settings of a :class:`~export_tools.decoding.PoseDecoder` (``--decode``, ``--crop`` ...), so
  that ``kpx check FILE --reference NET`` rebuilds the same decoder around the network.

A module describes itself with ``kpx_metadata()`` returning ``{"inputs": [...], "outputs": [...], other keys}``
(lists in input/output order, ``None`` where it knows nothing; other keys are written as ``kpx.<key>``). kpx op
outputs that are keypoints are found in the graph itself (:func:`describe_kpx_outputs`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from export_tools.graph import props, set_props

INPUTS_KEY, OUTPUTS_KEY, POSE_KEY, SHAPES_KEY = "kpx.inputs", "kpx.outputs", "kpx.pose", "kpx.example_shapes"

#: kpx op outputs that are keypoints ``(..., 2)`` as ``(x, y)``: ``(op type, output index) -> space``
#: ("map": the op's attributes say pixel or normalized coordinates on its input map)
KEYPOINT_OUTPUTS = {("DecodeHeatmaps", 0): "heatmap", ("DecodeSimCC", 0): "input", ("HeatmapToImage", 0): "image",
                    ("SpatialSoftArgmax2d", 0): "map", ("SpatialExpectation2d", 0): "map"}  # fmt: skip


# --- names ------------------------------------------------------------------------------------------------


def dict_output_names(out_spec: Any) -> list[str | None]:
    """For each output leaf of a torch.export ``out_spec``: its key path when it sits in a dict or ``ModelOutput``
    (``"heatmaps"``, ``"extra.0"``), else ``None``."""
    from torch.utils import _pytree as pytree

    tree = pytree.tree_unflatten(list(range(out_spec.num_leaves)), out_spec)
    names: list[str | None] = [None] * out_spec.num_leaves
    for path, leaf in pytree.tree_flatten_with_path(tree)[0]:
        if any(hasattr(k, "key") or hasattr(k, "name") for k in path):  # a dict key or a dataclass field
            names[leaf] = ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", "")))) for k in path)
    return names


def kpx_output_names(proto) -> list[str | None]:
    """A kpx op's output name for each graph output torch called ``getitem*`` that a kpx node produced."""
    from custom_ops.registry import get_op

    producers = {out: (node, i) for node in proto.graph.node for i, out in enumerate(node.output)}
    names: list[str | None] = []
    for value in proto.graph.output:
        found = _kpx_producer(value.name, producers) if value.name.startswith("getitem") else None
        names.append(None if found is None else get_op(found[0].op_type).outputs[found[1]].name)
    return names


def _kpx_producer(name: str, producers: Mapping[str, tuple[Any, int]]) -> tuple[Any, int] | None:
    """The kpx node and output index that value ``name`` is (through ``Identity`` copies), else ``None``."""
    from custom_ops.registry import DOMAIN

    if name not in producers:
        return None
    node, index = producers[name]
    seen = {id(node)}
    while node.op_type == "Identity" and node.domain == "" and node.input[0] in producers:
        node, index = producers[node.input[0]]  # torch copies an output that is returned twice
        if id(node) in seen:  # an Identity that reads its own output (torch, a returned input renamed): no kpx op
            return None
        seen.add(id(node))
    return (node, index) if node.domain == DOMAIN else None


def rename_outputs(proto, names: Sequence[str | None]) -> None:
    """Renames graph output ``i`` to ``names[i]`` (``None``: kept), everywhere it is read; a name already taken
    gets ``_1``, ``_2`` ..."""
    graph = proto.graph
    taken = {v.name for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer)}
    taken |= {out for node in graph.node for out in node.output}
    renames = {}
    for value, base in zip(graph.output, names):
        if not base or base == value.name:
            continue
        new, n = base, 1
        while new in taken:
            new, n = f"{base}_{n}", n + 1
        taken.add(new)
        renames[value.name] = new
    if not renames:
        return
    for node in graph.node:
        for field in (node.output, node.input):
            values = [renames.get(n, n) for n in field]
            del field[:]
            field.extend(values)
    for value in (*graph.output, *graph.value_info):
        value.name = renames.get(value.name, value.name)


def name_outputs(proto, model: Any, out_spec: Any = None) -> None:
    """Default output names (see the module doc): the model's ``output_names``, else dict keys, else kpx op outputs."""
    count = len(proto.graph.output)
    given = getattr(model, "output_names", None)
    if isinstance(given, (list, tuple)) and len(given) == count and all(isinstance(n, str) and n for n in given):
        rename_outputs(proto, list(given))
        return
    names: list[str | None] = [None] * count
    if out_spec is not None:
        try:
            keyed = dict_output_names(out_spec)
        except Exception:  # an output structure pytree cannot rebuild: torch's names stay
            keyed = []
        if len(keyed) == count:
            names = keyed
    kpx = kpx_output_names(proto)
    rename_outputs(proto, [n if n is not None else k for n, k in zip(names, kpx)])


# --- what inputs and outputs hold -----------------------------------------------------------------------------


def describe_kpx_outputs(proto) -> dict[str, dict[str, Any]]:
    """``{output: keypoint info}`` for graph outputs that are a kpx op's keypoints (``KEYPOINT_OUTPUTS``)."""
    from custom_ops.registry import get_op

    graph = proto.graph
    producers = {out: (node, i) for node in graph.node for i, out in enumerate(node.output)}
    values = {v.name: v for v in (*graph.value_info, *graph.input, *graph.output)}
    out: dict[str, dict[str, Any]] = {}
    for value in graph.output:
        found = _kpx_producer(value.name, producers)
        if found is None or (found[0].op_type, found[1]) not in KEYPOINT_OUTPUTS:
            continue
        node, index = found
        space = KEYPOINT_OUTPUTS[(node.op_type, index)]
        info: dict[str, Any] = {"kind": "keypoints", "space": space, "units": "px", "op": node.op_type}
        if space == "map":
            spec = get_op(node.op_type)
            attrs = {a.name: a.default for a in spec.attributes}
            attrs.update({a.name: a.i for a in node.attribute if a.type == a.INT})
            dims = _dims(values.get(node.input[0]))
            if attrs.get("normalized_coordinates"):
                info["units"] = "normalized"
                info["align_corners"] = bool(attrs.get("align_corners", 1))
                info["map_size"] = dims[-2:] if len(dims) >= 2 else None
        out[value.name] = info
    return out


def _dims(value: Any) -> list[int | str]:
    if value is None:
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value.type.tensor_type.shape.dim]  # fmt: skip


def record(proto, model: Any, example: Sequence[Any]) -> None:
    """Writes ``kpx.example_shapes``, ``kpx.inputs``, ``kpx.outputs`` and the module's own keys (see the module
    doc) into ``proto``'s metadata; entries given as input indices (``{"boxes": 1}``) become input names."""
    import torch

    graph = proto.graph
    inputs = [v.name for v in graph.input]
    outputs = [v.name for v in graph.output]
    tensors = [a for a in example if isinstance(a, torch.Tensor)]
    values: dict[str, str] = {}
    if len(tensors) == len(inputs):  # the export sizes: default shape profiles (kpx inspect --target)
        values[SHAPES_KEY] = json.dumps({name: list(t.shape) for name, t in zip(inputs, tensors)})
    described = describe_kpx_outputs(proto)
    own = model.kpx_metadata() if callable(getattr(model, "kpx_metadata", None)) else {}

    def named(entry: dict[str, Any]) -> dict[str, Any]:
        return {k: (inputs[v] if k in ("boxes", "frames") and isinstance(v, int) and v < len(inputs) else v)
                for k, v in entry.items()}  # fmt: skip

    for key, names, found in (("inputs", inputs, {}), ("outputs", outputs, described)):
        entries = dict(found)
        for name, entry in zip(names, own.get(key) or ()):
            if entry:
                entries[name] = named(entry)
        if entries:
            values[f"kpx.{key}"] = json.dumps(entries, sort_keys=True)
    for key, value in own.items():
        if key not in ("inputs", "outputs"):
            values[f"kpx.{key}"] = json.dumps(value, sort_keys=True)
    if values:
        set_props(proto, values)


def read(model, key: str) -> Any:
    """The JSON value kpx stored under ``key`` (``INPUTS_KEY`` ...), ``{}`` when absent or unreadable."""
    text = props(model).get(key)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, (dict, list)) else {}
