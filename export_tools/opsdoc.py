"""Documentation generated from the code: the ops and tolerance tables of the README and docs/, and ``kpx ops``.

A generated block sits between ``<!-- NAME:begin ... -->`` and ``<!-- NAME:end -->`` in any Markdown file of the
repository. ``python -m export_tools.opsdoc --write`` rewrites every such block; ``python -m export_tools.opsdoc``
prints them; ``tests/test_registry.py`` fails while a file holds a stale copy."""

from __future__ import annotations

from typing import Any

from custom_ops import list_ops
from export_tools.cli.ops import op_record


def ops_table() -> str:
    """A Markdown table of every registered op."""
    lines = [
        "| op (functional, torch `kpx::`) | nn.Module, ONNX node | inputs -> outputs | attributes | computes |",
        "|---|---|---|---|---|",
    ]
    for r in map(op_record, list_ops()):
        ins = ", ".join(p["name"] for p in r["inputs"])
        outs = ", ".join(p["name"] for p in r["outputs"])
        attrs = ", ".join(f"`{a['name']}`" for a in r["attributes"]) or "-"
        lines.append(
            f"| `{r['name']}` | `{r['onnx_op_type']}` ({r['domain']} v{r['domain_version']}) | {ins} -> {outs} "
            f"| {attrs} | {r['description']} |"
        )
    return "\n".join(lines)


def tolerances_table() -> str:
    """The default tolerances of the parity harness, from the code (``compare`` and ``localize``)."""
    from export_tools.parity.compare import DEFAULT_TOLERANCES, SCALE_TOLERANCES
    from export_tools.parity.localize import LOCALIZE_TOLERANCES

    lines = [
        "| dtype under test | an output vs the reference (rtol, atol, scale_tol) | a value vs PyTorch or float64 "
        "(localisation: rtol, atol) |",
        "|---|---|---|",
    ]
    for dtype in sorted(set(DEFAULT_TOLERANCES) | set(LOCALIZE_TOLERANCES)):
        out, node = DEFAULT_TOLERANCES.get(dtype), LOCALIZE_TOLERANCES.get(dtype)
        verdict = f"{out[0]:g}, {out[1]:g}, {SCALE_TOLERANCES.get(dtype, 0.0):g}" if out else "-"
        lines.append(f"| {dtype} | {verdict} | {f'{node[0]:g}, {node[1]:g}' if node else '-'} |")
    lines.append("| integers, booleans | exact | exact |")
    return "\n".join(lines)


def op_tolerances_table() -> str:
    """Each op's registry tolerances ``{dtype: (rtol, atol)}``: what its parity against PyTorch is held to."""
    dtypes = sorted({d for s in list_ops() for d in s.tolerances}, key=str)
    names = [str(d).removeprefix("torch.") for d in dtypes]
    lines = ["| op | " + " | ".join(f"{n} (rtol, atol)" for n in names) + " |", "|---|" + "---|" * len(names)]
    for spec in list_ops():
        pairs = [spec.tolerances.get(d) for d in dtypes]
        cells = [f"{p[0]:g}, {p[1]:g}" if p else "-" for p in pairs]
        lines.append(f"| `{spec.name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runtimes_table() -> str:
    """The runtime table (``export_tools.runtimes.RUNNERS``): name, what it runs, what from, how to install it."""
    from export_tools.runtimes import RUNNERS

    lines = ["| name (`--providers`) | runtime | runs | install |", "|---|---|---|---|"]
    for kind, cls in RUNNERS.items():
        source = "the PyTorch model" if cls.source == "pytorch" else "the ONNX file"
        lines.append(f"| `{kind}` | {cls.summary} | {source} | {f'`{cls.install}`' if cls.install else 'with kpx'} |")
    return "\n".join(lines)


def extras_table() -> str:
    """``pip install "kpx[EXTRA]"``: each extra of pyproject.toml, what it installs, and what for (the comment
    above it there)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    lines = ["| extra | installs | for |", "|---|---|---|"]
    comment: list[str] = []
    for line in section.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("# "))
        elif "=" in stripped and not stripped.startswith(('"', "]")):
            name, _, value = stripped.partition("=")
            if value.strip().startswith("["):
                lines.append(f"| `{name.strip()}` | {_packages(section, name.strip())} | {' '.join(comment)} |")
            comment = []
        elif not stripped:
            comment = []
    return "\n".join(lines)


def _packages(section: str, name: str) -> str:
    import re

    body = re.search(rf"^{re.escape(name)}\s*=\s*\[(.*?)\]", section, re.S | re.M).group(1)
    packages = re.findall(r'"([^"]+)"', body)
    return ", ".join(f"`{p}`" for p in packages)


def subcommands_table() -> str:
    """One line per ``kpx`` subcommand, in ``kpx --help``'s order (``export_tools.cli.SUBCOMMANDS``)."""
    from export_tools.cli import SUBCOMMANDS

    lines = ["| command | what it does |", "|---|---|"]
    for module in SUBCOMMANDS:
        name = module.__name__.rsplit(".", 1)[-1]
        lines.append(f"| `kpx {name}` | {module.__doc__.strip().splitlines()[0]} |")
    return "\n".join(lines)


def cli_help(name: str) -> str:
    """``kpx NAME --help``, as the parser prints it (80 columns)."""
    import contextlib
    import io
    import os

    from export_tools.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if hasattr(a, "choices")).choices[name]
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            sub.print_help()
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return "```\n" + out.getvalue().rstrip() + "\n```"


def _cli_blocks() -> dict:
    from export_tools.cli import SUBCOMMANDS

    names = [m.__name__.rsplit(".", 1)[-1] for m in SUBCOMMANDS]
    return {f"cli-{n}": (lambda n=n: cli_help(n)) for n in names}


BLOCKS = {"ops-table": ops_table, "tolerances": tolerances_table, "op-tolerances": op_tolerances_table,
          "runtimes": runtimes_table, "extras": extras_table, "subcommands": subcommands_table}  # fmt: skip
BLOCKS.update(_cli_blocks())


def readme_block(name: str = "ops-table") -> str:
    """One generated block, between its markers."""
    begin = (
        f"<!-- {name}:begin (generated by `python -m export_tools.opsdoc`; tests/test_registry.py keeps it equal) -->"
    )
    return f"{begin}\n{BLOCKS[name]()}\n<!-- {name}:end -->"


def refresh(text: str) -> str:
    """``text`` with every generated block it holds rewritten from the code."""
    import re

    for name in BLOCKS:
        pattern = re.compile(rf"<!-- {re.escape(name)}:begin.*?-->.*?<!-- {re.escape(name)}:end -->", re.S)
        text = pattern.sub(lambda _m, n=name: readme_block(n), text)
    return text


def documents(root: Any = None) -> list[Any]:
    """The repository's Markdown files that hold generated blocks."""
    from pathlib import Path

    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [f for f in files if f.is_file() and any(f"<!-- {n}:begin" in f.read_text() for n in BLOCKS)]


if __name__ == "__main__":
    import sys

    if "--write" in sys.argv[1:]:
        for path in documents():
            text = path.read_text()
            if refresh(text) != text:
                path.write_text(refresh(text))
                print(f"rewrote {path}")
    else:
        print("\n\n".join(readme_block(name) for name in BLOCKS))
