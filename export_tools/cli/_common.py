"""What several subcommands share: logging and progress, option groups, and the steps they have in common."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from export_tools.errors import UsageError, root_cause


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


# --- option groups -----------------------------------------------------------------------------------------


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0; got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0; got {text}")
    return value


def fraction(text: str) -> float:
    value = non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1; got {text}")
    return value


def positive(text: str) -> float:
    value = non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--input``, ``--dynamic``, ``--weights``: a PyTorch MODEL and its example inputs."""
    p.add_argument("--input", action="append", default=[], metavar="NAME:SHAPE[:DTYPE]",
                   help="example input shape, e.g. heatmaps:1x17x64x48 (repeatable)")  # fmt: skip
    p.add_argument("--dynamic", action="append", default=[], metavar="NAME:DIMS",
                   help="dynamic dims: heatmaps:0,2,3 or heatmaps:0=B,2=H,3=W (repeatable)")  # fmt: skip
    p.add_argument("--weights", help="checkpoint: .pt/.pth (loaded with weights_only=True) or .safetensors")


def add_max_input(p: argparse.ArgumentParser) -> None:
    """``--max-input-mb``: the cap on the inputs kpx generates (checked before allocating)."""
    from export_tools.parity.inputs import MAX_INPUT_MB

    p.add_argument("--max-input-mb", type=positive, default=MAX_INPUT_MB, metavar="MIB",
                   help=f"refuse to generate more than this many MiB of inputs (default {MAX_INPUT_MB})")  # fmt: skip


def add_input_file_options(p: argparse.ArgumentParser) -> None:
    """``--inputs``, ``--dim``, ``--seed``: inputs for an ONNX file."""
    p.add_argument("--inputs", help=".npz with one array per graph input (default: seeded random inputs)")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE", help="size of a symbolic dim")
    p.add_argument("--seed", type=int, default=0)


def add_check_options(p: argparse.ArgumentParser) -> None:
    """``--providers``, ``--atol``, ``--rtol``, ``--report``: what a parity check runs and how it judges."""
    from export_tools.parity.keypoints import DEFAULT_PX_TOL
    from export_tools.runtimes import help_text

    p.add_argument("--providers", default="cpu", help=f"comma-separated runtimes to check ({help_text()})")
    p.add_argument("--atol", type=non_negative, help="absolute tolerance, every output (default: by dtype)")
    p.add_argument("--rtol", type=non_negative, help="relative tolerance, every output (default: by dtype)")
    p.add_argument("--scale-tol", type=non_negative, metavar="SHARE",
                   help="share of each output's largest |value| added to atol (default: 1e-5 float32, 5e-3 "
                        "float16, measured on real networks: docs/parity.md)")  # fmt: skip
    p.add_argument("--px-tol", type=non_negative, metavar="PX",
                   help=f"keypoint outputs: largest displacement, in network-input pixels where the file maps "
                        f"through boxes, else the keypoints' own (default {DEFAULT_PX_TOL})")  # fmt: skip
    p.add_argument("--allow-flips", type=fraction, metavar="FRACTION",
                   help="share of keypoints allowed to move further because their peak changed between two "
                        "near-equal peaks (ambiguous peaks; default 0)")  # fmt: skip
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw the verdict: keypoint displacements per runtime and the worst keypoint's heatmap "
                        "neighbourhood (needs matplotlib: pip install 'kpx[plot]')")  # fmt: skip
    p.add_argument("--report", help="write the JSON parity report here (refused if it exists, unless --force)")
    from export_tools.runtimes.isolation import DEFAULT_TIMEOUT
    from export_tools.runtimes.ort import OPTIMIZATION_LEVELS

    p.add_argument("--optimization-level", choices=OPTIMIZATION_LEVELS,
                   help="ONNX Runtime graph optimisation level (default: ORT's, all); after a crash the check "
                        "retries at the lower levels by itself")  # fmt: skip
    p.add_argument(
        "--timeout",
        type=positive,
        metavar="SECONDS",
        help=f"a runtime that takes longer to load or run is stopped and reported (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument("--memory-limit-mb", type=positive, metavar="MIB",
                   help="address-space limit of each runtime's worker; beyond it the runtime is reported as out of "
                        "memory (not with CUDA, which reserves address space)")  # fmt: skip
    p.add_argument(
        "--in-process", action="store_true", help="run the runtimes in this process (no worker: a crash ends kpx)"
    )


CHECK_FLAGS = ("--providers", "--atol", "--rtol", "--scale-tol", "--px-tol", "--allow-flips", "--plot", "--report",
               "--optimization-level", "--timeout", "--memory-limit-mb", "--in-process")  # fmt: skip
"""The options that configure a parity check (``add_check_options``)."""


def check_flags_given(args: argparse.Namespace) -> list[str]:
    """The check options set on the command line (``--providers cpu``, the default, does not count)."""
    given = [f for f in CHECK_FLAGS if getattr(args, f[2:].replace("-", "_")) not in (None, False)]
    return [f for f in given if not (f == "--providers" and args.providers == "cpu")]


def parity_options(args: argparse.Namespace, runtimes: list[str]) -> dict[str, Any]:
    """``check_parity`` keywords from the check options: isolation, limits and ORT's optimisation level; an option
    that would have no effect is a :class:`UsageError`."""
    if args.in_process and (args.timeout or args.memory_limit_mb):
        raise UsageError("--timeout and --memory-limit-mb apply to runtimes in worker processes; drop them or "
                         "--in-process")  # fmt: skip
    ort = [kind for kind in runtimes if kind in ("cpu", "cuda")]
    if args.optimization_level and not ort:
        raise UsageError(f"--optimization-level applies to ONNX Runtime (--providers cpu or cuda); the check runs "
                         f"{', '.join(runtimes)}")  # fmt: skip
    level = {"optimization_level": args.optimization_level} if args.optimization_level else {}
    return {"isolate": not args.in_process, "timeout": args.timeout, "memory_limit_mb": args.memory_limit_mb,
            "runtime_options": dict.fromkeys(ort, level) if level else None, "px_tol": args.px_tol,
            "allow_flips": args.allow_flips or 0.0, "scale_tol": args.scale_tol,
            "analyse_keypoints": bool(args.plot)}  # fmt: skip


# --- steps ------------------------------------------------------------------------------------------------


def parse_runtimes(text: str, flag: str = "--providers", *, available: bool = True) -> list[str]:
    """A comma-separated list of runtime names from the runtime table; with ``available``, each is checked to
    be usable here (a missing one is exit 3 with its install command, before any work)."""
    from export_tools.runtimes import check_available, runtime_names

    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    bad = [p for p in names if p not in runtime_names()]
    if bad or not names:
        raise UsageError(f"{flag} {text!r}: use a comma-separated list of {', '.join(runtime_names())}")
    for name in names if available else ():
        check_available(name)
    return list(dict.fromkeys(names))


def model_file(spec: str | None) -> str | None:
    """The file a ``MODEL`` spec reads (``path/to/file.py:factory``), if any."""
    if spec and ":" in spec:
        target = spec.rpartition(":")[0]
        if target.endswith(".py") or "/" in target or "\\" in target:
            return target
    return None


def check_report_path(args: argparse.Namespace, inputs: list[str | None]) -> None:
    """``--report`` and ``--plot`` follow the rules of every kpx output (:mod:`export_tools.files`); ``--plot``
    needs matplotlib (checked before any work)."""
    from export_tools.files import check_output_path

    if args.report:
        check_output_path(args.report, overwrite=args.force, inputs=inputs, flag="--report")
    if args.plot:
        from export_tools.parity.plot import check_plotting

        check_plotting()
        if args.report and args.plot == args.report:
            raise UsageError("--plot and --report name the same file; give each its own")
        check_output_path(args.plot, overwrite=args.force, inputs=inputs, flag="--plot")


def write_report(report: Any, args: argparse.Namespace, log: Log) -> None:
    """``--report`` (JSON) and ``--plot`` (PNG), written atomically."""
    from export_tools.files import describe_os_error

    if args.report:
        try:
            report.write_json(args.report, overwrite=args.force)
        except OSError as exc:
            raise UsageError(describe_os_error(exc, args.report, "the report")) from None
        log.info(f"report written to {args.report}")
    if args.plot:
        from export_tools.parity.plot import plot_report

        try:
            drawn = plot_report(report, args.plot, overwrite=args.force)
        except OSError as exc:
            raise UsageError(describe_os_error(exc, args.plot, "the plot")) from None
        log.info(f"plot written to {args.plot} ({drawn})")


def tolerances(args: argparse.Namespace, outputs: list[str]) -> dict[str, tuple[float | None, float | None]] | None:
    """``--rtol``/``--atol`` for every output; the one not given stays ``None``: the harness's default for that
    output (by its dtype, or a one-op model's registry entry). ``None``: defaults."""
    if args.rtol is None and args.atol is None:
        return None
    return dict.fromkeys(outputs, (args.rtol, args.atol))


def read_onnx(path: str):
    """The ONNX file at ``path`` (loaded and checked), or a :class:`UsageError` naming the problem."""
    from export_tools.inspection import load_onnx

    try:
        return load_onnx(path)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def write_onnx(proto, out, args: argparse.Namespace) -> None:
    """Writes the command's ONNX output (``-o``) atomically, checked on disk; ``--force`` replaces a file."""
    from export_tools.files import describe_os_error, write_model

    try:
        write_model(proto, out, overwrite=args.force)
    except OSError as exc:
        raise UsageError(describe_os_error(exc, out, "the model")) from None


def add_file_options(p: argparse.ArgumentParser, output: str) -> None:
    """A command that reads an ONNX file and writes another (``kpx repair``, ``kpx simplify``): ``MODEL.onnx``,
    ``-o``, the inputs its check runs on, ``--force``."""
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("-o", "--output", required=True, help=f"the {output} .onnx file to write")
    add_input_file_options(p)
    add_max_input(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing output")


def output_path(args: argparse.Namespace, reads: list | None = None):
    """``-o``, checked against the rules of every kpx output (not one of the command's inputs, ``reads`` included)."""
    from export_tools.files import check_output_path

    inputs = [args.model, args.inputs, *(reads or [])]
    return check_output_path(args.output, overwrite=args.force, inputs=inputs, flag="-o")


def file_inputs(args: argparse.Namespace, model: Any) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Named input sets for an ONNX file, each with facts for the report: ``--inputs x.npz``; or seeded random
    inputs sized by ``--dim``; or, for the symbolic dims ``--dim`` leaves out, the sizes kpx recorded at export
    (``kpx.example_shapes``), checked once more with each of those dims one larger (as ``export --check``)."""
    from export_tools.parity.inputs import input_sets, load_npz

    if not isinstance(model, bytes):  # an onnx.ModelProto
        model = model.SerializeToString()
    if args.inputs:
        try:
            return {"inputs": (load_npz(args.inputs, model), {"file": args.inputs})}
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise UsageError(f"--inputs: {exc}") from None
    dims = {}
    for item in args.dim:
        name, eq, size = item.partition("=")
        if not eq or not size.isdigit():
            raise UsageError(f"--dim {item!r} is not NAME=SIZE; e.g. --dim B=4")
        if name in dims:
            raise UsageError(f"--dim {name!r} is given twice; give each dim once")
        dims[name] = int(size)
    try:
        return input_sets(model, dims=dims, seed=args.seed, max_mb=args.max_input_mb)
    except ValueError as exc:
        raise UsageError(f"{exc} (CLI: --dim NAME=SIZE, or --inputs file.npz)") from None
    except MemoryError:
        raise UsageError("the inputs do not fit in memory; give smaller --dim sizes") from None


def load_pytorch(args: argparse.Namespace, log: Log):
    """The MODEL spec loaded, with its example inputs: ``(loaded, example, dynamic_shapes, input_names)``."""
    from export_tools.loading import load_model, make_inputs

    loaded = load_model(args.model, args.weights)
    if loaded.note:
        log.info(f"note: {loaded.note}")
    example, dynamic, names = make_inputs(loaded, args.input, args.dynamic, max_mb=args.max_input_mb)
    forward_check(loaded.module, example, names)
    return loaded, example, dynamic, names


def forward_check(module, example: tuple, names: list[str]) -> None:
    """Runs the model once on the example inputs: it must accept them and return tensors."""
    import torch

    from export_tools.parity import flatten_outputs

    try:
        with torch.no_grad():
            outputs = module(*example)
    except Exception as exc:
        shapes = ", ".join(f"{n}:{'x'.join(map(str, t.shape))}" for n, t in zip(names, example))
        raise UsageError(f"the model fails on inputs {shapes} ({type(exc).__name__}: {root_cause(exc)}); pass "
                         "--input with shapes the model accepts") from None  # fmt: skip
    try:
        flat = flatten_outputs(outputs)
    except TypeError:
        flat = []
    if not flat:
        raise UsageError(f"the model returns {type(outputs).__name__} without tensors; it must return a tensor, or a "
                         "tuple or dict of tensors")  # fmt: skip


def export_model(loaded, example: tuple, dynamic, input_names: list[str], log: Log, **options: Any):
    """``to_onnx`` with the CLI's errors: a model that cannot be exported is a usage error (exit 2)."""
    from export_tools.errors import ExportError
    from export_tools.exporter import to_onnx

    spec = getattr(loaded.module, "spec", None)  # builtin ops: outputs named as in the registry
    output_names = options.pop("output_names", None)
    if output_names is None and spec is not None:
        output_names = [o.name for o in spec.outputs]
    try:
        return to_onnx(loaded.module, example, dynamic_shapes=dynamic, input_names=input_names,
                       output_names=output_names, **options)  # fmt: skip
    except ExportError as exc:
        log.debug(str(exc))
        raise UsageError(f"export failed: {root_cause(exc)}; change the model or the --dynamic dims") from exc
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
