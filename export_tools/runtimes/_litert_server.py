"""The LiteRT side of kpx's ``litert`` runtime: runs inside the separate LiteRT environment, imports no kpx.

Started by :mod:`export_tools.runtimes.litert` as ``ENV/bin/python _litert_server.py REPLY_FD``. Reads one JSON
request per line on stdin and writes one JSON reply per line to ``REPLY_FD`` (stdout and stderr are
TensorFlow's log):

- ``{"op": "convert", "onnx": PATH, "out": DIR, "keep_nchw": [names]}``: onnx2tf on ``PATH`` (a private copy:
  onnx2tf rewrites its input in place), float32 ``.tflite`` into ``DIR``; replies ``{"ok": true, "tflite": PATH}``
  or ``{"ok": false, "error": TEXT}``.
- ``{"op": "run", "tflite": PATH, "inputs": NPZ, "outputs": NPZ}``: runs the model with LiteRT's interpreter on
  the arrays ``in0, in1, ...`` and writes the outputs as ``out0, out1, ...`` (in the order of their
  ``Identity_N`` names) with ``names`` and their shapes; replies ``{"ok": true, "names": [...]}``.
- ``{"op": "versions"}``: the versions of tensorflow, onnx2tf and ai-edge-litert.

onnx2tf downloads a calibration file when every input looks like an NHWC image batch; it reads a local file of
that name from its working directory first, so one of zeros is written into the private directory.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback

CALIBRATION = "calibration_image_sample_data_20x128x128x3_float32.npy"


def _convert(request: dict) -> dict:
    import numpy as np
    import onnx2tf

    out = request["out"]
    os.makedirs(out, exist_ok=True)
    workdir = os.path.dirname(request["onnx"])
    os.chdir(workdir)  # onnx2tf looks for the calibration file in its working directory
    np.save(os.path.join(workdir, CALIBRATION), np.zeros((20, 128, 128, 3), np.float32))
    onnx2tf.convert(input_onnx_file_path=request["onnx"], output_folder_path=out, non_verbose=True,
                    keep_ncw_or_nchw_or_ncdhw_input_names=request.get("keep_nchw") or None)  # fmt: skip
    stem = os.path.splitext(os.path.basename(request["onnx"]))[0]
    path = os.path.join(out, f"{stem}_float32.tflite")
    if not os.path.isfile(path):
        return {"ok": False, "error": f"onnx2tf wrote no {stem}_float32.tflite"}
    return {"ok": True, "tflite": path}


_INTERPRETERS: dict = {}


def _order(name: str) -> int:
    """``Identity`` -> 0, ``Identity_3`` -> 3 (LiteRT's output names, in graph output order)."""
    match = re.search(r"_(\d+)$", name)
    return int(match.group(1)) if match else 0


def _run(request: dict) -> dict:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    path = request["tflite"]
    if path not in _INTERPRETERS:
        interpreter = Interpreter(model_path=path, num_threads=int(request.get("threads", 1)))
        interpreter.allocate_tensors()
        _INTERPRETERS[path] = interpreter
    interpreter = _INTERPRETERS[path]
    with np.load(request["inputs"]) as data:
        feeds = [data[f"in{i}"] for i in range(len(data.files))]
    details = interpreter.get_input_details()
    if len(details) != len(feeds):
        return {"ok": False, "error": f"the .tflite has {len(details)} inputs; got {len(feeds)} arrays"}
    for detail, array in zip(details, feeds):  # inputs stay in ONNX order (onnx2tf keeps them, NCHW kept)
        interpreter.set_tensor(detail["index"], array.astype(detail["dtype"]))
    interpreter.invoke()
    outputs = sorted(interpreter.get_output_details(), key=lambda d: _order(d["name"]))
    arrays = {f"out{i}": interpreter.get_tensor(d["index"]).copy() for i, d in enumerate(outputs)}
    np.savez(request["outputs"], **arrays)
    return {"ok": True, "names": [d["name"] for d in outputs]}


def _versions() -> dict:
    import importlib.metadata as md

    return {"ok": True, "versions": {p: md.version(p) for p in ("tensorflow-cpu", "onnx2tf", "ai-edge-litert")}}


def main() -> None:
    reply = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            op = request["op"]
            result = {"convert": _convert, "run": _run, "versions": lambda _: _versions()}[op](request)
        except BaseException as exc:  # reported to kpx, which decides
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            result = {"ok": False, "error": f"{type(exc).__name__}: {last}"[:500]}
        reply.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
