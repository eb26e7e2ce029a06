"""Runtimes in worker processes: a crash, a hang or an exhausted memory limit becomes a result, not our death.

A runtime that segfaults while loading a model (ONNX Runtime 1.32 does on some fp16 transformer exports
at its default optimisation level), loops forever or eats the machine must not take the parity harness
with it. :class:`IsolatedRunner` keeps the :class:`~export_tools.runtimes.base.Runner` contract but
loads and runs the model in a worker process (``python -m export_tools.runtimes.isolation``), one per
runtime, reused across models and checks (a worker starts in about 0.5 s; it imports no torch). When
the worker dies, does not answer within ``timeout`` seconds, or fails to allocate under
``memory_limit_mb``, the call raises :class:`RunFailedError` naming the runtime, the phase (``load`` or
``run``), what happened (the signal, the time limit, the memory limit) and the runtime's version; the
worker is replaced for the next call. Errors the runtime raises on purpose (a file it refuses, a missing
package) come back as the same kpx error types as in-process.
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


class _Worker:
    """One worker process and the two pipes to it."""

    def __init__(self, memory_limit_mb: float | None) -> None:
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115  (lives as long as the worker; closed in kill)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        command = [sys.executable, "-m", "export_tools.runtimes.isolation", str(child_read), str(child_write)]
        if memory_limit_mb:
            command.append(str(memory_limit_mb))
        self.process = subprocess.Popen(command, pass_fds=(child_read, child_write), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=self.stderr, env=env)  # fmt: skip
        os.close(child_read)
        os.close(child_write)
        self.send_conn, self.recv_conn = Connection(parent_write), Connection(parent_read)
        self.memory_limit_mb = memory_limit_mb

    def call(self, message: tuple, timeout: float) -> tuple:
        try:
            self.send_conn.send(message)
            if not self.recv_conn.poll(timeout):
                return ("timeout",)  # the caller reads what it wrote to stderr, then kills it
            return self.recv_conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            return ("died", self.process.wait())

    def last_stderr_line(self) -> str:
        self.stderr.seek(0)
        lines = [ln.strip() for ln in self.stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()
        for conn in (self.send_conn, self.recv_conn):
            with contextlib.suppress(OSError):
                conn.close()
        self.stderr.close()


_POOL: dict[tuple[str, float | None], _Worker] = {}
_IDS = itertools.count()


@atexit.register
def shutdown_workers() -> None:
    """Stops every worker (also called at interpreter exit)."""
    while _POOL:
        _, worker = _POOL.popitem()
        worker.kill()


def _worker(kind: str, memory_limit_mb: float | None) -> _Worker:
    key = (kind, memory_limit_mb)
    worker = _POOL.get(key)
    if worker is None or not worker.alive():
        if worker is not None:
            worker.kill()
        worker = _POOL[key] = _Worker(memory_limit_mb)
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
        self._worker = _worker(kind, memory_limit_mb)
        self._id = next(_IDS)
        reply = self._call(("load", self._id, cls.__module__, kind, bytes(model), options), "load")
        self.name, self._description = reply[1], reply[2]
        self.version = ", ".join(f"{k} {v}" for k, v in self._description.items() if k not in ("runtime", "providers"))

    @classmethod
    def check_available(cls) -> None:
        """Availability is the wrapped runtime's: check it with :func:`export_tools.runtimes.check_available`."""

    def _call(self, message: tuple, phase: str) -> tuple:
        reply = self._worker.call(message, self.timeout)
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
        detail = self._worker.last_stderr_line()
        self._worker.kill()
        if reply[0] == "timeout":
            raise RunFailedError(self.name, phase, f"timed out after {self.timeout:g} s", self.version, detail)
        raise RunFailedError(self.name, phase, _describe_death(reply[1]), self.version, detail)

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(self._call(("run", self._id, [np.ascontiguousarray(f) for f in feeds]), "run")[1])

    def close(self) -> None:
        """Frees the model in the worker (the worker stays for the next model)."""
        if self._worker.alive() and self._worker.call(("close", self._id), self.timeout)[0] != "ok":
            self._worker.kill()

    def describe(self) -> dict[str, str]:
        return {**self._description, "isolated": "worker process"}


# --- the worker process ------------------------------------------------------------------------------------


def _serve(conn_in: Connection, conn_out: Connection) -> None:
    runners: dict[int, Runner] = {}  # the models loaded in this worker, by the parent's id
    while True:
        try:
            message = conn_in.recv()
        except EOFError:
            return
        try:
            if message[0] == "load":
                _, key, module, kind, model, options = message
                importlib.import_module(module)  # runtimes registered outside the table's own files
                from export_tools.runtimes import make_runner

                runners[key] = make_runner(kind, model, **options)
                conn_out.send(("ok", runners[key].name, runners[key].describe()))
            elif message[0] == "run":
                conn_out.send(("ok", runners[message[1]].run(message[2])))
            elif message[0] == "close":
                runners.pop(message[1], None)
                conn_out.send(("ok",))
        except BaseException as exc:  # everything goes back to the parent, which decides
            memory = isinstance(exc, MemoryError) or "bad_alloc" in str(exc) or "Failed to allocate" in str(exc)
            with contextlib.suppress(pickle.PicklingError):
                conn_out.send(("error", type(exc).__name__, one_line(exc)[:500], memory))


def main(argv: Sequence[str]) -> None:
    conn_in, conn_out = Connection(int(argv[0])), Connection(int(argv[1]))
    if len(argv) > 2:
        import resource

        limit = int(float(argv[2]) * 2**20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _serve(conn_in, conn_out)


if __name__ == "__main__":
    main(sys.argv[1:])
