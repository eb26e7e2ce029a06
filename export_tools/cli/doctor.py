"""versions, runtimes and known bad states

Lists package versions, every runtime of kpx's table (available, or why not and the fix), probes the
CUDA execution provider with a one-node model, and names known bad states with the exact fix (exit 3).
"""

from __future__ import annotations

import argparse
import json

from export_tools.cli._common import Log
from export_tools.errors import ENVIRONMENT, OK


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, log: Log) -> int:
    from export_tools.doctor import diagnose, format_diagnosis

    diagnosis = diagnose()
    print(json.dumps(diagnosis.as_dict(), indent=2) if args.json else format_diagnosis(diagnosis))
    return OK if diagnosis.healthy else ENVIRONMENT
