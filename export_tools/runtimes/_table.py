"""The README's runtime table, from the runtime table itself: ``python -m export_tools.runtimes._table``.

One row per registered runtime: its name (``--providers``), what it runs, what it is built from (the ONNX file,
or the PyTorch model for ``source = "pytorch"`` runners) and how to install it (the module's ``INSTALL_HINT``).
"""

from __future__ import annotations

import sys

#: install lines of runtimes whose module names none (kept here, not in files other engineers own)
_INSTALL = {"openvino": 'pip install "kpx[openvino]"', "ort-mobile": 'pip install "kpx[cpu,mobile]"',
            "cuda": 'pip install "kpx[gpu]" (never with kpx[cpu])'}  # fmt: skip


def markdown_table() -> str:
    """The runtime table as markdown, in registration order."""
    from export_tools.runtimes import RUNNERS

    lines = ["| name | runtime | runs | install |", "|---|---|---|---|"]
    for kind, cls in RUNNERS.items():
        module = sys.modules[cls.__module__]
        source = "the PyTorch model" if cls.source == "pytorch" else "the ONNX file"
        hint = _INSTALL.get(kind) or getattr(module, "INSTALL_HINT", "")
        if kind == "litert":
            from export_tools.runtimes._litert_env import CREATE_COMMAND

            hint = CREATE_COMMAND
        lines.append(f"| `{kind}` | {cls.summary} | {source} | {f'`{hint}`' if hint else 'with kpx'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
