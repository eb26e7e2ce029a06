"""Runtimes in worker processes: a crash, a hang or an exhausted memory limit is a result, not the end."""

from __future__ import annotations

import json
import runpy
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import custom_ops
from export_tools import cli, to_onnx
from export_tools.errors import LocalFunctionsUnsupportedError, RunFailedError
from export_tools.parity import check_parity
from export_tools.runtimes import RUNNERS
from export_tools.runtimes.isolation import IsolatedRunner, shutdown_workers

ROOT = Path(__file__).resolve().parents[1]
X = torch.randn(2, 3, 6, 5)
MODULE = custom_ops.SpatialSoftArgmax2d(0.5)


@pytest.fixture(scope="module")
def model() -> bytes:
    return to_onnx(MODULE, (X,), emit="inline").SerializeToString()


@pytest.fixture
def misbehaving():
    from tests import runtimes_for_tests

    for cls in runtimes_for_tests.TEST_RUNNERS:
        RUNNERS.setdefault(cls.kind, cls)
    try:
        yield "misbehaving-test"
    finally:
        for cls in runtimes_for_tests.TEST_RUNNERS:
            RUNNERS.pop(cls.kind, None)


def _check(model, misbehave: str, phase: str, **options):
    limits = {k: options.pop(k) for k in ("timeout", "memory_limit_mb") if k in options}
    return check_parity(MODULE, (X,), model=model, runtimes=["cpu", "misbehaving-test"], resized=False,
                        runtime_options={"misbehaving-test": {"misbehave": misbehave, "phase": phase, **options}},
                        **limits)  # fmt: skip


@pytest.mark.parametrize("phase", ["load", "run"])
def test_a_segfault_is_a_failed_case_and_the_others_still_report(model, misbehaving, phase):
    report = _check(model, "segfault", phase, level=0)
    assert not report.passed
    ok = [c for c in report.cases if c.runtime == "ort-cpu"]
    assert len(ok) == 1 and ok[0].passed  # ORT CPU ran in its own worker, unharmed
    (failed,) = [c for c in report.cases if c.failure]
    assert failed.failure["what"] == "crashed with SIGSEGV" and failed.failure["phase"] == phase
    assert failed.inputs == ("(load)" if phase == "load" else "inputs")
    assert "FAILED: crashed with SIGSEGV during " + phase in report.table()
    assert report.as_dict()["cases"][-1]["failure"]["what"] == "crashed with SIGSEGV"


def test_a_hang_is_killed_at_the_time_limit(model, misbehaving):
    start = time.perf_counter()
    report = _check(model, "hang", "run", level=0, timeout=3)
    assert time.perf_counter() - start < 30
    (failed,) = [c for c in report.cases if c.failure]
    assert failed.failure["what"] == "timed out after 3 s" and failed.failure["phase"] == "run"
    assert [c.passed for c in report.cases if c.runtime == "ort-cpu"] == [True]


def test_running_out_of_memory_under_the_limit_is_reported(model, misbehaving):
    report = _check(model, "allocate", "run", level=0, memory_limit_mb=3072)
    (failed,) = [c for c in report.cases if c.failure]
    assert failed.failure["what"] == "ran out of memory (limit 3072 MiB)", failed.failure


def test_a_crash_is_retried_with_safer_options_and_both_are_reported(model, misbehaving):
    """A runtime that crashes at levels 3 and 2 and works at 1 (as ORT at optimisation levels all/extended)."""
    report = _check(model, "segfault", "load", level=3, safe_below=1)
    rows = [(c.runtime, c.failure["what"] if c.failure else "ran", c.passed) for c in report.cases]
    assert ("misbehaving@3", "crashed with SIGSEGV", False) in rows
    assert ("misbehaving@2", "crashed with SIGSEGV", False) in rows
    assert ("misbehaving@1", "ran", True) in rows
    assert not report.passed  # the file crashes the runtime at its first options: not a pass


def test_errors_on_purpose_keep_their_type_across_the_process_boundary():
    function_file = to_onnx(MODULE, (X,)).SerializeToString()
    pytest.importorskip("openvino")
    with pytest.raises(LocalFunctionsUnsupportedError, match="--emit inline"):
        IsolatedRunner("openvino", function_file)


def test_a_worker_is_reused_and_replaced_after_a_crash(model, misbehaving):
    first = IsolatedRunner("cpu", model)
    second = IsolatedRunner("cpu", model)
    assert first._worker is second._worker  # one worker per runtime, several models
    np.testing.assert_allclose(first.run([X.numpy()])[0], second.run([X.numpy()])[0])
    with pytest.raises(RunFailedError, match="crashed with SIGSEGV during load"):
        IsolatedRunner("misbehaving-test", model, level=0)
    after = IsolatedRunner("misbehaving-test", model, level=0, safe_below=0)  # a fresh worker
    assert after.run([X.numpy()])[0].shape == (2, 3, 2)
    shutdown_workers()


def test_in_process_when_asked(model):
    report = check_parity(MODULE, (X,), model=model, isolate=False, resized=False)
    assert report.passed and "isolated" not in report.runtimes[1]
    report = check_parity(MODULE, (X,), model=model, resized=False)
    assert report.runtimes[1]["isolated"] == "worker process"


def test_the_cli_reports_a_crashing_runtime_with_exit_1(model, misbehaving, tmp_path, capsys):
    path = tmp_path / "m.onnx"
    path.write_bytes(model)
    report = tmp_path / "r.json"
    code = cli.main(["check", str(path), "--providers", "cpu,misbehaving-test", "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 1 and "FAILED: crashed with SIGSEGV during load" in out and "verdict: FAIL" in out
    assert "ort-cpu" in out  # the table holds the runtimes that ran
    assert json.loads(report.read_text())["schema"] == "kpx.parity/4"


def test_real_onnx_runtime_crash_on_an_fp16_transformer_is_survived():
    """ONNX Runtime 1.32 segfaults creating a CPU session at ORT_ENABLE_ALL for this fp16 export (measured
    2026-11-29) and runs it at ORT_ENABLE_EXTENDED: the check reports both and still gives its verdict."""
    import onnxruntime

    model = runpy.run_path(str(ROOT / "examples" / "vit_pose.py"), run_name="kpx_example")["build"]()
    x = torch.randn(2, 3, 256, 192)
    half = to_onnx(model, (x,), dtype="float16", dynamic_shapes=({0: "B"},))
    report = check_parity(model, (x,), model=half, resized=False, localize=False)
    crashed = [c for c in report.cases if c.failure]
    ran = [c for c in report.cases if not c.failure]
    if onnxruntime.__version__ == "1.32.0":
        assert [c.failure["what"] for c in crashed] == ["crashed with SIGSEGV"], report.table()
        assert crashed[0].failure["phase"] == "load" and crashed[0].runtime == "ort-cpu"
    assert ran and ran[-1].runtime.startswith("ort-cpu")  # a level that loads ran the model and was compared
    assert all(c.runtime != "ort-cpu" for c in ran) == bool(crashed)
    from export_tools.bench import bench

    rows = bench(half.SerializeToString(), [x.half().numpy()], runtimes=["cpu"], seconds=0.3)  # `kpx bench` too
    assert rows[-1].failed is None and rows[-1].calls >= 5
    assert [r.failed for r in rows[:-1]] == (["crashed with SIGSEGV during load"] if crashed else [])


# --- what a review found (each failed before its fix) -------------------------------------------------------


def test_a_runner_whose_shared_worker_another_runner_crashed_loads_again(model, misbehaving):
    """Localisation shares the lane's worker; when it crashed the worker, the lane's next run got a false
    failure ('seek of closed file'). Now the runner loads its model into the fresh worker and runs."""
    calm = IsolatedRunner("misbehaving-test", model, level=0, safe_below=0)
    wild = IsolatedRunner("misbehaving-test", model, misbehave="segfault", phase="run", level=1, safe_below=0)
    with pytest.raises(RunFailedError, match="crashed with SIGSEGV during run"):
        wild.run([X.numpy()])
    np.testing.assert_allclose(calm.run([X.numpy()])[0], MODULE(X).numpy(), rtol=1e-5, atol=1e-5)


def test_a_small_memory_limit_is_out_of_memory_not_a_missing_package(model):
    report = check_parity(MODULE, (X,), model=model, resized=False, memory_limit_mb=50)
    (failed,) = [c for c in report.cases if c.failure]
    assert failed.failure["what"] == "ran out of memory (limit 50 MiB)" and failed.failure["phase"] == "load"
    assert check_parity(MODULE, (X,), model=model, resized=False, memory_limit_mb=1024).passed


def test_a_load_that_fails_for_good_is_recorded_once(model, misbehaving):
    start = time.perf_counter()
    report = check_parity(MODULE, {"a": (X,), "b": (X * 2,), "c": (X * 3,)}, model=model, resized=False,
                          runtimes=["misbehaving-test"], timeout=2,
                          runtime_options={"misbehaving-test": {"misbehave": "hang", "level": 0}})  # fmt: skip
    assert [(c.inputs, c.failure["what"]) for c in report.cases] == [("(load)", "timed out after 2 s")]
    assert time.perf_counter() - start < 15  # one time limit, not one per input set


def test_one_worker_per_runtime_whatever_the_limits(model):
    """A worker with another memory limit replaces the runtime's worker instead of joining it."""
    workers = []
    for limit in (None, 2048, 3072):
        runner = IsolatedRunner("cpu", model, memory_limit_mb=limit)
        workers.append(runner._worker)
        runner.close()
    assert [w.alive() for w in workers] == [False, False, True]
    assert workers[0].process.poll() is not None and workers[1].process.poll() is not None  # stopped, not leaked


def test_bench_reports_a_runtime_that_crashes_at_every_level_instead_of_dying(model, misbehaving):
    from export_tools.bench import bench, format_timings

    rows = bench(model, [X.numpy()], runtimes=["cpu", "misbehaving-test"], seconds=0.2)
    assert rows[0].runtime == "ort-cpu" and rows[0].failed is None and rows[0].calls >= 5
    assert [(r.runtime, r.failed) for r in rows[1:]] == [
        (f"misbehaving@{level}", "crashed with SIGSEGV during load") for level in (3, 2, 1, 0)
    ]
    assert "misbehaving@0      FAILED: crashed with SIGSEGV during load" in format_timings(rows)


BAD_ISOLATION = {
    "timeout 0": ({"timeout": 0}, "timeout must be a number > 0"),
    "negative memory limit": ({"memory_limit_mb": -1}, "memory_limit_mb must be a number > 0"),
    "limits in process": ({"isolate": False, "timeout": 5}, "apply to runtimes in worker processes"),
    "options for a runtime not checked": ({"runtime_options": {"cuda": {}}}, "not among runtimes ['cpu']"),
    "an option the runtime does not take": ({"runtime_options": {"cpu": {"threads": 2}}}, "takes no option(s)"),
    "an unknown optimisation level": (
        {"runtime_options": {"cpu": {"optimization_level": "max"}}},
        "optimization_level must be one of",
    ),
    "a runtime twice": ({"runtimes": ["cpu", "cpu"]}, "names a runtime twice"),
}


@pytest.mark.parametrize("case", list(BAD_ISOLATION), ids=lambda c: c.replace(" ", "_"))
def test_bad_isolation_arguments_name_the_argument(model, case):
    kwargs, message = BAD_ISOLATION[case]
    with pytest.raises(ValueError) as raised:
        check_parity(MODULE, (X,), model=model, resized=False, **kwargs)
    assert message in str(raised.value)
