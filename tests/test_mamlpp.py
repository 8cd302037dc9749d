"""MAML++'s switches of the MAML learner: off they are plain MAML bit for bit, each does what it says, and
``maml++`` learns and resumes exactly. Everything runs on width-8 Conv-4s with few steps, in seconds on a CPU."""

from __future__ import annotations

import math

import pytest
import torch

from metabench import models
from metabench.checkpoints import build_learner, load_checkpoint
from metabench.envs import make_env
from metabench.evaluation import evaluate
from metabench.inner_loop import adapt
from metabench.learners import task_losses
from metabench.training import TRAIN_SEED_OFFSET, train

ENV = "MetaOmniglot-5w1s-v1"
TINY = {"width": 8, "inner_steps": 3, "inner_steps_test": 3, "meta_batch": 3}
OFF = {
    "multi_step_loss": 0.0,
    "per_step_lr": False,
    "per_step_bn_weights": False,
    "per_step_bn_stats": False,
    "cosine_outer_lr": False,
    "first_order_until": 0.0,
}


@pytest.fixture(scope="module")
def episodes():
    return make_env(ENV, split="train", n_query=1).sampler.sample(3, torch.Generator().manual_seed(0))


def learner(name: str = "maml", **config):
    return build_learner(name, ENV, {**TINY, **config}, seed=3)


def meta_gradient(maml, episodes, progress: float = 0.0) -> tuple[float, dict[str, torch.Tensor]]:
    maml.progress = progress
    tensors = {**maml.params, **{f"lr:{name}": value for name, value in maml.inner_lrs.items()}}
    for value in tensors.values():
        value.grad = None
    loss = maml.meta_backward(episodes)
    return loss, {name: value.grad.clone() for name, value in tensors.items()}


def predictions(maml, episodes) -> torch.Tensor:
    return maml.predict(episodes.support_inputs, episodes.support_targets, episodes.query_inputs)


def test_switches_off_are_plain_maml_bit_for_bit(episodes):
    maml = learner(task_chunk=3)
    # plain MAML as it was written before the switches: one adapt() call of all steps, one query loss
    params = models.expand(maml.params, 3)

    def support_loss(p):
        outputs = models.conv4(p, episodes.support_inputs, "stride")
        return task_losses(maml.task, outputs, episodes.support_targets).sum()

    adapted = adapt(params, support_loss, 3, 0.4)
    outputs = models.conv4(adapted, episodes.query_inputs, "stride")
    loss = task_losses(maml.task, outputs, episodes.query_targets).sum() / 3
    expected = torch.autograd.grad(loss, list(maml.params.values()))
    value, grads = meta_gradient(maml, episodes)
    assert value == loss.item()
    assert all(torch.equal(grads[name], grad) for name, grad in zip(maml.params, expected, strict=True))
    assert list(maml.state_dict()) == ["params", "optimizer"]  # a MAML checkpoint's keys, as before

    # maml++ with every switch off is MAML at the same settings, predictions and meta-gradients alike
    plain = learner(downsample="maxpool", inner_lr=0.1, train_query=1)
    switched_off = learner("maml++", **OFF)
    assert torch.equal(predictions(plain, episodes), predictions(switched_off, episodes))
    plain_grads, off_grads = meta_gradient(plain, episodes)[1], meta_gradient(switched_off, episodes)[1]
    assert all(torch.equal(plain_grads[name], off_grads[name]) for name in plain_grads)


def test_msl_weights_every_step_and_anneals_towards_the_last(episodes):
    maml = learner(multi_step_loss=0.5)
    assert maml.step_weights() == pytest.approx([1 / 3] * 3)  # uniform at the start
    maml.progress = 0.25
    assert maml.step_weights() == pytest.approx([1 / 6, 1 / 6, 2 / 3])
    maml.progress = 0.499
    assert maml.step_weights() == pytest.approx([0.01, 0.01, 0.98], abs=2e-3)  # the floor 0.03/N
    maml.progress = 0.5
    assert maml.step_weights() is None  # the last step's loss alone for the rest of the run

    # the loss is the weighted sum of the query losses after every step
    loss, _ = meta_gradient(maml, episodes, progress=0.25)
    after = maml.trajectory(episodes.support_inputs, episodes.support_targets, 3, False)
    per_step = [maml.query_losses(p, episodes, step).mean().item() for step, p in enumerate(after)]
    assert loss == pytest.approx(per_step[0] / 6 + per_step[1] / 6 + 2 * per_step[2] / 3, rel=1e-5)
    assert loss != pytest.approx(per_step[2], rel=1e-3)
    assert meta_gradient(maml, episodes, progress=0.5)[0] == pytest.approx(per_step[2], rel=1e-5)


def test_lslr_rates_are_learned_per_step_and_parameter(episodes):
    maml = learner(per_step_lr=True)
    assert set(maml.inner_lrs) == set(maml.params)
    assert all(torch.equal(lrs, torch.full((3,), 0.4)) for lrs in maml.inner_lrs.values())
    effective = [name for name in maml.params if not (name.startswith("conv") and name.endswith("bias"))]
    _, grads = meta_gradient(maml, episodes)  # (batch norm cancels a convolution's bias: no gradient there)
    assert all(grads[f"lr:{name}"].abs().min() > 1e-6 for name in effective)  # every step's rate has a gradient
    maml.train_step(episodes)
    rates = maml.state_dict()["inner_lrs"]
    assert set(rates) == set(maml.params)
    assert all((rates[name] - 0.4).abs().min() > 1e-4 for name in effective)  # Adam moved each one
    fresh = learner(per_step_lr=True)
    fresh.load_state_dict(maml.state_dict())
    assert torch.equal(predictions(fresh, episodes), predictions(maml, episodes))


def test_bnwb_has_meta_learned_batch_norm_weights_per_step_that_do_not_adapt(episodes):
    maml = learner(per_step_bn_weights=True)
    norms = [name for name in maml.params if name.startswith("norm")]
    assert all(maml.params[name].shape == (3, 8) for name in norms)
    assert not set(norms) & set(maml.adapted_names)
    adapted = maml.adapt(episodes.support_inputs, episodes.support_targets, 3, False)
    assert all(torch.equal(adapted[name], maml.params[name].expand(3, 3, 8)) for name in norms)
    _, grads = meta_gradient(maml, episodes)
    assert all(grads[name].abs().sum(dim=1).min() > 0 for name in norms)  # each step's weights are used


def test_bnrs_keeps_running_statistics_per_step_and_predicts_non_transductively(episodes):
    maml = learner(per_step_bn_stats=True)
    assert not maml.transductive
    assert all(value.shape == (3, 8) for value in maml.running.values())
    maml.train_step(episodes)
    running = {name: value.clone() for name, value in maml.state_dict()["running"].items()}
    assert all(not torch.equal(value[0], value[1]) for value in running.values())  # per step, not shared
    assert all(running["norm0.mean"].abs().min(dim=1).values > 0)  # every step's row was updated
    val = make_env(ENV, split="val").sampler.sample(2, torch.Generator().manual_seed(5))
    everything = predictions(maml, val)[:, 7:12]
    alone = maml.predict(val.support_inputs, val.support_targets, val.query_inputs[:, 7:12])
    torch.testing.assert_close(alone, everything, rtol=1e-4, atol=1e-5)  # a query's prediction is its own
    assert all(torch.equal(maml.running[name], value) for name, value in running.items())  # test leaves them be
    assert learner().transductive and learner("maml++").transductive


def test_ca_anneals_the_meta_learning_rate_by_a_cosine_over_the_run(episodes):
    maml = learner(cosine_outer_lr=True, outer_lr=1e-3, min_outer_lr=1e-5)
    for progress in (0.0, 0.3, 1.0):
        maml.progress = progress
        maml.train_step(episodes)
        expected = 1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * progress)) / 2
        assert maml.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    assert maml.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)


def test_da_is_first_order_before_the_switch_and_second_order_after(episodes):
    annealed = meta_gradient(learner(first_order_until=0.4), episodes, progress=0.39)[1]
    first = meta_gradient(learner(first_order=True), episodes)[1]
    assert all(torch.equal(annealed[name], first[name]) for name in first)
    annealed = meta_gradient(learner(first_order_until=0.4), episodes, progress=0.4)[1]
    second = meta_gradient(learner(), episodes)[1]
    assert all(torch.equal(annealed[name], second[name]) for name in second)
    assert not all(torch.equal(first[name], second[name]) for name in first)


def test_maml_plus_plus_learns_on_a_tiny_configuration(tmp_path):
    config = {"width": 16, "meta_batch": 4, "inner_steps": 3, "inner_steps_test": 3, "outer_lr": 5e-3}
    untrained = build_learner("maml++", ENV, config)
    summary, _ = evaluate(untrained, ENV, split="val", n_episodes=20, seed=1, progress=False)
    before = summary["results"]["accuracy_mean"]
    path = train("maml++", ENV, tmp_path, iterations=40, config=config, val_episodes=2, progress=False)
    summary, _ = evaluate(load_checkpoint(path)[0], ENV, split="val", n_episodes=20, seed=1, progress=False)
    after = summary["results"]["accuracy_mean"]
    print(f"maml++ (width 16, 3 steps, 40 iterations): val accuracy {before:.3f} untrained, {after:.3f} trained")
    assert after > before + 0.08  # the untrained initialisation adapts to about 0.55 already (5-way chance: 0.2)


def test_maml_plus_plus_checkpoints_resume_exactly(tmp_path):
    config = {**TINY, "per_step_bn_stats": True, "multi_step_loss": 0.5, "first_order_until": 0.5}
    reference = build_learner("maml++", ENV, config)
    sampler = make_env(ENV, split="train", **reference.train_env_kwargs()).sampler
    generator = torch.Generator().manual_seed(TRAIN_SEED_OFFSET)  # the sampler seed of train(..., seed=0)
    val = make_env(ENV, split="val").sampler.sample(2, torch.Generator().manual_seed(5))

    def run(iterations: int) -> torch.Tensor:
        path = train("maml++", ENV, tmp_path, iterations=iterations, config=config, val_episodes=2, progress=False)
        return predictions(load_checkpoint(path)[0], val)

    def step(progress: float) -> None:
        reference.progress = progress  # what train() sets before each step: iteration / iterations of the call
        reference.train_step(sampler.sample(reference.config.meta_batch, generator))

    for progress in (0 / 2, 1 / 2):
        step(progress)
    assert torch.equal(run(2), predictions(reference, val))
    for progress in (2 / 4, 3 / 4):
        step(progress)
    assert torch.equal(run(4), predictions(reference, val))  # resumed from iteration 2
