"""The functional inner loop: gradient descent on a support loss, differentiable for meta-learning.

Used by every gradient-based learner in metabench (MAML and its first-order variant, ANIL,
fine-tuning baselines, learned step sizes, Reptile): they differ only in which parameters adapt, the
step size(s) or update rule (:class:`Adam` for Reptile) and whether second-order terms are kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from metabench.models import Params


def adapt(
    params: Params,
    loss_fn: Callable[[Params], torch.Tensor],
    steps: int,
    lr: float | Params,
    *,
    first_order: bool = False,
    adapted: Iterable[str] | None = None,
    rule: Callable[[Params], Params] | None = None,
) -> Params:
    """Take ``steps`` gradient steps ``p <- p - lr * dL/dp`` from ``params`` and return the result.

    Args:
        params: parameters with a task dimension (see :mod:`metabench.models`); a meta-batch adapts
            all its tasks at once when ``loss_fn`` returns the *sum* of the per-task losses.
        loss_fn: support loss of given parameters.
        steps: number of gradient steps (0 returns ``params``).
        lr: one step size, or one tensor per adapted parameter (broadcast against it), e.g. the
            learned per-parameter step sizes of Meta-SGD.
        first_order: drop second-order terms: the gradients are treated as constants, so the
            result depends on ``params`` only through the identity (first-order MAML).
        adapted: names of the parameters that adapt (default: all); the others stay as they are
            (ANIL adapts the head only).
        rule: an update rule in place of ``lr * grad``: gradients by name -> steps by name (e.g. :class:`Adam`,
            first order only); ``lr`` is then unused.
    """
    names = list(params) if adapted is None else list(adapted)
    for _ in range(steps):
        loss = loss_fn(params)
        grads = torch.autograd.grad(loss, [params[name] for name in names], create_graph=not first_order)
        params = dict(params)
        if rule is not None:
            for name, step in rule({name: grad.detach() for name, grad in zip(names, grads, strict=True)}).items():
                params[name] = params[name] - step
            continue
        for name, grad in zip(names, grads, strict=True):
            step = lr if isinstance(lr, float | int) else lr[name]
            params[name] = params[name] - step * (grad.detach() if first_order else grad)
    return params


class Adam:
    """Adam as an inner-loop update rule, in TensorFlow's form (Reptile's code: ``AdamOptimizer(lr, beta1=0)``):
    ``step = lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)``. Its moments and step count live in
    ``state`` (a dict of tensors, updated in place), so they carry over from one task to the next as the
    optimizer's slots do there; a copy of the state gives a private run (evaluation)."""

    def __init__(self, state: dict[str, Any], lr: float, betas: tuple[float, float] = (0.0, 0.999), eps: float = 1e-8):
        self.state, self.lr, self.betas, self.eps = state, lr, betas, eps

    @staticmethod
    def fresh_state(like: Params) -> dict[str, Any]:
        """Zero moments shaped like the parameters ``like`` (as the gradients will be), step count 0."""
        return {
            "m": {name: torch.zeros_like(value) for name, value in like.items()},
            "v": {name: torch.zeros_like(value) for name, value in like.items()},
            "step": torch.zeros((), dtype=torch.int64),
        }

    def __call__(self, grads: Params) -> Params:
        beta1, beta2 = self.betas
        self.state["step"] += 1
        t = int(self.state["step"])
        lr = self.lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        steps = {}
        for name, grad in grads.items():
            m, v = self.state["m"][name], self.state["v"][name]
            m.mul_(beta1).add_(grad, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            steps[name] = lr * m / (v.sqrt() + self.eps)
        return steps
