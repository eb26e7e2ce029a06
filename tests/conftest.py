"""Shared fixtures: ONNX Runtime CPU sessions and one-op exports."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

# The whole suite in one process segfaulted (exit 139) in CI and here, at the same test each time: under gdb the
# main thread crashed in the interpreter right after subprocess's vfork(), ~4,200 tests in, with ~110 threads of
# ONNX Runtime, OpenVINO (TBB), OpenCV, OpenBLAS and ExecuTorch pools alive. fork() instead of vfork() for the
# test process's own subprocesses (CPython's documented escape hatch; kpx's workers are unaffected elsewhere).
if hasattr(subprocess, "_USE_VFORK"):
    subprocess._USE_VFORK = False


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
