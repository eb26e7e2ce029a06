"""Shared fixtures: ONNX Runtime CPU sessions and one-op exports."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def ort_session(proto):
    """A CPU InferenceSession for an in-memory ModelProto (skips if onnxruntime is absent)."""
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_ort(session, *inputs: torch.Tensor) -> list[np.ndarray]:
    """Runs ``session`` on torch tensors (fed by position)."""
    feeds = {i.name: t.detach().cpu().numpy() for i, t in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
