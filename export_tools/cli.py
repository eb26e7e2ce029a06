"""The ``kpx`` command line (also ``python -m export_tools``).

Exit codes: 0 success, 1 parity or check failure, 2 usage or input error, 3 environment error (a
requested runtime or package is missing). Results go to stdout (``--json`` for machines); logs and
progress go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export_tools.loading import RuntimeMissingError, UsageError

OK, CHECK_FAILED, USAGE, ENVIRONMENT = 0, 1, 2, 3


class Log:
    """Messages and progress on stderr; ``-q`` keeps errors only, ``-v`` adds details and tracebacks."""

    def __init__(self, verbosity: int = 0) -> None:
        self.verbosity = verbosity

    def info(self, message: str) -> None:
        if self.verbosity >= 0:
            print(message, file=sys.stderr)

    def debug(self, message: str) -> None:
        if self.verbosity > 0:
            print(message, file=sys.stderr)

    def error(self, message: str) -> None:
        print(f"kpx: error: {message}", file=sys.stderr)

    def progress(self, label: str, total: int) -> Progress:
        return Progress(label, total, enabled=self.verbosity >= 0 and sys.stderr.isatty())


class Progress:
    """A one-line progress bar on a terminal, drawn only once a run has taken over a second."""

    def __init__(self, label: str, total: int, *, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, max(total, 1), enabled
        self.done, self.start, self.drawn = 0, time.perf_counter(), False

    def step(self, what: str = "") -> None:
        self.set(self.done + 1, what)

    def set(self, done: int, what: str = "") -> None:
        self.done = min(done, self.total)
        if self.enabled and time.perf_counter() - self.start > 1.0:
            filled = int(24 * self.done / self.total)
            bar = "#" * filled + "." * (24 - filled)
            print(f"\r{self.label} [{bar}] {self.done}/{self.total} {what[:30]:<30}", end="", file=sys.stderr)
            self.drawn = True

    def close(self) -> None:
        if self.drawn:
            print("\r" + " " * 80 + "\r", end="", file=sys.stderr)


# --- subcommands -------------------------------------------------------------------------------------------


def cmd_ops(args: argparse.Namespace, log: Log) -> int:
    from export_tools.opsdoc import matching_ops, op_record, ops_text

    specs = matching_ops(args.pattern)
    if not specs:
        log.error(f"no op matches {args.pattern!r}; run `kpx ops` for the list")
        return USAGE
    print(json.dumps([op_record(s) for s in specs], indent=2) if args.json else ops_text(specs))
    return OK


def _root_cause(exc: BaseException) -> str:
    """The innermost cause of an exception, on one line (torch's exporter wraps the useful message)."""
    from export_tools.loading import one_line

    while exc.__cause__ is not None:
        exc = exc.__cause__
    return " ".join(one_line(exc, every=True).split())[:500]


def _check_output_path(path: Path, force: bool) -> None:
    if path.is_dir():
        raise UsageError(f"{str(path)!r} is a directory; give a file name such as {str(path / 'model.onnx')!r}")
    if path.exists() and not force:
        raise UsageError(f"{str(path)!r} exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise UsageError(f"output directory {str(path.parent)!r} does not exist; create it first")
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"output directory {str(path.parent)!r} is not writable; choose another -o path")


PARITY_RUNTIMES = ("cpu", "cuda", "openvino", "ort-mobile")
"""``--providers`` of check/export: ORT CPU and CUDA, OpenVINO CPU (inline files), the ``.ort`` format."""


def _providers(text: str, allowed: tuple[str, ...] = PARITY_RUNTIMES) -> list[str]:
    providers = [p.strip().lower() for p in text.split(",") if p.strip()]
    bad = [p for p in providers if p not in allowed]
    if bad or not providers:
        raise UsageError(f"--providers {text!r}: use a comma-separated list of {', '.join(allowed)}")
    return providers


def _check_runtimes(providers: list[str]) -> None:
    """Fails early (before any work) when a requested runtime is missing."""
    from export_tools.parity.runners import require_runtime

    for p in providers:
        require_runtime(p)


def _check_report_path(path: str | None) -> None:
    if path and not Path(path).resolve().parent.is_dir():
        raise UsageError(f"--report {path!r}: directory {str(Path(path).parent)!r} does not exist; create it first")


def _forward_check(module, example: tuple, names: list[str]) -> None:
    """Runs the model once on the example inputs: it must accept them and return tensors."""
    import torch

    try:
        with torch.no_grad():
            outputs = module(*example)
    except Exception as exc:
        shapes = ", ".join(f"{n}:{'x'.join(map(str, t.shape))}" for n, t in zip(names, example))
        raise UsageError(f"the model fails on inputs {shapes} ({type(exc).__name__}: {_root_cause(exc)}); pass "
                         "--input with shapes the model accepts") from None  # fmt: skip
    from export_tools.parity.runners import flatten_outputs

    if isinstance(outputs, dict):
        raise UsageError("the model returns a dict; return a tensor or a tuple of tensors (wrap it: "
                         "`return out['a'], out['b']`) and name them in that order")  # fmt: skip
    try:
        flat = flatten_outputs(outputs)
    except TypeError:
        flat = []
    if not flat:
        raise UsageError(f"the model returns {type(outputs).__name__}; it must return a tensor or a tuple of tensors")


def _tolerances(args: argparse.Namespace, outputs: list[str]) -> dict[str, tuple[float, float]] | None:
    if args.rtol is None and args.atol is None:
        return None  # defaults by output dtype
    from export_tools.parity.compare import DEFAULT_TOLERANCES

    rtol, atol = DEFAULT_TOLERANCES["float32"]
    rtol = args.rtol if args.rtol is not None else rtol
    atol = args.atol if args.atol is not None else atol
    return dict.fromkeys(outputs, (rtol, atol))


def _export(loaded, example: tuple, dynamic, input_names: list[str], log: Log, **options: Any):
    """``to_onnx`` with the CLI's errors: a model that cannot be exported is a usage error (exit 2)."""
    from export_tools.exporter import ExportError, to_onnx

    spec = getattr(loaded.module, "spec", None)  # builtin ops: outputs named as in the registry
    output_names = [o.name for o in spec.outputs] if spec is not None else None
    try:
        return to_onnx(loaded.module, example, dynamic_shapes=dynamic, input_names=input_names,
                       output_names=output_names, **options)  # fmt: skip
    except ExportError as exc:
        log.debug(str(exc))
        raise UsageError(f"export failed: {_root_cause(exc)}; change the model or the --dynamic dims") from exc
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def cmd_export(args: argparse.Namespace, log: Log) -> int:
    import torch

    from export_tools.exporter import save_atomic
    from export_tools.loading import load_model, make_inputs

    out = Path(args.output)
    _check_output_path(out, args.force)
    providers = _providers(args.providers)
    if args.check:
        _check_runtimes(providers)
        _check_report_path(args.report)
    progress = log.progress("export", 4 + bool(args.check))
    loaded = load_model(args.model, args.weights)
    progress.step("model loaded")
    example, dynamic, input_names = make_inputs(loaded, args.input, args.dynamic)
    dtype = {"fp32": None, "fp16": torch.float16}[args.dtype]
    _forward_check(loaded.module, example, input_names)
    progress.step("forward ok")
    log.debug(f"exporting {loaded.source} with opset {args.opset}, emit={args.emit}, dynamic={dynamic}")
    proto = _export(loaded, example, dynamic, input_names, log, opset=args.opset, emit=args.emit, dtype=dtype)
    progress.step("exported")
    try:
        save_atomic(proto, out, overwrite=args.force)
    except OSError as exc:
        raise UsageError(f"cannot write {str(out)!r}: {exc}") from exc
    progress.step("written")
    progress.close()
    nodes = sum(1 for n in proto.graph.node if n.domain == "kpx")
    print(f"wrote {out} ({out.stat().st_size} bytes; opset {args.opset}, emit {args.emit}, dtype {args.dtype}, "
          f"{nodes} kpx node(s))")  # fmt: skip
    if not args.check:
        return OK
    from export_tools.parity import check_parity

    inputs = tuple(t.to(dtype) if dtype is not None and t.is_floating_point() else t for t in example)
    names = [o.name for o in proto.graph.output]
    tolerances = _tolerances(args, names)
    spec = getattr(loaded.module, "spec", None)
    if tolerances is None and spec is not None:  # builtin ops: the registry's tolerances for this dtype
        tolerances = dict.fromkeys(names, spec.tolerances[dtype or torch.float32])
    sets = {"example": inputs, **_resized_inputs(loaded.module, proto, inputs, log)}
    # an fp16 export is judged against the float32 model (PyTorch runs on the fp16-rounded inputs, upcast)
    from export_tools.parity.runners import LocalFunctionsUnsupportedError, ModelLoadError

    try:
        report = check_parity(loaded.module, sets, runtimes=providers, model=proto.SerializeToString(),
                              tolerances=tolerances, reference_dtype=torch.float32 if dtype else None)  # fmt: skip
    except (LocalFunctionsUnsupportedError, ModelLoadError) as exc:
        raise UsageError(f"{out} was written, but cannot be checked there: {exc}") from None
    print(report.table())
    if args.report:
        report.write_json(args.report)
    return OK if report.passed else CHECK_FAILED


def _resized_inputs(module, proto, example, log: Log) -> dict[str, tuple]:
    """A second input set with every symbolic dim one larger than in the export example (so that a size
    baked into the graph shows), when the model has symbolic dims and PyTorch accepts that size."""
    import torch

    from export_tools.parity.inputs import random_inputs

    dims = {}
    for value, tensor in zip(proto.graph.input, example):
        for i, d in enumerate(value.type.tensor_type.shape.dim):
            if d.dim_param:
                dims[d.dim_param] = int(tensor.shape[i]) + 1
    if not dims:
        return {}
    feeds = random_inputs(proto.SerializeToString(), dims=dims, seed=1)
    try:
        with torch.no_grad():
            module(*[torch.from_numpy(f).float() if f.dtype.kind == "f" else torch.from_numpy(f) for f in feeds])
    except Exception as exc:
        log.info(f"note: PyTorch rejects the example sizes + 1 ({type(exc).__name__}); checked at the example only")
        return {}
    return {"resized " + ",".join(f"{k}={v}" for k, v in dims.items()): tuple(torch.from_numpy(f) for f in feeds)}


def _model_inputs(args: argparse.Namespace, model: bytes) -> tuple[Any, dict[str, Any]]:
    from export_tools.parity.inputs import load_npz, random_inputs

    if args.inputs:
        try:
            return load_npz(args.inputs, model), {"file": args.inputs}
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise UsageError(str(exc)) from None
    dims = {}
    for item in args.dim:
        name, eq, size = item.partition("=")
        if not eq or not size.isdigit():
            raise UsageError(f"--dim {item!r} is not NAME=SIZE; e.g. --dim B=4")
        dims[name] = int(size)
    try:
        return random_inputs(model, dims=dims, seed=args.seed), {"seed": args.seed, "dims": dims}
    except ValueError as exc:
        raise UsageError(f"{exc} (CLI: --dim NAME=SIZE, or --inputs file.npz)") from None


def _read_model(path: str) -> bytes:
    from export_tools.inspection import load_onnx

    try:
        return load_onnx(path).SerializeToString()
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def cmd_check(args: argparse.Namespace, log: Log) -> int:
    import onnx

    from export_tools.parity import check_parity
    from export_tools.parity.runners import LocalFunctionsUnsupportedError, ModelLoadError, RunnerUnavailableError

    model = _read_model(args.model)
    providers = _providers(args.providers)
    _check_runtimes(providers)
    _check_report_path(args.report)
    feeds, meta = _model_inputs(args, model)
    module = None
    if args.reference:
        from export_tools.loading import load_model

        module = load_model(args.reference, args.weights).module
    names = [o.name for o in onnx.load_from_string(model).graph.output]
    against = f"PyTorch {args.reference}" if module is not None else "a float64 onnx.reference evaluation"
    log.info(f"checking {args.model} on {', '.join(providers)} against {against}")
    try:
        report = check_parity(module, {"inputs": feeds}, runtimes=providers, model=model,
                              tolerances=_tolerances(args, names), input_meta={"inputs": meta})  # fmt: skip
    except (LocalFunctionsUnsupportedError, ModelLoadError) as exc:  # the file, not the machine
        raise UsageError(str(exc)) from None
    except RunnerUnavailableError:
        raise
    except (TypeError, RuntimeError, ValueError) as exc:
        raise UsageError(f"the inputs do not fit the model ({_root_cause(exc)}); check --inputs/--dim "
                         "against `kpx inspect`") from None  # fmt: skip
    print(report.table())
    if args.report:
        report.write_json(args.report)
        log.info(f"report written to {args.report}")
    return OK if report.passed else CHECK_FAILED


def _profile(text: str) -> tuple[str, tuple[int, int, int]]:
    name, eq, sizes = text.partition("=")
    parts = sizes.split(":")
    if not eq or len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise UsageError(f"--profile {text!r} is not NAME=MIN:OPT:MAX; e.g. --profile B=1:8:32")
    lo, opt, hi = map(int, parts)
    if not 0 < lo <= opt <= hi:
        raise UsageError(f"--profile {text!r}: need 0 < MIN <= OPT <= MAX")
    return name, (lo, opt, hi)


def cmd_inspect(args: argparse.Namespace, log: Log) -> int:
    from export_tools.inspection import format_inspection, inspect_model, load_onnx

    try:
        model = load_onnx(args.model)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    info = inspect_model(model)
    if args.profile and not (args.target or "").startswith("tensorrt"):
        raise UsageError("--profile only applies with --target tensorrt-8.6 or tensorrt-10")
    if not args.target:
        print(json.dumps(info, indent=2) if args.json else format_inspection(info))
        return OK
    from export_tools.targets import check_target as check
    from export_tools.targets import trtexec_commands

    report = check(model, args.target)
    result = {"model": args.model, **report.as_dict()}
    if args.target.startswith("tensorrt") and report.accepted:
        try:
            result["trtexec"] = trtexec_commands(model, args.model, args.target, dict(map(_profile, args.profile)))
        except ValueError as exc:
            if str(exc).startswith("--profile"):
                raise UsageError(str(exc)) from None
            log.info(f"no trtexec lines: {exc}")  # the verdict stands; only the command lines need the sizes
    elif args.target.startswith("tensorrt"):
        log.info("no trtexec lines: apply the fixes above first")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(report.text())
        for line in result.get("trtexec", []):
            print(line)
    return OK if report.accepted else CHECK_FAILED


def cmd_doctor(args: argparse.Namespace, log: Log) -> int:
    from export_tools.doctor import diagnose, format_diagnosis

    diagnosis = diagnose()
    print(json.dumps(diagnosis.as_dict(), indent=2) if args.json else format_diagnosis(diagnosis))
    return OK if diagnosis.healthy else ENVIRONMENT


def cmd_bench(args: argparse.Namespace, log: Log) -> int:
    from export_tools.bench import bench, format_timings

    module = None
    if args.model.endswith(".onnx"):
        model = _read_model(args.model)
        if args.input or args.dynamic:
            raise UsageError("--input/--dynamic apply to a MODEL spec; for an .onnx file use --dim NAME=SIZE")
        feeds, _ = _model_inputs(args, model)
    else:
        from export_tools.loading import load_model, make_inputs

        loaded = load_model(args.model, args.weights)
        example, dynamic, input_names = make_inputs(loaded, args.input, args.dynamic)
        _forward_check(loaded.module, example, input_names)
        model = _export(loaded, example, dynamic, input_names, log, emit=args.emit).SerializeToString()
        module = loaded.module
        feeds = [t.numpy() for t in example]
    providers = ["cpu"]
    if args.providers:
        providers = _providers(args.providers, ("cpu", "cuda"))
    else:
        from export_tools.doctor import probe_cuda_ep

        if probe_cuda_ep() == "works":
            providers.append("cuda")
    progress = log.progress("bench", 100)
    start = time.perf_counter()
    budget = max(args.seconds, 1e-3)

    def tick() -> None:
        progress.set(int(100 * (time.perf_counter() - start) / budget), "timing")

    rows = bench(model, feeds, module=module, providers=providers, seconds=args.seconds, tick=tick)
    progress.close()
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        shapes = ", ".join("x".join(map(str, f.shape)) for f in feeds)
        print(f"inputs: {shapes}")
        print(format_timings(rows))
    return OK


# --- parser ------------------------------------------------------------------------------------------------


def _kpx_version() -> str:
    from custom_ops._version import __version__

    return __version__


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    # -v/-q work before or after the subcommand: the subcommands' copies default to SUPPRESS so that they
    # do not overwrite what the top level parsed
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="details, tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="errors only on stderr")
    parser = argparse.ArgumentParser(prog="kpx", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="details, tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", default=False, help="errors only on stderr")
    parser.add_argument("--version", action="version", version=f"kpx {_kpx_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("ops", parents=[common], help="list the registered ops")
    p.add_argument("pattern", nargs="?", help="glob or substring of the op name or ONNX op type")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_ops)

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--input", action="append", default=[], metavar="NAME:SHAPE[:DTYPE]",
                       help="example input shape, e.g. heatmaps:1x17x64x48 (repeatable)")  # fmt: skip
        p.add_argument("--dynamic", action="append", default=[], metavar="NAME:DIMS",
                       help="dynamic dims: heatmaps:0,2,3 or heatmaps:0=B,2=H,3=W (repeatable)")  # fmt: skip
        p.add_argument("--weights", help="checkpoint: .pt/.pth (loaded with weights_only=True) or .safetensors")

    def check_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--providers", default="cpu", help="runtimes to check: cpu, cuda (ORT), openvino, ort-mobile")
        p.add_argument("--atol", type=_non_negative, help="absolute tolerance for every output (default: by dtype)")
        p.add_argument("--rtol", type=_non_negative, help="relative tolerance for every output (default: by dtype)")
        p.add_argument("--report", help="write the JSON parity report here")

    p = sub.add_parser("export", parents=[common], help="export a model to ONNX")
    p.add_argument("model", metavar="MODEL", help="package.module:factory, path/to/file.py:factory or builtin:<op>")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    model_options(p)
    p.add_argument("--opset", type=int, default=18, help="default-domain opset (default 18)")
    p.add_argument("--emit", choices=("function", "inline"), default="function",
                   help="function: kpx nodes with bodies; inline: standard ONNX only")  # fmt: skip
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--check", action="store_true", help="run the parity harness right after the export")
    check_options(p)
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("check", parents=[common], help="parity of an ONNX file against PyTorch or float64")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--reference", metavar="MODEL", help="PyTorch model spec to compare with (default: float64 "
                   "evaluation of the ONNX graph with onnx.reference)")  # fmt: skip
    p.add_argument("--weights", help="checkpoint for --reference")
    p.add_argument("--inputs", help=".npz with one array per graph input (default: seeded random inputs)")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE", help="size of a symbolic dim")
    p.add_argument("--seed", type=int, default=0)
    check_options(p)
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("inspect", parents=[common], help="what an ONNX file holds; --target: will it load there")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--target", choices=("tensorrt-8.6", "tensorrt-10", "openvino", "ort-mobile", "generic"),
                   help="check the file against what this runtime accepts (exit 1 if refused)")  # fmt: skip
    p.add_argument("--profile", action="append", default=[], metavar="NAME=MIN:OPT:MAX",
                   help="TensorRT shape profile of a symbolic dim (default: from the export sizes)")  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_inspect)

    p = sub.add_parser("doctor", parents=[common], help="versions, providers and known bad states")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_doctor)

    p = sub.add_parser("bench", parents=[common], help="latency: PyTorch eager vs ONNX Runtime")
    p.add_argument("model", metavar="MODEL|MODEL.onnx")
    model_options(p)
    p.add_argument("--emit", choices=("function", "inline"), default="function")
    p.add_argument("--inputs", help=".npz with one array per graph input (for an .onnx file)")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE", help="size of a symbolic dim")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--providers", help="cpu, cuda or cpu,cuda (default: cpu, plus cuda when it works)")
    p.add_argument("--seconds", type=_non_negative, default=3.0, help="time budget for all runtimes (default 3)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on usage errors, 0 for --help
        return int(exc.code or 0)
    log = Log(-1 if args.quiet else args.verbose)
    from export_tools.parity.runners import RunnerUnavailableError

    try:
        return args.run(args, log)
    except UsageError as exc:
        log.error(str(exc))
        return USAGE
    except (RuntimeMissingError, RunnerUnavailableError) as exc:
        log.error(str(exc))
        return ENVIRONMENT
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception as exc:  # a bug in kpx or an unforeseen input: one line, the traceback with -v
        if args.verbose:
            import traceback

            traceback.print_exc()
        log.error(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''} "
                  "(rerun with -v for the traceback)")  # fmt: skip
        return USAGE


if __name__ == "__main__":
    raise SystemExit(main())
