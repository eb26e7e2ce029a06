"""Static INT8 that keeps keypoints where float32 put them (``kpx quantize``; docs/quantization.md).

ONNX Runtime's static quantizer (``quantize_static``: QDQ format, per-channel int8 weights, int8 activations from
a calibration set) quantizes the network and keeps float everything kpx added: every node with a ``kpx.op`` tag
(the decoding, the crop, the mapping to pixels, their constants and shape arithmetic; :func:`export_tools.exporter.
tag_kpx_nodes`) and the network's last layer before them (its *head*: the nodes that make each float value the kpx
nodes read, back to the first convolution or matrix product), so that heatmaps and SimCC vectors reach the decoder
in float and keypoints never sit on an int8 grid. Why: a heatmap quantized to int8 moves DARK's sub-pixel
refinement, and a quantized heatmap-to-pixel ``Mul`` alone puts every coordinate on a grid of ~0.75 px (measured,
docs/quantization.md).

The same node list serves other quantizers (:class:`Exclusion`: ONNX Runtime's ``nodes_to_exclude``, an NNCF
``IgnoredScope``, TensorRT's per-layer precisions; ``kpx inspect --quantization``).

Calibration comes from a ``.npz`` whose arrays are named after the model's inputs (samples along the first axis),
from a folder of images (cropped and normalised by the file itself when it crops; else resized to the network's
input and normalised as told), or, as a smoke test only, from kpx's generated inputs
(:class:`SyntheticCalibrationWarning`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export_tools.errors import ExportError, UsageError

#: model metadata kpx writes into a quantized file: the tool, format, types and calibration (JSON)
QUANTIZATION_KEY = "kpx.quantization"
ACTIVATION_TYPES = ("int8", "uint8")
METHODS = ("minmax", "percentile", "entropy")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: ops that keep their input's values on the path back from a kpx input to the network's last layer (activations,
#: copies, reshapes; ``Add``/``Sub``/``Mul``/``Div`` with a constant: a bias or a scale)
_THROUGH = ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "Clip", "Identity", "Reshape", "Flatten", "Transpose",
            "Squeeze", "Unsqueeze", "Cast", "BatchNormalization")  # fmt: skip
_AFFINE = ("Add", "Sub", "Mul", "Div")
_QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")


class SyntheticCalibrationWarning(UserWarning):
    """Calibration on generated inputs: the ranges describe noise, not images. A smoke test, never a deployment."""


SYNTHETIC_MESSAGE = ("calibrating on kpx's GENERATED inputs, not on your data: the int8 ranges then describe "
                     "synthetic values, and the file is a SMOKE TEST of the quantization, not a model to deploy; "
                     "give --calibration DATA (a .npz named after the model's inputs, or a folder of "
                     "images)")  # fmt: skip


@dataclass
class Exclusion:
    """The nodes a quantizer must keep in float: ``nodes`` in graph order, of which ``tagged`` carry a kpx tag and
    ``heads`` are the network's last layer before them; ``decoder_inputs``: the float values the kpx nodes read."""

    nodes: list[str]
    tagged: int
    heads: list[str] = field(default_factory=list)
    decoder_inputs: list[str] = field(default_factory=list)
    #: graph outputs made by kept nodes: OpenVINO names an output's producer after the output (``keypoints``), so
    #: NNCF on an OpenVINO model finds that node under this name, not its ONNX one
    outputs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "nncf_ignored_scope": {"names": self.nncf_names(), "validate": False},
                "trtexec": self.trtexec_flags()}  # fmt: skip

    def nncf_names(self) -> list[str]:
        """For ``nncf.IgnoredScope(names=..., validate=False)``: the nodes and the outputs they make (OpenVINO's
        names for those nodes; it also folds a few nodes away, hence ``validate=False``)."""
        return [*self.nodes, *(o for o in self.outputs if o not in self.nodes)]

    def trtexec_flags(self) -> str:
        """TensorRT's per-layer precision flags (``trtexec``; its ONNX parser names layers after the nodes)."""
        layers = ",".join(f"{n}:fp32" for n in self.nodes)
        return f"--int8 --precisionConstraints=obey --layerPrecisions={layers} --layerOutputTypes={layers}"

    def text(self, path: str = "MODEL.onnx") -> str:
        """The three forms, ready to paste (ONNX Runtime, NNCF, trtexec)."""
        names = json.dumps(self.nodes)
        return "\n".join([
            f"{len(self.nodes)} node(s) to keep in float: {self.tagged} added by kpx (kpx.op tags) and "
            f"{len(self.heads)} of the network's last layer before them ({', '.join(self.heads) or 'none'}), so that "
            f"the values kpx's nodes read from the network ({', '.join(self.decoder_inputs) or 'none'}) stay float",
            "",
            "# ONNX Runtime (onnxruntime.quantization.quantize_static)",
            f"nodes_to_exclude = {names}",
            "",
            "# NNCF (nncf.quantize(..., ignored_scope=...)): ONNX or OpenVINO models; OpenVINO renames or folds a few",
            f"ignored_scope = nncf.IgnoredScope(names={json.dumps(self.nncf_names())}, validate=False)",
            "",
            "# TensorRT (trtexec; implicit INT8 calibration)",
            f"trtexec --onnx={path} {self.trtexec_flags()}",
        ])  # fmt: skip


def exclusion(model: Any) -> Exclusion:
    """The nodes of ``model`` to keep in float (see the module doc). A file without any kpx tag is a
    :class:`UsageError` naming the fix."""
    from export_tools.graph import KPX_OP_KEY, iter_graphs, node_origins

    origins = node_origins(model)
    nodes = list(model.graph.node)
    tagged = {n.name for n in nodes if KPX_OP_KEY in origins.get(n.name, {}) and n.name}
    if not tagged:
        raise UsageError("no node of this file carries a kpx tag (kpx.op), so kpx cannot tell the network from what "
                         "kpx added: export it with kpx export (which tags every node it adds), or, for a file a "
                         "tool rewrote (onnxsim, onnxslim, graphsurgeon, quant_pre_process), put the tags back from "
                         "the file kpx wrote: kpx repair FILE -o FIXED.onnx --tags-from ORIGINAL.onnx")  # fmt: skip
    unnamed = [n.op_type for n in nodes if not n.name]
    if unnamed:
        raise UsageError(f"{len(unnamed)} node(s) have no name ({', '.join(sorted(set(unnamed)))}); quantizers "
                         "exclude nodes by name: run kpx repair FILE -o FIXED.onnx first")  # fmt: skip
    producer = {o: n for n in nodes for o in n.output if o}
    constants = {t.name for g in iter_graphs(model.graph) for t in g.initializer}
    constants |= {o for n in nodes if n.op_type == "Constant" for o in n.output}
    floats = _float_values(model)
    entering = [v for n in nodes if n.name in tagged for v in n.input
                if v in producer and producer[v].name not in tagged and v not in constants and v in floats]  # fmt: skip
    entering = list(dict.fromkeys(entering))
    heads: list[str] = []
    for value in entering:
        for node in _head(value, producer, constants):
            if node.name not in heads and node.name not in tagged:
                heads.append(node.name)
    keep = tagged | set(heads)
    outputs = [v.name for v in model.graph.output if v.name in producer and producer[v.name].name in keep]
    return Exclusion([n.name for n in nodes if n.name in keep], len(tagged), heads, entering, outputs)


def _head(value: str, producer: Mapping[str, Any], constants: set[str], limit: int = 8) -> list[Any]:
    """The nodes that make ``value``, back through :data:`_THROUGH` ops and constant-operand arithmetic, up to and
    including the first other node (a ``Conv``, ``MatMul``, ``Gemm``)."""
    out = []
    while value in producer and len(out) < limit:
        node = producer[value]
        out.append(node)
        data = [i for i in node.input if i and i not in constants]
        through = (node.op_type in _THROUGH and data) or (node.op_type in _AFFINE and len(data) == 1)
        if not through:
            break
        value = data[0]
    return out


def _float_values(model: Any) -> set[str]:
    """Values of the main graph with a float type (by shape inference; every value when inference fails)."""
    import onnx
    from onnx import TensorProto

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph shape inference cannot read: no filtering
        return {o for n in model.graph.node for o in n.output}
    graph = inferred.graph
    kinds = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    typed = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    return {o for n in model.graph.node for o in n.output if typed.get(o, TensorProto.FLOAT) in kinds}


def check_quantizable(model: Any) -> Exclusion:
    """Refuses (:class:`UsageError`, with the fix) what ``kpx quantize`` cannot do: a float16/bfloat16 file, a file
    already quantized, a file without kpx tags; returns the :func:`exclusion` of a file it can quantize."""
    from onnx import TensorProto

    graph = model.graph
    half = [v.name for v in (*graph.input, *graph.output)
            if v.type.tensor_type.elem_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16)]  # fmt: skip
    half += [t.name for t in graph.initializer if t.data_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16)]
    if half:
        raise UsageError(f"this is a float16 file ({', '.join(half[:3])} ...): INT8 calibration reads float32 "
                         "activations; quantize the float32 export (kpx export ... without --dtype fp16)")  # fmt: skip
    quantized = sorted({n.op_type for n in graph.node if n.op_type in _QUANT_OPS or n.op_type.startswith("QLinear")})
    if quantized:
        raise UsageError(f"this file is already quantized ({', '.join(quantized)} nodes); quantize the float32 "
                         "export it came from")  # fmt: skip
    return exclusion(model)


# --- calibration data ---------------------------------------------------------------------------------------


def calibration_from_npz(path: str | os.PathLike, model: Any, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Samples from a ``.npz`` whose arrays are named after the model's inputs, samples along the first axis (a
    static first dim ``b`` > 1 takes ``b`` rows per sample)."""
    from export_tools.parity.inputs import input_specs

    path = Path(path)
    specs = input_specs(model.SerializeToString())
    save = f"np.savez(path, {', '.join(f'{n}=...' for n, _, _ in specs)})"
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = {key: data[key] for key in data.files}
    except Exception as exc:
        raise UsageError(f"--calibration {str(path)!r} is not a readable .npz ({type(exc).__name__}); save the "
                         f"samples with {save}, samples along the first axis") from None  # fmt: skip
    counts = {}
    for name, dtype, dims in specs:
        if name not in stored:
            raise UsageError(f"--calibration {str(path)!r} has no array {name!r} (it has {sorted(stored)}); save the "
                             f"samples with {save}")  # fmt: skip
        array = stored[name]
        fixed = [(i, d) for i, d in enumerate(dims) if isinstance(d, int) and i > 0]
        if array.ndim != len(dims) or any(array.shape[i] != d for i, d in fixed):
            raise UsageError(f"--calibration: array {name!r} has shape {list(array.shape)}; the model's input is "
                             f"{dims} (samples along the first axis)")  # fmt: skip
        if array.dtype.kind != np.dtype(dtype).kind:
            raise UsageError(f"--calibration: array {name!r} is {array.dtype}; the model expects {np.dtype(dtype)}")
        step = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else 1
        if len(array) % step:
            raise UsageError(f"--calibration: array {name!r} holds {len(array)} rows; the model takes {step} per "
                             "sample")  # fmt: skip
        stored[name] = array.astype(dtype, copy=False)
        counts[name] = (len(array) // step, step)
    numbers = {n for n, _ in counts.values()}
    if len(numbers) != 1 or 0 in numbers:
        found = ", ".join(f"{k}: {v[0]}" for k, v in counts.items())
        raise UsageError(f"--calibration: the arrays hold different numbers of samples ({found}); give every input "
                         "the same number (at least one) along the first axis")  # fmt: skip
    total = numbers.pop()
    total = min(total, limit) if limit else total
    return [{name: stored[name][i * step : (i + 1) * step] for name, (_, step) in counts.items()} for i in range(total)]


def calibration_from_images(
    folder: str | os.PathLike,
    model: Any,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    bgr: bool = False,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Samples from a folder of images (OpenCV reads them; RGB unless ``bgr``). A file that crops (``--crop``:
    ``frames`` and ``boxes`` inputs) gets each image as a frame with one box around the whole image: the file crops and
    normalises it itself. Another file gets each image resized to its network input (``(B, 3, h, w)``, float) and
    normalised with ``(x - mean) / std`` on 0-255 pixels, which must then be given (the file does not record it)."""
    from export_tools.filemeta import INPUTS_KEY, SHAPES_KEY, read
    from export_tools.parity.inputs import input_specs

    try:
        import cv2
    except ImportError:
        from export_tools.errors import RunnerUnavailableError

        raise RunnerUnavailableError('reading calibration images needs OpenCV; fix: pip install "kpx[quantize]" '
                                     "(opencv-python-headless)") from None  # fmt: skip
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"--calibration {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    files = files[:limit] if limit else files
    specs = input_specs(model.SerializeToString())
    kinds = read(model, INPUTS_KEY)
    recorded = read(model, SHAPES_KEY)
    frames = next((n for n, _, _ in specs if kinds.get(n, {}).get("kind") == "frames"), None)
    if frames is not None and (mean is not None or std is not None):
        raise UsageError("this file crops the frames and normalises its crops itself (its kpx.pose); drop "
                         "--normalize/--mean/--std")  # fmt: skip
    if frames is None and (mean is None or std is None):
        raise UsageError("this file takes the network's input, and does not record how images were normalised for "
                         "it: give --normalize imagenet|unit|none (or --mean and --std), as the network was "
                         "trained")  # fmt: skip
    samples = []
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise UsageError(f"--calibration: OpenCV cannot read {str(path)!r}; remove it or convert it to PNG")
        if not bgr:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        sample = {}
        for name, dtype, dims in specs:
            kind = kinds.get(name, {})
            if name == frames:
                nhwc = kind.get("layout") == "NHWC"
                array = image[None] if nhwc else image.transpose(2, 0, 1)[None]
                sample[name] = np.ascontiguousarray(array).astype(dtype)
            elif kind.get("kind") == "boxes":  # the whole frame; without a crop, any box (it only maps keypoints)
                h, w = image.shape[:2] if frames else _network_size(specs, recorded)
                sample[name] = _whole_box(w, h, kind.get("format", "xyxy")).astype(dtype)
            elif kind.get("kind") == "batch_index":
                sample[name] = np.zeros([1], dtype)
            elif frames is None and len(dims) == 4 and np.dtype(dtype).kind == "f":
                h, w = _size(name, dims, recorded)
                resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
                normalised = (resized - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
                sample[name] = np.ascontiguousarray(normalised.transpose(2, 0, 1)[None]).astype(dtype)
            else:
                raise UsageError(f"--calibration: images cannot make input {name!r} ({dims}); give a .npz named after "
                                 "the model's inputs")  # fmt: skip
        samples.append(sample)
    return samples


def _size(name: str, dims: Sequence[Any], recorded: Mapping[str, Any]) -> tuple[int, int]:
    """``(h, w)`` of a 4-D input: its static dims, else the sizes kpx recorded at export."""
    shape = recorded.get(name) if isinstance(recorded, Mapping) else None
    h, w = dims[2], dims[3]
    if not isinstance(h, int) or not isinstance(w, int) or h < 1 or w < 1:
        if not shape:
            raise UsageError(f"--calibration: input {name!r} has symbolic height/width ({dims}) and no recorded "
                             "export size; give a .npz instead")  # fmt: skip
        h, w = int(shape[2]), int(shape[3])
    return int(h), int(w)


def _network_size(specs: Sequence[Any], recorded: Mapping[str, Any]) -> tuple[int, int]:
    """The ``(h, w)`` of the file's 4-D input (the network's, for a file that takes crops and their boxes)."""
    for name, _, dims in specs:
        if len(dims) == 4:
            return _size(name, dims, recorded)
    raise UsageError("--calibration: no image input to size the boxes by; give a .npz")


def _whole_box(w: int, h: int, box_format: str) -> np.ndarray:
    """``(1, 4)``: the box ``(0, 0, w, h)`` in ``box_format``."""
    box = {"xywh": [0.0, 0.0, w, h], "cs": [w / 2, h / 2, w, h]}.get(box_format, [0.0, 0.0, w, h])
    return np.asarray([box], np.float64)


def generated_calibration(model: Any, count: int = 16, *, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` samples of kpx's generated inputs at the export sizes (:mod:`export_tools.parity.inputs`): a smoke
    test only. Warns with :class:`SyntheticCalibrationWarning`."""
    from export_tools.parity.inputs import generate_inputs, recorded_dims

    warnings.warn(SYNTHETIC_MESSAGE, SyntheticCalibrationWarning, stacklevel=2)
    data = model.SerializeToString()
    dims = recorded_dims(data)
    try:
        return [{g.name: g.array for g in generate_inputs(data, dims=dims, seed=seed + i)} for i in range(count)]
    except ValueError as exc:
        raise UsageError(f"kpx cannot generate calibration inputs for this file ({exc}); give --calibration "
                         "DATA") from None  # fmt: skip


def load_calibration(
    source: str | os.PathLike | None, model: Any, *, limit: int | None = None, **image_options: Any
) -> tuple[list[dict[str, Any]], str]:
    """Calibration samples and how they were made: a ``.npz`` file, a folder of images, or (``None``) generated
    inputs (warns)."""
    if source is None:
        samples = generated_calibration(model, limit or 16)
        return samples, f"generated inputs ({len(samples)} samples; smoke test)"
    path = Path(source)
    if path.is_dir():
        samples = calibration_from_images(path, model, limit=limit, **image_options)
        return samples, f"images in {path.name} ({len(samples)})"
    if not path.is_file():
        raise UsageError(f"--calibration {str(path)!r} does not exist; give a .npz file or a folder of images")
    if path.suffix.lower() != ".npz":
        raise UsageError(f"--calibration {str(path)!r}: give a .npz (arrays named after the model's inputs) or a "
                         "folder of images")  # fmt: skip
    samples = calibration_from_npz(path, model, limit=limit)
    return samples, f"{path.name} ({len(samples)} samples)"


# --- quantization -------------------------------------------------------------------------------------------


def quantize(
    model: Any,
    calibration: Sequence[Mapping[str, np.ndarray]],
    *,
    per_channel: bool = True,
    activations: str = "int8",
    method: str = "minmax",
    source: str = "",
) -> tuple[Any, Exclusion]:
    """``model`` (a float32 kpx file, function or inline) quantized to INT8 by ONNX Runtime's ``quantize_static``
    (QDQ, int8 weights per channel unless ``per_channel=False``, ``activations`` int8 or uint8, calibration
    ``method``), with the :func:`exclusion` kept float; returns the checked model (kpx's metadata and tags kept,
    :data:`QUANTIZATION_KEY` added) and the exclusion.

    Raises :class:`UsageError` for what cannot be quantized (:func:`check_quantizable`) and :class:`ExportError` if
    the quantizer left a quantized value between two kpx nodes or in front of one (a kpx bug: please report it)."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if activations not in ACTIVATION_TYPES:
        raise UsageError(f"activations must be one of {', '.join(ACTIVATION_TYPES)}; got {activations!r}")
    if method not in METHODS:
        raise UsageError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if not calibration:
        raise UsageError("calibration is empty; give at least one sample (32 to a few hundred images is usual)")
    excluded = check_quantizable(model)
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}  # fmt: skip
    work = onnx.ModelProto()
    work.CopyFrom(model)  # quantize_static moves a given ModelProto's weights to external data: never the caller's
    with tempfile.TemporaryDirectory(prefix="kpx-quantize-") as tmp, _quiet_quantizer():
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            work, out, _Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=excluded.nodes, calibrate_method=methods[method],
        )  # fmt: skip
        quantized = onnx.load(str(out))
    _keep_kpx(model, quantized)
    _check_float_region(quantized, excluded)
    from export_tools.graph import set_props

    record = {"tool": f"onnxruntime {onnxruntime.__version__} quantize_static", "format": "QDQ",
              "weights": "int8, per channel" if per_channel else "int8, per tensor", "activations": activations,
              "method": method, "calibration": source or f"{len(calibration)} samples",
              "float_nodes": len(excluded.nodes)}  # fmt: skip
    set_props(quantized, {QUANTIZATION_KEY: json.dumps(record, sort_keys=True)})
    try:
        onnx.checker.check_model(quantized, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the quantized model fails the ONNX checker: {' '.join(str(exc).split())[:300]}") from exc
    return quantized, excluded


class _Reader:
    """ONNX Runtime's ``CalibrationDataReader`` over a list of feed dicts."""

    def __init__(self, samples: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._samples: Iterator[Mapping[str, np.ndarray]] = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        sample = next(self._samples, None)
        return None if sample is None else {k: np.ascontiguousarray(v) for k, v in sample.items()}

    def __iter__(self):  # ORT's reader protocol
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        sample = self.get_next()
        if sample is None:
            raise StopIteration
        return sample


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ONNX Runtime's quantizer logs a pre-processing advice through the root logger at every call (kpx files need
    none: BatchNormalization is folded at export), prints its histogram progress (percentile, entropy) and warns from
    onnx; all are silenced (kpx's results go to stdout)."""
    import io

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _keep_kpx(original: Any, quantized: Any) -> None:
    """kpx's metadata and node tags, back on the quantized file (the quantizer rewrites the model)."""
    from export_tools.graph import props, set_props
    from export_tools.postprocess import restore_tags

    kept = {k: v for k, v in props(original).items() if k.startswith("kpx.")}
    set_props(quantized, kept)
    restore_tags(original, quantized, propagate=False)


def _check_float_region(quantized: Any, excluded: Exclusion) -> None:
    """No kpx node reads a dequantized value (a heatmap, a SimCC vector or a coordinate on an int8 grid); the heads
    may (their input is the network's activation: they compute in float from it)."""
    keep = set(excluded.nodes) - set(excluded.heads)
    dequantized = {o for n in quantized.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    wrong = sorted({n.name for n in quantized.graph.node if n.name in keep and set(n.input) & dequantized})
    if wrong:
        raise ExportError(f"the quantizer put int8 values in front of node(s) kept in float ({', '.join(wrong[:5])}); "
                          "this is a kpx bug, please report it with the file")  # fmt: skip


def quantized_nodes(model: Any) -> int:
    """How many nodes read a dequantized value (the network's quantized ops)."""
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(1 for n in model.graph.node if n.op_type not in _QUANT_OPS and set(n.input) & dequantized)


def evaluation_sets(
    samples: Sequence[Mapping[str, np.ndarray]], model: Any, *, limit: int = 64
) -> dict[str, tuple[np.ndarray, ...]]:
    """Input sets for comparing the quantized file with the float one: the samples stacked along the first axis
    when every input's first dim is symbolic and the other dims agree (one set), else up to 8 sets of one sample."""
    from export_tools.parity.inputs import input_specs

    specs = input_specs(model.SerializeToString())
    names = [n for n, _, _ in specs]
    samples = list(samples)[:limit]
    stackable = all(dims and not isinstance(dims[0], int) for _, _, dims in specs) and all(
        len({np.shape(s[n])[1:] for s in samples}) == 1 for n in names
    )
    if stackable and not any(kind == "batch_index" for kind in _kinds(model).values()):
        return {f"calibration ({len(samples)} samples)": tuple(np.concatenate([s[n] for s in samples]) for n in names)}
    return {f"calibration {i}": tuple(s[n] for n in names) for i, s in enumerate(samples[:8])}


def _kinds(model: Any) -> dict[str, str]:
    from export_tools.filemeta import INPUTS_KEY, read

    return {k: v.get("kind", "") for k, v in read(model, INPUTS_KEY).items() if isinstance(v, dict)}
