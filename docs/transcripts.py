"""Every command transcript in the README and docs/, rerun from here, so that none can drift.

    python docs/transcripts.py              # rerun every transcript and rewrite its block in the docs
    python docs/transcripts.py NAME ...     # only these
    python docs/transcripts.py --list       # the names, and where each block stands

A block in a Markdown file::

    <!-- transcript:NAME:begin (docs/transcripts.py writes it; tests/test_docs.py reruns it) -->
    ```
    $ kpx ...
    (what it printed, stdout and stderr in order)
    (exit 0)
    ```
    <!-- transcript:NAME:end -->

Each transcript runs in a fresh temporary directory holding copies of the repository files it names (examples,
test models), with ``kpx`` as ``python -m export_tools`` from this checkout, offline. Lines that third-party
packages print on their own (torch's logging, torchao's load failures, Python warnings) are left out. The test
reruns every transcript not marked ``machine`` and compares it with the block, numbers masked (they vary with the
CPU's kernels); ``machine`` transcripts (``kpx doctor``, LiteRT) describe this machine and are only rerun here.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BEGIN = "<!-- transcript:{}:begin (docs/transcripts.py writes it; tests/test_docs.py reruns it) -->"
END = "<!-- transcript:{}:end -->"
BLOCK = re.compile(r"<!-- transcript:([\w.-]+):begin.*?-->\n(.*?)<!-- transcript:\1:end -->", re.S)
#: lines that other packages print on their own, not kpx's output
NOISE = re.compile(r"^([WIE]\d{4} \d\d:\d\d:\d\d|Failed to load .*torchao|.*\w+Warning: "
                   r"|\s+(warnings\.warn|return cls\.__new__)\()")  # fmt: skip

TAMPER = '''"""python tamper.py IN OUT INITIALIZER FACTOR: IN with one weight scaled (any ONNX editor does this)."""
import sys

import numpy as np
import onnx
from onnx import numpy_helper

model = onnx.load(sys.argv[1])
for i, t in enumerate(model.graph.initializer):
    if t.name == sys.argv[3]:
        scaled = numpy_helper.to_array(t) * np.float32(sys.argv[4])
        model.graph.initializer[i].CopyFrom(numpy_helper.from_array(scaled, t.name))
onnx.save(model, sys.argv[2])
'''


STOCK = """import torch, custom_ops
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 17, 3, padding=1), custom_ops.SpatialSoftArgmax2d()).eval()
torch.onnx.export(model, (torch.randn(2, 3, 64, 48),), "stock.onnx", dynamo=True,
                  dynamic_shapes=({0: "B", 2: "H", 3: "W"},))
"""


TRAIN = """import numpy as np, torch
from tests import int8_models as m
net = m.heatmap_net()
m.train(net, 300)  # ~10 s: the tests' 8-keypoint heatmap network, peaked maps
torch.save(net.state_dict(), "pose8.pt")
for name, seed, n in (("calibration", 1, 32), ("held-out", 2, 64)):
    images, _ = m.make_batch(n, torch.Generator().manual_seed(seed), m.TEST_KEYPOINTS)
    np.savez(name + ".npz", images=images.numpy())
"""


@dataclass
class Transcript:
    """Commands run in order (``kpx ...`` or ``python ...``); ``hidden`` ones prepare files and are not shown."""

    commands: list[list[str]]
    files: list[str] = field(default_factory=list)  # repository files copied in, same relative paths
    hidden: list[list[str]] = field(default_factory=list)
    machine: bool = False  # describes this machine: rerun by this script only, not compared by the test


HEAD = ["examples/dsnt_head.py"]
MODELS = ["tests/verdict_models.py"]
POSE = ["kpx", "export", "tests/verdict_models.py:build", "--input", "images:2x3x64x48", "--dynamic", "images:0=B",
        "--decode", "heatmap:dark", "--emit", "inline", "--opset", "17"]  # fmt: skip
HEAD_EXPORT = ["kpx", "export", "examples/dsnt_head.py:DSNTHead", "-o", "head.onnx", "--input", "images:2x3x128x96",
               "--dynamic", "images:0=B,2=H,3=W"]  # fmt: skip

# fmt: off
TRANSCRIPTS: dict[str, Transcript] = {
    "quickstart": Transcript([[*HEAD_EXPORT, "--check"]], HEAD),
    "quickstart-decode": Transcript(
        [["kpx", "export", "tests/verdict_models.py:simcc", "--input", "images:2x3x64x48", "--decode", "simcc:dark",
          "--simcc-sigma", "2.4", "2.8", "--crop", "48x64", "--boxes", "xyxy", "--normalize", "imagenet", "-o",
          "pose.onnx", "--check"], ["kpx", "inspect", "pose.onnx"]], MODELS),
    "vitpose-check": Transcript(
        [["kpx", "export", "tests/verdict_models.py:vitpose", "--input", "pixel_values:2x3x256x192", "--decode",
          "heatmap:dark_udp", "--crop", "192x256", "--boxes", "xyxy", "--normalize", "imagenet", "--emit", "inline",
          "-o", "vit.onnx"],
         ["kpx", "check", "vit.onnx", "--reference", "tests/verdict_models.py:vitpose", "--providers",
          "cpu,openvino"]], MODELS),
    "flips": Transcript(
        [["kpx", "export", "tests/verdict_models.py:two_peaks", "--input", "images:2x3x64x48", "--dtype", "fp16", "-o",
          "two.onnx", "--check"],
         ["kpx", "check", "two.onnx", "--reference", "tests/verdict_models.py:two_peaks", "--allow-flips", "0.2"]],
        MODELS),
    "where": Transcript(
        [["kpx", "export", "tests/verdict_models.py:with_encoder", "-o", "enc.onnx", "--input", "images:2x3x64x48"],
         ["python", "tamper.py", "enc.onnx", "bad.onnx", "head.weight", "1.05"],
         ["kpx", "check", "bad.onnx", "--reference", "tests/verdict_models.py:with_encoder"]], MODELS),
    "ops": Transcript([["kpx", "ops", "soft_argmax"]]),
    "export-errors": Transcript(
        [[*HEAD_EXPORT], [*HEAD_EXPORT],
         ["kpx", "export", "examples/dsnt_head.py:DSNTHead", "-o", "head2.onnx", "--input", "images:2x3x100"],
         ["kpx", "export", "examples/dsnt_head.py:DSNTHead", "-o", "head2.onnx", "--input", "images:1x3x128x96",
          "--dynamic", "images:0=B"],
         ["kpx", "export", "tests/verdict_models.py:simcc", "--input", "images:2x3x64x48", "--decode", "heatmap:dark",
          "-o", "wrong.onnx"]], [*HEAD, *MODELS]),
    "check": Transcript(
        [["kpx", "check", "head.onnx", "--report", "report.json"],
         ["kpx", "check", "head.onnx", "--report", "head.onnx", "--force"]], HEAD, hidden=[HEAD_EXPORT]),
    "inspect": Transcript(
        [["kpx", "inspect", "head.onnx"], ["kpx", "inspect", "head.onnx", "--target", "tensorrt-8.6"]], HEAD,
        hidden=[HEAD_EXPORT]),
    "simplify-repair": Transcript(
        [[*HEAD_EXPORT[:4], "slim.onnx", *HEAD_EXPORT[5:], "--simplify", "onnxslim"],
         ["kpx", "repair", "head.onnx", "-o", "head17.onnx", "--opset", "17"]], HEAD, hidden=[HEAD_EXPORT]),
    "bench": Transcript([["kpx", "bench", "examples/dsnt_head.py:DSNTHead", "--input", "images:8x3x256x192",
                          "--seconds", "2"]], HEAD),
    "stock": Transcript(
        [["kpx", "inspect", "stock.onnx"], ["kpx", "check", "stock.onnx", "--dim", "B=2", "--dim", "H=64", "--dim",
          "W=48"]], hidden=[["python", "-c", STOCK]]),
    "tensorrt": Transcript(
        [["kpx", "inspect", "head17.onnx", "--target", "tensorrt-8.6"]], HEAD,
        hidden=[[*HEAD_EXPORT[:4], "head17.onnx", *HEAD_EXPORT[5:], "--emit", "inline", "--opset", "17"]]),
    "mnn": Transcript(
        [[*POSE, "-o", "pose.onnx"], ["kpx", "inspect", "pose.onnx", "--target", "mnn"],
         [*POSE, "--target", "mnn", "-o", "pose_mnn.onnx", "--check", "--providers", "cpu,mnn"],
         ["kpx", "inspect", "pose_mnn.onnx", "--target", "mnn"]], MODELS),
    "ncnn": Transcript(
        [["kpx", "export", "builtin:spatial_soft_argmax2d", "--emit", "inline", "--opset", "17", "-o",
          "soft_argmax_inline17.onnx"],
         ["kpx", "check", "soft_argmax_inline17.onnx", "--providers", "ncnn"],
         ["kpx", "inspect", "pose.onnx", "--target", "ncnn"]], MODELS, hidden=[[*POSE, "-o", "pose.onnx"]]),
    "executorch": Transcript(
        [["kpx", "export", "tests/verdict_models.py:build", "--input", "images:2x3x64x48", "--decode", "heatmap:dark",
          "-o", "pose.onnx", "--check", "--providers", "cpu,executorch"],
         ["kpx", "check", "pose.onnx", "--providers", "executorch"]], MODELS),
    "litert": Transcript(
        [["kpx", "check", "soft_argmax_inline17.onnx", "--providers", "litert"],
         ["kpx", "inspect", "pose.onnx", "--target", "litert"], ["kpx", "check", "pose.onnx", "--providers", "litert"]],
        MODELS, machine=True,
        hidden=[["kpx", "export", "builtin:spatial_soft_argmax2d", "--emit", "inline", "--opset", "17", "-o",
                 "soft_argmax_inline17.onnx"], [*POSE, "-o", "pose.onnx"]]),
    "quantize": Transcript(
        [["kpx", "export", "tests/int8_models.py:heatmap_net", "--weights", "pose8.pt", "--input", "images:2x3x64x48",
          "--dynamic", "images:0=B", "--decode", "heatmap:dark", "--blur-kernel", "7", "--udp", "--emit", "inline",
          "--opset", "17", "-o", "pose.onnx"],
         ["kpx", "quantize", "pose.onnx", "-o", "pose-int8.onnx", "--calibration", "calibration.npz"],
         ["kpx", "check", "pose-int8.onnx", "--reference", "pose.onnx", "--inputs", "held-out.npz", "--px-tol", "0.5"]],
        ["tests/__init__.py", "tests/int8_models.py"], hidden=[["python", "-c", TRAIN]]),
    "doctor": Transcript([["kpx", "doctor"]], machine=True),
}
# fmt: on


def run(name: str) -> str:
    """The transcript's text: each shown command, what it printed, its exit status."""
    transcript = TRANSCRIPTS[name]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "100",
           "PYTHONWARNINGS": "ignore"}  # fmt: skip
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kpx-transcript-") as tmp:
        work = Path(tmp)
        for rel in transcript.files:
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / rel, work / rel)
        (work / "tamper.py").write_text(TAMPER)
        for command, shown in [*((c, False) for c in transcript.hidden), *((c, True) for c in transcript.commands)]:
            argv = ([sys.executable, "-m", "export_tools", *command[1:]] if command[0] == "kpx" else
                    [sys.executable, *command[1:]])  # fmt: skip
            done = subprocess.run(argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=900)  # fmt: skip
            if not shown:
                if done.returncode:
                    raise RuntimeError(f"{name}: {' '.join(command)} failed:\n{done.stdout[-2000:]}")
                continue
            output = [line.rstrip() for line in done.stdout.replace(str(work) + "/", "").splitlines()]
            lines += ["$ " + " ".join(command), *(line for line in output if not NOISE.match(line)),
                      f"(exit {done.returncode})"]  # fmt: skip
    return "\n".join(lines)


def block(name: str, text: str) -> str:
    return f"{BEGIN.format(name)}\n```\n{text}\n```\n{END.format(name)}"


def blocks_in_docs() -> dict[str, tuple[Path, str]]:
    """``{name: (file, the text between the code fences)}`` of every transcript block in the docs."""
    found = {}
    for path in DOCS:
        for match in BLOCK.finditer(path.read_text()):
            body = match.group(2).strip()
            found[match.group(1)] = (path, body.removeprefix("```").removesuffix("```").strip("\n"))
    return found


def masked(text: str) -> str:
    """``text`` with every number replaced and runs of spaces made one (columns widen with their numbers), for
    comparisons across machines."""
    return re.sub(r" +", " ", re.sub(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", "#", text))


def write(names: list[str]) -> None:
    for name in names:
        text = block(name, run(name))
        key = re.escape(name)
        pattern = re.compile(rf"<!-- transcript:{key}:begin.*?<!-- transcript:{key}:end -->", re.S)
        for path in DOCS:
            doc = path.read_text()
            if pattern.search(doc):
                path.write_text(pattern.sub(lambda _m, t=text: t, doc))
                print(f"{name}: rewrote its block in {path.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="transcripts to rerun (default: all)")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    placed = blocks_in_docs()
    if args.list:
        for name in TRANSCRIPTS:
            where = placed[name][0].relative_to(ROOT) if name in placed else "not in any doc"
            print(f"{name:<20} {where}")
        return 0
    unknown = [n for n in args.names if n not in TRANSCRIPTS]
    if unknown:
        parser.error(f"no transcript {unknown}; see --list")
    write(args.names or list(TRANSCRIPTS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
