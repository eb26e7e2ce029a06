"""Writing files: atomic, never over an input, nothing left behind even when the writer is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from export_tools import files
from export_tools.errors import UsageError
from export_tools.files import check_output_path, remove_stale_temporaries, write_atomic

ROOT = Path(__file__).resolve().parents[1]


def test_write_creates_replaces_and_refuses(tmp_path):
    path = tmp_path / "a.bin"
    write_atomic(path, b"one", overwrite=False)
    assert path.read_bytes() == b"one"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # the usual permissions, not mkstemp's 0600
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_atomic(path, b"two", overwrite=False)
    assert path.read_bytes() == b"one"
    write_atomic(path, b"two", overwrite=True)
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_failed_validation_writes_nothing_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")

    def refuse(tmp: str) -> None:
        assert Path(tmp).read_bytes() == b"new"  # the complete data is validated before it takes the name
        raise ValueError("not a model")

    with pytest.raises(ValueError, match="not a model"):
        write_atomic(path, b"new", validate=refuse)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_named_fallback_without_o_tmpfile(tmp_path, monkeypatch):
    """Systems or filesystems without O_TMPFILE use a named temporary, removed after the write."""
    monkeypatch.setattr(files, "_anonymous_file", lambda directory: None)
    path = tmp_path / "a.bin"
    write_atomic(path, b"x", overwrite=False)
    with pytest.raises(FileExistsError):
        write_atomic(path, b"y", overwrite=False)
    write_atomic(path, b"z")
    assert path.read_bytes() == b"z"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from export_tools import files

    if sys.argv[2] == "named":
        files._anonymous_file = lambda directory: None

    def stall(tmp):  # the data is on disk, not yet in place: the moment a kill hurts most
        print("writing", flush=True)
        time.sleep(60)

    files.write_atomic(Path(sys.argv[1]) / "out.onnx", b"x" * (8 << 20), validate=stall)
    """
)


@pytest.mark.parametrize("mode", ["anonymous", "named"])
def test_kill_9_mid_write_leaves_nothing_behind(tmp_path, mode):
    """SIGKILL while the file is being written: no output, and no temporary that outlives the next write."""
    if mode == "anonymous" and files._anonymous_file(tmp_path) is None:
        pytest.skip("no O_TMPFILE on this filesystem")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path), mode], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    left = sorted(p.name for p in tmp_path.iterdir())
    if mode == "anonymous":
        assert left == []  # the data never had a name
    else:
        assert len(left) == 1 and left[0].startswith(".out.onnx.kpx-")  # recognisably kpx's, with the dead pid
        write_atomic(tmp_path / "other.onnx", b"y")  # the next write into the directory cleans it up
        assert sorted(p.name for p in tmp_path.iterdir()) == ["other.onnx"]


def test_stale_temporaries_of_live_processes_and_other_files_are_kept(tmp_path):
    mine = tmp_path / f".a.onnx.kpx-{os.getpid()}.tmp"  # a write in progress (this process)
    mine.write_bytes(b"")
    foreign = tmp_path / ".a.onnx.other.tmp"  # not kpx's naming: never touched
    foreign.write_bytes(b"")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".b.onnx.kpx-{int(dead.stdout)}-abc123.tmp"
    stale.write_bytes(b"")
    time.sleep(0.1)
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert mine.exists() and foreign.exists() and not stale.exists()


def test_output_path_rules(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    with pytest.raises(UsageError, match=r"--report .* also reads or writes"):
        check_output_path(model, overwrite=True, inputs=[model], flag="--report")  # even with --force
    with pytest.raises(UsageError, match="also reads or writes"):
        check_output_path(tmp_path / "." / "m.onnx", overwrite=True, inputs=[str(model)], flag="-o")
    with pytest.raises(UsageError, match="exists; pass --force"):
        check_output_path(model, overwrite=False, flag="-o")
    with pytest.raises(UsageError, match="is a directory"):
        check_output_path(tmp_path, overwrite=True)
    with pytest.raises(UsageError, match="does not exist; create it first"):
        check_output_path(tmp_path / "no" / "r.json", overwrite=True, flag="--report")
    assert check_output_path(tmp_path / "new.json", overwrite=False, inputs=[model, None]) == tmp_path / "new.json"
