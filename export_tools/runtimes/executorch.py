"""ExecuTorch, the ``executorch`` extra: a lane from the PyTorch model, not from the ONNX file.

ExecuTorch deploys a PyTorch program, not an ONNX file: :meth:`ExecuTorchRunner.from_pytorch` exports the
module with ``torch.export``, lowers it with ``to_edge_transform_and_lower`` and the XNNPACK partitioner
(XNNPACK runs what it takes, ExecuTorch's portable kernels the rest) and returns the ``.pte`` program bytes;
the runner runs those bytes with ExecuTorch's Python runtime. Its class says ``source = "pytorch"``: the
parity harness builds its bytes from the module, and compares its outputs with PyTorch eager like any other
runtime's.

kpx ops under ``torch.export`` (outside kpx's own exporter) trace their plain PyTorch reference, so the
program holds standard ATen ops only, no ``kpx::`` custom op (checked by ``tests/test_executorch.py``
on every registered op).

``kpx check FILE.onnx --providers executorch`` has no PyTorch model to lower, so it is refused with the fix
(:class:`~export_tools.errors.UsageError`: pass ``--reference MODEL``, or use ``kpx export MODEL --check
--providers executorch``). The worker process of this runtime imports torch: ExecuTorch's Python runtime
takes and returns torch tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from export_tools.errors import RunnerUnavailableError, UsageError
from export_tools.runtimes.base import Runner, register_runner

INSTALL_HINT = 'pip install "kpx[executorch]" (install torch first: executorch runs on the torch you have)'
#: the flatbuffer file identifier of an ExecuTorch program (bytes 4:8 of a ``.pte``)
PTE_IDENTIFIER = b"ET12"


def is_pte(data: bytes) -> bool:
    """Whether ``data`` looks like an ExecuTorch program (``.pte``)."""
    return len(data) > 8 and bytes(data[4:8]) == PTE_IDENTIFIER


def executorch_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("executorch")


@register_runner
class ExecuTorchRunner(Runner):
    """An ExecuTorch program (``.pte`` bytes from :meth:`from_pytorch`) run by ExecuTorch's Python runtime.

    Feeds are numpy arrays in the module's argument order; outputs come back flattened in the order the
    program returns them (the module's, as :func:`torch.utils._pytree` flattens it).
    """

    kind = "executorch"
    install = INSTALL_HINT
    summary = (
        "ExecuTorch: the PyTorch model through torch.export, lowered to XNNPACK (.pte); from the model, not a file"
    )
    source: ClassVar[str] = "pytorch"

    def __init__(self, model: bytes, *, name: str = "", benchmark: bool = False) -> None:
        self.check_available()
        data = bytes(model)
        if not is_pte(data):
            raise UsageError(
                "executorch runs a program lowered from the PyTorch model, not an ONNX file; fix: check it from "
                "the model (kpx export MODEL --check --providers executorch, or kpx check FILE --reference MODEL "
                "--providers executorch), or build the program with ExecuTorchRunner.from_pytorch(module, inputs)"
            )
        from executorch.runtime import Runtime

        self.name = name or "executorch-xnnpack"
        self.version = executorch_version()
        self.program = Runtime.get().load_program(data)
        self.method = self.program.load_method("forward")
        self.size = len(data)

    @classmethod
    def check_available(cls) -> None:
        import importlib.util

        if importlib.util.find_spec("executorch") is None:
            raise RunnerUnavailableError(f"executorch is not installed; fix: {INSTALL_HINT}")

    @classmethod
    def from_pytorch(cls, module: Any, example_inputs: tuple, dynamic_shapes: Any = None) -> bytes:
        """``.pte`` bytes of ``module``: ``torch.export`` at ``example_inputs`` (``dynamic_shapes`` as
        ``torch.export`` takes them), lowered to XNNPACK, serialised. Runs in the calling process (it needs the
        model); the module is exported in eval mode and every submodule put back in the mode it was in.

        Raises ``TypeError`` for a module that is not an ``nn.Module`` or inputs that are not a tuple of tensors,
        :class:`RunnerUnavailableError` when executorch is missing, and
        :class:`~export_tools.errors.ExportError` when ``torch.export`` or the lowering fails."""
        import torch

        from export_tools.errors import ExportError, root_cause

        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module; got {type(module).__name__}")
        if isinstance(example_inputs, torch.Tensor):
            example_inputs = (example_inputs,)
        if not isinstance(example_inputs, (tuple, list)) or not all(
            isinstance(t, torch.Tensor) for t in example_inputs
        ):
            raise TypeError(
                f"example_inputs must be a tuple of tensors, e.g. (x,); got {type(example_inputs).__name__}"
            )
        cls.check_available()
        import warnings

        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        from export_tools.models import eval_mode

        with warnings.catch_warnings():  # torch.export and executorch warn about their own internals (pytree)
            warnings.simplefilter("ignore")
            try:
                with torch.no_grad(), eval_mode(module):
                    exported = torch.export.export(module, tuple(example_inputs), dynamic_shapes=dynamic_shapes)
            except Exception as exc:
                raise ExportError(f"torch.export failed for executorch: {root_cause(exc)}") from exc
            try:
                program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
            except Exception as exc:
                raise ExportError(f"executorch could not lower the exported program: {root_cause(exc)}") from exc
        return bytes(program.buffer)

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        inputs = [torch.from_numpy(np.array(f, copy=True)) for f in feeds]
        outputs = self.method.execute(inputs)
        return [o.detach().numpy().copy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in outputs]

    def describe(self) -> dict[str, str]:
        return {"runtime": self.name, "executorch": self.version, "backend": "XNNPACK + portable kernels",
                "program_bytes": str(self.size)}  # fmt: skip
