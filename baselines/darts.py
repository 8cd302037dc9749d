"""DARTS on MetaNAS: differentiable architecture search through the env's continuous relaxation.

H. Liu, K. Simonyan, Y. Yang. DARTS: Differentiable Architecture Search. ICLR 2019.
The architecture is relaxed to a softmax per decision (:meth:`metabench.envs.nas.MetaNASEnv.relaxation`,
:func:`metabench.nas.relaxed_forward`: each cell the expectation over its operations, widths and
down-samplings). DARTS alternates a step of the architecture logits ``alpha`` on the val loss (Adam) and a
step of the supernet's weights ``w`` on the train loss (SGD with momentum, cosine-annealed), both ProtoNets'
query loss as the env's reward recipe trains: train episodes from the reward's train sampler, val episodes
from its fixed val tasks. ``order=1`` takes ``d L_val(w, alpha) / d alpha``; ``order=2`` the unrolled one-step
approximation ``d L_val(w - xi d L_train(w, alpha) / dw, alpha) / d alpha`` (the paper's eq. 6, ``xi`` the
current weight learning rate), differentiated exactly through the virtual step by autograd instead of the
paper's finite-difference Hessian-vector product. Each :meth:`DARTS.ask` runs ``steps`` steps and answers
the argmax architecture (the paper's discretisation), which the env trains and scores by its own reward:
one candidate evaluation per ask. What the supernet training cost is reported by :meth:`DARTS.costs`
(``best.json``'s ``total_searcher_seconds`` and ``total_searcher_cpu_seconds``).

As DARTS searches a network narrower than the one it trains, the supernet's widths are scaled to a widest
``width`` (default 16: widths 4, 8, 12, 16 stand for 16, 32, 48, 64); ``width=64`` relaxes the space itself.
Hyperparameters are the paper's (CIFAR-10 search) except ``arch_lr``, 10x its 3e-4, since a CPU affords
some hundred steps rather than its 50 epochs.
"""

from __future__ import annotations

import math
import time

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from metabench import nas
from metabench.episodes import Episodes
from metabench.search import Searcher, Space


class DARTS(Searcher):
    """Bilevel gradient search of MetaNAS's relaxation (Liu et al. 2019); the answer is the argmax design."""

    name = "darts"

    def __init__(
        self,
        space: Space,
        seed: int,
        steps: int = 100,
        order: int = 1,
        width: int = 16,
        lr: float = 0.025,
        lr_min: float = 0.001,
        momentum: float = 0.9,
        weight_decay: float = 3e-4,
        grad_clip: float = 5.0,
        arch_lr: float = 3e-3,
        arch_weight_decay: float = 1e-3,
        val_batch: int = 4,
    ) -> None:
        super().__init__(space, seed)
        if order not in (1, 2):
            raise ValueError(f"order must be 1 (first order) or 2 (the unrolled step), got {order!r}")
        if steps < 1 or val_batch < 1:
            raise ValueError(f"steps and val_batch must be >= 1, got {steps} and {val_batch}")
        if not isinstance(space, spaces.MultiDiscrete) or tuple(space.nvec) != (nas.CHOICES,) * nas.N_DECISIONS:
            raise ValueError("darts searches MetaNAS's architectures (12 decisions of 4 options)")
        nas.proxy_widths(width)  # refuse a bad width before the env is attached
        self.steps, self.order, self.width, self.val_batch = steps, order, width, val_batch
        self.lr, self.lr_min, self.momentum = lr, lr_min, momentum
        self.weight_decay, self.grad_clip = weight_decay, grad_clip
        self.arch_lr, self.arch_weight_decay = arch_lr, arch_weight_decay
        self.generator = torch.Generator().manual_seed(seed)
        self.seconds = self.cpu_seconds = 0.0
        self.steps_done = 0
        self.relaxation = None

    def attach(self, env: gym.Env) -> None:
        """Take the env's relaxation and initialise the supernet and the architecture logits from the seed."""
        if not hasattr(env.unwrapped, "relaxation"):
            raise ValueError(f"darts needs an env with a continuous relaxation (MetaNAS), got {env.unwrapped}")
        self.relaxation = env.unwrapped.relaxation(self.width)
        self.params = {name: value.requires_grad_() for name, value in self.relaxation.init(self.generator).items()}
        device = next(iter(self.params.values())).device
        shape = (nas.CELLS, len(nas.DECISION_KINDS), nas.CHOICES)
        self.alpha = (1e-3 * torch.randn(shape, generator=self.generator)).to(device).requires_grad_()  # as DARTS
        self.optimizer = torch.optim.SGD(
            list(self.params.values()), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        self.arch_optimizer = torch.optim.Adam(
            [self.alpha], lr=self.arch_lr, betas=(0.5, 0.999), weight_decay=self.arch_weight_decay
        )
        self._val_order = torch.empty(0, dtype=torch.int64)

    def arch_gradient(self, train: Episodes, val: Episodes, xi: float, order: int | None = None) -> torch.Tensor:
        """The gradient of the val loss in the architecture logits: at the current weights (``order`` 1), or after
        a virtual SGD step of size ``xi`` on ``train`` (``order`` 2); ``order`` defaults to the searcher's."""
        weights, params = self.alpha.softmax(dim=-1), self.params
        if (order or self.order) == 2:
            train_loss = self.relaxation.loss(params, weights, train)
            grads = torch.autograd.grad(train_loss, list(params.values()), create_graph=True)
            params = {name: value - xi * grad for (name, value), grad in zip(params.items(), grads, strict=True)}
        return torch.autograd.grad(self.relaxation.loss(params, weights, val), self.alpha)[0]

    def _val_episodes(self) -> Episodes:
        """The next ``val_batch`` val tasks of a seeded cycle through the reward's val tasks."""
        val = self.relaxation.val_episodes
        while len(self._val_order) < self.val_batch:
            self._val_order = torch.cat([self._val_order, torch.randperm(len(val), generator=self.generator)])
        chosen, self._val_order = self._val_order[: self.val_batch], self._val_order[self.val_batch :]
        return val[chosen]

    def step(self, xi: float) -> float:
        """One DARTS step: the architecture on val episodes, then the weights (learning rate ``xi``) on a train
        meta-batch; returns the train loss."""
        train, val = self.relaxation.train_episodes(self.generator), self._val_episodes()
        self.arch_optimizer.zero_grad()
        self.alpha.grad = self.arch_gradient(train, val, xi)
        self.arch_optimizer.step()
        for group in self.optimizer.param_groups:
            group["lr"] = xi
        loss = self.relaxation.loss(self.params, self.alpha.detach().softmax(dim=-1), train)
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.grad_clip)
        self.optimizer.step()
        self.steps_done += 1
        return loss.item()

    def ask(self) -> np.ndarray:
        """Run ``steps`` steps (the weights' learning rate cosine-annealed from ``lr`` to ``lr_min`` over them) and
        answer the argmax architecture."""
        if self.relaxation is None:
            raise RuntimeError("darts needs the env: run it through metabench.search.search, which attaches it")
        wall, cpu = time.perf_counter(), time.process_time()
        for t in range(self.steps):
            self.step(self.lr_min + (self.lr - self.lr_min) * (1 + math.cos(math.pi * t / self.steps)) / 2)
        self.seconds += time.perf_counter() - wall
        self.cpu_seconds += time.process_time() - cpu
        return nas.argmax(self.alpha)

    def tell(self, candidate: np.ndarray, reward: float) -> None:
        pass  # DARTS learns from the relaxation's gradients, not from the discrete design's reward

    def costs(self) -> dict[str, float]:
        """The supernet training's wall and CPU (all threads) seconds and its steps."""
        return {"seconds": self.seconds, "cpu_seconds": self.cpu_seconds, "steps": float(self.steps_done)}
