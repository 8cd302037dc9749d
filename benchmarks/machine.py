"""What the benchmark scripts record about the machine a figure was measured on."""

from __future__ import annotations

import torch

from metabench.evaluation import device_name


def machine(device: str) -> dict:
    """Device name (GPU model, or CPU model and cores), torch version and CPU threads."""
    return {"device": device_name(device), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
