"""MAML and first-order MAML, and the MAML++ switches.

C. Finn, P. Abbeel, S. Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks.
ICML 2017. The meta-learned phi is the initialisation theta: each task adapts it by a few steps of
gradient descent on its support loss, and theta is updated (Adam) on the query loss of the adapted
weights, differentiating through the adaptation (second order) or not (first order). Training tasks
on Omniglot have K queries per class, as MAML's code draws them (the test protocol has 15).

Omniglot: the paper's Conv-4 with strided convolutions, batch norm with batch statistics (so
predictions are transductive, as in the paper); 5-way: 1 inner step of 0.4 at training, 3 at
test, meta-batch 32; 20-way: 5 steps of 0.1, meta-batch 16. Sinusoid: the 1-40-40-1 ReLU MLP,
1 step of 0.01, meta-batch 25.

MAML++ (A. Antoniou, H. Edwards, A. Storkey. How to train your MAML. ICLR 2019) is this learner with
six switches of :class:`MAML.Config`, all off by default (plain MAML, and every MAML, FOMAML and ANIL
checkpoint, behave and load exactly as without them), so an ablation is one flag; :class:`MAMLPlusPlus`
(``maml++``) turns them on, BNRS aside. See :class:`MAMLPlusPlus` for the published figures and the differences
from the paper's code.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from metabench import models
from metabench.episodes import Episodes
from metabench.inner_loop import adapt
from metabench.learners import Learner, task_losses

BN_MOMENTUM = 0.1
"""Momentum of the per-step running batch-norm statistics (BNRS), torch's and the MAML++ code's."""


class MAML(Learner):
    """Second-order MAML (``first_order=True`` gives first-order MAML), with the MAML++ switches."""

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
        multi_step_loss: float = 0.0
        """MSL: for this fraction of the run the meta-loss is a weighted sum of the query losses after every
        inner step, the weights annealed from uniform towards the last step (:meth:`MAML.step_weights`); then
        the last step's alone. 0: off."""
        per_step_lr: bool = False
        """LSLR: one learned inner learning rate per parameter tensor and inner step, started at ``inner_lr``
        and meta-learned with the initialisation."""
        per_step_bn_weights: bool = False
        """BNWB: one batch-norm weight and bias per inner step, meta-learned and not adapted in the inner loop."""
        per_step_bn_stats: bool = False
        """BNRS: running batch-norm statistics per inner step, accumulated in meta-training and normalising
        at test (predictions are then not transductive)."""
        cosine_outer_lr: bool = False
        """CA: the meta learning rate follows a cosine from ``outer_lr`` to ``min_outer_lr`` over the run."""
        min_outer_lr: float = 1e-5
        first_order_until: float = 0.0
        """DA: the meta-gradient is first order for this fraction of the run, then second order (unless
        ``first_order``). 0: off."""

    @classmethod
    def defaults(cls, task: dict[str, Any]) -> dict[str, Any]:
        if task["dataset"] == "sinusoid":
            return {"meta_batch": 25, "inner_lr": 0.01, "inner_steps_test": 1}
        if task["n_way"] >= 20:
            return {"meta_batch": 16, "inner_steps": 5, "inner_steps_test": 5, "inner_lr": 0.1}
        return {}

    def __init__(self, config: Config, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(config, task, device, seed)
        inner = config.multi_step_loss > 0 or config.per_step_lr or config.per_step_bn_weights
        if (inner or config.per_step_bn_stats) and type(self).adapt is not MAML.adapt:
            raise ValueError(f"{self.name} has its own inner loop: MSL, LSLR, BNWB and BNRS apply to MAML's only")
        if (config.per_step_bn_weights or config.per_step_bn_stats) and task["dataset"] == "sinusoid":
            raise ValueError("per-step batch norm (BNWB, BNRS) needs the Conv-4; the sinusoid's MLP has none")
        self.transductive = not config.per_step_bn_stats
        generator = torch.Generator().manual_seed(seed)
        if task["dataset"] == "sinusoid":
            params = models.mlp_init(generator)
        else:
            params = models.conv4_init(task["n_way"], generator, width=config.width, downsample=config.downsample)
        self.norm_names = [name for name in params if name.startswith("norm")]
        if config.per_step_bn_weights:
            params.update({name: params[name].repeat(config.inner_steps, 1) for name in self.norm_names})
        self.params = {name: value.to(self.device).requires_grad_() for name, value in params.items()}
        self.adapted_names = [name for name in params if not (config.per_step_bn_weights and name in self.norm_names)]
        self.inner_lrs = {
            name: torch.full((config.inner_steps,), config.inner_lr, device=self.device, requires_grad=True)
            for name in (self.adapted_names if config.per_step_lr else [])
        }
        self.running = {
            name: value.repeat(config.inner_steps, 1).to(self.device)
            for name, value in (models.conv4_running_stats(config.width).items() if config.per_step_bn_stats else [])
        }
        self.optimizer = torch.optim.Adam([*self.params.values(), *self.inner_lrs.values()], lr=config.outer_lr)

    def train_env_kwargs(self) -> dict[str, Any]:
        if self.config.train_query is not None:
            return {"n_query": self.config.train_query}
        return {} if self.task["dataset"] == "sinusoid" else {"n_query": self.task["k_shot"]}

    def forward(
        self, params: models.Params, inputs: torch.Tensor, step: int = 0, training: bool = True
    ) -> torch.Tensor:
        """The network on a meta-batch, with inner step ``step``'s batch-norm weights (BNWB) and running
        statistics (BNRS, a single task: updated when ``training``, else normalising) where those are on."""
        if self.task["dataset"] == "sinusoid":
            return models.mlp(params, inputs)
        step = min(step, self.config.inner_steps - 1)  # more test steps than training ones keep the last step's
        if self.config.per_step_bn_weights:
            params = {**params, **{name: params[name][:, step] for name in self.norm_names}}
        running = {name: value[step] for name, value in self.running.items()} or None
        return models.conv4(params, inputs, self.config.downsample, running, training)

    def trajectory(
        self,
        support_inputs: torch.Tensor,
        support_targets: torch.Tensor,
        steps: int,
        first_order: bool,
        training: bool = True,
    ) -> list[models.Params]:
        """Per-task weights after each of ``steps`` inner steps from the shared initialisation (the start
        itself when ``steps`` is 0); step ``s`` uses step ``s``'s learning rates (LSLR) and batch norm."""
        params = models.expand(self.params, len(support_inputs))
        weights = [params]
        for step in range(steps):

            def support_loss(p: models.Params, step: int = step) -> torch.Tensor:
                outputs = self.forward(p, support_inputs, step, training)
                return task_losses(self.task, outputs, support_targets).sum()

            lr = self.step_lr(step)
            params = adapt(params, support_loss, 1, lr, first_order=first_order, adapted=self.adapted_names)
            weights.append(params)
        return weights[1:] or weights

    def step_lr(self, step: int) -> float | models.Params:
        """Inner step ``step``'s learning rate: ``inner_lr``, or the learned one per parameter tensor (LSLR)."""
        if not self.inner_lrs:
            return self.config.inner_lr
        step = min(step, self.config.inner_steps - 1)
        return {name: lrs[step] for name, lrs in self.inner_lrs.items()}

    def adapt(
        self, support_inputs: torch.Tensor, support_targets: torch.Tensor, steps: int, first_order: bool
    ) -> models.Params:
        """Per-task weights after ``steps`` inner steps from the shared initialisation."""
        return self.trajectory(support_inputs, support_targets, steps, first_order)[-1]

    def step_weights(self) -> list[float] | None:
        """MSL's weights of the query losses after each inner step at the run's current ``progress``, or None
        (the last step's loss alone) when MSL is off or over.

        As the MAML++ code: uniform 1/N at the start; the N-1 earlier weights fall linearly to a floor of
        0.03/N and the last rises to 1 - (N-1) 0.03/N by the end of the MSL part of the run."""
        steps, until = self.config.inner_steps, self.config.multi_step_loss
        if until <= 0 or self.progress >= until:
            return None
        done = self.progress / until
        floor = 0.03 / steps
        earlier = max((1 - done) / steps, floor)
        last = min((1 + done * (steps - 1)) / steps, 1 - (steps - 1) * floor)
        return [earlier] * (steps - 1) + [last]

    def meta_first_order(self) -> bool:
        """Whether this step's meta-gradient is first order: ``first_order``, or DA's first part of the run."""
        return self.config.first_order or self.progress < self.config.first_order_until

    def _chunk_size(self, tasks: int) -> int:
        if self.running:  # running statistics take one task per forward
            return 1
        return self.config.task_chunk or (tasks if self.device.type == "cuda" else 1)

    def meta_backward(self, episodes: Episodes) -> float:
        """Accumulate the meta-gradient of the mean query loss into ``.grad``; returns the loss.

        Tasks go through in chunks of ``task_chunk``: each chunk is one batched (grouped) pass. With MSL
        a task's query loss is the weighted sum of those after every inner step.
        """
        tasks, total, size = len(episodes), 0.0, self._chunk_size(len(episodes))
        steps, first_order, weights = self.config.inner_steps, self.meta_first_order(), self.step_weights()
        for start in range(0, tasks, size):
            chunk = episodes[start : start + size]
            if weights is None:
                adapted = self.adapt(chunk.support_inputs, chunk.support_targets, steps, first_order)
                losses = self.query_losses(adapted, chunk, steps - 1)
            else:
                adapted_after = self.trajectory(chunk.support_inputs, chunk.support_targets, steps, first_order)
                losses = sum(
                    weight * self.query_losses(adapted, chunk, step)
                    for step, (weight, adapted) in enumerate(zip(weights, adapted_after, strict=True))
                )
            loss = losses.sum() / tasks
            loss.backward()
            total += loss.item()
        return total

    def query_losses(self, adapted: models.Params, episodes: Episodes, step: int) -> torch.Tensor:
        """Per-task query losses ``(T,)`` of weights after ``step + 1`` inner steps (step ``step``'s batch norm)."""
        return task_losses(self.task, self.forward(adapted, episodes.query_inputs, step), episodes.query_targets)

    def train_step(self, episodes: Episodes) -> dict[str, float]:
        if self.config.cosine_outer_lr:
            low, high = self.config.min_outer_lr, self.config.outer_lr
            for group in self.optimizer.param_groups:
                group["lr"] = low + (high - low) * (1 + math.cos(math.pi * self.progress)) / 2
        self.optimizer.zero_grad()
        loss = self.meta_backward(episodes)
        self.optimizer.step()
        return {"loss": loss}

    def predict(
        self, support_inputs: torch.Tensor, support_targets: torch.Tensor, query_inputs: torch.Tensor
    ) -> torch.Tensor:
        outputs, size, steps = [], self._chunk_size(len(support_inputs)), self.config.inner_steps_test
        for start in range(0, len(support_inputs), size):
            part = slice(start, start + size)
            with torch.enable_grad():
                if self.running:  # normalise with the running statistics, leaving them as they are
                    adapted = self.trajectory(support_inputs[part], support_targets[part], steps, True, False)[-1]
                else:
                    adapted = self.adapt(support_inputs[part], support_targets[part], steps, first_order=True)
            with torch.no_grad():
                outputs.append(self.forward(adapted, query_inputs[part], max(steps - 1, 0), training=False))
        return torch.cat(outputs)

    def state_dict(self) -> dict[str, Any]:
        state = {
            "params": {name: value.detach() for name, value in self.params.items()},
            "optimizer": self.optimizer.state_dict(),
        }
        if self.inner_lrs:
            state["inner_lrs"] = {name: value.detach() for name, value in self.inner_lrs.items()}
        if self.running:
            state["running"] = dict(self.running)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for part, values in (("params", self.params), ("inner_lrs", self.inner_lrs), ("running", self.running)):
            models.load_params(values, state.get(part, {}))
        self.optimizer.load_state_dict(state["optimizer"])


class FOMAML(MAML):
    """First-order MAML: the meta-gradient ignores the second-order terms of the adaptation."""

    name = "fomaml"

    @dataclasses.dataclass
    class Config(MAML.Config):
        first_order: bool = True


class MAMLPlusPlus(MAML):
    """MAML++: MAML with the switches on (BNRS aside, see below), at the paper's Omniglot settings.

    A. Antoniou, H. Edwards, A. Storkey. How to train your MAML. ICLR 2019. Settings of the paper's code
    (github.com/AntreasAntoniou/HowToTrainYourMAMLPytorch, experiment_config/omniglot_maml++-*.json), the same
    for 5- and 20-way: the max-pooling Conv-4 with 64 filters, 5 inner steps at training and test from a
    learned rate started at 0.1, meta-batch 8, one query per class in training tasks, Adam 1e-3 annealed to
    1e-5 by a cosine, multi-step loss for the first 10 of its 100 epochs (x 500 iterations: 50,000 in all).

    Published (the paper's Omniglot table): 99.47 +- 0.05 % on 5-way 1-shot and 97.65 +- 0.05 % on 20-way
    1-shot. Their protocol: the paper's own Omniglot split (1623 characters shuffled by seed, about 1150 for
    training, 50 for validation and 420 for test, rotations by multiples of 90 degrees drawn per class),
    600 test tasks of one query per class, scored by the ensemble (mean prediction) of the 5 epochs best on
    validation, mean and s.d. over 3 runs. metabench scores one model on its own split and test protocol.

    Deliberate differences from the paper and its code:

    * BNRS is off: the code keeps per-step running statistics but calls batch norm in training mode
      everywhere, so its figures were measured with the batch statistics of the support and query sets
      (transductive, as MAML). ``per_step_bn_stats=true`` normalises with them at test, as the paper describes;
      on a tiny run (width 16, 40 iterations) that scored 0.25 on val against 0.65 for the same weights with
      batch statistics: with 5-example batches the network learns to rely on per-task normalisation.
    * DA is on, first order for the first half of the run: the paper's text says first order for the first
      50 epochs; its released Omniglot configs train second order throughout
      (``first_order_to_second_order_epoch: -1``), which ``--config first_order_until=0`` reproduces.
    * Schedules are continuous in the run's ``progress``, not staircases over 500-iteration epochs; LSLR has
      one rate per step (the code keeps one more, unused); BN weights do not adapt in the inner loop, as in
      the code (``enable_inner_loop_optimizable_bn_params: false``).
    """

    name = "maml++"
    transductive = True

    @dataclasses.dataclass
    class Config(MAML.Config):
        meta_batch: int = 8
        inner_steps: int = 5
        inner_steps_test: int = 5
        inner_lr: float = 0.1
        downsample: str = "maxpool"
        train_query: int | None = 1
        multi_step_loss: float = 0.1
        per_step_lr: bool = True
        per_step_bn_weights: bool = True
        cosine_outer_lr: bool = True
        first_order_until: float = 0.5

    @classmethod
    def defaults(cls, task: dict[str, Any]) -> dict[str, Any]:
        if task["dataset"] == "sinusoid":  # MAML's sinusoid settings; the MLP has no batch norm
            off = {"train_query": None, "per_step_bn_weights": False}
            return {**MAML.defaults(task), **off}
        return {}
