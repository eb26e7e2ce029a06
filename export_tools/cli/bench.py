"""latency: PyTorch eager vs the runtimes

MODEL is a PyTorch model spec (exported here, then timed in PyTorch and on each runtime) or an .onnx
file. Median, 10th and 90th percentile per runtime; compare rows of one run (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import time

from export_tools.cli._common import (
    Log,
    add_input_file_options,
    add_max_input,
    add_model_options,
    export_model,
    file_inputs,
    load_pytorch,
    non_negative,
    parse_runtimes,
    read_onnx,
)
from export_tools.errors import OK, UsageError


def configure(p: argparse.ArgumentParser) -> None:
    from export_tools.exporter import EMIT_MODES
    from export_tools.runtimes import runtime_names

    p.add_argument("model", metavar="MODEL|MODEL.onnx")
    add_model_options(p)
    p.add_argument("--emit", choices=EMIT_MODES, default=EMIT_MODES[0])
    add_input_file_options(p)
    add_max_input(p)
    p.add_argument("--providers", help=f"comma-separated runtimes of {', '.join(runtime_names())} "
                   "(default: cpu, plus cuda when it works)")  # fmt: skip
    p.add_argument("--seconds", type=non_negative, default=3.0, help="time budget for all runtimes (default 3)")
    p.add_argument("--in-process", action="store_true",
                   help="time the runtimes here (default: each in its worker, where a crash is a row)")  # fmt: skip
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, log: Log) -> int:
    from export_tools.bench import bench, format_timings

    module = None
    if args.model.endswith(".onnx"):
        if args.input or args.dynamic or args.weights:
            raise UsageError("--input/--dynamic/--weights apply to a MODEL spec; for an .onnx file use --dim NAME=SIZE")
        model = read_onnx(args.model).SerializeToString()
        feeds, _ = file_inputs(args, model)["inputs"]
    else:
        if args.inputs or args.dim:
            raise UsageError("--inputs/--dim apply to an .onnx file; for a MODEL spec use --input NAME:SHAPE")
        loaded, example, dynamic, input_names = load_pytorch(args, log)
        model = export_model(loaded, example, dynamic, input_names, log, emit=args.emit).SerializeToString()
        module = loaded.module
        feeds = [t.numpy() for t in example]
    if args.providers:
        runtimes = parse_runtimes(args.providers)
    else:
        from export_tools.doctor import probe_cuda_ep

        runtimes = ["cpu"] + (["cuda"] if probe_cuda_ep() == "works" else [])
        parse_runtimes(",".join(runtimes))
    progress = log.progress("bench", 100)
    start = time.perf_counter()
    budget = max(args.seconds, 1e-3)

    def tick() -> None:
        progress.set(int(100 * (time.perf_counter() - start) / budget), "timing")

    rows = bench(model, feeds, module=module, runtimes=runtimes, seconds=args.seconds, tick=tick,
                 isolate=not args.in_process)  # fmt: skip
    progress.close()
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        shapes = ", ".join("x".join(map(str, f.shape)) for f in feeds)
        print(f"inputs: {shapes}")
        print(format_timings(rows))
    return OK
