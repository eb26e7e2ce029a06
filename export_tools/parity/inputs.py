"""Parity inputs from the model itself: seeded random values from its input specs, or a user's ``.npz``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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


def input_sets(
    model: bytes, *, dims: Mapping[str, int] | None = None, seed: int = 0, max_mb: float = MAX_INPUT_MB
) -> dict[str, tuple[tuple[np.ndarray, ...], dict]]:
    """Named seeded input sets for ``model``, each with its facts: at ``dims`` plus, for the symbolic dims
    ``dims`` leaves out, the sizes kpx recorded at export (:func:`recorded_dims`); and when some were
    recorded, once more with each of those one larger (a size baked into a graph shows there)."""
    dims = dict(dims or {})
    recorded = {k: v for k, v in recorded_dims(model).items() if k not in dims}
    at = {**recorded, **dims}
    sets = {"inputs": (random_inputs(model, dims=at, seed=seed, max_mb=max_mb), {"seed": seed, "dims": at})}
    if recorded:
        larger = {**dims, **{k: v + 1 for k, v in recorded.items()}}
        label = "resized " + ",".join(f"{k}={v}" for k, v in larger.items() if k in recorded)
        sets[label] = (random_inputs(model, dims=larger, seed=seed + 1, max_mb=max_mb), {"seed": seed + 1,
                                                                                          "dims": larger})  # fmt: skip
    return sets


def random_inputs(
    model: bytes, *, dims: Mapping[str, int] | None = None, seed: int = 0, max_mb: float = MAX_INPUT_MB
) -> tuple[np.ndarray, ...]:
    """Seeded random inputs shaped by the model's input specs.

    Args:
        dims: sizes for symbolic dims (``{"B": 4, "H": 64}``); a symbolic dim not given is an error.
        seed: numpy ``default_rng`` seed; the same seed gives the same inputs.
        max_mb: refuse (``ValueError``) inputs larger than this in all, before allocating them.
    """
    rng = np.random.default_rng(seed)
    dims = dict(dims or {})
    known = {d for _, _, shape in input_specs(model) for d in shape if isinstance(d, str)}
    unknown = sorted(set(dims) - known)
    if unknown:
        raise ValueError(f"dims {unknown} are not symbolic dims of the model; it has {sorted(known) or 'none'}")
    shapes = {}
    for name, dtype, shape in input_specs(model):
        missing = [d for d in shape if isinstance(d, str) and d not in dims]
        if missing:
            hint = f"dims={{{missing[0]!r}: 4}}"
            raise ValueError(f"input {name!r} has symbolic dims {missing}; give their sizes, e.g. {hint}")
        shapes[name] = ([dims[d] if isinstance(d, str) else d for d in shape], dtype)
    check_input_size({name: (shape, dtype.itemsize) for name, (shape, dtype) in shapes.items()}, max_mb)
    arrays = []
    for concrete, dtype in shapes.values():
        if dtype.kind == "f":
            arrays.append(rng.standard_normal(concrete).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(rng.random(concrete) > 0.5)
        elif dtype == np.uint8:  # pixels (topdown_crop's frames as decoded): the whole range
            arrays.append(rng.integers(0, 256, concrete).astype(dtype))
        else:
            arrays.append(rng.integers(0, 8, concrete).astype(dtype))
    return tuple(arrays)


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
