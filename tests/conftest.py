"""Shared fixtures: ONNX Runtime CPU sessions and one-op exports."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def ort_session(proto):
    """A CPU InferenceSession for an in-memory ModelProto (skips if onnxruntime is absent)."""
    pytest.importorskip("onnxruntime")
    from export_tools.runtimes import ort_session as make_session

    return make_session(proto.SerializeToString())


def run_ort(session, *inputs: torch.Tensor) -> list[np.ndarray]:
    """Runs ``session`` on torch tensors (fed by position)."""
    feeds = {i.name: t.detach().cpu().numpy() for i, t in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
