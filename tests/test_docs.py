"""The docs cannot drift: every transcript is rerun and compared (numbers masked: they vary with the CPU's
kernels), every generated block is current, the README's Python quickstart runs, and the pages link only to files
that exist."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("kpx_doc_transcripts", ROOT / "docs" / "transcripts.py")
transcripts = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = transcripts  # its dataclasses look their module up
spec.loader.exec_module(transcripts)

PLACED = transcripts.blocks_in_docs()
COMPARED = [n for n, t in transcripts.TRANSCRIPTS.items() if not t.machine]


def test_every_transcript_is_placed_and_every_block_is_known():
    assert set(PLACED) == set(transcripts.TRANSCRIPTS), set(PLACED) ^ set(transcripts.TRANSCRIPTS)
    for name, (path, text) in PLACED.items():
        assert text.startswith("$ "), f"{path.name}: the transcript block {name!r} is empty: run docs/transcripts.py"


@pytest.mark.parametrize("name", COMPARED)
def test_transcript_is_what_the_commands_print_now(name):
    if name in ("mnn", "ncnn"):
        pytest.importorskip({"mnn": "MNN", "ncnn": "ncnn"}[name])
    if name == "executorch":
        pytest.importorskip("executorch")
    if name == "vitpose-check":
        pytest.importorskip("transformers")
    _, documented = PLACED[name]
    now = transcripts.run(name)
    assert transcripts.masked(now) == transcripts.masked(documented), (
        f"the {name!r} transcript changed: rerun `python docs/transcripts.py {name}`\n--- now ---\n{now}"
    )


def test_readme_is_one_sitting_and_starts_with_install():
    readme = (ROOT / "README.md").read_text()
    lines = readme.splitlines()
    assert len(lines) <= 300, len(lines)
    first_screen = "\n".join(lines[:40])
    assert "pip install" in first_screen and "kpx export" not in first_screen.split("## Install")[0]


def test_readme_python_quickstart_runs(tmp_path, monkeypatch):
    """The README's Python block, with a small heatmap network standing in for the user's."""
    pytest.importorskip("onnxruntime")
    readme = (ROOT / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "PoseDecoder" in b)
    net = (
        "import torch\n"
        "def build_my_net():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 17, 4, 4))\n"
    )
    monkeypatch.chdir(tmp_path)
    exec(compile(net + code, "README.md", "exec"), {})  # assert_parity raises when the file departs
    assert (tmp_path / "pose.onnx").is_file()


def test_doc_links_point_at_files_that_exist():
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if target.startswith("http"):
                continue
            assert (path.parent / target).exists(), f"{path.name} links to {target}, which does not exist"
