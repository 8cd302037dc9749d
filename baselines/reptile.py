"""Reptile.

A. Nichol, J. Achiam, J. Schulman. On First-Order Meta-Learning Algorithms. arXiv:1803.02999, 2018.
The meta-learned phi is an initialisation theta. Each task of a meta-batch trains a copy of it,
phi_task, with k steps of stochastic gradient descent on mini-batches of the task's data; then
``theta <- theta + eps * mean_task(phi_task - theta)``, with the outer step size eps annealed
linearly from ``outer_step`` (1.0) to ``outer_step_final`` (0) over the run it is in: the training
harness sets :attr:`~metabench.learners.Learner.progress`, the fraction of the planned iterations (or
time budget) done. No second-order terms, no query loss: only weights are compared.

Differences from the paper, on purpose:

* The paper's inner optimiser is Adam (lr 1e-3, beta1 = 0, its moments kept across tasks); ours is
  plain SGD through metabench's one inner loop (:func:`metabench.inner_loop.adapt` with
  ``first_order=True``), lr 0.1: in 200-iteration 5w1s runs, SGD lr 0.03, 0.1 and 0.3 reached
  87.8%, 88.3% and 88.1% on 100 validation episodes (indistinguishable; 0.1 is the middle).
* The paper trains on 10-shot tasks ("train shots"); our training tasks are the env's own
  episodes, whose support *and* query examples (1 + 15 per class in 5w1s) are pooled into the
  task's training set. The env shuffles both sets, so consecutive slices of the pooled set are
  random mini-batches; inner step ``i`` takes slice ``i`` (cycling).
* The paper's Omniglot network is MAML's strided Conv-4 and its non-transductive evaluation runs
  batch norm on the support set plus one query at a time. Ours is the max-pool Conv-4 with a head and
  running batch-norm statistics (:func:`metabench.models.conv4_running_stats`): at training they
  follow the inner loops; at test every task fine-tunes on a private copy of the network and of the
  statistics in training mode (support batches), then predicts each query with the copy's running
  statistics, so a prediction depends on the support set and that query only (non-transductive,
  like the paper's 95.4% 5-way 1-shot figure) and evaluation leaves the learner unchanged.

Settings (the paper's appendix table for Omniglot, which we keep): 5-way: 5 inner steps (50 at test)
of batch 10 (5 at test), meta-batch 5, eps 1.0 -> 0 over 100,000 iterations; 20-way: 10 inner steps
of batch 20 (50 steps of batch 10 at test). The authors' repository later lists per-task tuned
commands (e.g. non-transductive 5w1s: 12 inner steps of batch 5, meta-batch 3, 200,000 iterations,
86 test steps).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from metabench import models
from metabench.episodes import Episodes
from metabench.inner_loop import adapt
from metabench.learners import Learner, task_losses


class Reptile(Learner):
    """Serial Reptile with an SGD inner loop and a linearly annealed outer step."""

    name = "reptile"
    transductive = False

    @dataclasses.dataclass
    class Config:
        meta_batch: int = 5
        """Tasks per meta-iteration (the paper's "meta-batch")."""
        inner_steps: int = 5
        """SGD steps per training task."""
        inner_steps_test: int = 50
        """SGD steps on a test task's support set."""
        inner_batch: int = 10
        """Examples per inner step at training (from the pooled support and query sets)."""
        inner_batch_test: int = 5
        """Examples per inner step at test (at most the support set's size)."""
        inner_lr: float = 0.1
        """SGD step size of the inner loop (the paper: Adam, lr 1e-3, beta1 0)."""
        outer_step: float = 1.0
        """Outer step size eps at iteration 0."""
        outer_step_final: float = 0.0
        """eps at the end of the planned run (linear in the run's progress in between)."""
        width: int = 64
        downsample: str = "maxpool"

    @classmethod
    def defaults(cls, task: dict[str, Any]) -> dict[str, Any]:
        if task["dataset"] == "omniglot" and task["n_way"] >= 20:
            return {"inner_steps": 10, "inner_batch": 20, "inner_batch_test": 10}
        return {}

    def __init__(self, config: Config, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(config, task, device, seed)
        if task["dataset"] != "omniglot":
            raise ValueError("this Reptile is set up for classification envs such as MetaOmniglot")
        generator = torch.Generator().manual_seed(seed)
        params = models.conv4_init(task["n_way"], generator, width=config.width, downsample=config.downsample)
        self.params = {name: value.to(self.device) for name, value in params.items()}
        self.running = {name: value.to(self.device) for name, value in models.conv4_running_stats(config.width).items()}

    def outer_step(self) -> float:
        """eps of the current iteration: linear in the run's progress from ``outer_step`` to ``outer_step_final``."""
        done = min(max(self.progress, 0.0), 1.0)
        return (1 - done) * self.config.outer_step + done * self.config.outer_step_final

    def finetune(
        self, inputs: torch.Tensor, targets: torch.Tensor, steps: int, batch: int, running: models.Params
    ) -> tuple[models.Params, float]:
        """SGD from theta on one task's examples ``(n, ...)``; returns phi (task dimension 1) and the mean loss.

        Step ``i`` uses the examples ``i * batch .. (i + 1) * batch - 1`` (modulo ``n``); batch norm uses
        the batch's statistics and updates ``running`` in place.
        """
        batch = min(batch, len(inputs))
        params = {name: value[None].requires_grad_() for name, value in self.params.items()}
        losses: list[float] = []

        def batch_loss(p: models.Params) -> torch.Tensor:
            rows = (torch.arange(batch) + len(losses) * batch) % len(inputs)
            rows = rows.to(inputs.device)
            logits = models.conv4(p, inputs[rows][None], self.config.downsample, running, training=True)
            loss = task_losses(self.task, logits, targets[rows][None]).sum()
            losses.append(loss.item())
            return loss

        with torch.enable_grad():
            phi = adapt(params, batch_loss, steps, self.config.inner_lr, first_order=True)
        return {name: value.detach() for name, value in phi.items()}, sum(losses) / max(len(losses), 1)

    def train_step(self, episodes: Episodes) -> dict[str, float]:
        """One outer update from a meta-batch; logs the mean inner mini-batch loss and eps."""
        eps, tasks = self.outer_step(), len(episodes)
        direction = {name: torch.zeros_like(value) for name, value in self.params.items()}
        total = 0.0
        for task in range(tasks):
            inputs = torch.cat([episodes.support_inputs[task], episodes.query_inputs[task]])
            targets = torch.cat([episodes.support_targets[task], episodes.query_targets[task]])
            phi, loss = self.finetune(inputs, targets, self.config.inner_steps, self.config.inner_batch, self.running)
            for name, value in phi.items():
                direction[name] += value[0] - self.params[name]
            total += loss / tasks
        for name, value in direction.items():
            self.params[name] += eps * value / tasks
        return {"loss": total, "outer_step": eps}

    def predict(
        self, support_inputs: torch.Tensor, support_targets: torch.Tensor, query_inputs: torch.Tensor
    ) -> torch.Tensor:
        outputs = []
        for task in range(len(support_inputs)):
            running = {name: value.clone() for name, value in self.running.items()}  # the task's private copy
            phi, _ = self.finetune(
                support_inputs[task],
                support_targets[task],
                self.config.inner_steps_test,
                self.config.inner_batch_test,
                running,
            )
            with torch.no_grad():
                outputs.append(models.conv4(phi, query_inputs[task][None], self.config.downsample, running, False))
        return torch.cat(outputs)

    def state_dict(self) -> dict[str, Any]:
        return {"params": dict(self.params), "running": dict(self.running)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state["params"].items():
            self.params[name].copy_(value)
        for name, value in state["running"].items():
            self.running[name].copy_(value)
