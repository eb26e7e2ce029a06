"""Parity inputs from the model itself: seeded values made from what the file says each input holds, or a user's
``.npz``.

An input that kpx recorded (``kpx.inputs``, :mod:`export_tools.filemeta`) gets values that test something:

- ``frames``: images in their dtype and layout (smooth shapes and edges over 0-255, uint8 rounded);
- ``boxes``: boxes in the file's format, inside the frame (or a 640x480 image) with person-like sizes (10-60 % of
  the width, taller than wide), every fourth one partly outside the frame;
- ``batch_index``: a valid frame per box;
- ``heatmaps`` / ``simcc``: peaked maps / vectors (a Gaussian peak per keypoint over low noise), as networks give.

Anything else is standard normal (floats), 0-255 (uint8), 0-7 (integers) or random booleans. Every generated input
is described in the report (how it was made, its min and max).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export_tools.graph import NUMPY_TYPES

MAX_INPUT_MB = 1024
"""Default cap, in MiB, on the inputs kpx generates (``--input`` examples, ``--dim`` random inputs). A deployed
pose model's batch of 32 crops at 256x192 is 19 MiB, a 1080p frame 24 MiB. ``--max-input-mb`` raises it."""


def check_input_size(sizes: Mapping[str, tuple[Sequence[int], int]], max_mb: float = MAX_INPUT_MB) -> None:
    """``ValueError`` when inputs ``{name: (shape, itemsize)}`` need more than ``max_mb`` MiB in all (checked
    before anything is allocated)."""
    total = 0
    for name, (shape, itemsize) in sizes.items():
        size = math.prod(int(d) for d in shape) * itemsize
        total += size
        if total > max_mb * 2**20:
            need = f"{size / 2**20:.4g} MiB" if size < 2**50 else f"{size / 2**50:.3g} PiB"
            raise ValueError(f"input {name!r} of shape {'x'.join(map(str, shape))} needs {need}; kpx generates at "
                             f"most {max_mb:g} MiB of inputs in all. Give smaller sizes (dynamic dims can be "
                             "exported and checked at small sizes) or raise --max-input-mb")  # fmt: skip


def input_specs(model: bytes) -> list[tuple[str, np.dtype, list[int | str]]]:
    """``(name, dtype, dims)`` of each graph input; a dim is an int or its symbolic name."""
    import onnx

    specs = []
    for value in onnx.load_from_string(model).graph.input:
        tensor = value.type.tensor_type
        if tensor.elem_type not in NUMPY_TYPES:
            raise ValueError(f"input {value.name!r} has ONNX element type {tensor.elem_type}; kpx cannot generate it")
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
        specs.append((value.name, np.dtype(NUMPY_TYPES[tensor.elem_type]), dims))
    return specs


def recorded_dims(model: bytes) -> dict[str, int]:
    """Sizes of the symbolic dims at export, from the ``kpx.example_shapes`` metadata kpx writes (empty for
    other files)."""
    import json

    import onnx

    proto = onnx.load_from_string(model)
    try:
        shapes = json.loads({p.key: p.value for p in proto.metadata_props}.get("kpx.example_shapes", "{}"))
    except ValueError:
        return {}
    dims: dict[str, int] = {}
    for value in proto.graph.input:
        shape = shapes.get(value.name) if isinstance(shapes, dict) else None
        symbols = [d.dim_param for d in value.type.tensor_type.shape.dim]
        if isinstance(shape, list) and len(shape) == len(symbols):
            dims.update({s: int(n) for s, n in zip(symbols, shape) if s})
    return dims


@dataclass
class Generated:
    """One generated input and how it was made (for the report)."""

    name: str
    array: np.ndarray
    how: str

    def facts(self) -> dict:
        a = self.array
        finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
        return {"name": self.name, "how": self.how, "shape": list(a.shape), "dtype": str(a.dtype),
                "min": float(finite.min()) if finite.size else None,
                "max": float(finite.max()) if finite.size else None}  # fmt: skip


def input_sets(
    model: bytes, *, dims: Mapping[str, int] | None = None, seed: int = 0, max_mb: float = MAX_INPUT_MB
) -> dict[str, tuple[tuple[np.ndarray, ...], dict]]:
    """Named seeded input sets for ``model``, each with its facts: at ``dims`` plus, for the symbolic dims
    ``dims`` leaves out, the sizes kpx recorded at export (:func:`recorded_dims`); and when some were
    recorded, once more with each of those one larger (a size baked into a graph shows there)."""
    dims = dict(dims or {})
    recorded = {k: v for k, v in recorded_dims(model).items() if k not in dims}
    at = {**recorded, **dims}
    made = generate_inputs(model, dims=at, seed=seed, max_mb=max_mb)
    sets = {"inputs": (tuple(g.array for g in made), {"seed": seed, "dims": at,
                                                      "generated": [g.facts() for g in made]})}  # fmt: skip
    if recorded:
        larger = {**dims, **{k: v + 1 for k, v in recorded.items()}}
        label = "resized " + ",".join(f"{k}={v}" for k, v in larger.items() if k in recorded)
        made = generate_inputs(model, dims=larger, seed=seed + 1, max_mb=max_mb)
        sets[label] = (tuple(g.array for g in made), {"seed": seed + 1, "dims": larger,
                                                      "generated": [g.facts() for g in made]})  # fmt: skip
    return sets


def random_inputs(
    model: bytes, *, dims: Mapping[str, int] | None = None, seed: int = 0, max_mb: float = MAX_INPUT_MB
) -> tuple[np.ndarray, ...]:
    """Seeded inputs shaped by the model's input specs (:func:`generate_inputs`, values only)."""
    return tuple(g.array for g in generate_inputs(model, dims=dims, seed=seed, max_mb=max_mb))


def generate_inputs(
    model: bytes, *, dims: Mapping[str, int] | None = None, seed: int = 0, max_mb: float = MAX_INPUT_MB
) -> list[Generated]:
    """Seeded inputs shaped by the model's input specs, with values from what the file says each input holds
    (see the module doc).

    Args:
        dims: sizes for symbolic dims (``{"B": 4, "H": 64}``); a symbolic dim not given is an error.
        seed: numpy ``default_rng`` seed; the same seed gives the same inputs.
        max_mb: refuse (``ValueError``) inputs larger than this in all, before allocating them.
    """
    import onnx

    from export_tools.filemeta import INPUTS_KEY, read

    rng = np.random.default_rng(seed)
    dims = dict(dims or {})
    specs = input_specs(model)
    known = {d for _, _, shape in specs for d in shape if isinstance(d, str)}
    unknown = sorted(set(dims) - known)
    if unknown:
        raise ValueError(f"dims {unknown} are not symbolic dims of the model; it has {sorted(known) or 'none'}")
    shapes = {}
    for name, dtype, shape in specs:
        missing = [d for d in shape if isinstance(d, str) and d not in dims]
        if missing:
            hint = f"dims={{{missing[0]!r}: 4}}"
            raise ValueError(f"input {name!r} has symbolic dims {missing}; give their sizes, e.g. {hint}")
        shapes[name] = ([dims[d] if isinstance(d, str) else d for d in shape], dtype)
    check_input_size({name: (shape, dtype.itemsize) for name, (shape, dtype) in shapes.items()}, max_mb)
    kinds = read(onnx.load_from_string(model), INPUTS_KEY)
    made: dict[str, Generated] = {}
    order = sorted(shapes, key=lambda n: kinds.get(n, {}).get("kind") in ("boxes", "batch_index"))  # frames first
    for name in order:
        shape, dtype = shapes[name]
        made[name] = _generate(name, shape, dtype, kinds, made, rng)
    return [made[name] for name in shapes]


def _generate(name: str, shape: list[int], dtype: np.dtype, kinds: Mapping, made: Mapping[str, Generated],
              rng: np.random.Generator) -> Generated:  # fmt: skip
    info = kinds.get(name, {})
    kind = info.get("kind")
    if kind == "frames" and len(shape) == 4:
        return Generated(name, _frames(shape, dtype, info.get("layout") == "NHWC", rng),
                         f"images: smooth shapes over 0-255 ({info.get('layout', 'NCHW')})")  # fmt: skip
    if kind == "boxes" and len(shape) == 2 and shape[1] == 4 and dtype.kind == "f":
        frames = made.get(info.get("frames", ""))
        height, width, where = 480, 640, "a 640x480 image"
        if frames is not None:
            nhwc = kinds.get(frames.name, {}).get("layout") == "NHWC"
            height, width = frames.array.shape[1:3] if nhwc else frames.array.shape[2:4]
            where = f"the {width}x{height} frames"
        fmt = info.get("format", "xyxy")
        how = f"boxes ({fmt}) inside {where}, 10-60 % of its width, every fourth partly outside"
        return Generated(name, _boxes(shape[0], height, width, fmt, rng).astype(dtype), how)
    if kind == "batch_index" and dtype.kind in "iu":
        frames = made.get(info.get("frames", ""))
        count = frames.array.shape[0] if frames is not None else 1
        return Generated(name, rng.integers(0, max(count, 1), shape).astype(dtype), f"frame indices in [0, {count})")
    if kind == "heatmaps" and len(shape) == 4 and dtype.kind == "f":
        return Generated(name, _peaks(shape, rng).astype(dtype), "heatmaps: one Gaussian peak (sigma 2) per map "
                         "over noise")  # fmt: skip
    if kind == "simcc" and len(shape) == 3 and dtype.kind == "f":
        return Generated(name, _peaks(shape, rng).astype(dtype), "SimCC vectors: one Gaussian peak per row over "
                         "noise")  # fmt: skip
    if dtype.kind == "f":
        return Generated(name, rng.standard_normal(shape).astype(dtype), "standard normal")
    if dtype.kind == "b":
        return Generated(name, rng.random(shape) > 0.5, "random booleans")
    if dtype == np.uint8:  # pixels: the whole range
        return Generated(name, rng.integers(0, 256, shape).astype(dtype), "uniform 0-255")
    return Generated(name, rng.integers(0, 8, shape).astype(dtype), "uniform integers 0-7")


def _frames(shape: list[int], dtype: np.dtype, nhwc: bool, rng: np.random.Generator) -> np.ndarray:
    """Image-like frames: a gradient, a few bright and dark ellipses and a little noise, over 0-255."""
    if nhwc:
        batch, height, width, channels = shape
    else:
        batch, channels, height, width = shape
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    out = np.empty((batch, channels, height, width), np.float32)
    for b in range(batch):
        for c in range(channels):
            plane = 60.0 + 120.0 * (rng.random() * x + rng.random() * y)
            for _ in range(6):
                cx, cy, rx, ry = rng.random(), rng.random(), 0.05 + 0.2 * rng.random(), 0.05 + 0.3 * rng.random()
                inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0
                plane = np.where(inside, plane + rng.uniform(-90, 90), plane)
            out[b, c] = plane + rng.normal(0.0, 4.0, (height, width))
    out = np.clip(out, 0.0, 255.0)
    if nhwc:
        out = out.transpose(0, 2, 3, 1)
    return np.round(out).astype(dtype) if np.dtype(dtype).kind in "iu" else out.astype(dtype)


def _boxes(count: int, height: int, width: int, box_format: str, rng: np.random.Generator) -> np.ndarray:
    """``count`` person-like boxes in ``box_format``; every fourth crosses the frame's border."""
    w = width * rng.uniform(0.1, 0.6, count)
    h = np.minimum(w * rng.uniform(1.0, 3.0, count), height * 0.95)
    x0 = rng.uniform(0.0, 1.0, count) * np.maximum(width - w, 1.0)
    y0 = rng.uniform(0.0, 1.0, count) * np.maximum(height - h, 1.0)
    outside = np.arange(count) % 4 == 3
    x0 = np.where(outside, np.where(rng.random(count) < 0.5, -0.3 * w, width - 0.7 * w), x0)
    xyxy = np.stack([x0, y0, x0 + w, y0 + h], 1)
    if box_format == "xywh":
        return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1)
    if box_format == "cs":
        return np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
    return xyxy


def _peaks(shape: list[int], rng: np.random.Generator) -> np.ndarray:
    """One Gaussian peak (sigma 2 along each axis, height 0.5-1) per map or vector over noise of 0.02."""
    axes = shape[2:]
    out = rng.uniform(-0.02, 0.02, shape)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in axes], indexing="ij")
    flat = out.reshape(-1, *axes)
    for i in range(flat.shape[0]):
        centre = [rng.uniform(0, n - 1) if n > 1 else 0.0 for n in axes]
        distance = sum((g - c) ** 2 for g, c in zip(grids, centre))
        flat[i] += rng.uniform(0.5, 1.0) * np.exp(-distance / (2 * 2.0**2))
    return flat.reshape(shape)


def load_npz(path: str | Path, model: bytes) -> tuple[np.ndarray, ...]:
    """The model's inputs from a ``.npz`` file whose keys are the graph input names."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"inputs file {str(path)!r} does not exist")
    names = [name for name, _, _ in input_specs(model)]
    save = f"np.savez(path, {', '.join(f'{n}=...' for n in names)})"
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{str(path)!r} is not a readable .npz file ({type(exc).__name__}); save the inputs with "
                         f"{save}") from None  # fmt: skip
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{str(path)!r} holds one array (a .npy file), not named inputs; save them with {save}")
    with data:
        stored = {key: data[key] for key in data.files}
    arrays = []
    symbols: dict[str, tuple[str, int]] = {}
    for name, dtype, shape in input_specs(model):
        if name not in stored:
            raise ValueError(f"{str(path)!r} has no array {name!r}; it has {sorted(stored)}. "
                             f"Save the inputs with np.savez(path, {name}=...)")  # fmt: skip
        array = stored[name]
        fixed = [(i, d) for i, d in enumerate(shape) if isinstance(d, int)]
        if array.ndim != len(shape) or any(array.shape[i] != d for i, d in fixed):
            raise ValueError(f"array {name!r} has shape {array.shape}; the model expects {shape}")
        for i, d in enumerate(shape):
            if isinstance(d, str) and d != "?":
                first = symbols.setdefault(d, (name, array.shape[i]))
                if first[1] != array.shape[i]:
                    raise ValueError(f"dim {d!r} is {first[1]} in {first[0]!r} but {array.shape[i]} in {name!r}; "
                                     "the model needs them equal")  # fmt: skip
        if array.dtype != dtype and (array.dtype.kind != dtype.kind or array.dtype.kind not in "fiub"):
            raise ValueError(f"array {name!r} is {array.dtype}; the model expects {dtype} (save it as {dtype})")
        arrays.append(array.astype(dtype, copy=False))  # same kind, e.g. float64 -> float32
    return tuple(arrays)
