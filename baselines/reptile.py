"""Reptile.

A. Nichol, J. Achiam, J. Schulman. On First-Order Meta-Learning Algorithms. arXiv:1803.02999, 2018.
The meta-learned phi is an initialisation theta. Each task of a meta-batch trains a copy of it,
phi_task, with k steps on mini-batches of the task's data; then
``theta <- theta + eps * mean_task(phi_task - theta)``, with the outer step size eps annealed
linearly from ``outer_step`` (1.0) to ``outer_step_final`` (0) over the run it is in: the training
harness sets :attr:`~metabench.learners.Learner.progress`, the fraction of the planned iterations (or
time budget) done. No second-order terms, no query loss: only weights are compared.

As the paper and its code (openai/supervised-reptile), by default:

* the inner optimiser is Adam with beta1 = 0 (lr 1e-3), in TensorFlow's form, whose moments carry over
  from task to task and iteration to iteration (they are not part of the reset between tasks;
  :class:`metabench.inner_loop.Adam`); evaluation runs on a private copy of them;
* the network is MAML's Omniglot Conv-4 with strided convolutions and a linear head;
* training tasks have ``train_shots`` = 10 examples per class (the env draws ``train_shots - 1`` support
  and 1 query example per class, pooled into the task's training set; consecutive slices of it are the
  mini-batches, cycling);
* batch norm always normalises with the statistics of the examples it is given, and a test query is
  predicted in one batch with the support set (the code's non-transductive evaluation): a prediction
  depends on the support set and that query only.

``inner_optimizer="sgd"``, ``train_shots=0`` (the env's episodes, support and query pooled) and
``batch_norm="running"`` (running statistics that follow the inner loops, a private copy per test task)
give this learner as it was before it followed the paper; checkpoints written then load with them.

Settings (the paper's appendix table for Omniglot): 5-way: 5 inner steps (50 at test) of batch 10 (5 at
test), meta-batch 5, eps 1.0 -> 0 over 100,000 iterations; 20-way: 10 inner steps of batch 20 (50 steps
of batch 10 at test). The authors' repository later lists per-task tuned commands (e.g.
non-transductive 5w1s: 12 inner steps of batch 5, meta-batch 3, 200,000 iterations, 86 test steps).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from metabench import models
from metabench.episodes import Episodes
from metabench.inner_loop import Adam, adapt
from metabench.learners import Learner, task_losses


class Reptile(Learner):
    """Serial Reptile with an Adam (or SGD) inner loop and a linearly annealed outer step."""

    name = "reptile"
    transductive = False
    legacy_config = {"inner_optimizer": "sgd", "train_shots": 0, "batch_norm": "running"}
    """What a checkpoint written before these fields existed meant by leaving them out."""

    @dataclasses.dataclass
    class Config:
        meta_batch: int = 5
        """Tasks per meta-iteration (the paper's "meta-batch")."""
        inner_steps: int = 5
        """Inner steps per training task."""
        inner_steps_test: int = 50
        """Inner steps on a test task's support set."""
        inner_batch: int = 10
        """Examples per inner step at training."""
        inner_batch_test: int = 5
        """Examples per inner step at test (at most the support set's size)."""
        inner_optimizer: str = "adam"
        """``adam`` (the paper's: beta1 0, beta2 0.999, moments kept across tasks) or ``sgd``."""
        inner_lr: float = 1e-3
        """Step size of the inner optimiser."""
        train_shots: int = 10
        """Examples per class of a training task; 0: the env's episode, support and query pooled."""
        batch_norm: str = "batch"
        """``batch`` (the paper's: batch statistics; a test query in one batch with the support set) or
        ``running`` (running statistics, following the inner loops)."""
        outer_step: float = 1.0
        """Outer step size eps at iteration 0."""
        outer_step_final: float = 0.0
        """eps at the end of the planned run (linear in the run's progress in between)."""
        width: int = 64
        downsample: str = "stride"

    @classmethod
    def defaults(cls, task: dict[str, Any]) -> dict[str, Any]:
        if task["dataset"] == "omniglot" and task["n_way"] >= 20:
            return {"inner_steps": 10, "inner_batch": 20, "inner_batch_test": 10}
        return {}

    def __init__(self, config: Config, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(config, task, device, seed)
        if task["dataset"] != "omniglot":
            raise ValueError("this Reptile is set up for classification envs such as MetaOmniglot")
        for option, allowed in (("inner_optimizer", ("adam", "sgd")), ("batch_norm", ("batch", "running"))):
            if getattr(config, option) not in allowed:
                raise ValueError(f"{option} must be one of {allowed}, got {getattr(config, option)!r}")
        if config.train_shots == 1 or config.train_shots < 0:
            raise ValueError(f"train_shots must be 0 (the env's episodes) or at least 2, got {config.train_shots}")
        generator = torch.Generator().manual_seed(seed)
        params = models.conv4_init(task["n_way"], generator, width=config.width, downsample=config.downsample)
        self.params = {name: value.to(self.device) for name, value in params.items()}
        self.running = None
        if config.batch_norm == "running":
            stats = models.conv4_running_stats(config.width)
            self.running = {name: value.to(self.device) for name, value in stats.items()}
        self.adam = None
        if config.inner_optimizer == "adam":
            self.adam = Adam.fresh_state({name: value[None] for name, value in self.params.items()})

    def train_env_kwargs(self) -> dict[str, Any]:
        shots = self.config.train_shots
        return {"k_shot": shots - 1, "n_query": 1} if shots else {}

    def outer_step(self) -> float:
        """eps of the current iteration: linear in the run's progress from ``outer_step`` to ``outer_step_final``."""
        done = min(max(self.progress, 0.0), 1.0)
        return (1 - done) * self.config.outer_step + done * self.config.outer_step_final

    def finetune(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        steps: int,
        batch: int,
        running: models.Params | None,
        adam: dict[str, Any] | None,
    ) -> tuple[models.Params, float]:
        """Train from theta on one task's examples ``(n, ...)``; returns phi (task dimension 1) and the mean loss.

        Step ``i`` uses the examples ``i * batch .. (i + 1) * batch - 1`` (modulo ``n``); batch norm uses the
        batch's statistics and, given ``running`` statistics, updates them in place, as the inner optimiser
        (Adam, given its state ``adam``, else SGD) does its moments.
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

        rule = None if adam is None else Adam(adam, self.config.inner_lr)
        with torch.enable_grad():
            phi = adapt(params, batch_loss, steps, self.config.inner_lr, first_order=True, rule=rule)
        return {name: value.detach() for name, value in phi.items()}, sum(losses) / max(len(losses), 1)

    def train_step(self, episodes: Episodes) -> dict[str, float]:
        """One outer update from a meta-batch; logs the mean inner mini-batch loss and eps."""
        eps, tasks = self.outer_step(), len(episodes)
        direction = {name: torch.zeros_like(value) for name, value in self.params.items()}
        total = 0.0
        for task in range(tasks):
            inputs = torch.cat([episodes.support_inputs[task], episodes.query_inputs[task]])
            targets = torch.cat([episodes.support_targets[task], episodes.query_targets[task]])
            phi, loss = self.finetune(
                inputs, targets, self.config.inner_steps, self.config.inner_batch, self.running, self.adam
            )
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
            running = None if self.running is None else {name: value.clone() for name, value in self.running.items()}
            adam = None if self.adam is None else _copy(self.adam)  # the task's private copies
            phi, _ = self.finetune(
                support_inputs[task],
                support_targets[task],
                self.config.inner_steps_test,
                self.config.inner_batch_test,
                running,
                adam,
            )
            with torch.no_grad():
                if running is not None:
                    outputs.append(models.conv4(phi, query_inputs[task][None], self.config.downsample, running, False))
                    continue
                # each query in one batch with the support set: query q is "task" q of a grouped forward
                queries, support = query_inputs[task], support_inputs[task]
                images = torch.cat([support.expand(len(queries), *support.shape), queries[:, None]], dim=1)
                shared = models.expand({name: value[0] for name, value in phi.items()}, len(queries))
                outputs.append(models.conv4(shared, images, self.config.downsample)[:, -1][None])
        return torch.cat(outputs)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"params": dict(self.params)}
        if self.running is not None:
            state["running"] = dict(self.running)
        if self.adam is not None:
            state["inner_adam"] = _copy(self.adam)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        models.load_params(self.params, state["params"])
        models.load_params(self.running, state.get("running", {}))
        if "inner_adam" in state:
            self.adam = _copy(state["inner_adam"])


def _copy(state: Any) -> Any:
    """A deep copy of a nest of dicts of tensors."""
    if isinstance(state, dict):
        return {key: _copy(value) for key, value in state.items()}
    return state.clone()
