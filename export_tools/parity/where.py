"""Where a file departs from its PyTorch model: the first module, in execution order, whose output differs.

Localisation against a float64 evaluation of the same graph (:mod:`export_tools.parity.localize`) cannot see a
difference that is in the file itself (a wrong constant, a wrong export rule, a changed weight, an fp16 overflow
that PyTorch does not have). This module compares the PyTorch model with the file, module by module:

1. The PyTorch model runs once with a forward hook on every submodule; each call's output tensors are recorded
   (cloned: an in-place successor must not change them) in the order the calls finish, which puts a child
   before its parent and both before anything that reads them.
2. Each ONNX node carries the torch exporter's ``pkg.torch.onnx.name_scopes`` (``['', 'body', 'body.0',
   'body.0.conv', 'conv2d']``: the qualified names of the modules it was traced in, then the FX node), kept by
   kpx through lowering and inlining (inlined kpx nodes also carry ``kpx.op``; below IR 10 the model metadata
   ``kpx.node_origins`` holds them). A module's ONNX values are those its nodes produce and a node outside it
   (or the graph output) reads.
3. Those values become extra graph outputs; the file runs on the runtime under test with the same feeds.
4. Module by module, in execution order, the runtime's value is compared with PyTorch's at the tolerance of
   the runtime value's dtype (:data:`~export_tools.parity.localize.LOCALIZE_TOLERANCES`, ``atol`` scaled by
   the value's largest magnitude, so that a sum with cancellation is judged relative to its terms). Only values
   proven to be the same are compared: a module called once whose returned tensors and outgoing ONNX values match
   one to one (one each, or each shape held by exactly one), or a module called several times with one tensor and
   one value per call (in call order). Anything else is **unpaired** (listed, never compared): a ``ModelOutput``
   of five same-shaped tensors of which one leaves the module cannot say which one it is. A value whose shape
   differs from PyTorch's (another layout) is not comparable either.

The answer names the first departing module (qualified name, class, the kpx op when its nodes are one, the
ONNX nodes it became, the error, the source line from the stack trace) and how the error grows downstream.
When that module's input already departs, the difference comes from before it (status ``upstream``: the nodes or
the uncompared module that made the input). When every compared module agrees but an output does not, the
difference is in the code between modules (``glue``: the nodes traced directly in a ``forward``, or the module
that made the output when it could not be compared).
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from export_tools.graph import (
    KPX_OP_KEY,
    TORCH_ORIGIN_KEYS,
    is_library_frame,
    node_origins,
    split_stack_trace,
)
from export_tools.models import eval_mode
from export_tools.parity.compare import compare_output
from export_tools.parity.localize import LOCALIZE_TOLERANCES
from export_tools.parity.pytorch import flatten_outputs

_SCOPES, _CLASSES, _FX, _TRACE = TORCH_ORIGIN_KEYS
#: rows of the downstream table after the first departing module
DOWNSTREAM_ROWS = 6


@dataclass
class ModuleRow:
    """One module call (or graph output) compared with PyTorch."""

    module: str
    cls: str
    value: str  # the ONNX value compared
    dtype: str
    max_abs: float
    max_rel: float
    passed: bool
    nan_inf_equal: bool = True
    kpx_op: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModuleDivergence:
    """Where the file departs from its PyTorch model.

    ``status``: ``"module"`` (a module's output departs and its inputs agree: the fields describe it),
    ``"glue"`` (a value departs that code between modules made: ``nodes`` are those ONNX nodes; ``module`` is the
    first departing module whose input it is, or ``None`` when every compared module agrees and a graph output
    departs), ``"upstream"`` (the first departing module's input ``value`` comes from ``producer``, a module that
    could not be compared),
    ``"outputs agree"`` (nothing departs on this runtime at these tolerances: a failed case with this status failed
    on a difference spread over the graph, typically rounding under a tighter verdict tolerance) or
    ``"unmapped"`` (the file carries no scope metadata). A graph output whose shape differs from PyTorch's departs
    (a ``"glue"`` row). ``unpaired`` lists the modules whose outputs could not be proven to be an ONNX value.
    """

    status: str
    module: str | None = None
    cls: str | None = None
    kpx_op: str | None = None
    nodes: list[str] = field(default_factory=list)
    op_types: list[str] = field(default_factory=list)
    value: str | None = None
    dtype: str | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    rtol: float | None = None
    atol: float | None = None
    nan_inf_equal: bool | None = None
    scale: float | None = None  # the largest finite |PyTorch value| of the departing value
    inputs_agree: bool | None = None  # the module's inputs agree with PyTorch (None: none could be compared)
    source: str | None = None  # "path:line"
    code: str | None = None  # that line
    downstream: list[ModuleRow] = field(default_factory=list)
    compared: int = 0
    skipped: list[str] = field(default_factory=list)  # "module: why" for modules that could not be compared
    unpaired: list[str] = field(default_factory=list)  # modules whose outputs are not proven to be an ONNX value
    producer: str | None = None  # upstream/glue: the uncompared module that made the departing value
    note: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        if self.status == "unmapped":
            return f"where: {self.note}"
        if self.status == "outputs agree":
            return (
                f"where: no module departs: all {self.compared} module outputs and the graph outputs are within "
                f"the localisation tolerances of PyTorch ({self.note}); a failed verdict with this line is a "
                f"difference spread over the graph, typically rounding under a verdict tolerance tighter than "
                f"these; if it is acceptable, judge with --rtol/--atol (tolerances=)"
            )
        nodes = ", ".join(f"{n} ({t})" for n, t in list(zip(self.nodes, self.op_types))[:6])
        more = f" and {len(self.nodes) - 6} more" if len(self.nodes) > 6 else ""
        made = f"ONNX nodes {nodes}{more}" if self.nodes else "no ONNX node found"
        if self.producer:
            made = f"module {self.producer!r}, which could not be compared ({made})"
        error = f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}"
        if self.status == "glue" and self.module is None:
            lines = [f"where: every compared module output agrees ({self.compared} compared), but {self.value!r} "
                     f"departs ({error}): the difference is in code between modules, in {made}"]  # fmt: skip
        elif self.status == "glue":
            lines = [f"where: module {self.module!r} ({self.cls}) departs, but its input {self.value!r} already "
                     f"departs ({error}): the difference is in code between modules, in {made}"]  # fmt: skip
        elif self.status == "upstream" and self.module is None:
            lines = [f"where: every compared module output agrees ({self.compared} compared), but {self.value!r} "
                     f"departs ({error}); it comes from {made}"]  # fmt: skip
        elif self.status == "upstream":
            lines = [f"where: module {self.module!r} ({self.cls}) departs, but its input {self.value!r} already "
                     f"departs ({error}); it comes from {made}"]  # fmt: skip
        else:
            what = f"kpx op {self.kpx_op} in module {self.module!r}" if self.kpx_op else f"module {self.module!r}"
            pattern = "" if self.nan_inf_equal else ", NaN/Inf at other places"
            share = f" ({self.max_abs / self.scale:.2%} of max|value| {self.scale:.3g})" if self.scale else ""
            inputs = {True: "; its inputs agree with PyTorch: the difference starts in this module",
                      None: "", False: ""}[self.inputs_agree]  # fmt: skip
            lines = [
                f"where: first departing {what} ({self.cls}), {self.compared} module output(s) compared{inputs}",
                f"  became {made}; value {self.value!r} ({self.dtype}): max abs "
                f"{self.max_abs:.3g}{share}, max rel {self.max_rel:.3g}{pattern} (tolerance rtol {self.rtol:g}, "
                f"atol {self.atol:g} x max(1, max|value|))",
            ]
        if self.unpaired:
            names = ", ".join(u.split(":")[0] for u in self.unpaired[:4])
            lines.append(f"  unpaired (not compared): {names}" + (f" and {len(self.unpaired) - 4} more"
                                                                     if len(self.unpaired) > 4 else ""))  # fmt: skip
        if self.source:
            lines.append(f"  source: {self.source}" + (f": {self.code}" if self.code else ""))
        if self.downstream:
            lines.append(f"  {'downstream':<34} {'class':<22} {'max abs':>9} {'max rel':>9}  ok")
            for row in self.downstream:
                ok = "yes" if row.passed else ("NO" if row.nan_inf_equal else "NO (nan/inf)")
                errors = f"{row.max_abs:>9.2e} {row.max_rel:>9.2e}"
                lines.append(f"  {row.module[:34]:<34} {row.cls[:22]:<22} {errors}  {ok}")
        return "\n".join(lines)


def first_departing_module(
    module: torch.nn.Module,
    model: bytes,
    torch_feeds: Sequence[np.ndarray],
    feeds: Sequence[np.ndarray],
    runtime: str = "cpu",
    *,
    open_runner: Callable[[bytes], Any] | None = None,
    tolerances: dict[str, tuple[float, float]] | None = None,
) -> ModuleDivergence:
    """Compares ``module`` (run on ``torch_feeds``) with the ONNX ``model`` (run on ``feeds`` by ``runtime``, or by
    ``open_runner(model_bytes)``) module by module; see the module docstring.

    ``tolerances`` overrides :data:`LOCALIZE_TOLERANCES` by dtype name (``atol`` is scaled by ``max(1, max|v|)``)."""
    import onnx

    from export_tools.runtimes import make_runner
    from export_tools.traps import unwrap_model

    table = {**LOCALIZE_TOLERANCES, **(tolerances or {})}
    proto = onnx.load_from_string(model)
    graph = proto.graph
    if _holds_float16(graph):  # every float value of an fp16 file carries fp16 rounding, float32 ones too
        table = {**table, "float32": table["float16"], "float64": table["float16"]}
    origins = node_origins(proto)
    scopes = {n.name: _scopes(origins.get(n.name, {})) for n in graph.node}
    if not any(scopes.values()):
        return ModuleDivergence("unmapped", note="the file carries no PyTorch scope metadata (pkg.torch.onnx."
                                "name_scopes): export it with kpx (or torch.onnx.export(dynamo=True)); graph tools "
                                "such as onnx-graphsurgeon and polygraphy drop node metadata")  # fmt: skip
    module, _ = unwrap_model(module)
    calls = _record_calls(module, torch_feeds)
    values = _module_values(graph, scopes)
    reads = _module_inputs(graph, scopes)
    graph_outputs = [o.name for o in graph.output]
    graph_inputs = {i.name for i in graph.input}
    wanted = [v for vs in (*values.values(), *reads.values()) for v in vs if v not in graph_outputs]
    wanted = [v for v in wanted if v not in graph_inputs]
    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    exposed.graph.output.extend(onnx.helper.make_empty_tensor_value_info(v) for v in dict.fromkeys(wanted))
    runner = (open_runner or (lambda m: make_runner(runtime, m)))(exposed.SerializeToString())
    try:
        actual = dict(zip([o.name for o in exposed.graph.output], runner.run(list(feeds)), strict=True))
    finally:
        if hasattr(runner, "close"):
            runner.close()
    actual.update({i.name: np.asarray(f) for i, f in zip(graph.input, feeds)})

    nodes_of = {q: [n for n in graph.node if q in scopes[n.name][:-1]] for q in values}
    rows: list[tuple[ModuleRow, str, int]] = []  # (row, qualified name, call index) in execution order
    skipped: list[str] = []
    unpaired: list[str] = []
    seen_calls: dict[str, int] = {}
    count = {q: sum(1 for c in calls if c[0] == q) for q, *_ in calls}
    inputs_of: dict[tuple[str, int], list[np.ndarray]] = {}
    for name, cls, args, outputs in calls:
        index = seen_calls[name] = seen_calls.get(name, -1) + 1
        inputs_of[(name, index)] = args
        if name not in values:
            if index == 0:
                skipped.append(f"{name}: no ONNX nodes (folded, fused into a neighbour, or removed)")
            continue
        pairs = _pair(outputs, values[name], actual, index, count[name])
        if pairs is None:
            if index == 0:
                shapes = ", ".join("x".join(map(str, o.shape)) for o in outputs[:4])
                unpaired.append(f"{name}: called {count[name]} time(s), returns {len(outputs)} tensor(s) ({shapes}); "
                                f"ONNX values {values[name][:4]} leave it: which is which is not proven")  # fmt: skip
            continue
        kpx_op = _kpx_op(nodes_of[name], origins)
        for expected, value in pairs:
            got = _fitted(actual[value], expected)
            stats = _compare(value, expected, got, table)
            same = stats.nan_pattern_equal and stats.inf_pattern_equal
            row = ModuleRow(name, cls, value, str(got.dtype), stats.max_abs, stats.max_rel, stats.passed, same, kpx_op)
            rows.append((row, name, index))
    final = _final_rows(module, torch_feeds, graph_outputs, actual, table)
    compared = len(rows)
    first = next((i for i, (row, _, _) in enumerate(rows) if not row.passed), None)
    compared_modules = {name for _, name, _ in rows}
    if first is None:
        bad = next((row for row in final if not row.passed), None)
        if bad is None:
            return ModuleDivergence("outputs agree", compared=compared, skipped=skipped, unpaired=unpaired,
                                    note=f"on {runtime}, at {_tolerance_text(table)}")  # fmt: skip
        glue, producer = _made_by(graph, scopes, bad.value, compared_modules)
        source, code = _source([origins.get(n.name, {}) for n in glue], None)
        status = "upstream" if producer else "glue"
        return ModuleDivergence(status, value=bad.value, dtype=bad.dtype, max_abs=bad.max_abs, max_rel=bad.max_rel,
                                nodes=[n.name for n in glue], op_types=[n.op_type for n in glue], source=source,
                                code=code, downstream=final, compared=compared, skipped=skipped, unpaired=unpaired,
                                producer=producer)  # fmt: skip
    row, name, index = rows[first]
    inputs_agree = None
    pairs = _pair(inputs_of[(name, index)], reads.get(name, []), actual, index, count[name]) or []
    for expected, value in pairs:  # an input that already departs: the difference is upstream
        stats = _compare(value, expected, _fitted(actual[value], expected), table)
        inputs_agree = bool(stats.passed and inputs_agree is not False)
        if not stats.passed:
            glue, producer = _made_by(graph, scopes, value, compared_modules)
            source, code = _source([origins.get(n.name, {}) for n in glue], None)
            later = [r for r, q, _ in rows[first:]]
            status = "upstream" if producer else "glue"
            return ModuleDivergence(status, module=name, cls=row.cls, value=value, dtype=str(actual[value].dtype),
                                    max_abs=stats.max_abs, max_rel=stats.max_rel, nodes=[n.name for n in glue],
                                    op_types=[n.op_type for n in glue], source=source, code=code,
                                    downstream=[*later[:DOWNSTREAM_ROWS], *final], compared=compared,
                                    skipped=skipped, unpaired=unpaired, producer=producer)  # fmt: skip
    nodes = nodes_of[name]
    rtol, atol = table.get(row.dtype, (0.0, 0.0))
    owner = dict(module.named_modules()).get(name)
    source, code = _source([origins.get(n.name, {}) for n in nodes], owner)
    later = [r for r, q, _ in rows[first + 1 :] if q != name]
    expected = next(e for e, v in (_pair(calls_out(calls, name, index), values[name], actual, index, count[name])
                                   or []) if v == row.value)  # fmt: skip
    finite = np.abs(expected[np.isfinite(expected)]) if expected.dtype.kind == "f" else np.abs(expected)
    return ModuleDivergence(
        "module", module=name, cls=row.cls, kpx_op=row.kpx_op, nodes=[n.name for n in nodes],
        op_types=[n.op_type for n in nodes], value=row.value, dtype=row.dtype, max_abs=row.max_abs,
        max_rel=row.max_rel, rtol=rtol, atol=atol, nan_inf_equal=row.nan_inf_equal, source=source, code=code,
        scale=float(finite.max()) if finite.size else None, inputs_agree=inputs_agree,
        downstream=[*later[:DOWNSTREAM_ROWS], *final], compared=compared, skipped=skipped, unpaired=unpaired,
    )  # fmt: skip


# --- PyTorch side ---------------------------------------------------------------------------------------------


def calls_out(calls: list, name: str, index: int) -> list[np.ndarray]:
    """The output arrays of call ``index`` of module ``name``."""
    return [c for c in calls if c[0] == name][index][3]


def _record_calls(module: torch.nn.Module, feeds: Sequence[np.ndarray]) -> list[tuple[str, str, list, list]]:
    """``[(qualified name, class, input arrays, output arrays)]`` for every submodule call, in the order the calls
    finish (inputs as the call saw them: copied before the call, so that an in-place module cannot change them)."""
    calls: list[tuple[str, str, list, list]] = []
    pending: dict[int, list[list[np.ndarray]]] = {}

    def before(mod: torch.nn.Module, args: Any) -> None:
        pending.setdefault(id(mod), []).append([t.detach().clone().cpu().numpy() for t in _tensors(args)])

    def hook(name: str):
        def record(mod: torch.nn.Module, args: Any, output: Any) -> None:
            tensors = [t.detach().clone().cpu().numpy() for t in _tensors(output)]
            calls.append((name, type(mod).__name__, pending[id(mod)].pop(), tensors))

        return record

    named = [(n, m) for n, m in module.named_modules() if n]
    handles = [m.register_forward_pre_hook(before) for _, m in named]
    handles += [m.register_forward_hook(hook(n)) for n, m in named]
    try:
        with torch.no_grad(), eval_mode(module):
            module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in feeds])
    finally:
        for h in handles:
            h.remove()
    return calls


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _final_rows(module, feeds, names: list[str], actual: dict, table) -> list[ModuleRow]:
    with torch.no_grad(), eval_mode(module):
        outputs = flatten_outputs(module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in feeds]))
    rows = []
    for name, expected in zip(names, outputs):
        got, exp = actual[name], expected.detach().cpu().numpy()
        if got.shape != exp.shape:  # the verdict fails it too: a departure, not rounding
            rows.append(ModuleRow(f"output {name}", "(graph output, shape)", name, str(got.dtype), math.inf, math.inf,
                                  False))  # fmt: skip
            continue
        stats = _compare(name, exp, got, table)
        same = stats.nan_pattern_equal and stats.inf_pattern_equal
        rows.append(ModuleRow(f"output {name}", "(graph output)", name, str(got.dtype), stats.max_abs,
                              stats.max_rel, stats.passed, same))  # fmt: skip
    return rows


# --- ONNX side --------------------------------------------------------------------------------------------


def _scopes(props: dict[str, str]) -> list[str]:
    """``['body', 'body.0', 'body.0.conv', '<fx node>']`` from ``pkg.torch.onnx.name_scopes`` (root dropped)."""
    text = props.get(_SCOPES)
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value[1:]] if isinstance(value, (list, tuple)) else []


def _module_values(graph, scopes: dict[str, list[str]]) -> dict[str, list[str]]:
    """``{qualified module name: [ONNX values its nodes produce and a node outside it, or the graph, reads]}``."""
    readers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    outputs = {o.name for o in graph.output}
    values: dict[str, list[str]] = {}
    for n in graph.node:
        for q in scopes[n.name][:-1]:
            for v in n.output:
                if v and (v in outputs or any(q not in scopes[r.name][:-1] for r in readers.get(v, []))):
                    values.setdefault(q, []).append(v)
    return values


def _module_inputs(graph, scopes: dict[str, list[str]]) -> dict[str, list[str]]:
    """``{qualified module name: [values its nodes read that a node outside it, or the graph input, produces]}``."""
    producer = {o: n for n in graph.node for o in n.output if o}
    graph_inputs = {i.name for i in graph.input}
    reads: dict[str, list[str]] = {}
    for n in graph.node:
        for q in scopes[n.name][:-1]:
            for v in n.input:
                outside = v in graph_inputs or (v in producer and q not in scopes[producer[v].name][:-1])
                if v and outside and v not in reads.get(q, []):
                    reads.setdefault(q, []).append(v)
    return reads


def _pair(outputs: list[np.ndarray], values: list[str], actual: dict, index: int, calls: int):
    """``[(PyTorch array, ONNX value)]`` for call ``index`` of ``calls``, only where the pairing is proven (see the
    module doc), else ``None`` (unpaired)."""
    if calls == 1:
        if len(outputs) != len(values) or not outputs:
            return None
        if len(outputs) == 1:
            return [(outputs[0], values[0])] if _fits(actual[values[0]], outputs[0]) else None
        pairs = []
        for expected in outputs:  # several: each tensor's shape held by exactly one value
            same = [v for v in values if actual[v].shape == expected.shape]
            if len(same) != 1:
                return None
            pairs.append((expected, same[0]))
        return pairs if len({v for _, v in pairs}) == len(pairs) else None
    if len(outputs) == 1 and len(values) == calls:  # a module reused: one tensor, one value per call, call order
        value = values[index]
        return [(outputs[0], value)] if _fits(actual[value], outputs[0]) else None
    return None


def _fits(got: np.ndarray, expected: np.ndarray) -> bool:
    """The same shape, or the same values laid out with other size-1 dims."""
    return got.shape == expected.shape or (got.size == expected.size and _squeezed(got) == _squeezed(expected))


def _fitted(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return got if got.shape == expected.shape else got.reshape(expected.shape)


def _squeezed(a: np.ndarray) -> tuple[int, ...]:
    return tuple(d for d in a.shape if d != 1)


def _compare(name: str, expected: np.ndarray, got: np.ndarray, table):
    rtol, atol = table.get(str(got.dtype), (0.0, 0.0))
    finite = np.abs(expected[np.isfinite(expected)]) if expected.dtype.kind == "f" else np.abs(expected)
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    return compare_output(name, expected, got, rtol, atol * scale)


def _kpx_op(nodes: list[Any], origins: dict[str, dict[str, str]]) -> str | None:
    from custom_ops.registry import DOMAIN

    ops = {n.op_type for n in nodes if n.domain == DOMAIN}
    for n in nodes:
        tag = origins.get(n.name, {}).get(KPX_OP_KEY)
        if tag:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                ops.add(json.loads(tag)["op_type"])
    return ", ".join(sorted(ops)) or None


def _made_by(graph, scopes, value: str, compared: set[str]) -> tuple[list[Any], str | None]:
    """The nodes that ``value`` depends on back to the last compared modules and that belong to none of them (code
    between modules), and, when the value's own producer sits in a module that was not compared, that module."""
    producer = {o: n for n in graph.node for o in n.output if o}
    out, todo, seen = [], [value], set()
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if not (set(scopes[node.name][:-1]) & compared):
            out.append(node)
            todo.extend(node.input)
    order = {n.name: i for i, n in enumerate(graph.node)}
    owner = producer.get(value)
    modules = scopes[owner.name][:-1] if owner is not None else []
    uncompared = next((q for q in reversed(modules) if q not in compared), None)
    return sorted(out, key=lambda n: order[n.name]), uncompared


def _holds_float16(graph) -> bool:
    from onnx import TensorProto

    return any(v.type.tensor_type.elem_type == TensorProto.FLOAT16 for v in graph.input) or any(
        t.data_type == TensorProto.FLOAT16 for t in graph.initializer
    )


def _source(props: list[dict[str, str]], owner: torch.nn.Module | None) -> tuple[str | None, str | None]:
    """``("path:line", code)``: the innermost frame outside torch and kpx in the nodes' stack traces (the line that
    called the module, or the module's own line for user code), else where the module's ``forward`` is defined."""
    for p in props:
        frames = [f for f in split_stack_trace(p.get(_TRACE, "")) if not is_library_frame(f[0])]
        if frames:
            path, line, _, code = frames[-1]
            return f"{path}:{line}", code or None
    if owner is not None:
        try:
            forward = type(owner).forward
            lines, start = inspect.getsourcelines(forward)
            return f"{inspect.getsourcefile(forward)}:{start}", lines[0].strip()
        except (OSError, TypeError):
            pass
    return None, None


def _tolerance_text(table: dict[str, tuple[float, float]]) -> str:
    return ", ".join(f"{k} rtol {v[0]:g} atol {v[1]:g}" for k, v in table.items() if k in ("float32", "float16"))
