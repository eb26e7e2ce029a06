"""Parity inputs from the model itself: seeded random values from its input specs, or a user's ``.npz``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

_NUMPY = {1: np.float32, 10: np.float16, 11: np.float64, 6: np.int32, 7: np.int64, 9: np.bool_}


def input_specs(model: bytes) -> list[tuple[str, np.dtype, list[int | str]]]:
    """``(name, dtype, dims)`` of each graph input; a dim is an int or its symbolic name."""
    import onnx

    specs = []
    for value in onnx.load_from_string(model).graph.input:
        tensor = value.type.tensor_type
        if tensor.elem_type not in _NUMPY:
            raise ValueError(f"input {value.name!r} has ONNX element type {tensor.elem_type}; kpx cannot generate it")
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
        specs.append((value.name, np.dtype(_NUMPY[tensor.elem_type]), dims))
    return specs


def random_inputs(model: bytes, *, dims: Mapping[str, int] | None = None, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Seeded random inputs shaped by the model's input specs.

    Args:
        dims: sizes for symbolic dims (``{"B": 4, "H": 64}``); a symbolic dim not given is an error.
        seed: numpy ``default_rng`` seed; the same seed gives the same inputs.
    """
    rng = np.random.default_rng(seed)
    dims = dict(dims or {})
    known = {d for _, _, shape in input_specs(model) for d in shape if isinstance(d, str)}
    unknown = sorted(set(dims) - known)
    if unknown:
        raise ValueError(f"dims {unknown} are not symbolic dims of the model; it has {sorted(known) or 'none'}")
    arrays = []
    for name, dtype, shape in input_specs(model):
        missing = [d for d in shape if isinstance(d, str) and d not in dims]
        if missing:
            hint = f"dims={{{missing[0]!r}: 4}}"
            raise ValueError(f"input {name!r} has symbolic dims {missing}; give their sizes, e.g. {hint}")
        concrete = [dims[d] if isinstance(d, str) else d for d in shape]
        if dtype.kind == "f":
            arrays.append(rng.standard_normal(concrete).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(rng.random(concrete) > 0.5)
        else:
            arrays.append(rng.integers(0, 8, concrete).astype(dtype))
    return tuple(arrays)


def load_npz(path: str | Path, model: bytes) -> tuple[np.ndarray, ...]:
    """The model's inputs from a ``.npz`` file whose keys are the graph input names."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"inputs file {str(path)!r} does not exist")
    with np.load(path, allow_pickle=False) as data:
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
