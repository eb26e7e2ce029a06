"""Per-runtime compatibility reports: will this ONNX file load on TensorRT, OpenVINO, ORT mobile?

``check_target(model, "tensorrt-8.6")`` lists every finding with its severity and the fix. The rules
come from what each runtime documents (or, for OpenVINO and ORT mobile, what kpx measured here):

- opset range, and whether ONNX local functions are read at all;
- data-dependent output shapes (``NonZero``, ``Unique``, ``Compress``, ``NonMaxSuppression``);
- ``Range`` with non-integer inputs that are not constants (TensorRT builds float ranges only from
  constants; kpx builds grids with integer ``Range`` then ``Cast``);
- ``MaxPool`` with its ``Indices`` output; ``TopK`` with ``k >= 3840`` (TensorRT's limit) or a ``k``
  that is not a constant; ``Reduce*``/``Squeeze``/``Unsqueeze`` axes that are not constants;
- float64 tensors, which TensorRT does not support and mobile builds often leave out.

Nodes inside function bodies are checked too (they run once inlined).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from export_tools.graph import DEFAULT_DOMAINS, default_opset, iter_graphs, iter_nodes, props

ERROR, WARNING = "error", "warning"
DATA_DEPENDENT = ("NonZero", "Unique", "Compress", "NonMaxSuppression")
TOPK_LIMIT = 3840
#: op type -> index of its axes input (TensorRT needs these as constants)
_AXES_INPUTS = {
    **dict.fromkeys(("ReduceSum", "ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2",
                     "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "Squeeze", "Unsqueeze"), 1),
    "Slice": 3,
    "CumSum": 1,
}  # fmt: skip


@dataclass(frozen=True)
class OpRule:
    """Standard ops a runtime lacks (or gets wrong): found nodes are reported with ``severity`` and ``fix``."""

    ops: tuple[str, ...]
    severity: str
    problem: str
    fix: str
    #: the fix is a rewrite of :mod:`export_tools.lowering` (the finding names ``--target``)
    lowered: bool = False


_MNN_LOWER = "export with --target mnn, or kpx repair FILE -o OUT --target mnn"
_NCNN_LOWER = "export with --target ncnn, or kpx repair FILE -o OUT --target ncnn"
#: measured with MNN 3.6.1 (one-node models and every kpx op: tests/test_edge_targets.py, docs/deployment.md)
MNN_RULES = (
    OpRule(("IsNaN",), ERROR, "MNN 3.6.1 has no IsNaN (converter: 'These Op Not Support: ONNX::IsNaN', "
           "'Converted Failed!')", f"{_MNN_LOWER} (IsNaN(x) -> Not(LessOrEqual(x, +inf)), identical on ORT)", True),
    OpRule(("Less",), ERROR, "MNN 3.6.1's float Less is wrong when both operands are negative (Less(-0.13, -1.27) "
           "gives true)", f"{_MNN_LOWER} (Less(a, b) -> Greater(b, a), identical on ORT)", True),
    OpRule(("IsInf",), ERROR, "MNN 3.6.1 has no IsInf", "rewrite IsInf(x) as Equal(Abs(x), +inf) in your model"),
)  # fmt: skip
#: measured with ncnn 1.0.20261020 + pnnx 20261020 at static shapes (what pnnx does not fold away)
NCNN_MISSING = ("Where", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Not", "IsNaN",
                "IsInf", "GatherElements", "Cast", "ArgMax")  # fmt: skip
NCNN_RULES = (
    OpRule(("Mod",), ERROR, "pnnx 20261020 aborts on an integer Mod it cannot fold (std::out_of_range)",
           f"{_NCNN_LOWER} (Mod(a, b) -> a - (a / b) * b)", True),
    OpRule(NCNN_MISSING, ERROR, "ncnn 1.0.20261020 has no layer for it (pnnx leaves it as a torch.* op that ncnn "
           "cannot load)", "keep it out of the ncnn file: compute it after ncnn, outside the network"),
)  # fmt: skip


@dataclass(frozen=True)
class Target:
    """What one runtime accepts. Severities are ``"error"`` (refused), ``"warning"`` or ``None`` (fine)."""

    name: str
    description: str
    min_opset: int
    max_opset: int
    local_functions: str | None  # severity of holding ONNX local functions
    float64: str | None
    data_dependent: str | None
    maxpool_indices: str | None
    float_range: str | None
    topk: str | None
    dynamic_axes: str | None
    max_ir_version: int | None = None
    source: str = ""
    #: ops this runtime lacks or computes wrongly (measured on the real runtime: tests/test_edge_targets.py)
    op_rules: tuple[OpRule, ...] = ()
    #: ``lower_for_target`` name whose rewrites fix some op rules (``--target`` at export, ``kpx repair --target``)
    lowering: str | None = None
    #: a converter reads the file at static shapes and folds shape arithmetic first: rules apply to what is left
    folds_shapes: bool = False


TARGETS = {
    t.name: t
    for t in (
        Target("tensorrt-8.6", "TensorRT 8.6 (ONNX parser of TensorRT 8.x)", 9, 17, ERROR, WARNING, WARNING, ERROR,
               ERROR, ERROR, ERROR, 8, "TensorRT 8.6 support matrix: opset <= 17, ONNX 1.13 (IR 8); no local "
               "functions"),
        Target("tensorrt-10", "TensorRT 10.x", 9, 20, None, WARNING, WARNING, ERROR, ERROR, ERROR, ERROR, None,
               "TensorRT 10 ONNX parser: opset 9-20 (later 10.x read more); local functions imported, "
               ">= 10.7 can map a node to a plugin of the same name"),
        Target("openvino", "OpenVINO (ONNX frontend, CPU plugin)", 7, 21, ERROR, WARNING, WARNING, None, WARNING,
               None, None, None, "measured with openvino 2026.4.1: no ONNX local function is converted, "
               "in any domain ('No conversion rule found'; OPENVINO_READS_LOCAL_FUNCTIONS)"),
        Target("ort-mobile", "ONNX Runtime mobile (.ort format, reduced builds)", 7, 21, None, WARNING, None, None,
               None, None, None, None, "onnxruntime conversion tools inline local functions; reduced operator "
               "builds often leave out double kernels"),
        Target("generic", "any ONNX runtime (the most portable file)", 9, 21, WARNING, WARNING, WARNING, WARNING,
               WARNING, WARNING, WARNING, None, "edge toolchains often cannot read ONNX functions or float64"),
        Target("mnn", "MNN 3.6 (its ONNX converter, CPU backend)", 7, 21, ERROR, WARNING, WARNING, None, None, None,
               None, None, "measured with MNN 3.6.1: no local functions ('Not Support: ONNX::DecodeHeatmaps'), no "
               "IsNaN, float Less wrong for negative operands", MNN_RULES, "mnn"),
        Target("ncnn", "ncnn via pnnx (CPU, float32)", 7, 21, ERROR, WARNING, ERROR, ERROR, None, None, None, None,
               "measured with ncnn 1.0.20261020 + pnnx 20261020 at static shapes: no comparisons, logic, Where, "
               "GatherElements, Cast, ArgMax; pnnx segfaults on local functions", NCNN_RULES, "ncnn", True),
        Target("litert", "LiteRT (TFLite) via onnx2tf 1.28.8, float32", 7, 21, ERROR, WARNING, WARNING, None, None,
               None, None, None, "measured with onnx2tf 1.28.8, tensorflow-cpu 2.21, ai-edge-litert 2.3: every kpx "
               "op of an inline file but standalone decode_simcc ('axes don't match array'); no local functions "
               "('DecodeHeatmaps OP is not yet implemented')", (), "litert", True),
    )
}  # fmt: skip


@dataclass
class Finding:
    severity: str
    rule: str
    where: str
    problem: str
    fix: str


@dataclass
class TargetReport:
    target: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if any(f.severity == ERROR for f in self.findings):
            return "refused"
        return "accepted with warnings" if self.findings else "accepted"

    @property
    def accepted(self) -> bool:
        return self.verdict != "refused"

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "verdict": self.verdict, "findings": [asdict(f) for f in self.findings]}

    def text(self) -> str:
        lines = [f"target {self.target}: {self.verdict.upper()}"]
        for f in self.findings:
            lines += [f"  {f.severity.upper()} [{f.rule}] {f.where}: {f.problem}", f"    fix: {f.fix}"]
        return "\n".join(lines)


def _constant_value(attr) -> Any:
    import numpy as np
    from onnx import numpy_helper

    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    if attr.name in ("value_int", "value_float"):
        return np.asarray(attr.i if attr.name == "value_int" else attr.f)
    if attr.name in ("value_ints", "value_floats"):
        return np.asarray(list(attr.ints if attr.name == "value_ints" else attr.floats))
    return np.asarray(0)  # strings, sparse: constant, value not needed here


def check_target(model, target: str) -> TargetReport:
    """Checks an ``onnx.ModelProto`` against ``target`` (one of :data:`TARGETS`)."""
    import onnx
    import onnx.inliner
    import onnx.numpy_helper
    import onnx.shape_inference
    from onnx import TensorProto

    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}; got {target!r}")
    t = TARGETS[target]
    report = TargetReport(target)

    def add(severity: str | None, rule: str, where: str, problem: str, fix: str) -> None:
        if severity is not None:
            report.findings.append(Finding(severity, rule, where, problem, fix))

    opset = default_opset(model, missing=0)
    if not t.min_opset <= opset <= t.max_opset:
        add(ERROR, "opset", "model", f"default-domain opset {opset}; {t.name} reads {t.min_opset}-{t.max_opset}",
            f"re-export with --opset {min(max(opset, t.min_opset), t.max_opset)}")  # fmt: skip
    if t.max_ir_version is not None and model.ir_version > t.max_ir_version:
        add(WARNING, "ir-version", "model", f"IR version {model.ir_version}; {t.name} ships a parser for IR <= "
            f"{t.max_ir_version}", "re-export with --emit inline --opset 17 (kpx writes IR 8 there)")  # fmt: skip
    if model.functions:
        names = ", ".join(f"{f.domain}.{f.name}" for f in model.functions)
        fix = "re-export with --emit inline (standard ONNX only)" + (" --opset 17" if t.max_opset <= 17 else "")
        add(t.local_functions, "local-functions", "model", f"holds ONNX local functions ({names})", fix)
    bodies = {(f.domain, f.name) for f in model.functions}
    for node, where in iter_nodes(model.graph, "graph"):
        if node.domain not in DEFAULT_DOMAINS and (node.domain, node.op_type) not in bodies:
            add(ERROR, "unknown-op", f"{where} node {node.name!r}", f"{node.domain}.{node.op_type} has no function "
                "body; no runtime can run it without a plugin", "re-export with kpx (bodies are attached) or "
                "--emit inline")  # fmt: skip

    inlined = onnx.inliner.inline_local_functions(model) if model.functions else model
    try:
        inferred = onnx.shape_inference.infer_shapes(inlined, data_prop=True)
    except Exception:  # inference is a help here, not a requirement
        inferred = inlined
    graph = inferred.graph
    types: dict[str, int] = {}
    constants: dict[str, Any] = {}
    for g in iter_graphs(graph):
        types.update({v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]})
        for init in g.initializer:
            constants[init.name] = onnx.numpy_helper.to_array(init)
            types.setdefault(init.name, init.data_type)
    for node in iter_nodes(graph):
        if node.op_type == "Constant" and node.attribute:
            constants[node.output[0]] = _constant_value(node.attribute[0])
            if node.attribute[0].name in ("value_float", "value_floats"):
                types.setdefault(node.output[0], TensorProto.FLOAT)

    inline_fix = "kpx's own ops avoid this; if it comes from your model, rewrite that part"
    for node, where in iter_nodes(graph, "graph"):
        at = f"{where} node {node.name or '?'} ({node.op_type})"
        if node.op_type in DATA_DEPENDENT:
            add(t.data_dependent, "data-dependent-shape", at, "output shape depends on the data", inline_fix)
        if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
            add(t.maxpool_indices, "maxpool-indices", at, "MaxPool's Indices output is used",
                "take the argmax with ArgMax (kpx decode_heatmaps does) instead of MaxPool indices")  # fmt: skip
        if node.op_type == "Range":
            float_input = any(types.get(i) in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)
                              for i in node.input)  # fmt: skip
            if float_input and not all(i in constants for i in node.input):
                add(t.float_range, "float-range", at, "Range over non-integer inputs that are not constants",
                    "build the range in int64 and Cast it (as kpx grids do)")  # fmt: skip
        if node.op_type == "TopK" and len(node.input) > 1:
            k = constants.get(node.input[1])
            if k is None:  # TensorRT >= 8.6 accepts a dynamic k, but cannot check it against its limit
                add(t.topk and WARNING, "topk-k", at, f"TopK's k is not a constant (must stay < {TOPK_LIMIT})",
                    "make k a constant")  # fmt: skip
            elif int(k.reshape(-1)[0]) >= TOPK_LIMIT:
                add(t.topk, "topk-k", at, f"TopK k = {int(k.reshape(-1)[0])} >= {TOPK_LIMIT}",
                    "use ArgMax (k = 1) or a smaller k")  # fmt: skip
        axes = _AXES_INPUTS.get(node.op_type)
        if axes is not None and len(node.input) > axes and node.input[axes] and node.input[axes] not in constants:
            add(t.dynamic_axes, "dynamic-axes", at, "axes are not a constant", "give the axes as a constant")
    doubles = sorted(name for name, ty in types.items() if ty == TensorProto.DOUBLE)
    if doubles:
        add(t.float64, "float64", f"{len(doubles)} value(s), e.g. {doubles[0]!r}", "float64 tensors",
            "export the model in float32 (model.float()) or --dtype fp16")  # fmt: skip
    if t.op_rules:
        _op_findings(model, inlined, t, add)
    if t.name == "litert" and "DecodeSimCC" in json.loads(props(model).get("kpx.ops", "{}") or "{}"):
        add(WARNING, "converter", "kpx op DecodeSimCC", "onnx2tf 1.28.8 failed on kpx's standalone decode_simcc "
            "file ('axes don't match array') and converted it inside a SimCC network",
            "run kpx check FILE --providers litert before shipping the file")  # fmt: skip
    return report


#: kpx ops that decode or crop: on ncnn the network deploys and these cannot (comparisons, Where, gathers)
_DECODING_OPS = ("DecodeHeatmaps", "DecodeSimCC", "TopdownCrop", "HeatmapToImage")
_BUILTIN = {"DecodeHeatmaps": "decode_heatmaps --input heatmaps:BxKxHxW",
            "DecodeSimCC": "decode_simcc --input simcc_x:BxKxLx --input simcc_y:BxKxLy",
            "TopdownCrop": "topdown_crop", "HeatmapToImage": "heatmap_to_image"}  # fmt: skip


def _checked_graph(model, inlined, t: Target):
    """The graph a converter sees: at static shapes with shape arithmetic folded (``t.folds_shapes``, when the
    export sizes are recorded), else the inlined graph."""
    if not t.folds_shapes:
        return inlined.graph, False
    try:
        import onnxscript.optimizer

        from export_tools.runtimes._converted import example_shapes, static_copy

        shapes = example_shapes(inlined)
        if shapes is None:
            return inlined.graph, False
        return onnxscript.optimizer.optimize(static_copy(inlined, shapes)).graph, True
    except Exception:  # folding helps; the rules still apply to the unfolded graph
        return inlined.graph, False


#: the inliner's name prefix of the nodes of one inlined call (``n33__1_`` in ``n33__1_n38__1``)
_CALL = re.compile(r"^(.+?__\d+)_")


def _op_findings(model, inlined, t: Target, add) -> None:
    """One finding per op rule and per place (a kpx op's body, inlined or not, or the rest of the graph)."""
    from export_tools.graph import node_origins

    graph, folded = (model.graph, False) if model.functions else _checked_graph(model, inlined, t)
    origins = {}
    for name, tags in node_origins(model).items():
        try:
            origins[name] = json.loads(tags.get("kpx.op", "")).get("op_type")
        except (ValueError, AttributeError):
            continue

    def origin(name: str) -> str:
        """The kpx op a node came from; a node inlined from a nested call inherits its call's (name prefix); the
        optimizer drops the inliner's ``_N`` suffix (``n33__1_n38__1_38`` -> ``n33__1_n38__1``)."""
        if name in unsuffixed:
            return unsuffixed[name]
        for end in range(len(name), 0, -1):
            if name[:end] in origins:
                return origins[name[:end]] or ""
        match = _CALL.match(name)  # a node the inliner wrote without metadata: its call's siblings say
        return families.get(match.group(1), "") if match else ""

    unsuffixed = {re.sub(r"_\d+$", "", k): v or "" for k, v in origins.items()}
    families = {m.group(1): v or "" for k, v in origins.items() if (m := _CALL.match(k)) and v}

    places: dict[str, list] = {}
    for node in iter_nodes(graph):
        if node.domain in DEFAULT_DOMAINS:
            places.setdefault(origin(node.name), []).append(node)
    for function in model.functions:
        places.setdefault(function.name, []).extend(n for n in function.node if n.domain in DEFAULT_DOMAINS)
    shapes = " (at the export sizes, shape arithmetic folded as the converter does)" if folded else ""
    for rule in t.op_rules:
        for place, nodes in places.items():
            found = sorted({n.op_type for n in nodes if n.op_type in rule.ops})
            if not found:
                continue
            count = sum(n.op_type in rule.ops for n in nodes)
            where = f"kpx op {place}" if place else "graph (outside kpx ops)"
            fix = rule.fix
            if t.name == "ncnn" and place in _DECODING_OPS and not rule.lowered:
                fix = (f"the network deploys to ncnn and {place} cannot: export the network alone (without --decode "
                       f"and --crop) for ncnn, and the decoding as a second small file for ONNX Runtime or MNN "
                       f"(kpx export builtin:{_BUILTIN[place]} --emit inline --opset 17 --target mnn -o "
                       "decode.onnx) fed with ncnn's output")  # fmt: skip
            add(rule.severity, "lowering" if rule.lowered else "unsupported-op", f"{where}: {count} node(s)",
                f"{', '.join(found)}: {rule.problem}{shapes}", fix)  # fmt: skip


# --- trtexec command lines ---------------------------------------------------------------------------------


def _profiles(model, overrides: dict[str, tuple[int, int, int]]) -> dict[str, list[tuple[int, int, int]]]:
    """``{input: [(min, opt, max) per dim]}``: symbolic dims from ``overrides``, else from the example
    shapes kpx records (``kpx.example_shapes``): batch (dim 0) ``1 : n : 4n``, others ``n/2 : n : 2n``.
    One symbolic name gets one profile, wherever it appears."""
    examples = json.loads(props(model).get("kpx.example_shapes", "{}"))
    symbols = {d.dim_param for v in model.graph.input for d in v.type.tensor_type.shape.dim if d.dim_param}
    unknown = sorted(set(overrides) - symbols)
    if unknown:
        raise ValueError(f"--profile {unknown}: not symbolic dims of the model; it has {sorted(symbols) or 'none'}")
    chosen = dict(overrides)
    profiles = {}
    for value in model.graph.input:
        dims = []
        for i, d in enumerate(value.type.tensor_type.shape.dim):
            if d.HasField("dim_value"):
                dims.append((d.dim_value,) * 3)
                continue
            if d.dim_param not in chosen:
                shape = examples.get(value.name)
                if shape is None or not d.dim_param:
                    name = d.dim_param or "NAME"
                    raise ValueError(f"input {value.name!r} dim {i} ({name}) is dynamic and its export size is "
                                     f"unknown; give --profile {name}=MIN:OPT:MAX")  # fmt: skip
                n = shape[i]
                chosen[d.dim_param] = (1, n, max(4 * n, 1)) if i == 0 else (max(n // 2, 1), n, 2 * n)
            dims.append(chosen[d.dim_param])
        profiles[value.name] = dims
    return profiles


def trtexec_commands(
    model, path: str, target: str = "tensorrt-10", overrides: dict[str, tuple[int, int, int]] | None = None
) -> list[str]:
    """``trtexec`` command lines for ``model`` saved at ``path``: an fp32 engine and an fp16 engine.

    Dynamic inputs get shape profiles (``--minShapes/--optShapes/--maxShapes``). kpx ops compute in float32
    inside; an fp16 engine keeps that only where TensorRT obeys the types in the graph: TensorRT 10 with
    ``--stronglyTyped`` on an fp16 export. Under plain ``--fp16`` (TensorRT 8.6) the builder may pick fp16
    for those layers despite the Casts, so the line says to compare the engine with the fp32 one."""
    from onnx import TensorProto

    profiles = _profiles(model, overrides or {})
    dynamic = any(lo != hi for dims in profiles.values() for lo, _, hi in dims)
    stem = path[:-5] if path.endswith(".onnx") else path
    base = f"trtexec --onnx={shlex.quote(path)}"
    if dynamic:
        for flag, k in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            shapes = ",".join(f"{name}:{'x'.join(str(d[k]) for d in dims)}" for name, dims in profiles.items())
            base += f" {flag}={shapes}"
    half_io = any(v.type.tensor_type.elem_type == TensorProto.FLOAT16 for v in model.graph.input)
    fp32, fp16 = shlex.quote(stem + ".fp32.plan"), shlex.quote(stem + ".fp16.plan")
    lines = [f"{base} --saveEngine={fp32}"] if not half_io else []
    if target == "tensorrt-10":
        if half_io:
            lines.append(f"{base} --stronglyTyped --saveEngine={fp16}")
        else:
            lines.append(f"{base} --fp16 --saveEngine={fp16}  # re-export with --dtype fp16 and use "
                         "--stronglyTyped to keep kpx's float32 internals")  # fmt: skip
    else:
        io = " --inputIOFormats=fp16:chw --outputIOFormats=fp16:chw" if half_io else ""
        lines.append(f"{base} --fp16{io} --saveEngine={fp16}  # TensorRT 8.6 may run kpx's float32 "
                     "internals in fp16: compare this engine with the fp32 one before shipping it")  # fmt: skip
    return lines
