"""The runtimes kpx runs ONNX models on: one :class:`Runner` contract, one table keyed by name.

The runtime list: one file per runtime, one import line here, in the order they are listed to users
(see :mod:`export_tools.runtimes.base`).
"""

# isort: off
from export_tools.runtimes import ort  # noqa: F401  (cpu, cuda)
from export_tools.runtimes import openvino  # noqa: F401
from export_tools.runtimes import ort_mobile  # noqa: F401
from export_tools.runtimes import reference  # noqa: F401
from export_tools.runtimes import mnn  # noqa: F401
from export_tools.runtimes import ncnn  # noqa: F401
from export_tools.runtimes import executorch  # noqa: F401
from export_tools.runtimes import litert  # noqa: F401

# isort: on
from export_tools.runtimes.base import (
    RUNNERS,
    Runner,
    availability,
    check_available,
    get_runner,
    help_text,
    make_runner,
    register_runner,
    runtime_names,
)
from export_tools.runtimes.openvino import OPENVINO_READS_LOCAL_FUNCTIONS, OpenVinoRunner
from export_tools.runtimes.ort import OrtCudaRunner, OrtRunner, ort_session
from export_tools.runtimes.ort_mobile import OrtFormatRunner
from export_tools.runtimes.reference import ReferenceRunner

__all__ = [
    "OPENVINO_READS_LOCAL_FUNCTIONS",
    "RUNNERS",
    "OpenVinoRunner",
    "OrtCudaRunner",
    "OrtFormatRunner",
    "OrtRunner",
    "ReferenceRunner",
    "Runner",
    "availability",
    "check_available",
    "get_runner",
    "help_text",
    "make_runner",
    "ort_session",
    "register_runner",
    "runtime_names",
]
