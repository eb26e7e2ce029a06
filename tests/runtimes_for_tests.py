"""Runtimes that only tests register: one added the documented way, and ones that crash, hang or exhaust memory.

Worker processes import this module by name to run them (it imports no torch and no test framework).
"""

from __future__ import annotations

import ctypes
import time

import numpy as np

from export_tools.runtimes import RUNNERS, Runner, make_runner


class DoublingRunner(Runner):
    """A runtime added the documented way: one class (here, for tests only): ORT CPU's outputs times two."""

    kind = "doubling-test"
    summary = "a test runtime that doubles ORT CPU's outputs"

    def __init__(self, model: bytes, **options) -> None:
        self.name = "doubling"
        self.inner = make_runner("cpu", model)

    @classmethod
    def check_available(cls) -> None:
        """Always available."""

    def run(self, feeds):
        return [2 * o for o in self.inner.run(feeds)]

    def describe(self):
        return {"runtime": self.name, "test": "yes"}


class MisbehavingRunner(Runner):
    """ORT CPU, except that it does ``misbehave`` (``"segfault"``, ``"hang"``, ``"allocate"``) at ``phase``.

    With ``safe_after`` set, fallback options count down ``level`` and the runtime behaves from that level on,
    like ONNX Runtime crashing at one optimisation level and working at a lower one."""

    kind = "misbehaving-test"
    summary = "a test runtime that crashes, hangs or allocates without end"

    def __init__(self, model: bytes, *, misbehave: str = "segfault", phase: str = "load", level: int = 3,
                 safe_below: int = -1, **options) -> None:  # fmt: skip
        self.misbehave, self.phase, self.level, self.safe_below = misbehave, phase, level, safe_below
        self.name = f"misbehaving@{level}"
        self.inner = make_runner("cpu", model)
        if phase == "load":
            self._act()

    def _act(self) -> None:
        if self.level <= self.safe_below:
            return
        if self.misbehave == "segfault":
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        elif self.misbehave == "hang":
            time.sleep(3600)
        elif self.misbehave == "allocate":
            blocks = []
            while True:
                blocks.append(np.ones(2**27))  # 1 GiB at a time, until the memory limit stops it

    @classmethod
    def check_available(cls) -> None:
        """Always available."""

    @classmethod
    def label(cls, options):
        return f"misbehaving@{options.get('level', 3)}"

    @classmethod
    def fallback_options(cls, options):
        level = options.get("level", 3)
        return [{**options, "level": lvl} for lvl in range(level - 1, -1, -1)]

    def run(self, feeds):
        if self.phase == "run":
            self._act()
        return self.inner.run(feeds)

    def describe(self):
        return {"runtime": self.name, "test": "yes"}


TEST_RUNNERS = (DoublingRunner, MisbehavingRunner)
for _cls in TEST_RUNNERS:  # registered on import, so that worker processes know them too
    RUNNERS.setdefault(_cls.kind, _cls)
