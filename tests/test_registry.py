"""Every registered op is complete and consistent; generated docs match the code."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import onnx
import pytest
import torch
from onnx import helper

import custom_ops
from custom_ops import DOMAIN, get_op, list_ops, translation_table
from custom_ops.registry import MAX_OPSET, MIN_OPSET
from export_tools.opsdoc import readme_block

ROOT = Path(__file__).resolve().parents[1]
SPECS = list_ops()


def test_every_op_file_is_registered():
    """One op = one file under custom_ops/ops/ (helpers start with ``_``), imported by custom_ops.ops."""
    files = {p.stem for p in (ROOT / "custom_ops" / "ops").glob("*.py") if not p.name.startswith("_")}
    assert files == {s.name for s in SPECS}


def input_ranks(spec) -> tuple[dict[str, int], list[int]]:
    """``{ONNX input: rank}`` and the output ranks, from the first sample that passes every ONNX input.

    Sample arguments are matched to ``spec.inputs`` by name (the functional's parameter names); a Python
    number is a 0-d input. The output ranks come from an eager call of the same sample.
    """
    for sample in spec.samples():
        bound = inspect.signature(spec.functional).bind(*sample.args, **sample.kwargs).arguments
        values = [bound.get(p.name) for p in spec.inputs]
        if all(isinstance(v, (torch.Tensor, int, float)) for v in values):
            ranks = {p.name: v.dim() if isinstance(v, torch.Tensor) else 0 for p, v in zip(spec.inputs, values)}
            outs = spec.functional(*sample.args, **sample.kwargs)
            return ranks, [t.dim() for t in (outs if isinstance(outs, tuple) else (outs,))]
    raise AssertionError(f"{spec.name}: no sample passes every ONNX input {[p.name for p in spec.inputs]}")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_spec_is_complete(spec):
    module = importlib.import_module(f"custom_ops.ops.{spec.name}")  # one op = one file, named after it
    assert module.SPEC is spec
    assert getattr(custom_ops, spec.name) is spec.functional
    assert getattr(custom_ops, spec.onnx_op_type) is spec.module
    assert spec.torch_op is getattr(torch.ops.kpx, spec.name)
    assert get_op(spec.onnx_op_type) is spec
    assert spec.samples(), "every op needs samples for the generic tests"
    assert torch.float32 in spec.tolerances
    # the torch op takes the ONNX inputs then the ONNX attributes, same names, same order
    schema_args = [a.name for a in spec.torch_op.default._schema.arguments]
    assert schema_args == [p.name for p in spec.inputs] + [a.name for a in spec.attributes]


@pytest.mark.parametrize("opset", range(MIN_OPSET, MAX_OPSET + 1))
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_function_body_at_every_opset(spec, opset):
    fn = spec.function_proto(opset)
    assert (fn.domain, fn.name) == (DOMAIN, spec.onnx_op_type)
    assert list(fn.input) == [p.name for p in spec.inputs]
    assert len(fn.output) == len(spec.outputs)
    assert {o.domain: o.version for o in fn.opset_import}[""] == opset
    declared = {a.name for a in spec.attributes}
    assert set(fn.attribute) | {a.name for a in fn.attribute_proto} == declared
    # a one-node model using the function passes the full checker (types and shapes inferred through the body)
    ranks, out_ranks = input_ranks(spec)  # from the samples: a new op needs no edit here
    inputs = [
        helper.make_tensor_value_info(p.name, onnx.TensorProto.FLOAT, [f"{p.name}{i}" for i in range(ranks[p.name])])
        for p in spec.inputs
    ]
    outputs = [
        helper.make_tensor_value_info(p.name, onnx.TensorProto.FLOAT, [None] * rank)
        for p, rank in zip(spec.outputs, out_ranks, strict=True)
    ]
    attrs = {a.name: a.default for a in spec.attributes if a.default is not None}
    attrs |= {a.name: [4, 5] for a in spec.attributes if a.default is None and a.kind == "ints"}  # size=(H, W)
    node = helper.make_node(
        spec.onnx_op_type, [p.name for p in spec.inputs], [p.name for p in spec.outputs], domain=DOMAIN, **attrs
    )
    graph = helper.make_graph([node], "g", inputs, outputs)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)],
        functions=[fn],
        ir_version=10,
    )
    onnx.checker.check_model(model, full_check=True)


def test_schema_matches_spec():
    for spec in SPECS:
        schema = spec.onnx_schema()
        assert (schema.name, schema.domain, schema.since_version) == (spec.onnx_op_type, DOMAIN, spec.version)
        assert [i.name for i in schema.inputs] == [p.name for p in spec.inputs]
        assert set(schema.attributes) == {a.name for a in spec.attributes}


def test_translation_table_covers_every_op():
    table = translation_table()
    assert set(table) == {spec.torch_op.default for spec in SPECS}


def test_generated_blocks_in_the_docs_are_current():
    from export_tools.opsdoc import documents, refresh

    found = documents(ROOT)
    assert ROOT / "README.md" in found and ROOT / "docs" / "parity.md" in found
    for path in found:
        text = path.read_text()
        assert refresh(text) == text, f"{path.name}: a block is stale; run `python -m export_tools.opsdoc --write`"
    readme = (ROOT / "README.md").read_text()
    assert readme_block("ops-table") in readme


def test_import_needs_only_torch():
    import subprocess
    import sys

    code = "import sys, custom_ops; print('onnx' in sys.modules, 'onnxscript' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.split() == ["False", "False"]


def test_public_homes_of_what_the_exporter_needs():
    """kpx's exporter needs ``kpx_export`` (custom_ops.registry, next to ``translation_table``) and the box formats
    (custom_ops.conventions); the old private paths in custom_ops.ops._common are the same objects."""
    from custom_ops import conventions, registry
    from custom_ops.ops import _common

    assert custom_ops.kpx_export is registry.kpx_export is _common.kpx_export
    assert "kpx_export" in custom_ops.__all__
    assert conventions.BOX_FORMATS is _common.BOX_FORMATS == ("xywh", "xyxy", "cs")  # index = the attribute code
    assert tuple(conventions.BOX_FORMAT_CHOICES) == conventions.BOX_FORMATS
