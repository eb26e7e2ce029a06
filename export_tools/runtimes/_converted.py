"""What the runtimes that convert an ONNX file first (MNN, ncnn, LiteRT) share.

- **The user's file is never touched**: each conversion works on a private copy in a temporary directory
  that is removed afterwards (onnx2tf rewrites its input in place; pnnx writes beside it).
- **Static shapes**: the copy's inputs get the feeds' shapes (a converter folds shape arithmetic then), one
  conversion per distinct input-shape signature, cached (:class:`ShapeCache`); the first at load from the
  sizes kpx recorded (``kpx.example_shapes``) or the file's static dims.
- **Offline, no telemetry**: converters run as subprocesses with :func:`offline_env` (proxies pointed at
  a closed local port, the known telemetry switches off) and are called as functions or binaries, never
  through scripts that phone home.
- **A converter that says it failed has failed**, whatever its exit code: :class:`ConversionFailedError`,
  a :class:`~export_tools.errors.RunFailedError`, so the parity harness records a failed case (in a worker
  process it comes back as ``RunFailedError ... raised ConversionFailedError``).
- **Outputs in graph order**: matched by name where the converted model keeps the names, else by position,
  and reshaped to the ONNX file's output shapes (static shape inference on the copy) when only the layout
  differs; an output whose element count differs is an error, not a silent reshape.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from export_tools.errors import LocalFunctionsUnsupportedError, RunFailedError

ShapeKey = tuple[tuple[int, ...], ...]


class ConversionFailedError(RunFailedError):
    """A converter refused the model (an op it lacks, a crash, a failure it printed): a failed case, not a kpx bug."""

    def __init__(self, runtime: str, what: str = "conversion failed", version: str = "", detail: str = "") -> None:
        super().__init__(runtime, "load", what, version, detail)


def offline_env(**extra: str) -> dict[str, str]:
    """The environment converters run in: no proxy route out (a closed local port), telemetry switched off."""
    closed = "http://127.0.0.1:9"  # discard port: nothing listens, a download attempt fails at once
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update({
        "http_proxy": closed, "https_proxy": closed, "HTTP_PROXY": closed, "HTTPS_PROXY": closed,
        "no_proxy": "", "NO_PROXY": "", "PIP_NO_INDEX": "1", "PIP_NO_INPUT": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
    })  # fmt: skip
    env.update(extra)
    return env


def run_converter(
    command: Sequence[str], runtime: str, version: str, *, cwd: str, timeout: float = 600.0, env: dict | None = None
) -> str:
    """Runs a converter, offline; its stdout and stderr together. A non-zero exit, a signal or a time-out is a
    :class:`ConversionFailedError` with the converter's last meaningful line."""
    try:
        done = subprocess.run(list(command), cwd=cwd, env=env or offline_env(), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ConversionFailedError(runtime, f"converter timed out after {timeout:g} s", version) from None
    text = (done.stdout + done.stderr).decode(errors="replace")
    if done.returncode != 0:
        what = f"converter crashed with signal {-done.returncode}" if done.returncode < 0 else (
            f"converter exited with code {done.returncode}")  # fmt: skip
        raise ConversionFailedError(runtime, what, version, last_line(text))
    return text


def last_line(text: str, pattern: Callable[[str], bool] | None = None) -> str:
    """The last non-empty line of ``text`` (matching ``pattern``, if given), without terminal colours."""
    from export_tools.errors import strip_ansi

    lines = [ln.strip() for ln in strip_ansi(text).splitlines() if ln.strip()]
    if pattern is not None:
        lines = [ln for ln in lines if pattern(ln)] or lines
    return lines[-1][:300] if lines else ""


def refuse_local_functions(proto: Any, runtime: str, version: str) -> None:
    """:class:`LocalFunctionsUnsupportedError` naming the fix when ``proto`` holds ONNX local functions."""
    if proto.functions:
        names = ", ".join(sorted({f"{f.domain}.{f.name}" for f in proto.functions}))
        raise LocalFunctionsUnsupportedError(
            f"{runtime} {version} cannot read ONNX local functions ({names}); fix: re-export with "
            'emit="inline" (CLI: --emit inline)'
        )


def static_copy(proto: Any, shapes: ShapeKey) -> Any:
    """A copy of ``proto`` whose inputs have exactly ``shapes`` (one per graph input), outputs and
    intermediate shapes inferred at those sizes."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for value, shape in zip(copy.graph.input, shapes, strict=True):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ValueError(f"input {value.name!r} has rank {len(dims)}; got a feed of shape {list(shape)}")
        for d, n in zip(dims, shape):
            d.Clear()
            d.dim_value = int(n)
    del copy.graph.value_info[:]
    for out in copy.graph.output:  # re-inferred at these sizes
        for d in out.type.tensor_type.shape.dim:
            d.Clear()
    try:
        return onnx.shape_inference.infer_shapes(copy, data_prop=True)
    except Exception:
        return copy


def output_shapes(proto: Any) -> list[tuple[int, ...] | None]:
    """Each graph output's static shape, where known."""
    out = []
    for v in proto.graph.output:
        dims = v.type.tensor_type.shape.dim
        known = v.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims)
        out.append(tuple(d.dim_value for d in dims) if known else None)
    return out


def output_dtypes(proto: Any) -> list[np.dtype]:
    """Each graph output's numpy dtype (float32 where unknown)."""
    from export_tools.graph import NUMPY_TYPES

    return [np.dtype(NUMPY_TYPES.get(v.type.tensor_type.elem_type, np.float32)) for v in proto.graph.output]


def fit_output(
    name: str, array: np.ndarray, shape: tuple[int, ...] | None, dtype: np.dtype, runtime: str
) -> np.ndarray:
    """``array`` in the ONNX output's ``shape`` and ``dtype``: a runtime that drops a batch dim of 1 or keeps a
    different layout of the same elements gets reshaped; a different element count is an error."""
    array = np.asarray(array)
    if shape is not None and array.shape != shape:
        if array.size != int(np.prod(shape)):
            raise RuntimeError(f"{runtime} returned output {name!r} with shape {list(array.shape)}; the ONNX file "
                               f"gives {list(shape)}")  # fmt: skip
        array = array.reshape(shape)
    return array.astype(dtype, copy=False)


def example_shapes(proto: Any) -> ShapeKey | None:
    """The input shapes to convert at load: the sizes kpx recorded at export, else the file's static dims."""
    from export_tools.graph import props

    recorded = json.loads(props(proto).get("kpx.example_shapes", "{}") or "{}")
    shapes = []
    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name in recorded and len(recorded[value.name]) == len(dims):
            shapes.append(tuple(int(n) for n in recorded[value.name]))
        elif all(d.HasField("dim_value") for d in dims):
            shapes.append(tuple(d.dim_value for d in dims))
        else:
            return None
    return tuple(shapes)


class ShapeCache:
    """One converted model per input-shape signature, built by ``build(shapes)`` on first use."""

    def __init__(self, build: Callable[[ShapeKey], Any], limit: int = 8) -> None:
        self.build, self.limit = build, limit
        self.models: dict[ShapeKey, Any] = {}

    def get(self, feeds: Sequence[np.ndarray]) -> Any:
        key = tuple(tuple(int(n) for n in np.shape(f)) for f in feeds)
        return self.shapes(key)

    def shapes(self, key: ShapeKey) -> Any:
        if key not in self.models:
            if len(self.models) >= self.limit:  # the oldest goes: a sweep over many sizes stays bounded
                self.models.pop(next(iter(self.models)))
            self.models[key] = self.build(key)
        return self.models[key]


@contextlib.contextmanager
def quiet_stdout():
    """File descriptor 1 sent to /dev/null for the block: runtimes that print from C++ on import or load (MNN:
    "The device supports: ...", "MNN use high precision") must not mix into kpx's output (``--json``)."""
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def private_dir(prefix: str):
    """A temporary directory for one conversion, removed afterwards."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield tmp
