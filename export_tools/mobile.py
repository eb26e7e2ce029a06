"""ONNX Runtime mobile: kpx exports converted to the ORT format (``.ort``).

:func:`to_ort_format` calls onnxruntime's own converter
(``onnxruntime.tools.convert_onnx_models_to_ort``, the same as
``python -m onnxruntime.tools.convert_onnx_models_to_ort``). It ships with the ``onnxruntime`` (and
``onnxruntime-gpu``) wheel; its config-file step imports ``flatbuffers``, which onnxruntime 1.31 already
requires (the ``mobile`` extra names it explicitly). Checked with onnxruntime 1.31.1:

- **Optimization style: Fixed**, level ``all``. The converter runs ORT's CPU graph optimizations and
  saves the optimized graph; with no ``target_platform`` it leaves out the NCHWc layout transformer, so
  the file is not tied to x86 or ARM. (``Runtime`` style only matters for compiling EPs such as NNAPI
  or CoreML, and needs ``session.enable_saved_runtime_optimizations`` at load.)
- **Function-mode exports convert**: ORT inlines the ``kpx`` local functions while loading, before it
  optimizes and saves, so the ``.ort`` file holds only standard (``ai.onnx``) kernels and no ``kpx``
  node; a minimal ORT build needs no kpx support. Both emit modes give a working ``.ort`` file.
- Next to the ``.ort`` file the converter writes ``<name>.required_operators.config``: the operators a
  minimal build must include (``build.py --minimal_build --include_ops_by_config <file>``).

Load the file with ``InferenceSession(path)`` (ORT recognises the ``.ort`` suffix) or, from bytes,
with the session config entry ``session.load_model_format = "ORT"``;
:class:`export_tools.runtimes.OrtFormatRunner` does that for the parity harness
(``check_parity(..., runtimes=["ort-mobile"])``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

#: the onnxruntime optimization style used for ``.ort`` files (see the module docstring)
OPTIMIZATION_STYLE = "Fixed"


def to_ort_format(
    model: bytes | onnx.ModelProto | str | os.PathLike, out_dir: str | os.PathLike, *, name: str | None = None
) -> Path:
    """Converts an ONNX model to ONNX Runtime's mobile format.

    Args:
        model: ONNX bytes, an ``onnx.ModelProto``, or the path of an ``.onnx`` file.
        out_dir: directory for ``<name>.ort`` and ``<name>.required_operators.config`` (created if missing).
        name: file stem; default the ``.onnx`` file's stem, or ``"model"`` for bytes and protos.

    Returns:
        The path of the ``.ort`` file.

    Raises:
        ImportError: onnxruntime (or its converter's ``flatbuffers`` dependency) is not installed.
        FileNotFoundError: ``model`` is a path that does not exist.
        RuntimeError: onnxruntime could not load or convert the model.
    """
    try:
        from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
    except ImportError as exc:
        raise ImportError(
            f'the ORT format converter needs onnxruntime and flatbuffers ({exc}); fix: pip install "kpx[cpu,mobile]"'
        ) from exc
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kpx-ort-src-") as tmp:
        if isinstance(model, (str, os.PathLike)):
            source = Path(model)
            if not source.is_file():
                raise FileNotFoundError(f"ONNX model {str(source)!r} does not exist")
            stem = name or source.stem
        else:
            data = model if isinstance(model, (bytes, bytearray)) else model.SerializeToString()
            stem = name or "model"
            source = Path(tmp) / "model.onnx"
            source.write_bytes(bytes(data))
        if source.stem != stem or source.suffix.lower() != ".onnx":  # the converter names outputs after the source
            renamed = Path(tmp) / f"{stem}.onnx"
            renamed.write_bytes(source.read_bytes())
            source = renamed
        logger = logging.getLogger("ort_format_model.utils")
        level = logger.level
        logger.setLevel(logging.WARNING)
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log):
                convert_onnx_models_to_ort(
                    source, output_dir=out_dir, optimization_styles=[OptimizationStyle[OPTIMIZATION_STYLE]]
                )
        except Exception as exc:  # ORT raises its own exception types
            raise RuntimeError(f"onnxruntime could not convert the model to the ORT format: {exc}") from exc
        finally:
            logger.setLevel(level)
    path = out_dir / f"{stem}.ort"
    if not path.is_file():
        raise RuntimeError(f"onnxruntime's converter wrote no {str(path)!r}:\n{log.getvalue()[-2000:]}")
    return path
