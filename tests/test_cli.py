"""The kpx command line, in-process (``main(argv)``) and through real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from custom_ops import list_ops
from export_tools import cli
from export_tools.doctor import Finding

ROOT = Path(__file__).resolve().parents[1]

HEAD = textwrap.dedent(
    """
    import torch
    import custom_ops


    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(8, 5, 1)
            self.soft_argmax = custom_ops.SpatialSoftArgmax2d(normalized_coordinates=False)

        def forward(self, features):
            return self.soft_argmax(self.conv(features))


    def build():
        return Head()


    def broken():
        raise RuntimeError("no config file")


    def not_a_module():
        return 3


    class Baked(torch.nn.Module):
        def forward(self, x):
            return x + torch.ones(2, 3)  # the batch of 2 is baked in


    def baked():
        return Baked()


    class Flag(torch.nn.Module):
        def forward(self, x, extra: bool = False):
            return x * 2 if not extra else x


    def flag():
        return Flag()


    class Star(torch.nn.Module):
        def forward(self, *xs):
            return xs[0]


    def star():
        return Star()


    class Dict(torch.nn.Module):
        def forward(self, x):
            return {"a": None}


    def as_dict():
        return Dict()


    def exits():
        import sys

        sys.exit(0)
    """
)


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working directory holding head.py and its checkpoints."""
    (tmp_path / "head.py").write_text(HEAD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("head", None)
    torch.manual_seed(0)
    import head

    model = head.build()
    torch.save(model.state_dict(), tmp_path / "head.pt")
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "other.pt")
    torch.save({"config": Finding("a", "b")}, tmp_path / "pickle.pt")  # arbitrary pickle: refused
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- kpx ops -----------------------------------------------------------------------------------------------


def test_ops_lists_every_registered_op(capsys):
    code, out, _ = run(capsys, "ops")
    assert code == 0
    for spec in list_ops():
        assert f"{spec.name}  (kpx.{spec.onnx_op_type} v{spec.version})" in out
        assert spec.description in out


def test_ops_json_is_the_registry(capsys):
    code, out, _ = run(capsys, "ops", "--json")
    records = json.loads(out)
    assert code == 0 and [r["name"] for r in records] == [s.name for s in list_ops()]
    soft = next(r for r in records if r["name"] == "spatial_soft_argmax2d")
    assert soft["onnx_op_type"] == "SpatialSoftArgmax2d" and soft["domain"] == "kpx"
    assert {a["name"] for a in soft["attributes"]} >= {"temperature_divide", "normalized_coordinates", "align_corners"}
    assert soft["conventions"]


def test_ops_pattern_filters_and_unknown_pattern_is_usage_error(capsys):
    code, out, _ = run(capsys, "ops", "softmax", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["spatial_softmax2d"]
    code, out, err = run(capsys, "ops", "Gaussian*", "--json")  # a glob is anchored: GaussianHeatmaps only
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["gaussian_heatmaps"]
    code, out, err = run(capsys, "ops", "nothing-like-this")
    assert code == 2 and out == "" and "kpx ops" in err


# --- kpx export --------------------------------------------------------------------------------------------


def test_export_builtin_writes_a_checked_file_with_one_kpx_node(capsys, tmp_path):
    import onnx

    out = tmp_path / "op.onnx"
    code, stdout, _ = run(capsys, "export", "builtin:spatial_soft_argmax2d", "-o", str(out))
    assert code == 0 and f"wrote {out}" in stdout
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["SpatialSoftArgmax2d"]
    assert [o.name for o in model.graph.output] == ["output"]  # named as in the registry


def test_export_factory_with_weights_dynamic_dims_and_check(capsys, work):
    import onnx

    code, out, _ = run(capsys, "export", "head.py:build", "-o", "h.onnx", "--input", "features:2x8x16x12",
                       "--dynamic", "features:0=B", "--dynamic", "features:2=H,3=W", "--weights", "head.pt", "--check",
                       "--report", "r.json")  # fmt: skip
    assert code == 0, out
    assert "verdict: PASS" in out and "resized B=3,H=17,W=13" in out  # checked at other sizes too
    dims = [d.dim_param or d.dim_value for d in onnx.load("h.onnx").graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["B", 8, "H", "W"]
    report = json.loads(Path("r.json").read_text())
    assert report["schema"] == "kpx.parity/4" and report["verdict"] == "pass"


def test_export_loads_the_weights(capsys, work):
    """The exported graph holds the checkpoint's weights, not the factory's fresh ones."""
    import onnx
    from onnx import numpy_helper

    state = torch.load("head.pt", weights_only=True)
    torch.manual_seed(123)  # the factory's own initialisation differs
    code, _, _ = run(capsys, "export", "head:build", "-o", "h.onnx", "--input", "features:1x8x4x4",
                     "--weights", "wrapped.pt")  # fmt: skip
    assert code == 0
    arrays = [numpy_helper.to_array(t) for t in onnx.load("h.onnx").graph.initializer]
    assert any(a.shape == (5, 8, 1, 1) and np.array_equal(a, state["conv.weight"].numpy()) for a in arrays)


def test_export_loads_safetensors(capsys, work):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    import onnx
    from onnx import numpy_helper

    state = torch.load("head.pt", weights_only=True)
    safetensors_torch.save_file(state, "head.safetensors")
    code, _, err = run(capsys, "export", "head.py:build", "-o", "h.onnx", "--input", "features:1x8x4x4",
                       "--weights", "head.safetensors")  # fmt: skip
    assert code == 0, err
    arrays = [numpy_helper.to_array(t) for t in onnx.load("h.onnx").graph.initializer]
    assert any(np.array_equal(a, state["conv.bias"].numpy()) for a in arrays)
    Path("broken.safetensors").write_bytes(b"\x00" * 16)
    code, _, err = run(capsys, "export", "head.py:build", "-o", "h2.onnx", "--input", "features:1x8x4x4",
                       "--weights", "broken.safetensors")  # fmt: skip
    assert code == 2 and "not a readable safetensors file" in err and not Path("h2.onnx").exists()


def test_export_skips_forward_parameters_with_defaults(capsys, work):
    import onnx

    code, _, err = run(capsys, "export", "head.py:flag", "-o", "f.onnx", "--input", "x:2x3")
    assert code == 0, err
    assert [i.name for i in onnx.load("f.onnx").graph.input] == ["x"]


def test_exported_file_has_the_usual_permissions(capsys, tmp_path):
    out = tmp_path / "m.onnx"
    umask = os.umask(0o022)
    try:
        assert cli.main(["export", "builtin:spatial_softmax2d", "-o", str(out)]) == 0
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_verbosity_flags_work_before_the_subcommand(capsys, exported):
    dims = ["--dim", "B=1", "--dim", "N=1", "--dim", "H=3", "--dim", "W=3"]
    code, out, err = run(capsys, "-q", "check", str(exported), *dims)
    assert code == 0 and err == "" and "PASS" in out
    assert cli.main(["--version"]) == 0 and capsys.readouterr().out.startswith("kpx ")


def test_export_fp16_inline_opset17(capsys, tmp_path):
    import onnx

    out = tmp_path / "h.onnx"
    code, stdout, _ = run(capsys, "export", "builtin:spatial_soft_argmax2d", "-o", str(out), "--dtype", "fp16",
                          "--emit", "inline", "--opset", "17", "--check")  # fmt: skip
    assert code == 0, stdout
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert {o.domain: o.version for o in model.opset_import}.get("") == 17
    assert not model.functions and all(n.domain == "" for n in model.graph.node)


BAD_EXPORTS = {
    "malformed model spec": (["export", "head.py", "-o", "x.onnx"], "not 'package.module:factory'"),
    "missing file": (["export", "nothere.py:build", "-o", "x.onnx"], "does not exist"),
    "missing module": (["export", "no_such_pkg.mod:build", "-o", "x.onnx"], "cannot import"),
    "missing factory": (["export", "head.py:nope", "-o", "x.onnx"], "'nope' not found"),
    "factory raises": (["export", "head.py:broken", "-o", "x.onnx"], "raised RuntimeError: no config file"),
    "factory returns no module": (["export", "head.py:not_a_module", "-o", "x.onnx"], "must return a torch.nn.Module"),
    "no input shape": (["export", "head.py:build", "-o", "x.onnx"], "add --input features:"),
    "unknown input name": (["export", "head.py:build", "-o", "x.onnx", "--input", "img:1x8x4x4"], "inputs are"),
    "malformed shape": (["export", "head.py:build", "-o", "x.onnx", "--input", "features:1xax4"], "sizes joined"),
    "shape does not fit": (["export", "head.py:build", "-o", "x.onnx", "--input", "features:1x3x4x4"], "fails on"),
    "dim out of range": (
        ["export", "head.py:build", "-o", "x.onnx", "--input", "features:1x8x4x4", "--dynamic", "features:4"],
        "rank 4",
    ),
    "baked shape made dynamic": (
        ["export", "head.py:baked", "-o", "x.onnx", "--input", "x:2x3", "--dynamic", "x:0"],
        "tracing inferred a static shape of 2",
    ),
    "weights of another model": (
        ["export", "head.py:build", "-o", "x.onnx", "--input", "features:1x8x4x4", "--weights", "other.pt"],
        "does not fit the model",
    ),
    "arbitrary pickle": (
        ["export", "head.py:build", "-o", "x.onnx", "--input", "features:1x8x4x4", "--weights", "pickle.pt"],
        "kpx never runs code from a checkpoint",  # and no advice to pass weights_only=False (asserted below)
    ),
    "missing weights": (
        ["export", "head.py:build", "-o", "x.onnx", "--input", "features:1x8x4x4", "--weights", "no.pt"],
        "does not exist",
    ),
    "unknown builtin": (["export", "builtin:softmax3d", "-o", "x.onnx"], "not a kpx op"),
    "dynamic dim of size 1": (
        ["export", "head.py:build", "-o", "x.onnx", "--input", "features:1x8x4x4", "--dynamic", "features:0"],
        "torch.export fixes sizes 0 and 1",
    ),
    "one symbol, two sizes": (
        ["export", "head.py:build", "-o", "x.onnx", "--input", "features:2x8x4x6", "--dynamic", "features:2=S,3=S"],
        "one symbolic name is one size",
    ),
    "forward(*args)": (["export", "head.py:star", "-o", "x.onnx", "--input", "xs:2x2"], "forward(*args)"),
    "dict without tensors": (["export", "head.py:as_dict", "-o", "x.onnx", "--input", "x:2x2"], "returns dict"),
    "factory calls sys.exit": (["export", "head.py:exits", "-o", "x.onnx"], "called sys.exit(0)"),
    "model file without .py": (["export", "head:build.x", "-o", "x.onnx"], "not found"),
    "output is a directory": (["export", "builtin:spatial_softmax2d", "-o", "."], "is a directory"),
    "report directory missing": (
        ["export", "builtin:spatial_softmax2d", "-o", "x.onnx", "--check", "--report", "no/r.json"],
        "--report",
    ),
    "missing output directory": (
        ["export", "builtin:spatial_softmax2d", "-o", "nodir/x.onnx"],
        "does not exist; create it",
    ),
    "bad opset": (["export", "builtin:spatial_softmax2d", "-o", "x.onnx", "--opset", "9"], "opset"),
    "bad providers": (["export", "builtin:spatial_softmax2d", "-o", "x.onnx", "--providers", "tpu"], "--providers"),
    # sized before allocating: a refusal naming the limit, not a minute, 5 GB and an overflow traceback
    "input too large": (
        ["export", "head.py:build", "-o", "x.onnx", "--input", "features:1x8x20000x20000"],
        "raise --max-input-mb",
    ),
    "input of petabytes": (
        ["export", "head.py:build", "-o", "x.onnx", "--input", "features:100000x8x99999x99999"],
        "PiB",
    ),
    "input beyond int64": (
        ["export", "head.py:build", "-o", "x.onnx", "--input", "features:99999999999999999999x8"],
        "--max-input-mb",
    ),
    "limit lowered": (
        ["export", "head.py:build", "-o", "x.onnx", "--input", "features:1x8x64x64", "--max-input-mb", "0.1"],
        "0.1 MiB",
    ),
    "one dim, two names": (
        ["export", "head.py:build", "-o", "x.onnx", "--input", "features:2x8x4x4", "--dynamic", "features:0=B,0=H"],
        "names dim 0 twice",
    ),
    "a dim renamed by a second flag": (
        [
            "export",
            "head.py:build",
            "-o",
            "x.onnx",
            "--input",
            "features:2x8x4x4",
            "--dynamic",
            "features:2=H",
            "--dynamic",
            "features:2=W",
        ],
        "named both 'H' and 'W'",
    ),
    "report over the output": (
        ["export", "builtin:spatial_softmax2d", "-o", "x.onnx", "--check", "--report", "x.onnx"],
        "also reads or writes",
    ),
    "report over the model file": (
        [
            "export",
            "head.py:build",
            "-o",
            "x.onnx",
            "--input",
            "features:1x8x4x4",
            "--check",
            "--report",
            "head.py",
            "--force",
        ],
        "also reads or writes",
    ),
    "output over the weights": (
        ["export", "head.py:build", "-o", "head.pt", "--input", "features:1x8x4x4", "--weights", "head.pt", "--force"],
        "also reads or writes",
    ),
}


@pytest.mark.parametrize("case", list(BAD_EXPORTS), ids=lambda c: c.replace(" ", "_"))
def test_bad_export_input_is_one_line_exit_2_and_no_file(capsys, work, case):
    argv, message = BAD_EXPORTS[case]
    code, _out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("kpx: error: ")
    assert "weights_only=False" not in err and "\x1b[" not in err  # no unsafe advice, no terminal escapes
    assert not list(work.rglob("*.onnx")) and not list(work.rglob("*.tmp"))  # no partial file
    assert (work / "head.py").read_text() == HEAD and (work / "head.pt").stat().st_size > 0  # inputs untouched


def test_existing_output_needs_force_and_is_kept(capsys, tmp_path):
    out = tmp_path / "x.onnx"
    out.write_bytes(b"keep me")
    code, _, err = run(capsys, "export", "builtin:spatial_softmax2d", "-o", str(out))
    assert code == 2 and "--force" in err and out.read_bytes() == b"keep me"
    code, _, _ = run(capsys, "export", "builtin:spatial_softmax2d", "-o", str(out), "--force")
    assert code == 0 and out.read_bytes() != b"keep me"


def test_unwritable_output_directory(capsys, tmp_path, monkeypatch):
    """(Simulated with os.access: permission bits do not stop root, who runs CI.)"""
    from export_tools import files

    monkeypatch.setattr(files.os, "access", lambda path, mode: False)
    code, _, err = run(capsys, "export", "builtin:spatial_softmax2d", "-o", str(tmp_path / "x.onnx"))
    assert code == 2 and "is not writable; choose another path" in err
    assert not list(tmp_path.iterdir())


# --- kpx check ---------------------------------------------------------------------------------------------


@pytest.fixture
def exported(tmp_path_factory) -> Path:
    from export_tools import export
    from export_tools.models import OpModel

    spec = next(s for s in list_ops() if s.name == "spatial_soft_argmax2d")
    model = OpModel(spec, spec.export_sample())
    path = tmp_path_factory.mktemp("check") / "sa.onnx"
    export(model, model.example_inputs(), path, dynamic_shapes=model.dynamic_shapes(spec.export_sample()),
           input_names=model.input_names())  # fmt: skip
    return path


def test_check_against_float64_evaluation_with_random_inputs(capsys, exported, tmp_path):
    report = tmp_path / "r.json"
    code, out, _err = run(capsys, "check", str(exported), "--dim", "B=2", "--dim", "N=3", "--dim", "H=5",
                         "--dim", "W=4", "--report", str(report))  # fmt: skip
    assert code == 0, out
    assert "onnx-ref-float" in out and "verdict: PASS" in out
    data = json.loads(report.read_text())
    assert data["inputs"][0]["seed"] == 0 and data["inputs"][0]["shapes"] == [[2, 3, 5, 4]]


def test_check_against_a_pytorch_reference_with_npz_inputs(capsys, exported, tmp_path, work):
    (work / "ref.py").write_text(
        "import custom_ops\n\ndef soft():\n    return custom_ops.SpatialSoftArgmax2d(2.0, False)\n"
        "\ndef other():\n    return custom_ops.SpatialSoftArgmax2d(1.0, True)\n"
    )
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 7)).astype(np.float32)
    np.savez(tmp_path / "x.npz", input=x)
    code, out, _ = run(
        capsys, "check", str(exported), "--reference", "ref.py:soft", "--inputs", str(tmp_path / "x.npz")
    )
    assert code == 0 and "verdict: PASS" in out  # the export sample is pixel mode, temperature 2
    code, out, _ = run(
        capsys, "check", str(exported), "--reference", "ref.py:other", "--inputs", str(tmp_path / "x.npz")
    )
    assert code == 1 and "verdict: FAIL" in out  # another convention: a parity failure, exit 1


def test_check_tolerance_flags_decide_the_verdict(capsys, exported, tmp_path, work):
    """The file's soft-argmax output is a keypoint output in pixels: a reference 1e-3 px away passes the pixel
    verdict, one 0.5 px away fails it unless --px-tol allows it; --atol/--rtol make the float tolerance decide."""
    (work / "ref.py").write_text(
        "import torch, custom_ops\n\nclass Off(torch.nn.Module):\n    def __init__(self, by):\n"
        "        super().__init__()\n        self.by = by\n    def forward(self, x):\n"
        "        return custom_ops.spatial_soft_argmax2d(x, 2.0, False) + self.by\n\n"
        "def near():\n    return Off(1e-3)\n\ndef far():\n    return Off(0.5)\n"
    )
    dims = ["--dim", "B=1", "--dim", "N=2", "--dim", "H=4", "--dim", "W=4"]
    near = ["check", str(exported), "--reference", "ref.py:near", *dims]
    far = ["check", str(exported), "--reference", "ref.py:far", *dims]
    assert run(capsys, *near)[0] == 0
    assert run(capsys, *near, "--atol", "1e-4")[0] == 1
    assert run(capsys, *near, "--atol", "2e-3")[0] == 0
    code, out, _ = run(capsys, *far)
    assert code == 1 and "0.707 map px" in out, out
    assert run(capsys, *far, "--px-tol", "0.75")[0] == 0


BAD_CHECKS = {
    "missing model": (["check", "nothere.onnx"], "does not exist"),
    "not onnx": (["check", "head.py"], "not a readable ONNX file"),
    "symbolic dims without sizes": (["check", "nometa.onnx"], "--dim NAME=SIZE"),  # no kpx.example_shapes
    "malformed dim": (["check", "{model}", "--dim", "B4"], "NAME=SIZE"),
    "missing npz": (["check", "{model}", "--inputs", "none.npz"], "does not exist"),
    "npz without the input": (["check", "{model}", "--inputs", "wrong.npz"], "has no array 'input'"),
    "npz of a wrong rank": (["check", "{model}", "--inputs", "rank.npz"], "the model expects"),
    "npz of a wrong dtype": (["check", "{model}", "--inputs", "ints.npz"], "save it as float32"),
    "unknown dim name": (["check", "{model}", "--dim", "Q=3"], "not symbolic dims"),
    "empty file": (["check", "empty.onnx"], "not a readable ONNX file"),
    "report directory missing": (["check", "{model}", "--report", "no/r.json", "--dim", "B=1"], "--report"),
    "report over the model": (["check", "{model}", "--report", "{model}", "--force"], "also reads or writes"),
    "report over the inputs": (
        ["check", "{model}", "--inputs", "x.npz", "--report", "x.npz", "--force"],
        "also reads or writes",
    ),
    "report exists": (["check", "{model}", "--report", "old.json"], "exists; pass --force"),
    "a .npy as --inputs": (["check", "{model}", "--inputs", "one.npy"], "holds one array (a .npy file)"),
    "not an npz": (["check", "{model}", "--inputs", "head.py"], "not a readable .npz file"),
    "dims too large": (
        ["check", "{model}", "--dim", "B=100000", "--dim", "N=100", "--dim", "H=512", "--dim", "W=512"],
        "raise --max-input-mb",
    ),
    "dim given twice": (["check", "{model}", "--dim", "B=1", "--dim", "B=2"], "given twice"),
    "weights without reference": (["check", "{model}", "--weights", "head.pt"], "--weights applies to --reference"),
}


@pytest.mark.parametrize("case", list(BAD_CHECKS), ids=lambda c: c.replace(" ", "_"))
def test_bad_check_input_is_exit_2(capsys, work, exported, case):
    np.savez(work / "wrong.npz", x=np.zeros((1, 2, 3, 3), np.float32))
    np.savez(work / "rank.npz", input=np.zeros((2, 3, 3), np.float32))
    np.savez(work / "ints.npz", input=np.zeros((1, 2, 3, 3), np.int64))
    (work / "empty.onnx").write_bytes(b"")
    np.save(work / "one.npy", np.zeros((1, 2, 3, 3), np.float32))
    np.savez(work / "x.npz", input=np.zeros((1, 2, 3, 3), np.float32))
    (work / "old.json").write_text("keep")
    import onnx

    stripped = onnx.load(str(exported))
    del stripped.metadata_props[:]  # as graph tools leave kpx files
    onnx.save(stripped, str(work / "nometa.onnx"))
    model_bytes = exported.read_bytes()
    argv, message = BAD_CHECKS[case]
    code, out, err = run(capsys, *[a.format(model=exported) for a in argv])
    assert code == 2 and message in err and out == ""
    assert len(err.strip().splitlines()) == 1
    assert exported.read_bytes() == model_bytes and (work / "old.json").read_text() == "keep"  # nothing overwritten


def test_report_follows_the_output_rules(capsys, work, exported):
    report = work / "r.json"
    report.write_text("old")
    dims = ["--dim", "B=1", "--dim", "N=2", "--dim", "H=3", "--dim", "W=3"]
    assert run(capsys, "check", str(exported), *dims, "--report", str(report))[0] == 2
    assert report.read_text() == "old"
    assert run(capsys, "check", str(exported), *dims, "--report", str(report), "--force")[0] == 0
    assert json.loads(report.read_text())["verdict"] == "pass"
    assert sorted(p.name for p in work.iterdir() if p.name.startswith(".")) == []  # no temporaries


def test_a_report_that_cannot_be_written_is_one_line_and_leaves_nothing(work, exported):
    """A size-limited write (RLIMIT_FSIZE, as a full disk) used to leave a partial JSON."""
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        from export_tools.cli import main
        sys.exit(main(["check", {str(exported)!r}, "--dim", "B=2", "--dim", "N=3", "--dim", "H=5", "--dim", "W=4",
                       "--report", "r.json"]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=work, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()[-1:]
    assert line.startswith("kpx: error: cannot write the report 'r.json': File too large")
    assert not (work / "r.json").exists() and not [p for p in work.iterdir() if p.name.startswith(".r.json")]


def test_bench_on_a_model_ort_cannot_load_is_exit_2(capsys, tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("Mystery", ["x"], ["y"], domain="acme")  # no body, no kernel: ORT refuses it
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("acme", 1)])
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    code, _, err = run(capsys, "bench", str(path), "--seconds", "0.1", "--providers", "cpu")
    assert code == 2 and err.startswith("kpx: error: onnxruntime cannot load this model") and len(err.splitlines()) == 1


def test_an_internal_error_is_exit_4_and_asks_for_a_report(capsys, monkeypatch):
    from export_tools.cli import ops

    def broken(args, log):
        raise KeyError("registry")

    monkeypatch.setattr(ops, "run", broken)
    code, _, err = run(capsys, "ops")
    assert code == 4 and "this is a kpx bug, please report it" in err.lower() and "rerun with -v" in err
    code, _, err = run(capsys, "-v", "ops")
    assert code == 4 and "Traceback" in err and "KeyError" in err


def test_check_with_a_missing_cuda_provider_is_environment_error(capsys, exported):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has the CUDA EP")
    code, _, err = run(capsys, "check", str(exported), "--providers", "cuda", "--dim", "B=1", "--dim", "N=1",
                       "--dim", "H=3", "--dim", "W=3")  # fmt: skip
    assert code == 3 and "CUDAExecutionProvider" in err and "pip install onnxruntime-gpu" in err


def test_check_on_edge_runtimes(capsys, tmp_path):
    pytest.importorskip("openvino")
    fn, inline = tmp_path / "fn.onnx", tmp_path / "inline.onnx"
    assert cli.main(["export", "builtin:spatial_soft_argmax2d", "-o", str(fn)]) == 0
    assert cli.main(["export", "builtin:spatial_soft_argmax2d", "-o", str(inline), "--emit", "inline"]) == 0
    dims = ["--dim", "B=1", "--dim", "N=2", "--dim", "H=5", "--dim", "W=4"]
    capsys.readouterr()
    code, out, _ = run(capsys, "check", str(inline), "--providers", "cpu,openvino,ort-mobile", *dims)
    assert code == 0 and "openvino-cpu" in out and "ort-mobile" in out and "verdict: PASS (3 cases)" in out
    code, _, err = run(capsys, "check", str(fn), "--providers", "openvino", *dims)
    assert code == 2 and "cannot read ONNX local functions" in err and "--emit inline" in err


# --- kpx inspect -------------------------------------------------------------------------------------------


def test_inspect_function_and_inline_exports(capsys, tmp_path):
    fn, inline = tmp_path / "fn.onnx", tmp_path / "inline.onnx"
    for path, emit in ((fn, "function"), (inline, "inline")):
        assert run(capsys, "export", "builtin:spatial_soft_argmax2d", "-o", str(path), "--emit", emit)[0] == 0
    code, out, _ = run(capsys, "inspect", str(fn), "--json")
    info = json.loads(out)
    assert code == 0
    assert info["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["B", "N", "H", "W"]}]
    assert info["opset_imports"] == {"ai.onnx": 18, "kpx": 1}
    assert info["kpx"]["form"] == "function"
    assert info["kpx"]["ops"] == [{"op_type": "SpatialSoftArgmax2d", "count": 1, "domain_version": 1, "function": True}]
    assert info["node_counts"] == {"SpatialSoftArgmax2d": 1}
    info = json.loads(run(capsys, "inspect", str(inline), "--json")[1])
    assert info["kpx"]["form"] == "inline" and info["kpx"]["exported_ops"] == ["SpatialSoftArgmax2d"]
    assert not info["functions"] and "kpx" not in info["opset_imports"] and info["nodes"] > 5
    code, out, _ = run(capsys, "inspect", str(fn))
    assert "input: float32[B, N, H, W]" in out and "kpx.SpatialSoftArgmax2d v1 x1: function body attached" in out


def test_inspect_bad_file(capsys, tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not a protobuf at all \xff\xff")
    code, _, err = run(capsys, "inspect", str(tmp_path / "x.onnx"))
    assert code == 2 and "not a readable ONNX file" in err


# --- kpx doctor --------------------------------------------------------------------------------------------


def test_doctor_reports_versions_and_providers(capsys):
    import onnxruntime

    code, out, _ = run(capsys, "doctor", "--json")
    info = json.loads(out)
    assert info["versions"]["onnxruntime"] == onnxruntime.__version__
    assert info["providers"] == onnxruntime.get_available_providers()
    assert code == (0 if info["healthy"] else 3)


def test_doctor_finds_both_ort_distributions(capsys, monkeypatch):
    from export_tools import doctor

    monkeypatch.setattr(
        doctor, "installed_distributions", lambda: {"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1"}
    )
    code, out, _ = run(capsys, "doctor")
    assert code == 3
    assert "onnxruntime and onnxruntime-gpu are all installed" in out
    assert "fix: pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in out


def test_doctor_finds_a_cuda_ep_that_cannot_load(capsys, monkeypatch):
    from export_tools import doctor

    monkeypatch.setattr(doctor, "probe_cuda_ep", lambda: "libcublasLt.so.12: cannot open shared object file")
    code, out, _ = run(capsys, "doctor")
    assert code == 3 and "CUDA execution provider is listed but cannot run (libcublasLt" in out and "fix:" in out


# --- kpx bench ---------------------------------------------------------------------------------------------


def test_bench_builtin_and_onnx_file(capsys, tmp_path):
    code, out, _ = run(capsys, "bench", "builtin:spatial_soft_argmax2d", "--seconds", "0.3", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["runtime"] for r in rows][:2] == ["torch-eager", "ort-cpu"]
    assert all(r["median_ms"] > 0 and r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] and r["calls"] >= 5 for r in rows)
    path = tmp_path / "m.onnx"
    assert run(capsys, "export", "builtin:spatial_softmax2d", "-o", str(path))[0] == 0
    code, out, _ = run(capsys, "bench", str(path), "--seconds", "0.2", "--dim", "B=1", "--dim", "N=2", "--dim", "H=8",
                       "--dim", "W=8")  # fmt: skip
    assert code == 0 and "ort-cpu" in out and "torch-eager" not in out and "inputs: 1x2x8x8" in out


# --- logging and progress ----------------------------------------------------------------------------------


def test_quiet_and_verbose(capsys, exported):
    argv = ["check", str(exported), "--dim", "B=1", "--dim", "N=1", "--dim", "H=3", "--dim", "W=3"]
    code, out, err = run(capsys, *argv)
    assert code == 0 and "checking" in err and "verdict: PASS" in out
    code, out, err = run(capsys, *argv, "-q")
    assert code == 0 and err == "" and "verdict: PASS" in out  # results still on stdout
    code, out, err = run(capsys, "-q", "check", "missing.onnx")
    assert code == 2 and err.startswith("kpx: error:")  # errors are never silenced


def test_progress_bar_draws_only_on_a_terminal_after_a_second(capsys, monkeypatch):
    clock = iter([0.0, 0.5, 1.5, 2.0])
    from export_tools.cli import _common

    monkeypatch.setattr(_common.time, "perf_counter", lambda: next(clock))
    bar = cli.Progress("export", 4, enabled=True)  # start: t=0
    bar.step("fast")  # t=0.5: nothing yet
    assert capsys.readouterr().err == ""
    bar.step("slow")  # t=1.5: drawn
    assert "export [############............] 2/4 slow" in capsys.readouterr().err
    bar.close()
    assert capsys.readouterr().err.startswith("\r")
    quiet = cli.Progress("export", 4, enabled=False)
    quiet.step()
    quiet.close()
    assert capsys.readouterr().err == ""


# --- through real processes --------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_python_dash_m_and_exit_codes_through_a_subprocess(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "export_tools", "ops", "--json"], capture_output=True, text=True,
                        env=_env(), cwd=tmp_path)  # fmt: skip
    assert ok.returncode == 0 and json.loads(ok.stdout) and ok.stderr == ""
    bad = subprocess.run([sys.executable, "-m", "export_tools", "export", "builtin:nope", "-o", "x.onnx"],
                         capture_output=True, text=True, env=_env(), cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.startswith("kpx: error:")
    usage = subprocess.run([sys.executable, "-m", "export_tools", "export"], capture_output=True, text=True,
                           env=_env(), cwd=tmp_path)  # fmt: skip
    assert usage.returncode == 2 and "usage:" in usage.stderr


@pytest.mark.skipif(shutil.which("kpx") is None, reason="the kpx console script is not installed (pip install -e .)")
def test_console_script_exports_and_checks_with_no_progress_bar_when_piped(tmp_path):
    done = subprocess.run(["kpx", "export", "builtin:spatial_softmax2d", "-o", "m.onnx", "--check"],
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "verdict: PASS" in done.stdout and "\r" not in done.stderr and "[#" not in done.stderr
    inspect = subprocess.run(["kpx", "inspect", "m.onnx", "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert json.loads(inspect.stdout)["kpx"]["form"] == "function"


def test_a_closed_pipe_is_a_quiet_end():
    """`kpx ops --json | head -c 10`: the reader goes away; no 'kpx: error: BrokenPipeError'."""
    proc = subprocess.Popen([sys.executable, "-m", "export_tools", "ops", "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()  # before kpx writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == ""


def test_a_data_parallel_model_is_exported_from_the_inside_with_a_note(capsys, work):
    (work / "dp.py").write_text(
        "import torch\nimport head\n\ndef build():\n    return torch.nn.DataParallel(head.build())\n"
    )
    code, out, err = run(capsys, "export", "dp.py:build", "-o", "dp.onnx", "--input", "features:2x8x6x5",
                         "--dynamic", "features:0=B", "--check")  # fmt: skip
    assert code == 0 and "verdict: PASS" in out
    assert "note: exporting the Head inside DataParallel" in err


def test_check_options_without_check_are_refused(capsys, work):
    for extra in (["--report", "r.json"], ["--timeout", "5"], ["--providers", "openvino"], ["--in-process"]):
        code, _, err = run(capsys, "export", "builtin:spatial_softmax2d", "-o", "x.onnx", *extra)
        assert code == 2 and "configure the parity check: add --check" in err, extra
    assert not (work / "x.onnx").exists()


def test_check_options_that_would_have_no_effect_are_refused(capsys, exported):
    dims = ["--dim", "B=1", "--dim", "N=2", "--dim", "H=3", "--dim", "W=3"]
    code, _, err = run(capsys, "check", str(exported), *dims, "--in-process", "--timeout", "5")
    assert code == 2 and "apply to runtimes in worker processes" in err
    code, _, err = run(capsys, "check", str(exported), *dims, "--providers", "reference", "--optimization-level",
                       "basic")  # fmt: skip
    assert code == 2 and "--optimization-level applies to ONNX Runtime" in err


def test_outputs_that_are_not_regular_files_are_refused(capsys, work, exported):
    """`--report /dev/null --force` used to replace /dev/null with a regular file (as root)."""
    fifo = work / "pipe"
    os.mkfifo(fifo)
    link = work / "link.json"
    link.symlink_to(work / "target.json")
    dims = ["--dim", "B=1", "--dim", "N=2", "--dim", "H=3", "--dim", "W=3"]
    for path in (fifo, link):
        code, _, err = run(capsys, "check", str(exported), *dims, "--report", str(path), "--force")
        assert code == 2 and "is not a regular file" in err
    assert fifo.is_fifo() and link.is_symlink() and not (work / "target.json").exists()


def test_a_closed_pipe_keeps_a_failing_verdict_and_a_full_disk_is_not_a_bug(exported):
    argv = [
        sys.executable,
        "-m",
        "export_tools",
        "check",
        str(exported),
        "--dim",
        "B=2",
        "--dim",
        "N=3",
        "--dim",
        "H=5",
        "--dim",
        "W=4",
        "--atol",
        "0",
        "--rtol",
        "0",
    ]  # float32 vs float64 at zero tolerance: FAIL
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 1 and "error" not in err
    with open("/dev/full", "w") as full:
        argv = [sys.executable, "-m", "export_tools", "ops"]
        done = subprocess.run(argv, cwd=ROOT, stdout=full, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 2 and "cannot write to standard output: No space left on device" in done.stderr


def test_check_of_a_file_the_float64_reference_cannot_evaluate_names_the_way_out(capsys, tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("Mystery", ["x"], ["y"], domain="acme")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("acme", 1)])
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    code, _, err = run(capsys, "check", str(path))
    assert code == 2 and "cannot evaluate this file" in err and "--reference MODEL" in err


def test_check_of_a_kpx_file_defaults_to_its_export_sizes_and_one_larger(capsys, tmp_path):
    path = tmp_path / "a.onnx"
    assert cli.main(["export", "builtin:spatial_soft_argmax2d", "-o", str(path)]) == 0
    capsys.readouterr()
    report = tmp_path / "r.json"
    code, out, _ = run(capsys, "check", str(path), "--report", str(report))
    assert code == 0 and "verdict: PASS (2 cases)" in out
    shapes = [i["shapes"] for i in json.loads(report.read_text())["inputs"]]
    assert shapes == [[[2, 4, 8, 6]], [[3, 5, 9, 7]]]  # the export sample's sizes, then each dim + 1
    code, out, _ = run(capsys, "check", str(path), "--dim", "B=1")  # --dim overrides; the rest as recorded
    assert code == 0 and "verdict: PASS (2 cases)" in out and "resized N=5,H=9,W=7" in out
