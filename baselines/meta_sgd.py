"""Meta-SGD at the MetaOptimizer envs' granularity: a learned per-step, per-layer learning-rate table.

Z. Li, F. Zhou, F. Chen, H. Li. Meta-SGD: Learning to Learn Quickly for Few-Shot Learning. 2017.

Meta-SGD learns the initialisation together with one learning rate per parameter. Here the env fixes
the initialisation (every method starts from the same one, so it is not learned) and its action is
one log10 learning rate per layer and step, so Meta-SGD is a table of T x L log10 learning rates,
started at ``initial_log10_lr`` everywhere and meta-learned (Adam) by back-propagating the query loss
through the unrolled inner loop, exactly as :class:`~baselines.learned_optimizer.UnrolledOptimizer`
does for the LSTM. It ignores the observation: the schedule is open-loop, the same for every task.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from metabench_baselines.learned_optimizer import UnrolledOptimizer


class MetaSGD(UnrolledOptimizer):
    """A meta-learned T x L table of log10 learning rates (per step, per layer)."""

    name = "meta-sgd"
    needs_observation = False

    @dataclasses.dataclass
    class Config(UnrolledOptimizer.Config):
        outer_lr: float = 0.03

    def build(self) -> nn.Module:
        table = nn.Module()
        table.log10_lrs = nn.Parameter(torch.full((self.steps, self.n_layers), float(self.config.initial_log10_lr)))
        return table

    def log10_lrs(self, t: int, features: torch.Tensor | None, state: Any) -> tuple[torch.Tensor, Any]:
        return self.net.log10_lrs[t], state
