"""The graph tools people run after export, made safe for kpx files.

What the tools do to a kpx file (measured 2026-11-29 on every op, both emit modes; docs/design.md):

- ``onnx.version_converter`` drops every function body (ONNX Runtime then refuses the ``kpx`` nodes);
- onnx-graphsurgeon 0.6 and polygraphy 0.53 keep the bodies but drop ``metadata_props`` (``kpx.ops``,
  ``kpx.example_shapes``: ``kpx inspect --target tensorrt-*`` loses its default shape profiles);
- onnxslim 0.1.98 rewrote untyped float constants inside function bodies as float64 (kpx bodies now write
  typed float32 constants, so every kpx file survives it); onnxsim 0.8 and onnxoptimizer 0.4 keep kpx files.

:func:`repair` gives kpx nodes their bodies again (authored at the file's opset, or at another opset the
kpx way) and restores the metadata; :func:`simplify` runs onnxslim or onnxsim, repairs what they drop, and
refuses the result unless ONNX Runtime computes the same outputs as before.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from custom_ops.registry import DOMAIN, check_opset, get_op
from export_tools.errors import ExportError, OpsetConversionError, VerificationError
from export_tools.graph import (
    KPX_OP_KEY,
    NODE_ORIGINS_KEY,
    compact_origins,
    default_opset,
    kpx_nodes,
    node_origins,
    props,
    set_props,
)

SIMPLIFIERS = ("onnxslim", "onnxsim")
#: outputs of a simplified file may differ from the original's by this much ((rtol, atol) by dtype): constant
#: folding evaluates some float32 subexpressions once, in another order (measured: 0 on every kpx op)
SAME = {"float64": (1e-12, 1e-12), "float32": (1e-6, 1e-7), "float16": (1e-3, 1e-4)}


def repair(model, *, opset: int | None = None, target: str | None = None):
    """A copy of ``model`` whose kpx nodes carry their bodies, authored at ``opset`` (default: the file's), lowered
    for ``target`` when given (:func:`export_tools.lowering.lower_for_target`: ``"mnn"``, ``"ncnn"``, ``"litert"``).

    Converting to another opset goes the kpx way: kpx bodies set aside, the graph converted (kpx's own
    lowering from 18 to 15-17, ``onnx.version_converter`` otherwise), bodies authored at the target attached.
    The ``kpx.*`` metadata is rewritten from the nodes (``kpx.example_shapes``, the export sizes, only
    survives if the file still has it). Raises ``ValueError`` for an opset kpx does not write or a graph
    that cannot be converted."""
    import onnx
    import onnx.version_converter

    from export_tools.downgrade import EXPORT_OPSET, downgrade, lower_ir_version
    from export_tools.exporter import attach_functions, name_nodes

    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    current = default_opset(proto)
    target_opset = check_opset(current if opset is None else opset)
    others = [f for f in proto.functions if f.domain != DOMAIN]
    del proto.functions[:]
    if target_opset != current:
        if others:
            names = ", ".join(f"{f.domain}.{f.name}" for f in others)
            raise ValueError(f"the file holds local functions kpx does not know ({names}); convert it with the tool "
                             "that wrote them")  # fmt: skip
        try:
            if target_opset < current <= EXPORT_OPSET:
                proto = downgrade(proto, target_opset)
            else:
                proto = onnx.version_converter.convert_version(proto, target_opset)
        except OpsetConversionError:
            raise
        except Exception as exc:
            raise ValueError(f"onnx.version_converter cannot convert this file from opset {current} to {target_opset}: "
                             f"{exc}".splitlines()[0]) from None  # fmt: skip
        if target_opset < EXPORT_OPSET:
            lower_ir_version(proto)
    proto.functions.extend(others)
    for op_type in sorted({n.op_type for n in kpx_nodes(proto)}):
        get_op(op_type)  # a kpx node kpx does not know: KeyError naming the registered ops
    attach_functions(proto, target_opset)
    name_nodes(proto)  # quantizers and TensorRT address nodes by name (ORT's quant_pre_process leaves some unnamed)
    restore_tags(model, proto)  # the conversion may drop node metadata (below IR 10 it must)
    onnx.checker.check_model(proto, full_check=True)
    if target is not None:
        from export_tools.lowering import lower_for_target

        proto = lower_for_target(proto, target)
    return proto


@dataclass
class SimplifyReport:
    """What a simplification changed, and the check that it changed nothing it computes."""

    tool: str
    tool_version: str
    nodes_before: int
    nodes_after: int
    load_ms_before: float
    load_ms_after: float
    max_abs_diff: float
    input_sets: list[str]
    repaired: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        repaired = f"; repaired: {', '.join(self.repaired)}" if self.repaired else ""
        return (f"{self.tool} {self.tool_version}: nodes {self.nodes_before} -> {self.nodes_after}, ONNX Runtime "
                f"load {self.load_ms_before:.1f} -> {self.load_ms_after:.1f} ms (median of 5); outputs equal on "
                f"{', '.join(self.input_sets)} (max abs diff {self.max_abs_diff:.3g}){repaired}")  # fmt: skip


def node_count(model) -> int:
    """Nodes of the main graph plus those of its function bodies (what a runtime executes once inlined)."""
    from export_tools.graph import iter_nodes

    return sum(1 for _ in iter_nodes(model.graph)) + sum(len(f.node) for f in model.functions)


def simplify(model, tool: str, sets: Mapping[str, Sequence[np.ndarray]] | None = None) -> tuple[Any, SimplifyReport]:
    """``model`` simplified by ``tool`` (``"onnxslim"`` or ``"onnxsim"``), kpx bodies and metadata kept, and
    its ONNX Runtime outputs on each input set of ``sets`` equal to the original's (:data:`SAME`); otherwise
    :class:`~export_tools.errors.VerificationError` and no result. Default ``sets``: seeded inputs at the
    export sizes kpx recorded and one larger (:func:`export_tools.parity.inputs.input_sets`)."""
    import importlib.metadata

    import onnx

    if tool not in SIMPLIFIERS:
        raise ValueError(f"tool must be one of {SIMPLIFIERS}; got {tool!r}")
    if sets is None:
        from export_tools.parity.inputs import input_sets

        sets = {name: feeds for name, (feeds, _) in input_sets(model.SerializeToString()).items()}
    try:
        version = importlib.metadata.version(tool)
        module = __import__(tool)
    except (ImportError, importlib.metadata.PackageNotFoundError):
        from export_tools.errors import RunnerUnavailableError

        raise RunnerUnavailableError(f"{tool} is not installed; fix: pip install {tool}") from None
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        if tool == "onnxslim":
            simplified = module.slim(copy)
        else:
            simplified, ok = module.simplify(copy)
            if not ok:
                raise VerificationError("onnxsim says its result is not equivalent to the input; nothing written")
    except VerificationError:
        raise
    except Exception as exc:
        raise ExportError(f"{tool} {version} failed on this file: {exc}".splitlines()[0]) from exc
    repaired = _restore(model, simplified)
    diff = _same_outputs(model, simplified, sets, tool)
    report = SimplifyReport(tool, version, node_count(model), node_count(simplified), _load_ms(model),
                            _load_ms(simplified), diff, list(sets), repaired)  # fmt: skip
    return simplified, report


def restore_from(original, transformed) -> list[str]:
    """Puts back in ``transformed`` what a tool dropped from the kpx file ``original``: function bodies (authored at
    the file's opset), ``kpx.*`` metadata and ``kpx.op`` node tags (:func:`restore_tags`); returns what it restored."""
    return _restore(original, transformed)


def _restore(original, simplified) -> list[str]:
    """Puts back what a tool dropped from a kpx file: bodies (authored at the file's opset), metadata, node tags."""
    repaired = []
    bodies = {(f.domain, f.name) for f in simplified.functions}
    if any((DOMAIN, n.op_type) not in bodies for n in kpx_nodes(simplified)):
        fixed = repair(simplified)
        del simplified.functions[:]
        simplified.functions.extend(fixed.functions)
        repaired.append("function bodies")
    lost = {k: v for k, v in props(original).items() if k.startswith("kpx.") and k not in props(simplified)}
    lost.pop(NODE_ORIGINS_KEY, None)  # node names may have changed: restore_tags rewrites it
    if lost:
        set_props(simplified, lost)
        repaired.append("metadata " + ", ".join(sorted(lost)))
    if restore_tags(original, simplified):
        repaired.append("kpx.op node tags")
    return repaired


#: the node-name prefix ONNX Runtime's function inliner (``quant_pre_process``, ``optimized_model_filepath``) gives
#: the nodes of an inlined call: ``_inlfunc_DecodeHeatmaps_n3``
_ORT_INLINED = re.compile(r"^_inlfunc_([A-Za-z0-9]+)_")


def tagged_count(model) -> int:
    """How many main-graph nodes carry a ``kpx.op`` tag (on the node, or in ``kpx.node_origins`` below IR 10)."""
    origins = node_origins(model)
    return sum(KPX_OP_KEY in origins.get(n.name, {}) for n in model.graph.node)


def restore_tags(original, transformed, *, propagate: bool = True) -> int:
    """Puts ``original``'s ``kpx.op`` tags back on ``transformed`` (the file after a tool that dropped them: onnxslim,
    onnxsim, onnx-graphsurgeon and polygraphy drop node metadata; ONNX Runtime's ``quant_pre_process`` also inlines
    the kpx functions and renames their nodes); returns how many nodes got a tag back.

    A node gets the tag of the original node with its name, else of the original node that produced one of its
    outputs, else (a node ONNX Runtime inlined from a kpx function, ``_inlfunc_<op type>_...``) of the kpx node of
    that type; then (``propagate``) :func:`~export_tools.exporter.propagate_tags` tags the nodes the tool wrote
    (folded, fused) from their neighbours, never a node the original left untagged. Below IR 10 the tags go into
    ``kpx.node_origins``."""
    from export_tools.exporter import propagate_tags

    origins = node_origins(original)
    tagged = {name: props for name, props in origins.items() if KPX_OP_KEY in props}
    untagged = {n.name for n in original.graph.node if n.name and n.name not in tagged}
    by_value = {o: tagged[n.name] for n in original.graph.node if n.name in tagged for o in n.output if o}
    by_type: dict[str, dict[str, str]] = {}
    for n in original.graph.node:
        if n.domain == DOMAIN and n.name in tagged:
            by_type.setdefault(n.op_type, tagged[n.name])
    present = node_origins(transformed)  # below IR 10: what kpx.node_origins still says (names kept)
    low_ir = transformed.ir_version < 10
    before = tagged_count(transformed)
    for node in transformed.graph.node:
        if KPX_OP_KEY in props(node):
            continue
        found = present.get(node.name) if KPX_OP_KEY in present.get(node.name, {}) else None
        found = found or tagged.get(node.name) or next((by_value[o] for o in node.output if o in by_value), None)
        match = _ORT_INLINED.match(node.name)
        if found is None and match and match.group(1) in by_type:
            found = by_type[match.group(1)]
        if found is not None:
            set_props(node, {k: v for k, v in found.items() if k.startswith(("pkg.torch.onnx.", "kpx."))})
    if propagate:
        propagate_tags(transformed, frozen=frozenset(untagged))
    if low_ir:  # nodes hold no metadata below IR 10: the tags live in the model metadata
        origins_now = compact_origins(transformed)
        for node in transformed.graph.node:
            del node.metadata_props[:]
        if origins_now:
            set_props(transformed, {NODE_ORIGINS_KEY: json.dumps(origins_now, separators=(",", ":"))})
    return tagged_count(transformed) - before


def _same_outputs(original, simplified, sets: Mapping[str, Sequence[np.ndarray]], tool: str) -> float:
    from export_tools.parity.compare import compare_output
    from export_tools.runtimes import make_runner

    before = make_runner("cpu", original.SerializeToString())
    after = make_runner("cpu", simplified.SerializeToString())
    names = [o.name for o in original.graph.output]
    if [o.name for o in simplified.graph.output] != names:
        raise VerificationError(f"{tool} renamed or dropped outputs ({names} -> "
                                f"{[o.name for o in simplified.graph.output]}); nothing written")  # fmt: skip
    worst = 0.0
    for set_name, feeds in sets.items():
        for name, e, a in zip(names, before.run(feeds), after.run(feeds), strict=True):
            rtol, atol = SAME.get(str(a.dtype), (0.0, 0.0))
            stats = compare_output(name, e, a, rtol, atol)
            if not stats.passed:
                raise VerificationError(f"{tool} changed output {name!r} on input set {set_name!r} (max abs diff "
                                        f"{stats.max_abs:.3g}); the simplified file was not written")  # fmt: skip
            worst = max(worst, stats.max_abs)
    return worst


def _load_ms(model, repeats: int = 5) -> float:
    from export_tools.runtimes import ort_session

    data = model.SerializeToString()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ort_session(data)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
