"""Runtimes in worker processes: a crash, a hang or an exhausted memory limit becomes a result, not our death.

A runtime that segfaults while loading a model (ONNX Runtime 1.32 does on some fp16 transformer exports
at its default optimisation level), loops forever or eats the machine must not take the parity harness
with it. :class:`IsolatedRunner` keeps the :class:`~export_tools.runtimes.base.Runner` contract but
loads and runs the model in a worker process (``python -m export_tools.runtimes.isolation``).

- **One worker per runtime**, reused across models and checks; it imports no torch. It starts by
  importing its runtime (before any memory limit applies) and says it is ready; only then do the load and
  run time limits start counting. A worker with another memory limit replaces it.
- When the worker dies, does not answer within ``timeout`` seconds, or fails to allocate under
  ``memory_limit_mb`` (``RLIMIT_AS``: not for CUDA, which reserves address space), the call raises
  :class:`~export_tools.errors.RunFailedError` naming the runtime, the phase (``load`` or ``run``), what
  happened (the signal, the time limit, the memory limit), the runtime's version and the last line the
  worker wrote to stderr during that call. The next call starts a fresh worker; a runner whose worker
  was lost through another runner (localisation shares it) loads its model again there first.
- Errors the runtime raises on purpose (a file it refuses, a missing package) come back as the same kpx
  error types as in-process.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import itertools
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from export_tools import errors
from export_tools.errors import KpxError, RunFailedError, one_line
from export_tools.runtimes.base import Runner, get_runner

DEFAULT_TIMEOUT = 600.0
"""Seconds a worker may take for one load or one run before it is killed (``--timeout``)."""
START_TIMEOUT = 120.0
"""Seconds a worker may take to start (import its runtime) before it is reported as failing to start."""


class _Worker:
    """One worker process for runtime ``kind``, the two pipes to it, and its stderr."""

    def __init__(self, kind: str, memory_limit_mb: float | None) -> None:
        self.kind, self.memory_limit_mb = kind, memory_limit_mb
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115  (lives as long as the worker; closed in kill)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        module = get_runner(kind).__module__  # a runtime registered outside the table's own files
        command = [sys.executable, "-m", "export_tools.runtimes.isolation", str(child_read), str(child_write),
                   module, kind, str(memory_limit_mb or 0)]  # fmt: skip
        self.process = subprocess.Popen(command, pass_fds=(child_read, child_write), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=self.stderr, env=env)  # fmt: skip
        os.close(child_read)
        os.close(child_write)
        self.send_conn, self.recv_conn = Connection(parent_write), Connection(parent_read)
        self.closed = False
        self.ready = self._receive(START_TIMEOUT)  # ("ok",) once the runtime is imported, else why not

    def _receive(self, timeout: float) -> tuple:
        try:
            if not self.recv_conn.poll(timeout):
                return ("timeout",)  # the caller reads what it wrote to stderr, then kills it
            return self.recv_conn.recv()
        except (EOFError, OSError):
            return ("died", self.process.wait())

    def call(self, message: tuple, timeout: float) -> tuple:
        try:
            self.send_conn.send(message)
        except OSError:  # the worker is gone (a broken pipe)
            return ("died", self.process.wait())
        return self._receive(timeout)

    def stderr_position(self) -> int:
        return self.stderr.seek(0, os.SEEK_END)

    def stderr_since(self, position: int) -> str:
        """The last line the worker wrote to stderr since ``position``."""
        if self.closed:
            return ""
        self.stderr.seek(position)
        lines = [ln.strip() for ln in self.stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""

    def alive(self) -> bool:
        return not self.closed and self.process.poll() is None

    def kill(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()
        for conn in (self.send_conn, self.recv_conn):
            with contextlib.suppress(OSError):
                conn.close()
        self.stderr.close()


_POOL: dict[str, _Worker] = {}
_IDS = itertools.count()


@atexit.register
def shutdown_workers() -> None:
    """Stops every worker (also called at interpreter exit)."""
    while _POOL:
        _, worker = _POOL.popitem()
        worker.kill()


def _worker(kind: str, memory_limit_mb: float | None) -> _Worker:
    """The live worker of ``kind`` with this memory limit, started (or replaced) when needed."""
    worker = _POOL.get(kind)
    if worker is not None and worker.alive() and worker.memory_limit_mb == memory_limit_mb:
        return worker
    if worker is not None:
        worker.kill()
    worker = _POOL[kind] = _Worker(kind, memory_limit_mb)
    return worker


def _describe_death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"crashed with {signal.Signals(-code).name}"
        except ValueError:
            return f"crashed with signal {-code}"
    return f"exited with code {code}"


class IsolatedRunner(Runner):
    """Runtime ``kind`` with its model loaded in a worker process (see the module docstring)."""

    def __init__(
        self,
        kind: str,
        model: bytes,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        memory_limit_mb: float | None = None,
        **options: Any,
    ) -> None:
        cls = get_runner(kind)
        self.kind, self.options = kind, options
        self.timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        self.memory_limit_mb = memory_limit_mb
        self.name = cls.label(options)
        self.version = ""
        self._id = next(_IDS)
        self._load = ("load", self._id, kind, bytes(model), options)
        self._worker: _Worker | None = None
        reply = self._call(None, "load")
        self.name, self._description = reply[1], reply[2]
        self.version = ", ".join(f"{k} {v}" for k, v in self._description.items() if k not in ("runtime", "providers"))

    @classmethod
    def check_available(cls) -> None:
        """Availability is the wrapped runtime's: check it with :func:`export_tools.runtimes.check_available`."""

    def _call(self, message: tuple | None, phase: str) -> tuple:
        """Sends ``message`` (``None``: this runner's load) to the live worker and returns the reply; a worker
        that is new to this runner (the first, or one started after another runner's crash) loads the model."""
        worker = _worker(self.kind, self.memory_limit_mb)
        if worker.ready[0] != "ok":
            self._fail(worker, worker.ready, "start", 0)
        if worker is not self._worker:
            self._worker = worker
            if message is not None:
                self._exchange(worker, self._load, "load")
        return self._exchange(worker, self._load if message is None else message, phase)

    def _exchange(self, worker: _Worker, message: tuple, phase: str) -> tuple:
        position = worker.stderr_position()
        reply = worker.call(message, self.timeout)
        if reply[0] == "ok":
            return reply
        if reply[0] == "error":
            _, type_name, text, memory = reply
            if memory:
                limit = f" (limit {self.memory_limit_mb:g} MiB)" if self.memory_limit_mb else ""
                raise RunFailedError(self.name, phase, f"ran out of memory{limit}", self.version, text)
            error_type = getattr(errors, type_name, None)
            if isinstance(error_type, type) and issubclass(error_type, KpxError):
                raise error_type(text)  # a refusal on purpose: the same error as in-process
            raise RunFailedError(self.name, phase, f"raised {type_name}", self.version, text)
        self._fail(worker, reply, phase, position)
        raise AssertionError("unreachable")

    def _fail(self, worker: _Worker, reply: tuple, phase: str, position: int) -> None:
        """Raises the failure that ``reply`` (``timeout``, ``died``, or a start error) describes; kills the worker."""
        detail = worker.stderr_since(position)
        if reply[0] == "error":  # the worker could not import its runtime
            _, type_name, text, _ = reply
            worker.kill()
            error_type = getattr(errors, type_name, None)
            if isinstance(error_type, type) and issubclass(error_type, KpxError):
                raise error_type(text)
            raise RunFailedError(self.name, phase, f"raised {type_name}", self.version, text)
        worker.kill()
        if reply[0] == "timeout":
            limit = START_TIMEOUT if phase == "start" else self.timeout
            raise RunFailedError(self.name, phase, f"timed out after {limit:g} s", self.version, detail)
        death = _describe_death(reply[1])
        if self.memory_limit_mb and any(word in detail.lower() for word in _MEMORY_WORDS):
            # the limit hit outside Python: e.g. glibc's "cannot allocate memory for thread-local data" and
            # _exit(127) when a runtime starts a thread (seen with ORT 1.32 on an Intel Xeon)
            limit = f"ran out of memory (limit {self.memory_limit_mb:g} MiB)"
            raise RunFailedError(self.name, phase, limit, self.version, f"{death}: {detail}")
        raise RunFailedError(self.name, phase, death, self.version, detail)

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(self._call(("run", self._id, [np.ascontiguousarray(f) for f in feeds]), "run")[1])

    def time(self, feeds: Sequence[np.ndarray], seconds: float) -> tuple[float, float, float, int]:
        """:func:`export_tools.timing.time_calls` of this runtime, timed inside the worker (no pipe in the loop)."""
        feeds = [np.ascontiguousarray(f) for f in feeds]
        return tuple(self._call(("time", self._id, feeds, seconds), "run")[1])

    def close(self) -> None:
        """Frees the model in the worker (the worker stays for the next model)."""
        worker = self._worker
        if worker is not None and worker.alive() and worker.call(("close", self._id), self.timeout)[0] != "ok":
            worker.kill()

    def describe(self) -> dict[str, str]:
        return {**self._description, "isolated": "worker process"}


# --- the worker process ------------------------------------------------------------------------------------


def _serve(conn_in: Connection, conn_out: Connection) -> None:
    from export_tools.runtimes import make_runner

    runners: dict[int, Runner] = {}  # the models loaded in this worker, by the parent's id
    while True:
        try:
            message = conn_in.recv()
        except EOFError:
            return
        try:
            if message[0] == "load":
                _, key, kind, model, options = message
                runners[key] = make_runner(kind, model, **options)
                conn_out.send(("ok", runners[key].name, runners[key].describe()))
            elif message[0] == "run":
                conn_out.send(("ok", runners[message[1]].run(message[2])))
            elif message[0] == "time":
                from export_tools.timing import time_calls

                _, key, feeds, seconds = message
                conn_out.send(("ok", time_calls(lambda r=runners[key], f=feeds: r.run(f), seconds)))
            elif message[0] == "close":
                runners.pop(message[1], None)
                conn_out.send(("ok",))
        except BaseException as exc:  # everything goes back to the parent, which decides
            _send_error(conn_out, exc)


_MEMORY_WORDS = ("bad_alloc", "failed to allocate", "cannot allocate memory", "out of memory")


def _send_error(conn_out: Connection, exc: BaseException) -> None:
    text = str(exc).lower()  # runtimes report an exhausted address space in their own words
    memory = isinstance(exc, MemoryError) or any(word in text for word in _MEMORY_WORDS)
    with contextlib.suppress(pickle.PicklingError, OSError):
        conn_out.send(("error", type(exc).__name__, one_line(exc)[:500], memory))


def main(argv: Sequence[str]) -> None:
    conn_in, conn_out = Connection(int(argv[0])), Connection(int(argv[1]))
    module, kind, memory_limit_mb = argv[2], argv[3], float(argv[4])
    try:  # import the runtime before any limit applies: a limit is for the model, not for starting up
        importlib.import_module(module)
        get_runner(kind).check_available()
    except BaseException as exc:
        _send_error(conn_out, exc)
        return
    if memory_limit_mb:
        import resource

        limit = int(memory_limit_mb * 2**20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    conn_out.send(("ok",))
    _serve(conn_in, conn_out)


if __name__ == "__main__":
    main(sys.argv[1:])
