"""``kpx doctor``: versions, execution providers, and the known bad states with their exact fixes."""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

#: every distribution that provides the ``onnxruntime`` module; more than one installed breaks it
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml", "ort-nightly")


@dataclass
class Finding:
    """One bad state: what is wrong and the command that fixes it."""

    problem: str
    fix: str


@dataclass
class Diagnosis:
    versions: dict[str, str | None]
    ort_distributions: dict[str, str]
    providers: list[str]
    cuda_ep: str  # "works", "not listed", or the error
    torch_cuda: bool
    findings: list[Finding] = field(default_factory=list)
    #: every runtime of the table: "available" or why not (with the fix)
    runtimes: dict[str, str] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "healthy": self.healthy}


def installed_distributions() -> dict[str, str]:
    """The installed distributions that provide ``onnxruntime``, with versions."""
    found = {}
    for name in ORT_DISTRIBUTIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except Exception:
        return None


def probe_cuda_ep() -> str:
    """The CUDA EP probe (:meth:`export_tools.runtimes.OrtCudaRunner.probe`): "works", "not listed" or the error."""
    from export_tools.runtimes import OrtCudaRunner

    return OrtCudaRunner.probe()


def diagnose() -> Diagnosis:
    """Collects versions and providers and lists every known bad state found."""
    versions = {m: _version(m) for m in ("torch", "onnx", "onnxscript", "onnxruntime", "numpy")}
    versions["python"] = platform.python_version()
    dists = installed_distributions()
    findings = []
    if len(dists) > 1:
        keep = "onnxruntime-gpu" if "onnxruntime-gpu" in dists else sorted(dists)[0]
        findings.append(Finding(
            f"{' and '.join(sorted(dists))} are all installed; they share the onnxruntime module and overwrite "
            "each other's files (typically the CUDA EP silently disappears)",
            f"pip uninstall -y {' '.join(sorted(dists))} && pip install {keep}",
        ))  # fmt: skip
    providers: list[str] = []
    cuda = "not listed"
    if versions["onnxruntime"] is None:
        findings.append(Finding("onnxruntime cannot be imported", 'pip install "kpx[cpu]" (or "kpx[gpu]" for CUDA)'))
    else:
        import onnxruntime as ort

        providers = list(ort.get_available_providers())
        try:
            cuda = probe_cuda_ep()
        except Exception as exc:
            cuda = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if cuda not in ("works", "not listed"):
            findings.append(Finding(
                f"the CUDA execution provider is listed but cannot run ({cuda})",
                "install the CUDA and cuDNN libraries this onnxruntime-gpu was built for, e.g. "
                'pip install "onnxruntime-gpu[cuda,cudnn]", or import torch before onnxruntime and call '
                "onnxruntime.preload_dlls()",
            ))  # fmt: skip
    for module in ("torch", "onnx", "onnxscript"):
        if versions[module] is None:
            findings.append(Finding(f"{module} cannot be imported", f"pip install {module}"))
    torch_cuda = False
    if versions["torch"] is not None:
        import torch

        torch_cuda = bool(torch.cuda.is_available())
    from export_tools.runtimes import availability, runtime_names

    runtimes = {kind: availability(kind) for kind in runtime_names()}
    if runtimes.get("litert") == "available":  # LiteRT lives in its own environment: say which
        from export_tools.runtimes._litert_env import env_dir

        runtimes["litert"] = f"available (separate environment {env_dir()})"
    return Diagnosis(versions, dists, providers, cuda, torch_cuda, findings, runtimes)


def format_diagnosis(d: Diagnosis) -> str:
    lines = [f"{name:<12} {version or 'not installed'}" for name, version in d.versions.items()]
    dists = ", ".join(f"{k} {v}" for k, v in d.ort_distributions.items()) or "none"
    lines += [
        f"{'ort dists':<12} {dists}",
        f"{'providers':<12} {', '.join(d.providers) or 'none'}",
        f"{'cuda ep':<12} {d.cuda_ep}",
        f"{'torch cuda':<12} {'available' if d.torch_cuda else 'not available'}",
    ]
    for kind, state in d.runtimes.items():
        lines.append(f"{'runtime':<12} {kind}: {state}")
    for f in d.findings:
        lines += [f"PROBLEM: {f.problem}", f"  fix: {f.fix}"]
    lines.append("ok: no known bad state found" if d.healthy else f"{len(d.findings)} problem(s) found")
    return "\n".join(lines)
