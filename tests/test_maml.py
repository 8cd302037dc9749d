"""MAML's meta-gradient is right: batched equals the per-task loop, and it matches finite differences."""

from __future__ import annotations

import pytest
import torch

from metabench.checkpoints import build_learner
from metabench.envs import make_env
from metabench.episodes import Episodes


@pytest.fixture(scope="module")
def episodes() -> Episodes:
    env = make_env("MetaOmniglot-5w1s-v0", split="train")
    return env.sampler.sample(4, torch.Generator().manual_seed(0))


def maml64(first_order: bool, task_chunk: int, downsample: str = "stride"):
    config = {"width": 8, "first_order": first_order, "task_chunk": task_chunk, "downsample": downsample}
    learner = build_learner("maml", "MetaOmniglot-5w1s-v0", config, seed=3)
    for value in learner.params.values():
        value.data = value.data.double()
    return learner


def meta_gradient(learner, episodes) -> dict[str, torch.Tensor]:
    for value in learner.params.values():
        value.grad = None
    learner.meta_backward(episodes)
    return {name: value.grad.clone() for name, value in learner.params.items()}


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
@pytest.mark.parametrize("first_order", [False, True])
def test_batched_meta_gradient_equals_the_per_task_loop(episodes, first_order, downsample):
    batched = meta_gradient(maml64(first_order, task_chunk=4, downsample=downsample), episodes)
    looped = meta_gradient(maml64(first_order, task_chunk=1, downsample=downsample), episodes)
    for name in batched:
        torch.testing.assert_close(batched[name], looped[name], rtol=1e-9, atol=1e-12)


def test_second_order_meta_gradient_matches_finite_differences(episodes):
    learner = maml64(first_order=False, task_chunk=4)
    grads = meta_gradient(learner, episodes)
    direction = {
        name: torch.randn(value.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        for name, value in learner.params.items()
    }
    analytic = sum((grads[name] * direction[name]).sum() for name in grads)

    def meta_loss(scale: float) -> float:
        with torch.no_grad():
            for name, value in learner.params.items():
                value.add_(scale * direction[name])
        loss = learner.meta_backward(episodes)
        with torch.no_grad():
            for name, value in learner.params.items():
                value.sub_(scale * direction[name])
        return loss

    eps = 1e-7  # small: the loss is only piecewise smooth (ReLU kinks), in float64
    numeric = (meta_loss(eps) - meta_loss(-eps)) / (2 * eps)
    assert numeric == pytest.approx(float(analytic), rel=1e-4)

    # the first-order approximation is measurably different: the test can tell them apart
    first_order = meta_gradient(maml64(first_order=True, task_chunk=4), episodes)
    approximate = sum((first_order[name] * direction[name]).sum() for name in grads)
    assert abs(float(approximate) - numeric) > 1e-3 * abs(numeric)


def test_predict_does_not_change_the_meta_parameters(episodes):
    learner = build_learner("maml", "MetaOmniglot-5w1s-v0", {"width": 8})
    before = {name: value.detach().clone() for name, value in learner.params.items()}
    logits = learner.predict(episodes.support_inputs, episodes.support_targets, episodes.query_inputs)
    assert logits.shape == (4, 75, 5) and not logits.requires_grad
    for name, value in learner.params.items():
        assert torch.equal(value, before[name]) and value.grad is None
