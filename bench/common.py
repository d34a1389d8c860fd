"""One result schema for every benchmark: rows of JSON appended to a .jsonl file under bench/results/."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def device_name(device: str = "cpu") -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu:{platform.processor() or platform.machine()} x{os.cpu_count()}"


def versions() -> dict:
    import torch

    found = {"torch": torch.__version__, "python": platform.python_version()}
    for name in ("transformers", "triton"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            pass
    return found


def run_stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_rows(path: str | Path, rows: list[dict], stamp: str | None = None) -> None:
    """Appends rows (each: bench, provider, metric, value, unit, config, device, versions, time); ``stamp`` (a
    :func:`run_stamp`) gives the rows one run writes in parts the same time, by default now."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = stamp or run_stamp()
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps({**row, "time": stamp}) + "\n")
