"""The separate LiteRT environment (tensorflow cannot share kpx's): where it is, what it holds, how to make it.

``python -m export_tools.runtimes._litert_env --create-env [DIR]`` creates it (default ``$KPX_LITERT_ENV``, else
``~/.cache/kpx/litert-env``); without arguments it says whether it is there. Measured on 2026-12-06 (Python 3.11,
x86-64): 2 minutes, 2.4 GB. Imports neither tensorflow nor the runtime table.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: what ``--create-env`` installs (measured together on 2026-12-06: Python 3.11, x86-64)
PACKAGES = ("tensorflow-cpu==2.21.0", "tf-keras==2.21.0", "onnx2tf==1.28.8", "ai-edge-litert==2.3.0",
            "onnx==1.23.2", "onnxruntime==1.32.0", "onnxsim==0.8.1", "onnx-graphsurgeon==0.6.1", "sng4onnx==2.0.1",
            "psutil")  # fmt: skip
CREATE_COMMAND = "python -m export_tools.runtimes._litert_env --create-env"
#: packages the runner needs in the environment (directories in its site-packages)
NEEDED = ("onnx2tf", "ai_edge_litert", "tensorflow")


def env_dir() -> Path:
    """Where the LiteRT environment is: ``$KPX_LITERT_ENV``, else ``~/.cache/kpx/litert-env``."""
    return Path(os.environ.get("KPX_LITERT_ENV") or Path.home() / ".cache" / "kpx" / "litert-env")


def env_python(directory: Path | None = None) -> Path:
    """The environment's Python."""
    return (directory or env_dir()) / "bin" / "python"


def site_packages(directory: Path) -> list[Path]:
    return sorted((directory / "lib").glob("python3*/site-packages"))


def missing(directory: Path | None = None) -> list[str]:
    """What the environment lacks (``["python"]`` when there is none): checked on disk, nothing imported."""
    directory = directory or env_dir()
    if not env_python(directory).is_file():
        return ["python"]
    sites = site_packages(directory)
    return [p for p in NEEDED if not any((s / p).is_dir() for s in sites)]


def create_env(directory: Path | None = None) -> Path:
    """Creates the LiteRT environment at ``directory`` (default :func:`env_dir`) with :data:`PACKAGES`."""
    directory = Path(directory or env_dir())
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
    subprocess.run([str(env_python(directory)), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return directory


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    what = "make or check the separate LiteRT environment that kpx's litert runtime uses"
    p = argparse.ArgumentParser(prog="python -m export_tools.runtimes._litert_env", description=what)
    p.add_argument("--create-env", nargs="?", const="", metavar="DIR",
                   help=f"create it (default {env_dir()}) with {' '.join(PACKAGES)}")  # fmt: skip
    args = p.parse_args(argv)
    if args.create_env is not None:
        directory = create_env(Path(args.create_env) if args.create_env else None)
        print(f"LiteRT environment ready at {directory}")
        if args.create_env and directory != env_dir():
            print(f"use it with: export KPX_LITERT_ENV={directory}")
        return 0
    lacks = missing()
    if lacks:
        print(f"no usable LiteRT environment at {env_dir()} (missing: {', '.join(lacks)}); make it: {CREATE_COMMAND}")
        return 3
    print(f"LiteRT environment at {env_dir()}: available")
    return 0


if __name__ == "__main__":
    sys.exit(main())
