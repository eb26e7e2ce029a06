"""The op registry: one :class:`OpSpec` per op drives everything else.

Each op file builds its :class:`OpSpec` and calls :func:`register`, which stores it and defines the op's
torch custom op ``kpx::<name>`` from it (the ONNX inputs then attributes are its signature; the reference
computes it, the record's fake shapes it). The export translation table, the attached ONNX functions, the
generic tests, the CLI listing and the docs all read these records. Adding an op means one file under
``custom_ops/ops/`` that calls :func:`register`, one import line in ``custom_ops/ops/__init__.py``
and its test file.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

DOMAIN = "kpx"
"""ONNX domain of every kpx node and function."""

DOMAIN_VERSION = 1
"""Version of the ``kpx`` domain that this release writes."""

MIN_OPSET = 15
MAX_OPSET = 21
DEFAULT_OPSET = 18
"""Default-domain opsets that function bodies are authored for, and the default of every export.

15 is the floor: a body is generic over its input type ``T`` (float, float16, bfloat16, double)
and must return ``T`` after computing in float32, which needs ``CastLike`` (opset 15); ``Cast``
needs the type spelled out. 17 is the highest that TensorRT 8.x reads. 18 is what torch.onnx writes
(kpx traces there and lowers to older opsets), so it is the default.
"""

#: tolerance table type: ``{dtype: (rtol, atol)}``
Tolerances = dict[torch.dtype, tuple[float, float]]


@dataclass(frozen=True)
class OnnxInput:
    """One input or output of the ONNX node.

    ``type_str`` is an ONNX type string (``"tensor(float)"``) or the type
    parameter ``"T"`` (any of float, float16, bfloat16, double).
    """

    name: str
    doc: str
    type_str: str = "T"


@dataclass(frozen=True)
class OnnxAttribute:
    """One attribute of the ONNX node; same name as the torch op argument."""

    name: str
    kind: str  # "int", "bool" (an int attribute 0/1; a bool in the torch op), "float" or "ints"
    default: Any
    doc: str

    def encode(self, value: Any) -> Any:
        """Converts the torch op argument to the ONNX attribute value."""
        if self.kind in ("int", "bool"):
            return int(value)
        if self.kind == "float":
            return float(value)
        return [int(v) for v in value]


@dataclass(frozen=True)
class Sample:
    """A named set of arguments for the functional (and its export)."""

    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    #: dims made dynamic in the export, per tensor argument (``None``: static)
    dynamic: tuple | None = None
    #: ``(shapes) -> args``: tensor arguments of these shapes, for the generic tests' runs at other sizes of a
    #: dynamic sample (``None``: random values like the sample's; decoders that need peaks say how to make them)
    make_inputs: Callable[[list[tuple[int, ...]]], tuple] | None = None


@dataclass(frozen=True)
class OpSpec:
    """Everything kpx knows about one op.

    Attributes:
        name: snake_case name of the functional, torch op (``kpx::name``), file and CLI.
        onnx_op_type: CamelCase name of the ``nn.Module`` and of the ONNX node.
        description: one line for listings.
        functional: the public function (validates, then reference or torch op).
        module: the ``nn.Module`` twin.
        reference: plain, differentiable torch code that *is* the behaviour; it takes
            the torch op's arguments.
        fake: the torch op's fake (meta) kernel: the outputs' shapes and dtypes from the same arguments.
        inputs, outputs, attributes: the ONNX node signature, and the torch op's: :func:`register` defines
            ``torch.ops.kpx.<name>`` (:attr:`torch_op`) taking the inputs (tensors) then the attributes
            (``int``, ``bool``, ``float``, ``int[]`` by kind), in this order and with these names, computed by
            ``reference`` (or ``torch_impl``) and shaped by ``fake``.
        build_function: ``(kpx_opset, default_opset) -> OnnxFunction`` (onnxscript,
            script mode); called lazily, once per target opset.
        samples: ``() -> list[Sample]``: representative calls for generic tests.
        adversarial: ``() -> {name: inputs}``: the bad inputs of docs/spec.md, for the parity harness.
        tolerances: ``{dtype: (rtol, atol)}`` for runtime-vs-PyTorch comparisons.
        conventions: where coordinates come in or out, which convention and why.
    """

    name: str
    onnx_op_type: str
    description: str
    functional: Callable[..., Any]
    module: type[torch.nn.Module]
    reference: Callable[..., Any]
    fake: Callable[..., Any]
    inputs: tuple[OnnxInput, ...]
    outputs: tuple[OnnxInput, ...]
    attributes: tuple[OnnxAttribute, ...]
    build_function: Callable[[Any, Any], Any]
    samples: Callable[[], list[Sample]]
    tolerances: Tolerances
    conventions: str = ""
    #: ONNX types the type parameter ``T`` admits besides the float ones (``topdown_crop``: uint8 frames)
    extra_types: tuple[str, ...] = ()
    version: int = DOMAIN_VERSION
    #: ``() -> {name: inputs}``: adversarial input sets (docs/spec.md's bad inputs) for the model built from
    #: :meth:`export_sample`, each a tuple of that model's input tensors (other shapes, same ranks)
    adversarial: Callable[[], dict[str, tuple]] | None = None
    #: what the torch op runs when it is not the reference itself (``topdown_crop``: contiguous crops)
    torch_impl: Callable[..., Any] | None = None

    @property
    def torch_op(self) -> Any:
        """The ``torch.ops.kpx.<name>`` overload packet that :func:`register` defined."""
        return getattr(getattr(torch.ops, DOMAIN), self.name)

    def export_sample(self) -> Sample:
        """The first sample with dynamic dims: the export that adversarial inputs run through."""
        return next(s for s in self.samples() if s.dynamic is not None)

    def function_proto(self, opset: int = MIN_OPSET):
        """The ONNX ``FunctionProto`` of this op, authored at ``opset``."""
        return _function_proto(self.name, opset)

    def onnx_schema(self):
        """An ``onnx.defs.OpSchema`` describing the node (not registered globally)."""
        return _onnx_schema(self.name)

    def translation(self) -> Callable[..., Any]:
        """The torch.onnx translation: one ``kpx`` node for one torch op call."""
        return _translation(self.name)


_REGISTRY: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    """Adds ``spec`` to the registry (names must be unique) and defines its torch op ``kpx::<name>``."""
    for other in _REGISTRY.values():
        if spec.name == other.name or spec.onnx_op_type == other.onnx_op_type:
            raise ValueError(f"op {spec.name!r} / {spec.onnx_op_type!r} is already registered")
    op = torch.library.custom_op(
        f"{DOMAIN}::{spec.name}", spec.torch_impl or spec.reference, mutates_args=(), schema=_torch_schema(spec)
    )
    op.register_fake(spec.fake)
    _REGISTRY[spec.name] = spec
    return spec


_TORCH_TYPES = {"int": "SymInt", "bool": "bool", "float": "float", "ints": "SymInt[]"}


def _torch_schema(spec: OpSpec) -> str:
    """``(Tensor <input>, ..., <type> <attribute>, ...) -> Tensor`` or ``-> (Tensor, ...)``."""
    args = [f"Tensor {p.name}" for p in spec.inputs] + [f"{_TORCH_TYPES[a.kind]} {a.name}" for a in spec.attributes]
    outputs = ", ".join(["Tensor"] * len(spec.outputs))
    return f"({', '.join(args)}) -> {outputs if len(spec.outputs) == 1 else f'({outputs})'}"


def list_ops(pattern: str | None = None) -> list[OpSpec]:
    """Registered ops sorted by name, optionally filtered by a substring."""
    specs = sorted(_REGISTRY.values(), key=lambda s: s.name)
    if pattern:
        specs = [s for s in specs if pattern.lower() in s.name or pattern in s.onnx_op_type]
    return specs


def get_op(name: str) -> OpSpec:
    """Looks an op up by its snake_case name or its ONNX op type."""
    for spec in _REGISTRY.values():
        if name in (spec.name, spec.onnx_op_type):
            return spec
    known = ", ".join(s.name for s in list_ops())
    raise KeyError(f"no kpx op named {name!r}; registered ops: {known}")


def check_opset(opset: int) -> int:
    """Validates a target default-domain opset."""
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise ValueError(f"opset must be an int in [{MIN_OPSET}, {MAX_OPSET}]; got {opset!r}")
    if opset < MIN_OPSET:
        raise ValueError(
            f"opset must be >= {MIN_OPSET}, the lowest that kpx function bodies can be written in "
            f"(they return their input's dtype with CastLike, new in opset 15); got {opset}. "
            f"Pass opset={MIN_OPSET} for the widest runtime support (opset=17 for TensorRT 8.x)."
        )
    if opset > MAX_OPSET:
        raise ValueError(
            f"opset must be <= {MAX_OPSET}, the newest that kpx function bodies are tested at; got {opset}. "
            f"Pass opset={MAX_OPSET} or lower."
        )
    return opset


@functools.cache
def _function_proto(name: str, opset: int):
    from onnxscript.values import Opset

    check_opset(opset)
    spec = get_op(name)
    fn = spec.build_function(Opset(DOMAIN, spec.version), Opset("", opset))
    proto = fn.to_function_proto()
    if proto.name != spec.onnx_op_type or proto.domain != DOMAIN:
        raise RuntimeError(f"{name}: function is {proto.domain}.{proto.name}, expected {spec.onnx_op_type}")
    _typed_constants(proto.node)
    return proto


def _typed_constants(nodes) -> None:
    """Writes ``Constant(value_float(s)=...)`` as explicit float32 tensors, in place (If branches included).

    Graph tools re-create such constants in a type of their choosing: onnxslim 0.1.98 and polygraphy's
    constant folding made them float64 inside function bodies, and the file then failed shape inference
    (``Equal`` of float and double). A tensor attribute carries its type with it (measured: every kpx
    function file then passes onnxslim, docs/design.md)."""
    from onnx import AttributeProto, TensorProto, helper

    for node in nodes:
        for attr in list(node.attribute):
            if attr.type == AttributeProto.GRAPH:
                _typed_constants(attr.g.node)
            if node.op_type != "Constant" or attr.ref_attr_name or attr.name not in ("value_float", "value_floats"):
                continue
            scalar = attr.name == "value_float"
            values = [attr.f] if scalar else list(attr.floats)
            tensor = helper.make_tensor("", TensorProto.FLOAT, [] if scalar else [len(values)], values)
            node.attribute.remove(attr)
            node.attribute.append(helper.make_attribute("value", tensor))


_TYPE_PARAM = ("tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)")


@functools.cache
def _onnx_schema(name: str):
    from onnx.defs import OpSchema

    spec = get_op(name)
    kinds = {
        "int": OpSchema.AttrType.INT,
        "bool": OpSchema.AttrType.INT,
        "float": OpSchema.AttrType.FLOAT,
        "ints": OpSchema.AttrType.INTS,
    }

    def param(p: OnnxInput) -> OpSchema.FormalParameter:
        return OpSchema.FormalParameter(p.name, p.type_str, p.doc)

    return OpSchema(
        spec.onnx_op_type,
        DOMAIN,
        spec.version,
        spec.description,
        inputs=[param(p) for p in spec.inputs],
        outputs=[param(p) for p in spec.outputs],
        type_constraints=[
            ("T", [*_TYPE_PARAM, *spec.extra_types], "float tensors" + " or uint8" * bool(spec.extra_types))
        ],
        attributes=[
            OpSchema.Attribute(a.name, kinds[a.kind], a.doc, required=a.default is None) for a in spec.attributes
        ],
    )


@functools.cache
def _translation(name: str) -> Callable[..., Any]:
    """One generic translation per op: inputs first, then attributes, by position."""
    import onnxscript.values

    spec = get_op(name)
    node = onnxscript.values.Op(onnxscript.values.Opset(DOMAIN, spec.version), spec.onnx_op_type, spec.onnx_schema())
    names = [p.name for p in spec.inputs] + [a.name for a in spec.attributes]

    def translate(*args: Any, **kwargs: Any) -> Any:
        bound = dict(zip(names, args)) | kwargs
        attrs = {a.name: a.encode(bound[a.name]) for a in spec.attributes if a.name in bound}
        return node(*(bound[p.name] for p in spec.inputs), **attrs)

    translate.__name__ = f"kpx_{name}_translation"
    return translate


def translation_table() -> dict[Any, Callable[..., Any]]:
    """``custom_translation_table`` for ``torch.onnx.export``: every kpx op."""
    return {spec.torch_op.default: spec.translation() for spec in list_ops()}


# --- kpx's own export: the context in which a functional calls its torch op ----------------------------------------
_KPX_EXPORT = contextvars.ContextVar("kpx_export", default=False)


@contextlib.contextmanager
def kpx_export() -> Iterator[None]:
    """Marks a trace as kpx's own export (``export_tools.exporter.trace``): kpx ops then become one ``kpx`` node
    each (their torch op ``kpx::<name>``, which :func:`translation_table` turns into the node). Any other trace
    (stock ``torch.onnx.export``, ``torch.export``, ``torch.jit.trace``, ``torch.compile``) sees the plain
    reference: standard ops, the same numbers."""
    token = _KPX_EXPORT.set(True)
    try:
        yield
    finally:
        _KPX_EXPORT.reset(token)


def is_exporting() -> bool:
    """True while kpx's exporter traces the model (torch.export inside :func:`kpx_export`)."""
    return bool(torch.compiler.is_exporting()) and _KPX_EXPORT.get()
