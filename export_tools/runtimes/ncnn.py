"""ncnn (Tencent), the ``ncnn`` extra: the ONNX file converted by pnnx to ncnn's param/bin, run on ncnn's CPU path.

pnnx (the ``pnnx`` package, installed with ``--no-deps``: it declares torch, which kpx has already) is run as its
binary on a private static-shape copy, with ``fp16=0`` (pnnx stores weights in half by default), and ncnn runs
with every fp16/bf16/int8 option off, so the comparison is float32 against float32. pnnx names the converted
inputs ``in0, in1, ...`` and outputs ``out0, out1, ...`` in graph order; outputs are matched by that position and
reshaped to the ONNX shapes (ncnn keeps at most 4 dims and drops a batch of one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export_tools.errors import RunnerUnavailableError
from export_tools.runtimes._converted import (
    ConversionFailedError,
    ShapeCache,
    ShapeKey,
    example_shapes,
    fit_output,
    last_line,
    output_dtypes,
    output_shapes,
    private_dir,
    refuse_local_functions,
    run_converter,
    static_copy,
)
from export_tools.runtimes.base import Runner, register_runner

INSTALL_HINT = 'pip install "kpx[ncnn]" && pip install --no-deps pnnx  (pnnx declares torch: never let pip pick it)'
#: ncnn options that would run a float32 model in lower precision
_LOW_PRECISION = ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage",
                  "use_int8_inference", "use_int8_storage", "use_int8_arithmetic", "use_vulkan_compute")  # fmt: skip
_PNNX_TYPES = {"float32": "f32", "float64": "f64", "float16": "f16", "int64": "i64", "int32": "i32", "uint8": "u8",
               "bool": "i8"}  # fmt: skip


def pnnx_binary() -> Path:
    """The pnnx executable shipped in the ``pnnx`` package."""
    import importlib.util

    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations:
        raise RunnerUnavailableError(f"pnnx is not installed; fix: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "pnnx"
    if not path.is_file():
        raise RunnerUnavailableError(f"the pnnx package has no pnnx binary at {path}; fix: {INSTALL_HINT}")
    return path


def versions() -> tuple[str, str]:
    import importlib.metadata

    return importlib.metadata.version("ncnn"), importlib.metadata.version("pnnx")


@register_runner
class NcnnRunner(Runner):
    """ncnn on the CPU, float32 throughout (fp16/bf16/int8 options off), ``threads`` threads (default 1).

    One pnnx conversion per input-shape signature (cached), the first at load at the sizes kpx recorded.
    Function-mode files raise :class:`~export_tools.errors.LocalFunctionsUnsupportedError` (pnnx segfaults
    on them); a pnnx abort or an op ncnn has no layer for is a :class:`ConversionFailedError`.
    """

    kind = "ncnn"
    install = INSTALL_HINT
    summary = "ncnn CPU, fp32 (fp16/bf16/int8 off): the file converted by pnnx (inline files)"

    def __init__(self, model: bytes, *, name: str = "", threads: int = 1, benchmark: bool = False) -> None:
        import onnx

        self.check_available()
        self.name = name or "ncnn-cpu"
        self.threads = int(threads)
        self.ncnn_version, self.pnnx_version = versions()
        self.version = f"ncnn {self.ncnn_version}, pnnx {self.pnnx_version}"
        self.proto = onnx.load_from_string(bytes(model))
        refuse_local_functions(self.proto, "ncnn", self.version)
        self._outputs = [o.name for o in self.proto.graph.output]
        self.conversions = 0
        self._cache = ShapeCache(self._load)
        shapes = example_shapes(self.proto)
        if shapes is not None:
            self._cache.shapes(shapes)

    @classmethod
    def check_available(cls) -> None:
        try:
            import ncnn  # noqa: F401
        except ImportError:
            raise RunnerUnavailableError(f"ncnn is not installed; fix: {INSTALL_HINT}") from None
        pnnx_binary()

    def _load(self, shapes: ShapeKey) -> tuple[Any, list, list]:
        import ncnn

        from export_tools.graph import NUMPY_TYPES

        static = static_copy(self.proto, shapes)
        types = [np.dtype(NUMPY_TYPES.get(v.type.tensor_type.elem_type, np.float32)).name for v in static.graph.input]
        spec = ",".join(f"[{','.join(map(str, s))}]{_PNNX_TYPES.get(t, 'f32')}" for s, t in zip(shapes, types))
        with private_dir("kpx-ncnn-") as tmp:
            src = Path(tmp) / "model.onnx"
            src.write_bytes(static.SerializeToString())
            param, binary = Path(tmp) / "model.ncnn.param", Path(tmp) / "model.ncnn.bin"
            outputs = {"pnnxparam": "model.pnnx.param", "pnnxbin": "model.pnnx.bin", "pnnxpy": "model_pnnx.py",
                       "pnnxonnx": "model.pnnx.onnx", "ncnnparam": param.name, "ncnnbin": binary.name,
                       "ncnnpy": "model_ncnn.py"}  # fmt: skip
            command = [str(pnnx_binary()), src.name, f"inputshape={spec}", "fp16=0", "device=cpu", "optlevel=2",
                       *(f"{k}={Path(tmp) / v}" for k, v in outputs.items())]  # fmt: skip
            text = run_converter(command, self.name, self.version, cwd=tmp)
            self.conversions += 1
            if not param.is_file() or not binary.is_file():
                raise ConversionFailedError(self.name, "pnnx wrote no ncnn model", self.version, last_line(text))
            net = ncnn.Net()
            for option in _LOW_PRECISION:
                if hasattr(net.opt, option):
                    setattr(net.opt, option, False)
            net.opt.num_threads = self.threads
            if net.load_param(str(param)) != 0:
                unknown = sorted({ln.split()[0] for ln in param.read_text().splitlines()[2:] if ln.split()[:1]
                                  and not _known(ln)})  # fmt: skip
                detail = f"layers ncnn has no implementation of: {', '.join(unknown[:5])}" if unknown else ""
                raise ConversionFailedError(self.name, "ncnn cannot load the converted param", self.version, detail)
            if net.load_model(str(binary)) != 0:
                raise ConversionFailedError(self.name, "ncnn cannot load the converted weights", self.version)
            unsupported = _foreign_layers(param.read_text())
            if unsupported:
                raise ConversionFailedError(self.name, "pnnx left ops ncnn has no layer for", self.version,
                                            ", ".join(unsupported))  # fmt: skip
        return net, output_shapes(static), output_dtypes(static)

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        import ncnn

        net, shapes, dtypes = self._cache.get(feeds)
        with net.create_extractor() as ex:
            for i, a in enumerate(feeds):
                a = np.ascontiguousarray(a, dtype=np.float32)  # ncnn blobs are float32
                ex.input(f"in{i}", ncnn.Mat(a).clone())
            result = []
            for i, (name, shape, dtype) in enumerate(zip(self._outputs, shapes, dtypes, strict=True)):
                ret, mat = ex.extract(f"out{i}")
                if ret != 0:
                    raise RuntimeError(f"ncnn could not compute output {name!r} (out{i}): error {ret}")
                result.append(fit_output(name, np.array(mat.numpy(), copy=True), shape, dtype, self.name))
        return result

    def describe(self) -> dict[str, str]:
        return {"runtime": self.name, "ncnn": self.ncnn_version, "pnnx": self.pnnx_version, "precision": "fp32",
                "threads": str(self.threads)}  # fmt: skip


def _known(line: str) -> bool:
    import ncnn

    layer = line.split()[0]
    return ncnn.layer_to_index(layer) >= 0 if hasattr(ncnn, "layer_to_index") else True


def _foreign_layers(param: str) -> list[str]:
    """Layer types in a param file that ncnn does not implement (pnnx writes unconverted ops as ``pnnx.*``,
    ``torch.*``, ``Tensor.*`` or ``F.*`` layers)."""
    found = []
    for line in param.splitlines()[2:]:
        parts = line.split()
        if parts and parts[0].startswith(("pnnx.", "torch.", "Tensor.", "F.", "aten::", "prim::")):
            found.append(parts[0])
    return sorted(set(found))
