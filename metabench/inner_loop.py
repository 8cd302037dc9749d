"""The functional inner loop: gradient descent on a support loss, differentiable for meta-learning.

Used by every gradient-based learner in metabench (MAML and its first-order variant, ANIL,
fine-tuning baselines, learned step sizes): they differ only in which parameters adapt, the step
size(s) and whether second-order terms are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

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
    """
    names = list(params) if adapted is None else list(adapted)
    for _ in range(steps):
        loss = loss_fn(params)
        grads = torch.autograd.grad(loss, [params[name] for name in names], create_graph=not first_order)
        params = dict(params)
        for name, grad in zip(names, grads, strict=True):
            step = lr if isinstance(lr, float | int) else lr[name]
            params[name] = params[name] - step * (grad.detach() if first_order else grad)
    return params
