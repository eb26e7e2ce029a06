"""kpx files through the graph tools people run after export: the real tools, every op, both emit modes.

onnxslim, onnxsim, onnxoptimizer, ``polygraphy surgeon sanitize --fold-constants`` and an onnx-graphsurgeon
round trip must leave every kpx file valid and computing the same ONNX Runtime outputs. What a tool drops
(onnx.version_converter: function bodies; graphsurgeon and polygraphy: metadata) ``kpx repair`` restores.
"""

from __future__ import annotations

import functools
import shutil
import subprocess

import numpy as np
import onnx
import pytest

from custom_ops import list_ops
from export_tools import EMIT_MODES, cli, to_onnx
from export_tools.errors import VerificationError
from export_tools.graph import kpx_nodes, props
from export_tools.models import OpModel
from export_tools.parity.inputs import input_sets
from export_tools.postprocess import SAME, repair, simplify
from export_tools.runtimes import make_runner

OPS = [s.name for s in list_ops()]
CASES = [(op, emit) for op in OPS for emit in EMIT_MODES]


@functools.cache
def _file(op: str, emit: str) -> onnx.ModelProto:
    spec = next(s for s in list_ops() if s.name == op)
    sample = spec.export_sample()
    model = OpModel(spec, sample)
    return to_onnx(model, model.example_inputs(), dynamic_shapes=model.dynamic_shapes(sample),
                   input_names=model.input_names(), emit=emit)  # fmt: skip


def _sets(proto) -> dict[str, tuple]:
    """Seeded inputs at the export sizes and one larger (both sets exist for every dynamic export sample)."""
    sets = {name: feeds for name, (feeds, _) in input_sets(proto.SerializeToString()).items()}
    assert len(sets) == 2
    return sets


def _max_diff(original, transformed) -> float:
    """ORT CPU outputs of both files on both input sets; asserts they are the same (``SAME``)."""
    before = make_runner("cpu", original.SerializeToString())
    after = make_runner("cpu", transformed.SerializeToString())
    worst = 0.0
    for feeds in _sets(original).values():
        for e, a in zip(before.run(feeds), after.run(feeds), strict=True):
            rtol, atol = SAME[str(a.dtype)]
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)
            finite = np.isfinite(e)
            worst = max(worst, float(np.abs(a[finite].astype(float) - e[finite]).max(initial=0.0)))
    return worst


def _onnxslim(model):
    import onnxslim

    return onnxslim.slim(model)


def _onnxsim(model):
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    assert ok
    return simplified


def _onnxoptimizer(model):
    import onnxoptimizer

    return onnxoptimizer.optimize(model)


def _graphsurgeon(model):
    import onnx_graphsurgeon as gs

    return gs.export_onnx(gs.import_onnx(model))


def _polygraphy(model, tmp_path):
    tool = shutil.which("polygraphy")
    if tool is None:
        pytest.skip("polygraphy is not installed")
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, str(src))
    done = subprocess.run([tool, "surgeon", "sanitize", str(src), "--fold-constants", "-o", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return onnx.load(str(out))


TOOLS = {"onnxslim": _onnxslim, "onnxsim": _onnxsim, "onnxoptimizer": _onnxoptimizer, "graphsurgeon": _graphsurgeon}


@pytest.mark.parametrize("tool", [*TOOLS, "polygraphy"])
@pytest.mark.parametrize(("op", "emit"), CASES, ids=[f"{op}-{emit}" for op, emit in CASES])
def test_kpx_files_survive_the_graph_tools(op, emit, tool, tmp_path):
    pytest.importorskip({"graphsurgeon": "onnx_graphsurgeon"}.get(tool, tool))
    original = _file(op, emit)
    copy = onnx.ModelProto()
    copy.CopyFrom(original)
    transformed = _polygraphy(copy, tmp_path) if tool == "polygraphy" else TOOLS[tool](copy)
    onnx.checker.check_model(transformed, full_check=True)
    if emit == "function":  # no tool inlines or drops the bodies
        assert {f.name for f in transformed.functions} == {f.name for f in original.functions}
    diff = _max_diff(original, transformed)
    print(f"{tool} {op} {emit}: max abs diff {diff:.3g}")


@pytest.mark.parametrize("op", OPS)
def test_version_converter_drops_the_bodies_and_kpx_repair_restores_them(op, tmp_path, capsys):
    import onnx.version_converter

    original = _file(op, "function")
    converted = onnx.version_converter.convert_version(original, 17)
    assert not converted.functions and kpx_nodes(converted)  # measured: every body gone
    path = tmp_path / "converted.onnx"
    onnx.save(converted, str(path))
    assert cli.main(["inspect", str(path)]) == 0
    assert "PROBLEM: kpx nodes without function bodies" in capsys.readouterr().out
    assert cli.main(["repair", str(path), "-o", str(tmp_path / "fixed.onnx")]) == 0
    fixed = onnx.load(str(tmp_path / "fixed.onnx"))
    assert {o.domain or "": o.version for o in fixed.functions[0].opset_import}[""] == 17
    _max_diff(original, fixed)


@pytest.mark.parametrize(("source", "target"), [(18, 15), (18, 17), (17, 21), (21, 18)])
def test_repair_converts_the_opset_the_kpx_way(source, target):
    original = repair(_file("decode_heatmaps", "function"), opset=source)
    converted = repair(original, opset=target)
    opsets = {o.domain or "": o.version for o in converted.opset_import}
    assert (
        opsets[""] == target and {o.domain or "": o.version for o in converted.functions[0].opset_import}[""] == target
    )
    _max_diff(original, converted)


def test_repair_restores_the_metadata_graphsurgeon_drops(tmp_path, capsys):
    original = _file("spatial_soft_argmax2d", "function")
    stripped = _graphsurgeon(original)
    assert not props(stripped)  # measured: onnx-graphsurgeon 0.6 drops metadata_props
    path = tmp_path / "gs.onnx"
    onnx.save(stripped, str(path))
    assert cli.main(["inspect", str(path)]) == 0
    assert "the kpx metadata is gone" in capsys.readouterr().out
    dims = ["--dim", "B=2", "--dim", "N=4", "--dim", "H=8", "--dim", "W=6"]
    assert cli.main(["repair", str(path), "-o", str(tmp_path / "fixed.onnx"), *dims]) == 0
    assert props(onnx.load(str(tmp_path / "fixed.onnx")))["kpx.ops"] == '{"SpatialSoftArgmax2d": 1}'


@pytest.mark.parametrize("tool", ["onnxslim", "onnxsim"])
def test_simplify_keeps_kpx_files_whole_and_reports(tool, tmp_path, capsys):
    pytest.importorskip(tool)
    src = tmp_path / "a.onnx"
    assert cli.main(["export", "builtin:decode_heatmaps", "-o", str(src)]) == 0
    assert cli.main(["simplify", str(src), "-o", str(tmp_path / "b.onnx"), "--tool", tool]) == 0
    out = capsys.readouterr().out
    assert f"{tool} " in out and "nodes" in out and "load" in out and "outputs equal on inputs, resized" in out
    simplified = onnx.load(str(tmp_path / "b.onnx"))
    assert simplified.functions and props(simplified)["kpx.example_shapes"]


def test_simplify_refuses_a_result_that_computes_something_else(monkeypatch, tmp_path, capsys):
    """A simplifier that changed a constant: the result is refused, nothing is written, exit 1."""
    import onnxslim

    def wrong(model):
        bad = onnx.ModelProto()
        bad.CopyFrom(model)
        for f in bad.functions:
            for node in f.node:
                for attr in node.attribute:
                    if attr.name == "value" and attr.t.data_type == onnx.TensorProto.FLOAT and attr.t.dims == []:
                        value = onnx.numpy_helper.to_array(attr.t) * 1.5
                        attr.t.CopyFrom(onnx.numpy_helper.from_array(value.astype(np.float32)))
        return bad

    monkeypatch.setattr(onnxslim, "slim", wrong)
    with pytest.raises(VerificationError, match="changed output"):
        simplify(_file("spatial_soft_argmax2d", "function"), "onnxslim")
    src = tmp_path / "a.onnx"
    onnx.save(_file("spatial_soft_argmax2d", "function"), str(src))
    assert cli.main(["simplify", str(src), "-o", str(tmp_path / "b.onnx")]) == 1
    assert "changed output" in capsys.readouterr().err and not (tmp_path / "b.onnx").exists()


def test_export_simplify_option(tmp_path, capsys):
    pytest.importorskip("onnxslim")
    out = tmp_path / "s.onnx"
    assert cli.main(["export", "builtin:spatial_softmax2d", "-o", str(out), "--simplify", "onnxslim", "--check"]) == 0
    captured = capsys.readouterr()
    assert "onnxslim" in captured.err and "verdict: PASS" in captured.out
    assert kpx_nodes(onnx.load(str(out)))


def test_the_tools_are_installed_where_the_tests_run():
    """The test extra installs them; a test that silently skipped every tool would prove nothing."""
    for module in ("onnxslim", "onnxsim", "onnxoptimizer", "onnx_graphsurgeon", "polygraphy"):
        __import__(module)
    assert shutil.which("polygraphy") is not None
