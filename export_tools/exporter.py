"""``export``: torch.onnx (dynamo) underneath, kpx nodes with bodies on top.

Steps: trace with the kpx translation table (each kpx torch op becomes ONE
``kpx`` node) at opset 18 or the target if newer, lower the graph to the target
when it is older (:mod:`export_tools.downgrade`; torch's own fallback converter
cannot lower ``Split``, ``Pad``, ``Identity`` and keeps opset 18 when it fails),
attach the op's ``FunctionProto`` authored at the target opset, record versions
in the metadata, inline if asked, run the full ONNX checker, then write the file
atomically.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from custom_ops import __version__
from custom_ops.registry import (
    DEFAULT_OPSET,
    DOMAIN,
    DOMAIN_VERSION,
    check_opset,
    get_op,
    kpx_export,
    translation_table,
)
from export_tools.downgrade import EXPORT_OPSET, downgrade, lower_ir_version
from export_tools.errors import ExportError, OpsetConversionError, strip_ansi
from export_tools.filemeta import name_outputs, record
from export_tools.files import write_model
from export_tools.graph import (
    KPX_OP_KEY,
    NODE_ORIGINS_KEY,
    TORCH_ORIGIN_KEYS,
    compact_origins,
    default_opset,
    kpx_nodes,
    props,
    set_props,
)
from export_tools.models import eval_mode
from export_tools.traps import check_heatmap_sizes, check_materialised, unwrap_model

EMIT_MODES = ("function", "inline")
"""``function``: one ``kpx`` node per op call with its body attached; ``inline``: standard ONNX only."""
_DTYPE_NAMES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
                "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
                "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float64": torch.float64, "double": torch.float64}  # fmt: skip


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A torch floating dtype or its name (``"float16"``, ``"fp16"``) -> torch dtype."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype.lower()]
    raise ValueError(f"dtype must be a floating torch dtype or one of {sorted(_DTYPE_NAMES)}; got {dtype!r}")


def attach_functions(model, opset: int) -> None:
    """Attaches one FunctionProto per kpx op type used, authored at ``opset``."""
    used = sorted({n.op_type for n in kpx_nodes(model)})
    present = {(f.domain, f.name) for f in model.functions}
    for op_type in used:
        if (DOMAIN, op_type) not in present:
            model.functions.append(get_op(op_type).function_proto(opset))
    imports = {o.domain: o for o in model.opset_import}
    if used and DOMAIN not in imports:
        model.opset_import.add(domain=DOMAIN, version=DOMAIN_VERSION)
    ops = {op_type: get_op(op_type).version for op_type in used}
    set_props(model, {"kpx.version": __version__, "kpx.domain": f"{DOMAIN}:{DOMAIN_VERSION}",
                          "kpx.ops": json.dumps(ops, sort_keys=True)})  # fmt: skip


def inline_functions(model):
    """Standard ONNX only: kpx functions inlined, ``kpx`` domain removed, constants folded.

    The onnxscript optimizer folds what the shapes make constant (with static
    H and W the coordinate grid becomes an initializer); dynamic dims stay dynamic.
    """
    import onnx.inliner
    import onnxscript.optimizer

    inlined = onnx.inliner.inline_local_functions(model)
    tag_inlined_nodes(model, inlined)
    calls = {o: props(n) for n in inlined.graph.node if KPX_OP_KEY in props(n) for o in n.output}
    named = {n.name: props(n) for n in inlined.graph.node if n.name and KPX_OP_KEY in props(n)}
    outputs = {o for n in model.graph.node if n.domain == DOMAIN for o in n.output}
    inlined = onnxscript.optimizer.optimize(inlined)
    _retag_rewritten_nodes(inlined, calls, outputs, named)
    del inlined.functions[:]
    keep = [o for o in inlined.opset_import if o.domain != DOMAIN]
    del inlined.opset_import[:]
    inlined.opset_import.extend(keep)
    if kpx_nodes(inlined):
        raise ExportError("inlining left kpx nodes behind; this is a kpx bug, please report it")
    drop_unused_initializers(inlined)
    return inlined


def drop_unused_initializers(model) -> list[str]:
    """Removes initializers that no node reads (the optimizer folds the constants of the inlined bodies and leaves
    their initializers behind: ONNX Runtime warns ``Removing initializer 'k__1'. It is not used by any node`` at
    every load). Graph outputs and inputs are kept; returns the names removed."""
    from export_tools.graph import iter_nodes

    used = {name for node in iter_nodes(model.graph) for name in node.input}
    used |= {o.name for o in model.graph.output}
    dead = [t.name for t in model.graph.initializer if t.name not in used]
    if not dead:
        return []
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    gone = set(dead)
    inputs = [v for v in model.graph.input if v.name not in gone]  # IR < 4 lists initializers as inputs too
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    infos = [v for v in model.graph.value_info if v.name not in gone]
    del model.graph.value_info[:]
    model.graph.value_info.extend(infos)
    return dead


def tag_inlined_nodes(model, inlined) -> None:
    """Gives each node that inlining a kpx call created the call's origin metadata (module scope, class, stack
    trace) and ``kpx.op`` (JSON ``{"op_type", "node"}``), so that parity can name the op and its module.

    The inliner keeps the main graph's nodes and values and gives each body's values fresh names: the nodes of one
    call are linked by the values they share, and a group belongs to the call whose output it produces (or, for a
    group that produces none, whose input it reads; else the nearest call before it)."""
    calls = [n for n in model.graph.node if n.domain == DOMAIN]
    if not calls:
        return
    kept = {n.name for n in model.graph.node if n.domain != DOMAIN}
    known = {v.name for v in model.graph.input} | {t.name for t in model.graph.initializer}
    known |= {o for n in model.graph.node for o in n.output}
    fresh = [i for i, n in enumerate(inlined.graph.node) if n.name not in kept]
    parent = {i: i for i in fresh}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    producer = {o: i for i in fresh for o in inlined.graph.node[i].output if o and o not in known}
    for i in fresh:
        for name in inlined.graph.node[i].input:
            if name in producer:
                parent[root(i)] = root(producer[name])
    owner: dict[int, Any] = {}
    for call in calls:
        for i in fresh:
            node = inlined.graph.node[i]
            if root(i) not in owner and (set(node.output) & set(call.output)):
                owner[root(i)] = call
    for call in calls:
        for i in fresh:
            if root(i) not in owner and set(inlined.graph.node[i].input) & set(n for n in call.input if n):
                owner[root(i)] = call
    last = calls[0]
    for i in fresh:
        call = owner.get(root(i), last)
        last = call
        tags = {k: v for k, v in props(call).items() if k in TORCH_ORIGIN_KEYS or k == "namespace"}
        tags[KPX_OP_KEY] = json.dumps({"op_type": call.op_type, "node": call.name})
        set_props(inlined.graph.node[i], tags)


def _retag_rewritten_nodes(
    model, calls: Mapping[str, dict[str, str]], outputs: set[str] | None = None,
    named: Mapping[str, dict[str, str]] | None = None,
) -> None:  # fmt: skip
    """Nodes the optimizer wrote in place of inlined kpx nodes (a fused ``Softmax``, a final ``Cast``, a folded
    step, the body of a nested call it inlined) have no metadata. One that produces a value an inlined node
    produced (``calls``: ``{value: that node's tags}``; a kpx call's output first, ``outputs``) gets those tags; one
    named after a tagged node it was inlined from (``named``: ``{node name: tags}``; ``n18__1_n34__1`` from
    ``n18__1``) gets that node's; then, in graph order, one whose tagged producers all belong to one call gets its
    tags."""
    nodes = list(model.graph.node)
    named = named or {}
    for node in nodes:
        if not len(node.metadata_props):
            produced = sorted((o for o in node.output if o in calls), key=lambda o: o not in (outputs or ()))
            if produced:
                set_props(node, calls[produced[0]])
                continue
            parent = max((n for n in named if node.name.startswith(n + "_")), key=len, default=None)
            if parent is not None:
                set_props(node, named[parent])
    producer = {o: n for n in nodes for o in n.output if o}
    for node in nodes:
        if len(node.metadata_props):
            continue
        before = [props(producer[i]) for i in node.input if i in producer]
        tags = {p.get(KPX_OP_KEY) for p in before if len(p)}
        if len(tags) == 1 and None not in tags:
            set_props(node, next(p for p in before if p.get(KPX_OP_KEY)))


#: the class whose own code (not its children's) kpx adds around a network: the heatmap-to-pixel scaling, casts
POSE_DECODER_CLASS = "export_tools.decoding.PoseDecoder"
#: ops that read only the shape of their input: a node made of these and constants is shape arithmetic
_SHAPE_OPS = ("Shape", "Size")


def kpx_tag(op_type: str, node: str) -> str:
    """The ``kpx.op`` tag: JSON ``{"op_type", "node"}``, the kpx op (or ``PoseDecoder``) and the call it is part of."""
    return json.dumps({"op_type": op_type, "node": node})


def tag_kpx_nodes(model) -> int:
    """Gives every node kpx added a ``kpx.op`` tag (see :data:`KPX_OP_KEY`); returns how many nodes carry one.

    Tagged: ``kpx`` nodes (function files); the nodes inlined from their bodies (:func:`tag_inlined_nodes`);
    the nodes of :class:`~export_tools.decoding.PoseDecoder`'s own code (``op_type`` ``"PoseDecoder"``: the
    heatmap-to-pixel ``Mul``, casts); then, until nothing changes, nodes without a torch origin (written by an
    optimiser or a tool) whose producers are all tagged, and constants, shape arithmetic and copies (``Identity``)
    whose consumers are all tagged. Nodes without a name get one (quantizers and TensorRT address nodes by name)."""
    nodes = list(model.graph.node)
    name_nodes(model)
    for node in nodes:
        tags = props(node)
        if KPX_OP_KEY in tags:
            continue
        if node.domain == DOMAIN:
            set_props(node, {KPX_OP_KEY: kpx_tag(node.op_type, node.name)})
        elif _innermost_class(tags) == POSE_DECODER_CLASS:
            set_props(node, {KPX_OP_KEY: kpx_tag("PoseDecoder", node.name)})
    propagate_tags(model)
    return sum(KPX_OP_KEY in props(n) for n in model.graph.node)


def propagate_tags(model, frozen: set[str] | frozenset[str] = frozenset()) -> None:
    """The fixpoint of :func:`tag_kpx_nodes`' neighbour rules over the main graph (tags already set are kept;
    nodes named in ``frozen`` stay untagged: a tool's output whose nodes were known untagged before)."""
    nodes = list(model.graph.node)
    constants = {t.name for t in model.graph.initializer}
    producer = {o: n for n in nodes for o in n.output if o}
    consumers: dict[str, list[Any]] = {}
    for node in nodes:
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    data_free: set[int] = set()
    for node in nodes:  # topological order: a producer's status is known first
        ins = [i for i in node.input if i]
        if node.op_type in _SHAPE_OPS or all(i in constants or (i in producer and id(producer[i]) in data_free)
                                             for i in ins):  # fmt: skip
            data_free.add(id(node))
    tags = {id(n): props(n) for n in nodes}
    changed = True
    while changed:
        changed = False
        for node in nodes:
            if KPX_OP_KEY in tags[id(node)] or node.name in frozen:
                continue
            torch_origin = TORCH_ORIGIN_KEYS[0] in tags[id(node)]
            before = [producer[i] for i in node.input if i in producer]
            after = [c for o in node.output if o for c in consumers.get(o, [])]
            source = None
            if not torch_origin and before and all(KPX_OP_KEY in tags[id(p)] for p in before):
                source = before[0]
            elif (
                (id(node) in data_free or (not torch_origin and node.op_type == "Identity"))
                and after
                and not (set(node.output) & outputs)
                and all(KPX_OP_KEY in tags[id(c)] for c in after)
            ):
                source = after[0]
            if source is not None:
                inherited = {k: v for k, v in tags[id(source)].items() if k in TORCH_ORIGIN_KEYS or k == KPX_OP_KEY}
                if torch_origin:  # a node of torch's own (a constant): keep its origin, add the tag
                    inherited = {KPX_OP_KEY: tags[id(source)][KPX_OP_KEY]}
                set_props(node, inherited)
                tags[id(node)] = props(node)
                changed = True


def _innermost_class(props: Mapping[str, str]) -> str | None:
    """The innermost module class of a node's torch origin (the class hierarchy's last module, before the op)."""
    text = props.get(TORCH_ORIGIN_KEYS[1])
    if not text:
        return None
    try:
        import ast

        classes = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return classes[-2] if isinstance(classes, list) and len(classes) >= 2 else None


def name_nodes(model) -> None:
    """Names every unnamed node of the main graph (``kpx_node_N``), distinct from the names in use."""
    taken = {n.name for n in model.graph.node}
    count = 0
    for node in model.graph.node:
        if node.name:
            continue
        while f"kpx_node_{count}" in taken:
            count += 1
        node.name = f"kpx_node_{count}"
        taken.add(node.name)


def _copy_lowered_origins(raw, lowered) -> None:
    """Nodes that the opset lowering wrote in place of one node (named after it) get that node's origin metadata."""
    origins = {n.name: props(n) for n in raw.graph.node if n.name and len(n.metadata_props)}
    if not origins:
        return
    for node in lowered.graph.node:
        if len(node.metadata_props) or not node.name:
            continue
        source = max((name for name in origins if node.name.startswith(name)), key=len, default=None)
        if source is not None:
            set_props(node, origins[source])


def _cast_args(args: tuple, dtype: torch.dtype | None) -> tuple:
    if dtype is None:
        return args
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[io.StringIO]:
    """Captures the exporter's progress prints and silences its warnings (e.g. torchvision absent)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()) as log:
            warnings.simplefilter("ignore")
            yield log
    finally:
        logger.setLevel(level)


_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_export_args(
    model: Any, args: Any, dynamic_shapes: Any, input_names: Any, output_names: Any
) -> tuple[torch.nn.Module, tuple[Any, ...]]:
    """Validates what :func:`trace` is given, before any work; returns the model to export (unwrapped from
    ``DataParallel``/``DistributedDataParallel``/``torch.compile``, with a warning) and ``args`` as a tuple.

    Raises ``TypeError``/``ValueError`` naming the argument and the fix for what torch.onnx would accept
    silently and get wrong (a string of names read character by character, more names than inputs, a
    symbolic dim shared by dims of different example sizes, a symbol that is not a name, parameters on the
    meta device)."""
    if not isinstance(model, torch.nn.Module):
        hint = (
            " (a path or model name: load the model first)"
            if isinstance(model, (str, os.PathLike))
            else "; wrap a function in a module: class M(torch.nn.Module): def forward(self, x): return f(x)"
        )
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}{hint}")  # fmt: skip
    model, note = unwrap_model(model)
    if note:
        warnings.warn(note, stacklevel=3)
    check_materialised(model)
    if isinstance(args, torch.Tensor):
        args = (args,)
    elif isinstance(args, list):
        args = tuple(args)
    if not isinstance(args, tuple):
        raise TypeError(f"args must be a tuple of example inputs (or one tensor); got {type(args).__name__}")
    tensors = [t for t in _leaves(args) if isinstance(t, torch.Tensor)]
    for where, value in _leaves_with_paths(args, "args"):
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(f"{where} is {type(value).__name__} ({value!r:.40}); example inputs must be tensors (or "
                            "tuples/lists/dicts of tensors): pass torch.tensor(...) for a value the file takes as an "
                            "input, or make it an argument of the model's constructor")  # fmt: skip
    for arg, names in (("input_names", input_names), ("output_names", output_names)):
        if names is None:
            continue
        if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"{arg} must be a list of strings, e.g. ['heatmaps']; got {names!r}")
        if len(set(names)) != len(names) or not all(names):
            raise ValueError(f"{arg} must be distinct, non-empty names; got {list(names)}")
    if input_names is not None and len(input_names) != len(tensors):
        raise ValueError(f"input_names has {len(input_names)} names for {len(tensors)} input tensor(s); "
                         "give one name per tensor in args")  # fmt: skip
    if dynamic_shapes is not None:
        sizes: dict[str, tuple[int, str]] = {}
        for tensor, dims, where in _dynamic_pairs(model, args, dynamic_shapes):
            for dim, symbol in dims.items():
                if not isinstance(symbol, str):
                    continue  # torch.export.Dim objects and None are torch's to check
                if not _SYMBOL.fullmatch(symbol):
                    raise ValueError(f"dynamic_shapes{where}: {symbol!r} is not a valid dim name; use a name such "
                                     "as 'B' or 'height' (a letter or _, then letters, digits, _)")  # fmt: skip
                if not isinstance(dim, int) or not -tensor.dim() <= dim < tensor.dim():
                    raise ValueError(f"dynamic_shapes{where}: dim {dim!r} does not exist in a tensor of shape "
                                     f"{tuple(tensor.shape)}")  # fmt: skip
                size = int(tensor.shape[dim])
                first = sizes.setdefault(symbol, (size, f"{where}[{dim}]"))
                if first[0] != size:
                    raise ValueError(f"dynamic_shapes: {symbol!r} names dims of different example sizes ({first[0]} "
                                     f"at {first[1]}, {size} at {where}[{dim}]); one name is one size: rename one "
                                     "or give the example inputs equal sizes")  # fmt: skip
    return model, args


def _leaves_with_paths(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from _leaves_with_paths(v, f"{where}[{i}]")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _leaves_with_paths(v, f"{where}[{k!r}]")
    else:
        yield where, value


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, (tuple, list)):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _leaves(v)
    else:
        yield value


def _dynamic_pairs(model: torch.nn.Module, args: tuple, dynamic_shapes: Any) -> Iterator[tuple[Any, dict, str]]:
    """``(tensor, {dim: symbol}, where)`` for each tensor that ``dynamic_shapes`` gives dims for."""
    params = list(inspect.signature(model.forward).parameters.values())
    if isinstance(dynamic_shapes, Mapping) and not all(isinstance(k, int) for k in dynamic_shapes):
        bound = inspect.signature(model.forward).bind(*args).arguments  # keyed by forward parameter names
        for key, dims in dynamic_shapes.items():
            yield from _dims_of(bound.get(key), dims, f"[{key!r}]")
        return
    if not isinstance(dynamic_shapes, (tuple, list)):
        raise TypeError(f"dynamic_shapes must be a tuple with one entry per input, e.g. ({{0: 'B'}},); got "
                        f"{type(dynamic_shapes).__name__}")  # fmt: skip
    if len(dynamic_shapes) == 1 and params and params[0].kind == params[0].VAR_POSITIONAL:
        dynamic_shapes = dynamic_shapes[0]  # forward(*inputs): one entry holding all of them
    if len(dynamic_shapes) != len(args):
        raise ValueError(f"dynamic_shapes has {len(dynamic_shapes)} entries for {len(args)} inputs; give one "
                         "per input (None for a static one), e.g. ({0: 'B'},)")  # fmt: skip
    yield from _dims_of(args, dynamic_shapes, "")


def _dims_of(value: Any, dims: Any, where: str) -> Iterator[tuple[Any, dict, str]]:
    if isinstance(value, torch.Tensor) and isinstance(dims, Mapping):
        yield value, dict(dims), where
    elif isinstance(value, (tuple, list)) and isinstance(dims, (tuple, list)):
        for i, (v, d) in enumerate(zip(value, dims)):
            yield from _dims_of(v, d, f"{where}[{i}]")


def _check_emit(emit: str) -> str:
    if emit not in EMIT_MODES:
        raise ValueError(
            f"emit must be 'function' (kpx nodes with bodies) or 'inline' (standard ONNX only); got {emit!r}"
        )
    return emit


def to_onnx(
    model: torch.nn.Module,
    args: tuple,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_shapes: Any = None,
    emit: str = "function",
    dtype: torch.dtype | str | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
):
    """Exports ``model`` to an in-memory, checked ``onnx.ModelProto`` (see :func:`export`).

    The same as ``finalize(trace(...), opset=opset, emit=emit)``.
    """
    check_opset(opset)
    _check_emit(emit)
    raw = trace(model, args, opset=opset, dynamic_shapes=dynamic_shapes, dtype=dtype,
                input_names=input_names, output_names=output_names)  # fmt: skip
    return finalize(raw, opset=opset, emit=emit)


def trace(
    model: torch.nn.Module,
    args: tuple,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_shapes: Any = None,
    dtype: torch.dtype | str | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
):
    """Step 1 of :func:`to_onnx`: the torch.onnx graph, one bodiless ``kpx`` node per op call.

    Written at opset ``max(opset, 18)`` (torch.onnx writes nothing older); :func:`finalize` lowers
    it. One trace at 18 can be finalized at every opset from 15 to 18, in both emit modes.
    """
    check_opset(opset)
    dtype = resolve_dtype(dtype)
    model, args = check_export_args(model, args, dynamic_shapes, input_names, output_names)
    if dtype is not None:
        model = copy.deepcopy(model).to(dtype)  # never convert the caller's model in place
    args = _cast_args(args, dtype)
    dynamic_shapes = _varargs_dynamic_shapes(model, args, dynamic_shapes)
    try:
        with eval_mode(model), _quiet_exporter() as log, kpx_export():
            program = torch.onnx.export(
                model, args, dynamo=True, opset_version=max(opset, EXPORT_OPSET), dynamic_shapes=dynamic_shapes,
                custom_translation_table=translation_table(), input_names=input_names,
                output_names=output_names, verbose=False,
            )  # fmt: skip
    except Exception as exc:  # the exporter raises many types; one clear error for callers
        _forward_check(model, args)  # the model's own error first, when it rejects its example inputs
        raise ExportError(strip_ansi(f"torch.onnx export failed: {exc}\n{log.getvalue()[-2000:]}")) from exc
    proto = program.model_proto
    check_heatmap_sizes(proto)
    if output_names is None:
        name_outputs(proto, model, _out_spec(program))
    elif len(output_names) != len(proto.graph.output):
        raise ValueError(f"output_names has {len(output_names)} names but the model returns "
                         f"{len(proto.graph.output)} outputs; give one name per output")  # fmt: skip
    record(proto, model, args)
    return proto


def _forward_check(model: torch.nn.Module, args: tuple) -> None:
    """After a failed export, runs the model once eagerly on ``args``: a model that rejects its own example inputs (an
    integer tensor where it takes floats, a wrong shape) is a ``ValueError`` naming the inputs and the model's own
    message, instead of torch.export's pages."""
    from export_tools.errors import root_cause

    try:
        with torch.no_grad(), eval_mode(model):
            model(*args)
    except Exception as exc:
        given = ", ".join(f"args[{i}]: {_describe(a)}" for i, a in enumerate(args))
        raise ValueError(
            f"the model fails on its example inputs ({given}): {type(exc).__name__}: "
            f"{root_cause(exc, 300)}; give example inputs the model accepts (dtype and shape)"
        ) from exc


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} {tuple(value.shape)}"
    return type(value).__name__


def _out_spec(program: Any) -> Any:
    """The output structure torch.export saw (dict keys of a dict or ``ModelOutput`` output), if it has one."""
    try:
        return program.exported_program.call_spec.out_spec
    except AttributeError:
        return None


def _varargs_dynamic_shapes(model: torch.nn.Module, args: tuple, dynamic_shapes: Any) -> Any:
    """``forward(*inputs)`` takes ``dynamic_shapes`` as one nested tuple; one entry per input is wrapped into it
    (``({0: "B"},)`` for a ``PoseDecoder`` is what users write)."""
    if not isinstance(dynamic_shapes, (tuple, list)) or not dynamic_shapes:
        return dynamic_shapes
    params = list(inspect.signature(model.forward).parameters.values())
    varargs = len(params) == 1 and params[0].kind == params[0].VAR_POSITIONAL
    nested = len(dynamic_shapes) == 1 and isinstance(dynamic_shapes[0], (tuple, list))
    if varargs and not nested and len(dynamic_shapes) == len(args):
        return (tuple(dynamic_shapes),)
    return dynamic_shapes


def finalize(raw, *, opset: int, emit: str = "function"):
    """Steps 2-5 of :func:`to_onnx` on a :func:`trace` result (left unmodified): a checked model.

    Lowers the graph to ``opset`` when it is older than the trace (before any body is attached:
    the version converter breaks models that hold functions), attaches each kpx op's body authored
    at ``opset``, inlines them with ``emit="inline"``, lowers the IR version below opset 18, and
    runs the full ONNX checker.
    """
    import onnx

    check_opset(opset)
    _check_emit(emit)
    proto = onnx.ModelProto()
    proto.CopyFrom(raw)
    if opset < default_opset(proto):
        try:
            lowered = downgrade(proto, opset)
        except OpsetConversionError as exc:  # names the op and the fix
            raise ExportError(str(exc)) from exc
        _copy_lowered_origins(proto, lowered)
        proto = lowered
    if default_opset(proto) != opset:
        raise ExportError(f"the traced graph is at opset {default_opset(proto)} and cannot be written at {opset}")
    attach_functions(proto, opset)
    if emit == "inline":
        proto = inline_functions(proto)
    tag_kpx_nodes(proto)
    if opset < EXPORT_OPSET:
        origins = compact_origins(proto)
        lower_ir_version(proto)  # IR 8 (inline) or 9 (function defaults), readable by older runtimes
        if origins and proto.ir_version < 10:  # nodes hold no metadata below IR 10: parity reads it from here
            set_props(proto, {NODE_ORIGINS_KEY: json.dumps(origins, separators=(",", ":"))})
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        text = " ".join(strip_ansi(str(exc)).split())[:400]
        hint = ""
        if "bfloat16" in text:
            hint = (f"; ONNX (opset {opset}) defines no bfloat16 form of that op: export in float16 or float32 "
                    "(bfloat16 works where every op takes it, e.g. the kpx ops on their own)")  # fmt: skip
        raise ExportError(f"the exported graph fails the ONNX checker: {text}{hint}") from exc
    return proto


def export(
    model: torch.nn.Module,
    args: tuple,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_shapes: Any = None,
    emit: str = "function",
    dtype: torch.dtype | str | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    overwrite: bool = True,
):
    """Exports ``model`` called on ``args`` to an ONNX file at ``path``.

    Stock ``torch.onnx.export`` also exports kpx modules (a kpx op traces its plain reference there: standard
    ONNX, the same numbers). This exporter adds one ``kpx`` node per op call with its function body (or its
    inlining), opsets 15-21, fp16 computed in float32 inside, the full ONNX checker, an atomic write, the
    export sizes in the metadata, and the traps of :mod:`export_tools.traps` caught before anything is written.

    Args:
        model: any ``nn.Module``; calls of kpx ops become ``kpx`` nodes.
        args: example inputs (a tuple, or one tensor).
        path: output file; written atomically (a failed export writes nothing and
            leaves an existing file untouched).
        opset: default-domain opset, 15 to 21 (17 for TensorRT 8.x). Below 18, the graph is
            exported at 18 and lowered; an op with no equivalent at ``opset`` is an ``ExportError``.
        dynamic_shapes: as ``torch.onnx.export``, e.g. ``({0: "B", 2: "H", 3: "W"},)``.
        emit: ``"function"`` keeps one ``kpx`` node per op call with its function body
            attached; ``"inline"`` writes standard ONNX only (no ``kpx`` domain).
        dtype: cast the model and floating inputs first (``torch.float16`` or ``"float16"``).
        input_names, output_names: names for the graph inputs and outputs.
        overwrite: replace an existing file (default True, like ``torch.onnx.export``).

    Returns:
        The checked ``onnx.ModelProto`` that was written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True (CLI: --force) to replace it")
    proto = to_onnx(model, args, opset=opset, dynamic_shapes=dynamic_shapes, emit=emit, dtype=dtype,
                    input_names=input_names, output_names=output_names)  # fmt: skip
    write_model(proto, path, overwrite=overwrite)
    return proto
