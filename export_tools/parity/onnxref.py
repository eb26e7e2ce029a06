"""An ONNX file as the reference: ``kpx check QUANT.onnx --reference FP32.onnx``.

An INT8 (or otherwise re-written) file is judged against the float32 file it came from, run on ONNX Runtime's CPU
provider in this process. Both files must take the same inputs and return the same outputs (by name). The decoder's
inputs (heatmaps, SimCC vectors) are read on each file through its own graph (:func:`export_tools.graph.
decoder_inputs`): a quantizer may rename values, so the two files are paired by their decoder nodes' inputs, not by
value names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from export_tools.errors import UsageError


class OnnxReference:
    """The reference ONNX file on ORT CPU, in this process; ``name`` is ``ort-cpu(<dtype>)`` (``ort-cpu(fp32)``)."""

    def __init__(self, model: bytes, tested: Any, *, name: str = "") -> None:
        import onnx

        from export_tools.graph import decoder_inputs
        from export_tools.runtimes.ort import ort_session

        self.model = model
        self.proto = onnx.load_from_string(model)
        _check_pairs(self.proto, tested)
        self.name = name or f"ort-cpu({_dtype_label(self.proto)})"
        self.session = ort_session(model)
        found = decoder_inputs(self.proto)
        self.decoder = None if isinstance(found, str) else found
        self.why = found if isinstance(found, str) else None
        self._exposed: Any = None

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        from export_tools.runtimes.ort import run_session

        return run_session(self.session, feeds)

    def decoder_values(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray] | str:
        """The reference file's own decoder inputs on ``feeds`` (made extra outputs of a copy), or why not."""
        if self.decoder is None:
            return f"the reference file's decoder inputs are not known ({self.why})"
        if self._exposed is None:
            import onnx

            from export_tools.runtimes.ort import ort_session

            proto = onnx.ModelProto()
            proto.CopyFrom(self.proto)
            known = [o.name for o in proto.graph.output]
            proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(v) for v in self.decoder[1]
                                      if v not in known)  # fmt: skip
            names = [o.name for o in proto.graph.output]
            self._exposed = (ort_session(proto.SerializeToString()), [names.index(v) for v in self.decoder[1]])
        session, positions = self._exposed
        from export_tools.runtimes.ort import run_session

        outs = run_session(session, feeds)
        return [outs[p] for p in positions]

    def describe(self) -> dict[str, str]:
        import onnxruntime

        return {"runtime": self.name, "onnxruntime": onnxruntime.__version__, "reference": "ONNX file"}


def load_reference(model: bytes | str | os.PathLike | Any) -> bytes:
    """The reference file's bytes (bytes, a path or an ``onnx.ModelProto``); a path that cannot be read is a
    :class:`UsageError`."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        from export_tools.inspection import load_onnx

        try:
            return load_onnx(model).SerializeToString()
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(f"--reference: {exc}") from None
    raise TypeError(f"reference_model must be ONNX bytes, an onnx.ModelProto or a path; got {type(model).__name__}")


def _check_pairs(reference: Any, tested: Any) -> None:
    """The two files take the same inputs and return the same outputs, by name; else a :class:`UsageError`."""
    for what, ref, got in (("inputs", reference.graph.input, tested.graph.input),
                           ("outputs", reference.graph.output, tested.graph.output)):  # fmt: skip
        a, b = [v.name for v in ref], [v.name for v in got]
        if a != b:
            raise UsageError(f"the reference file's {what} ({', '.join(a)}) are not the checked file's "
                             f"({', '.join(b)}); give the file this one was made from (e.g. the float32 export "
                             "that kpx quantize read)")  # fmt: skip


def _dtype_label(proto: Any) -> str:
    from onnx import TensorProto

    labels = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.DOUBLE: "fp64",
              TensorProto.BFLOAT16: "bf16"}  # fmt: skip
    for value in (*proto.graph.output, *proto.graph.input):
        label = labels.get(value.type.tensor_type.elem_type)
        if label:
            return label
    return "onnx"
