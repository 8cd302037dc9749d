"""What the benchmark scripts record about the machine a figure was measured on, and where they write it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from metabench.envs.common import device_name


def machine(device: str) -> dict:
    """Device name (GPU model, or CPU model and cores), torch version and CPU threads."""
    return {"device": device_name(device), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


RESULTS = Path(__file__).parent / "results"


def write_results(results: dict, name: str) -> Path:
    """Write ``results`` as ``benchmarks/results/NAME.json`` and say where."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")
    return out
