"""Writing files the safe way: models and reports alike.

Rules (the same for ``kpx export -o``, ``--report`` and the Python API):

- an existing path is replaced only when asked (``overwrite=True``; CLI ``--force``);
- a path that is also one of the command's inputs (the model being checked, its ``--inputs``, its
  ``--weights``) is refused, even with ``--force``;
- the write is atomic: the file appears whole or not at all, and an existing file is untouched
  until the new one is complete and validated.

Nothing is left behind, even when the process is killed mid-write: on Linux the data goes to an
anonymous file (``O_TMPFILE``) that is linked into place only once complete; a killed writer leaves
no name at all. Where that is unavailable (other systems, some filesystems), and for the brief step
that replaces an existing file, a named temporary ``.<name>.kpx-<pid>[-<random>].tmp`` is used; stale ones
whose process is gone are removed by the next write into the same directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from export_tools.errors import UsageError

_TMP = re.compile(r"^\..+\.kpx-(\d+)(-[A-Za-z0-9_]+)?\.tmp$")


def check_output_path(
    path: str | os.PathLike, *, overwrite: bool, inputs: Iterable[str | os.PathLike | None] = (), flag: str = "-o"
) -> Path:
    """Validates an output path before any work is done; raises :class:`UsageError` naming ``flag`` and the fix.

    ``inputs`` are the paths this command reads: writing over one of them is refused."""
    path = Path(path)
    for other in inputs:
        if other is not None and _same_file(path, Path(other)):
            raise UsageError(
                f"{flag} {str(path)!r} names a file this command also reads or writes ({str(other)!r}); "
                "write it somewhere else"
            )
    if path.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a directory; give a file name such as {str(path / 'out')!r}")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UsageError(f"{flag} {str(path)!r} is not a regular file (a device, a pipe or a link); kpx replaces "
                         "files whole, so give the path of a regular file")  # fmt: skip
    if path.exists() and not overwrite:
        raise UsageError(f"{flag} {str(path)!r} exists; pass --force to overwrite it")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {str(path)!r}: directory {str(path.parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{flag} {str(path)!r}: directory {str(path.parent)!r} is not writable; choose another path")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def write_atomic(
    path: str | os.PathLike,
    data: bytes,
    *,
    overwrite: bool = True,
    validate: Callable[[str], None] | None = None,
) -> Path:
    """Writes ``data`` to ``path`` atomically (see the module docstring) with the usual permissions.

    ``validate(tmp_path)`` runs on the complete temporary file before it takes ``path``'s place (e.g. the
    ONNX checker); if it raises, nothing is written. Raises ``FileExistsError`` when ``path`` exists and
    ``overwrite`` is false, ``FileNotFoundError`` when its directory does not exist, ``OSError`` for
    write failures (disk full: nothing is left behind)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"output directory {str(directory)!r} does not exist; create it first")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True (CLI: --force) to replace it")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ValueError(f"{str(path)!r} is not a regular file (a device, a pipe or a link); give a regular file path")
    remove_stale_temporaries(directory)
    fd = _anonymous_file(directory)
    if fd is None:
        return _write_named(path, data, overwrite, validate)
    try:
        _write_all(fd, data)
        proc = f"/proc/self/fd/{fd}"
        if validate is not None:
            validate(proc)
        try:
            _link(proc, path)  # atomic; never overwrites (also not a file that appeared meanwhile)
        except FileExistsError:
            if not overwrite:
                raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True (CLI: --force)") from None
            tmp = directory / f".{path.name}.kpx-{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            _link(proc, tmp)
            try:
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
    finally:
        os.close(fd)
    return path


def _anonymous_file(directory: Path) -> int | None:
    """An unnamed file in ``directory`` (Linux ``O_TMPFILE``), or ``None`` where unsupported."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY, 0o666)  # the umask applies, as for any new file
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None  # filesystem without O_TMPFILE
        raise


def _link(proc: str, path: Path) -> None:
    """``linkat(AT_SYMLINK_FOLLOW)``: gives the anonymous file behind ``/proc/self/fd/N`` the name ``path``.

    (``os.link`` without a directory fd calls plain ``link()``, which does not follow that magic link.)"""
    dir_fd = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.link(proc, path.name, dst_dir_fd=dir_fd, follow_symlinks=True)
    finally:
        os.close(dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


def _write_named(path: Path, data: bytes, overwrite: bool, validate: Callable[[str], None] | None) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.kpx-{os.getpid()}-", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        if validate is not None:
            validate(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # never overwrites, also not a file that appeared meanwhile
            except FileExistsError:
                raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True (CLI: --force)") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Removes kpx temporaries (``.<name>.kpx-<pid>[-<random>].tmp``) in ``directory`` whose writer is gone."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _TMP.match(entry.name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    except OSError:
        return False
    return True


def describe_os_error(exc: OSError, path: str | os.PathLike, what: str = "the file") -> str:
    """One line for a failed write, with the fix."""
    reason = exc.strerror or str(exc)
    fix = {
        errno.ENOSPC: "free some space or write to another disk",
        errno.EDQUOT: "free some space or write to another disk",
        errno.EACCES: "choose a writable directory",
        errno.EROFS: "choose a writable directory",
        errno.EFBIG: "write to a filesystem that allows larger files",
    }.get(exc.errno or 0, "choose another path")
    return f"cannot write {what} {str(path)!r}: {reason}; {fix}"


def write_model(proto, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Writes an ``onnx.ModelProto`` to ``path`` atomically (:func:`write_atomic`), checked on disk by the full
    ONNX checker before it takes ``path``'s place: a failure, or a kill mid-write, leaves neither a partial file nor
    a damaged existing file behind."""
    import onnx

    from export_tools.errors import ExportError

    if proto.ByteSize() >= 2**31:
        raise ExportError("model is >= 2 GiB; kpx does not yet write external data for such models")
    return write_atomic(path, proto.SerializeToString(), overwrite=overwrite,
                        validate=lambda tmp: onnx.checker.check_model(tmp, full_check=True))  # fmt: skip
