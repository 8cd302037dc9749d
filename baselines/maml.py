"""MAML and first-order MAML.

C. Finn, P. Abbeel, S. Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks.
ICML 2017. The meta-learned phi is the initialisation theta: each task adapts it by a few steps of
gradient descent on its support loss, and theta is updated (Adam) on the query loss of the adapted
weights, differentiating through the adaptation (second order) or not (first order). Training tasks
on Omniglot have K queries per class, as MAML's code draws them (the test protocol has 15).

Omniglot: the paper's Conv-4 with strided convolutions, batch norm with batch statistics (so
predictions are transductive, as in the paper); 5-way: 1 inner step of 0.4 at training, 3 at
test, meta-batch 32; 20-way: 5 steps of 0.1, meta-batch 16. Sinusoid: the 1-40-40-1 ReLU MLP,
1 step of 0.01, meta-batch 25.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from metabench import models
from metabench.episodes import Episodes
from metabench.inner_loop import adapt
from metabench.learners import Learner, task_losses


class MAML(Learner):
    """Second-order MAML (``first_order=True`` gives first-order MAML)."""

    name = "maml"
    transductive = True

    @dataclasses.dataclass
    class Config:
        meta_batch: int = 32
        inner_steps: int = 1
        inner_steps_test: int = 3
        inner_lr: float = 0.4
        outer_lr: float = 1e-3
        first_order: bool = False
        width: int = 64
        downsample: str = "stride"
        task_chunk: int = 0
        """Tasks per batched (grouped) forward; 0: the whole meta-batch on GPU, one at a time on CPU,
        where grouped convolutions are slower (benchmarks/maml_step.py)."""
        train_query: int | None = None
        """Queries per class of the training tasks; None: K (the shot) on Omniglot, as MAML's code draws
        them, the env's own on the sinusoid. The test protocol keeps its 15 queries per class."""

    @classmethod
    def defaults(cls, task: dict[str, Any]) -> dict[str, Any]:
        if task["dataset"] == "sinusoid":
            return {"meta_batch": 25, "inner_lr": 0.01, "inner_steps_test": 1}
        if task["n_way"] >= 20:
            return {"meta_batch": 16, "inner_steps": 5, "inner_steps_test": 5, "inner_lr": 0.1}
        return {}

    def __init__(self, config: Config, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(config, task, device, seed)
        generator = torch.Generator().manual_seed(seed)
        if task["dataset"] == "sinusoid":
            params = models.mlp_init(generator)
        else:
            params = models.conv4_init(task["n_way"], generator, width=config.width, downsample=config.downsample)
        self.params = {name: value.to(self.device).requires_grad_() for name, value in params.items()}
        self.optimizer = torch.optim.Adam(self.params.values(), lr=config.outer_lr)

    def train_env_kwargs(self) -> dict[str, Any]:
        if self.config.train_query is not None:
            return {"n_query": self.config.train_query}
        return {} if self.task["dataset"] == "sinusoid" else {"n_query": self.task["k_shot"]}

    def forward(self, params: models.Params, inputs: torch.Tensor) -> torch.Tensor:
        if self.task["dataset"] == "sinusoid":
            return models.mlp(params, inputs)
        return models.conv4(params, inputs, self.config.downsample)

    def adapt(
        self, support_inputs: torch.Tensor, support_targets: torch.Tensor, steps: int, first_order: bool
    ) -> models.Params:
        """Per-task weights after ``steps`` inner steps from the shared initialisation."""
        params = models.expand(self.params, len(support_inputs))

        def support_loss(p: models.Params) -> torch.Tensor:
            return task_losses(self.task, self.forward(p, support_inputs), support_targets).sum()

        return adapt(params, support_loss, steps, self.config.inner_lr, first_order=first_order)

    def _chunk_size(self, tasks: int) -> int:
        return self.config.task_chunk or (tasks if self.device.type == "cuda" else 1)

    def meta_backward(self, episodes: Episodes) -> float:
        """Accumulate the meta-gradient of the mean query loss into ``.grad``; returns the loss.

        Tasks go through in chunks of ``task_chunk``: each chunk is one batched (grouped) pass.
        """
        tasks, total, size = len(episodes), 0.0, self._chunk_size(len(episodes))
        for start in range(0, tasks, size):
            chunk = episodes[start : start + size]
            adapted = self.adapt(
                chunk.support_inputs, chunk.support_targets, self.config.inner_steps, self.config.first_order
            )
            loss = task_losses(self.task, self.forward(adapted, chunk.query_inputs), chunk.query_targets).sum() / tasks
            loss.backward()
            total += loss.item()
        return total

    def train_step(self, episodes: Episodes) -> dict[str, float]:
        self.optimizer.zero_grad()
        loss = self.meta_backward(episodes)
        self.optimizer.step()
        return {"loss": loss}

    def predict(
        self, support_inputs: torch.Tensor, support_targets: torch.Tensor, query_inputs: torch.Tensor
    ) -> torch.Tensor:
        outputs, size = [], self._chunk_size(len(support_inputs))
        for start in range(0, len(support_inputs), size):
            part = slice(start, start + size)
            with torch.enable_grad():
                adapted = self.adapt(
                    support_inputs[part], support_targets[part], self.config.inner_steps_test, first_order=True
                )
            with torch.no_grad():
                outputs.append(self.forward(adapted, query_inputs[part]))
        return torch.cat(outputs)

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": {name: value.detach() for name, value in self.params.items()},
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for name, value in state["params"].items():
                self.params[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])


class FOMAML(MAML):
    """First-order MAML: the meta-gradient ignores the second-order terms of the adaptation."""

    name = "fomaml"

    @dataclasses.dataclass
    class Config(MAML.Config):
        first_order: bool = True
