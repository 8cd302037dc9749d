"""ANIL: Almost No Inner Loop.

A. Raghu, M. Raghu, S. Bengio, O. Vinyals. Rapid Learning or Feature Reuse? Towards Understanding
the Effectiveness of MAML. ICLR 2020. MAML's inner loop adapts only the network's head (its final
linear layer); the body is meta-learned in the outer loop but never adapted to a task. The body
therefore embeds a task's support set once, and the head adapts on those fixed features, which is
cheap. The meta-gradient is second order through the head's adaptation (to the body as well, via the
support features), as in the paper; ``first_order=True`` drops those terms.

Everything else is MAML's (:mod:`baselines.maml`), as in the paper: the strided Conv-4 with batch
statistics (transductive), Adam 1e-3 on the initialisation; 5-way: 1 inner step of 0.4 at training,
3 at test, meta-batch 32; 20-way: 5 steps of 0.1, meta-batch 16. On the sinusoid the head is the
MLP's last layer (1 step of 0.01, meta-batch 25).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from metabench import models
from metabench.inner_loop import adapt
from metabench.learners import task_losses
from metabench_baselines.maml import MAML


class ANIL(MAML):
    """MAML whose inner loop adapts the head only, on features the body computes once per task."""

    name = "anil"
    transductive = True

    @dataclasses.dataclass
    class Config(MAML.Config):
        """MAML's hyperparameters (see :class:`baselines.maml.MAML.Config`); ``inner_lr`` and the
        inner steps now apply to the head only."""

    def head_names(self) -> list[str]:
        """The adapted parameters: the Conv-4's linear head, or the sinusoid MLP's last layer."""
        if self.task["dataset"] == "sinusoid":
            last = len(self.params) // 2 - 1
            return [f"fc{last}.weight", f"fc{last}.bias"]
        return ["head.weight", "head.bias"]

    def features(self, params: models.Params, inputs: torch.Tensor) -> torch.Tensor:
        """The body's output ``(T, n, features)``: everything before the head."""
        head = self.head_names()
        body = {name: value for name, value in params.items() if name not in head}
        if self.task["dataset"] == "sinusoid":
            return F.relu(models.mlp(body, inputs))  # the MLP without its last layer
        return models.conv4(body, inputs, self.config.downsample)

    def adapt(
        self, support_inputs: torch.Tensor, support_targets: torch.Tensor, steps: int, first_order: bool
    ) -> models.Params:
        """Per-task weights: the shared body and a head adapted on the support features."""
        params = models.expand(self.params, len(support_inputs))
        features = self.features(params, support_inputs)  # once per task, not once per step
        weight, bias = self.head_names()

        def support_loss(p: models.Params) -> torch.Tensor:
            logits = models.linear(p[weight], p[bias], features)
            return task_losses(self.task, logits, support_targets).sum()

        return adapt(params, support_loss, steps, self.config.inner_lr, first_order=first_order, adapted=[weight, bias])
