"""Registry-driven parity matrix: every op x sample x emit mode x opset, on ORT CPU.

Dynamic samples are exported at one size and run at others (grids must come
from the runtime shape). fp32 ORT must match PyTorch within each op's float32
tolerance from the registry (all at most 1e-5, issue 2).

Opsets: 15 (the lowest kpx supports), 17 (the highest TensorRT 8.x reads), 18 (what torch.onnx
writes) and 21. ``to_onnx`` is ``finalize(trace(...))`` and the torch trace is most of its cost,
so each sample is traced once per trace opset (18 serves 15-18) and finalized per opset and emit
mode; tests/test_downgrade.py and tests/test_exporter.py call ``to_onnx`` itself below 18.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
import torch

from custom_ops import DOMAIN, get_op, list_ops
from custom_ops.registry import MIN_OPSET
from export_tools import kpx_nodes
from export_tools.downgrade import EXPORT_OPSET
from export_tools.exporter import finalize, trace
from export_tools.models import OpModel
from tests.conftest import ort_session, run_ort

CASES = [(spec, sample) for spec in list_ops() for sample in spec.samples()]
IDS = [f"{spec.name}-{sample.name}" for spec, sample in CASES]
OPSETS = [MIN_OPSET, 17, 18, 21]


@functools.cache
def _traced(op: str, sample_index: int, trace_opset: int) -> tuple[OpModel, onnx.ModelProto]:
    """The sample's model and its torch trace at ``trace_opset`` (shared by the opsets and emit modes)."""
    spec = get_op(op)
    sample = spec.samples()[sample_index]
    model = OpModel(spec, sample)
    raw = trace(model, model.example_inputs(), opset=trace_opset, dynamic_shapes=model.dynamic_shapes(sample),
                input_names=model.input_names())  # fmt: skip
    return model, raw


def _resized(inputs: tuple[torch.Tensor, ...], dynamic: tuple, make=None) -> list[tuple[torch.Tensor, ...]]:
    """Inputs whose dynamic dims differ from the export size (bigger and smaller), with similar values: the
    sample's ``make_inputs`` when it has one, else random values with the sample's mean and spread."""
    variants = []
    for delta in (3, -1):
        shapes = [[max(1, n + delta) if d in (dims or {}) else n for d, n in enumerate(t.shape)]
                  for t, dims in zip(inputs, dynamic)]  # fmt: skip
        if make is not None:
            variants.append(tuple(make([tuple(s) for s in shapes])))
            continue
        out = []
        for tensor, shape in zip(inputs, shapes):
            finite = tensor[torch.isfinite(tensor)]  # samples may hold NaN/inf on purpose
            fresh = torch.randn(*shape, dtype=tensor.dtype) * finite.std() + finite.mean()
            out.append(fresh.abs() if (finite >= 0).all() else fresh)
        variants.append(tuple(out))
    return variants


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("emit", ["function", "inline"])
@pytest.mark.parametrize(("spec", "sample"), CASES, ids=IDS)
def test_ort_cpu_matches_pytorch(spec, sample, emit, opset):
    index = [s.name for s in spec.samples()].index(sample.name)
    model, raw = _traced(spec.name, index, max(opset, EXPORT_OPSET))
    inputs = model.example_inputs()
    proto = finalize(raw, opset=opset, emit=emit)
    onnx.checker.check_model(proto, full_check=True)
    default_opset = {o.domain: o.version for o in proto.opset_import}[""]
    assert default_opset == opset
    if opset < EXPORT_OPSET:  # lowered graphs claim the lowest IR version that holds them
        assert proto.ir_version == (9 if emit == "function" else 8)
    if emit == "function":
        nodes = kpx_nodes(proto)
        assert [n.op_type for n in nodes] == [spec.onnx_op_type]
        assert [(f.domain, f.name) for f in proto.functions] == [(DOMAIN, spec.onnx_op_type)]
        assert {o.domain: o.version for o in proto.functions[0].opset_import}[""] == opset
    else:
        assert not proto.functions
        assert all(n.domain != DOMAIN for n in proto.graph.node)
        assert DOMAIN not in {o.domain for o in proto.opset_import}

    session = ort_session(proto)
    runs = [inputs] + (_resized(inputs, sample.dynamic, sample.make_inputs) if sample.dynamic else [])
    rtol, atol = spec.tolerances[torch.float32]  # all <= 1e-5 (issue 2: fp32 within 1e-5)
    for feed in runs:
        expected = model(*feed)
        expected = expected if isinstance(expected, tuple) else (expected,)
        actual = run_ort(session, *feed)
        assert len(actual) == len(expected) == len(spec.outputs)
        for got, want in zip(actual, expected):
            assert got.shape == tuple(want.shape)
            np.testing.assert_allclose(got, want.numpy(), rtol=rtol, atol=atol)
