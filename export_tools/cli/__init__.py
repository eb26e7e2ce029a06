"""kpx exports keypoint heads (soft-argmax, heatmap and SimCC decoding, the top-down crop) to ONNX, checks the file
against PyTorch on the runtimes you deploy to, and says what a runtime will refuse.

Exit codes: 0 success, 1 parity or check failure, 2 usage or input error, 3 environment error (a
requested runtime or package is missing), 4 a kpx bug (please report it; ``-v`` prints the traceback),
130 interrupted. Results go to stdout (``--json`` for machines); logs and progress go to stderr.

One module per subcommand, its parser and its run side by side, listed in :data:`SUBCOMMANDS` (the order of
``kpx --help``; docs/cli.md is generated from it); shared options and helpers in :mod:`._common`. This module
only parses and maps errors to exit codes (:mod:`export_tools.errors`). Also ``python -m export_tools``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from export_tools.cli import bench, check, doctor, export, inspect, ops, quantize, repair, simplify
from export_tools.cli._common import Log, Progress
from export_tools.errors import (
    CHECK_FAILED,
    ENVIRONMENT,
    INTERNAL,
    USAGE,
    ExportError,
    LocalFunctionsUnsupportedError,
    ModelLoadError,
    OpsetConversionError,
    RunFailedError,
    RunnerUnavailableError,
    UsageError,
    VerificationError,
    one_line,
)

SUBCOMMANDS = (ops, export, check, inspect, simplify, repair, quantize, doctor, bench)

__all__ = ["SUBCOMMANDS", "Log", "Progress", "build_parser", "main"]


def _kpx_version() -> str:
    from custom_ops import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    # -v/-q work before or after the subcommand: the subcommands' copies default to SUPPRESS so that they
    # do not overwrite what the top level parsed
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="details, tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="errors only on stderr")
    parser = argparse.ArgumentParser(prog="kpx", description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("-v", "--verbose", action="count", default=0, help="details, tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", default=False, help="errors only on stderr")
    parser.add_argument("--version", action="version", version=f"kpx {_kpx_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in SUBCOMMANDS:
        name = command.__name__.rsplit(".", 1)[-1]
        summary = command.__doc__.strip().splitlines()[0]
        p = sub.add_parser(name, parents=[common], help=summary, description=command.__doc__.strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        command.configure(p)
        p.set_defaults(run=command.run)
    return parser


class _Stdout:
    """Standard output that outlives its reader: after ``kpx ... | head`` closes the pipe, further output is
    dropped and the command still ends with its own exit code (a failed check stays 1); a full disk on
    stdout is a :class:`UsageError`, not a kpx bug."""

    def __init__(self, stream) -> None:
        self.stream, self.closed_pipe = stream, False

    def write(self, text: str) -> int:
        return self._guard(self.stream.write, text)

    def flush(self) -> None:
        self._guard(self.stream.flush)

    def _guard(self, call, *args):
        if self.closed_pipe:
            return 0
        try:
            return call(*args)
        except BrokenPipeError:
            self.closed_pipe = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())  # so that Python's flush at exit writes nowhere, quietly
            return 0
        except OSError as exc:
            raise UsageError(f"cannot write to standard output: {exc.strerror or exc}") from None

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    stdout = sys.stdout
    sys.stdout = _Stdout(stdout)
    try:
        return _main(argv)
    finally:
        sys.stdout = stdout


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on usage errors, 0 for --help
        return int(exc.code or 0)
    log = Log(-1 if args.quiet else args.verbose)
    try:
        return args.run(args, log)
    except LocalFunctionsUnsupportedError as exc:  # the file, not the machine: re-export inline
        log.error(str(exc))
        return USAGE
    except (UsageError, ExportError, OpsetConversionError, ModelLoadError) as exc:
        log.error(one_line(exc) if not isinstance(exc, UsageError) else str(exc))
        return USAGE
    except RunnerUnavailableError as exc:
        log.error(str(exc))
        return ENVIRONMENT
    except (RunFailedError, VerificationError) as exc:
        log.error(str(exc))
        return CHECK_FAILED
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception as exc:  # anything unmapped is a bug in kpx, not the user's mistake
        if args.verbose:
            import traceback

            traceback.print_exc()
        log.error(f"internal error: {type(exc).__name__}: {one_line(exc)[:300]}. This is a kpx bug, please report "
                  "it with the command line and `kpx doctor` output" + ("" if args.verbose else
                  " (rerun with -v for the traceback)"))  # fmt: skip
        return INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
