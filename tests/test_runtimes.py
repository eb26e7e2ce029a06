"""The runtime table: every runner keeps the contract, and everything that lists runtimes reads the table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import custom_ops
from export_tools import cli, to_onnx
from export_tools.errors import RunnerUnavailableError
from export_tools.runtimes import RUNNERS, Runner, availability, get_runner, make_runner

KINDS = list(RUNNERS)


@pytest.fixture(scope="module")
def inline_model() -> tuple[bytes, np.ndarray]:
    x = torch.randn(2, 3, 6, 5)
    proto = to_onnx(custom_ops.SpatialSoftArgmax2d(0.5), (x,), emit="inline")
    return proto.SerializeToString(), x.numpy()


def test_the_table_holds_every_runtime_kpx_documents():
    assert {"cpu", "cuda", "openvino", "ort-mobile", "reference"} <= set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_runner_keeps_the_contract(kind, inline_model):
    cls = get_runner(kind)
    assert issubclass(cls, Runner) and cls.kind == kind and cls.summary and cls.source in ("onnx", "pytorch")
    state = availability(kind)
    if state != "available":
        assert "fix:" in state or "pip install" in state, state  # the reason names the fix
        with pytest.raises(RunnerUnavailableError):
            make_runner(kind, inline_model[0])
        return
    model, x = inline_model
    if cls.source == "pytorch":  # built from the PyTorch model (ExecuTorch's .pte), not from the ONNX file
        model = cls.from_pytorch(custom_ops.SpatialSoftArgmax2d(0.5), (torch.from_numpy(x),))
    runner = make_runner(kind, model)
    (out,) = runner.run([x])
    expected = custom_ops.spatial_soft_argmax2d(torch.from_numpy(x), 0.5).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    described = runner.describe()
    assert described["runtime"] == runner.name and len(described) >= 2


def test_unknown_runtime_names_the_choices():
    with pytest.raises(ValueError, match="runtime must be one of 'cpu', 'cuda'"):
        get_runner("tpu")


@pytest.fixture
def doubling():
    """tests/runtimes_for_tests.py registers its runtimes on import (worker processes import it too); the
    table is restored after the test."""
    from tests import runtimes_for_tests

    for cls in runtimes_for_tests.TEST_RUNNERS:
        RUNNERS.setdefault(cls.kind, cls)
    try:
        yield runtimes_for_tests.DoublingRunner
    finally:
        for cls in runtimes_for_tests.TEST_RUNNERS:
            RUNNERS.pop(cls.kind, None)


def test_a_new_runtime_is_one_class(doubling, capsys, inline_model, tmp_path, monkeypatch):
    """Registered, it is accepted by check_parity, listed by kpx doctor and the CLI help, and run by kpx check."""
    from export_tools.doctor import diagnose
    from export_tools.parity import check_parity

    monkeypatch.setenv("COLUMNS", "1000")
    model, x = inline_model
    report = check_parity(custom_ops.SpatialSoftArgmax2d(0.5), (torch.from_numpy(x),), runtimes=["doubling-test"],
                          model=model, localize=False)  # fmt: skip
    assert not report.passed and report.cases[0].runtime == "doubling"  # it ran, and its error was seen
    assert diagnose().runtimes["doubling-test"] == "available"
    assert cli.main(["check", "--help"]) == 0
    assert "doubling-test" in capsys.readouterr().out
    path = tmp_path / "m.onnx"
    path.write_bytes(model)
    assert cli.main(["check", str(path), "--providers", "cpu,doubling-test"]) == 1  # ORT passes, doubling fails
    out = capsys.readouterr().out
    assert "doubling" in out and "ort-cpu" in out and "verdict: FAIL" in out


def test_cli_choices_and_doctor_read_the_table(capsys, monkeypatch):
    from export_tools.doctor import diagnose

    assert set(diagnose().runtimes) == set(KINDS)
    monkeypatch.setenv("COLUMNS", "1000")  # no line wrapping inside names
    assert cli.main(["export", "--help"]) == 0
    help_text = capsys.readouterr().out
    for kind in KINDS:
        assert f"{kind}:" in help_text
