"""The house rules that keep one home per concept, checked on the code itself."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import onnx

from custom_ops.ops import _common

ROOT = Path(__file__).resolve().parents[1]
OP_FILES = sorted(p for p in (ROOT / "custom_ops" / "ops").glob("*.py") if not p.name.startswith("_"))


def test_onnx_type_codes_are_onnx_s():
    for name, code in _common.ONNX_TYPES.items():
        assert getattr(onnx.TensorProto, name) == code, name


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_op_files_import_no_sibling_op_file():
    """Helpers shared by ops live in custom_ops/ops/_common.py, never in another op's file."""
    siblings = {f"custom_ops.ops.{p.stem}" for p in OP_FILES}
    for path in OP_FILES:
        assert not (_imports(path) & siblings), f"{path.name} imports another op file"


def test_op_bodies_name_onnx_types_instead_of_numbers():
    for path in OP_FILES:
        assert not re.search(r"\bto=\d", path.read_text()), f"{path.name}: use FLOAT/BOOL/... from _common"


def test_every_op_file_is_in_the_op_list():
    listed = _imports(ROOT / "custom_ops" / "ops" / "__init__.py")
    assert {f"custom_ops.ops.{p.stem}" for p in OP_FILES} == listed


def test_every_runtime_file_is_in_the_runtime_list():
    folder = ROOT / "export_tools" / "runtimes"
    files = {p.stem for p in folder.glob("*.py") if not p.name.startswith("_")} - {"base", "isolation"}
    source = (folder / "__init__.py").read_text()
    assert all(f"from export_tools.runtimes import {name}" in source for name in files), files


def test_the_repository_stands_on_its_own():
    """No file cites documents outside the repository; the contract is docs/spec.md."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"\.\./shared|(?<![/\w])(SPEC|DESIGN)\.md")
    offenders = [f for f in tracked if Path(ROOT, f).suffix in (".py", ".md", ".toml")
                 and pattern.search(Path(ROOT, f).read_text(errors="replace"))]  # fmt: skip
    assert not offenders, offenders
    assert (ROOT / "docs" / "spec.md").is_file() and (ROOT / "docs" / "design.md").is_file()


def test_no_generated_files_are_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert not [f for f in tracked if re.search(r"onnxruntime_profile|\.tmp$|\.onnx$", f)]


def test_every_cli_module_is_a_registered_subcommand():
    from export_tools.cli import SUBCOMMANDS

    folder = ROOT / "export_tools" / "cli"
    files = {p.stem for p in folder.glob("*.py") if not p.name.startswith("_")}
    assert files == {m.__name__.rsplit(".", 1)[-1] for m in SUBCOMMANDS}


def test_no_module_outside_custom_ops_imports_a_private_custom_ops_module():
    """export_tools, benchmarks and examples use custom_ops' public names (custom_ops.ops._common is the ops' own)."""
    files = [*(ROOT / "export_tools").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"),
             *(ROOT / "examples").glob("*.py")]  # fmt: skip
    for path in files:
        private = {m for m in _imports(path) if m.startswith("custom_ops") and any(
            part.startswith("_") and part != "__init__" for part in m.split("."))}  # fmt: skip
        assert not private, f"{path.relative_to(ROOT)} imports {sorted(private)}"


def test_examples_run_against_the_installed_package():
    """An example imports kpx as a user's script does: it never puts the repository on sys.path."""
    for path in (ROOT / "examples").glob("*.py"):
        assert "sys.path" not in path.read_text(), path.name
