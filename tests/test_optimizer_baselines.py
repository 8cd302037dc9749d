"""MetaOptimizer baselines: the LSTM optimizer, Meta-SGD and the hand-designed SGD/Adam references."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import metabench  # noqa: F401  (registers the envs)
from metabench.checkpoints import build_learner, load_checkpoint
from metabench.envs import make_env
from metabench.episodes import Episodes
from metabench.evaluation import evaluate
from metabench.search import play
from metabench.training import train
from metabench_baselines.hand_designed import evaluate_reference, run_episode

SINUSOID = "MetaOptimizer-Sinusoid-v0"


def seeded_tasks(env_id: str, seeds: range) -> Episodes:
    """The tasks of ``env.reset(seed=s)`` for each seed, as one meta-batch."""
    sampler = make_env(env_id).sampler
    tasks = [sampler.sample(1, torch.Generator().manual_seed(seed)) for seed in seeds]
    return Episodes(*(torch.cat([getattr(task, f.name) for task in tasks]) for f in dataclasses.fields(Episodes)))


def gym_reward(learner, seeds: range) -> float:
    """Mean reward of the learner over ``env.reset(seed=s)`` for the seeds, by the harness's gym loop."""
    summary, _ = evaluate(learner, SINUSOID, split="train", n_episodes=len(seeds), seed=seeds[0], progress=False)
    return summary["results"]["reward_mean"]


@pytest.mark.parametrize(("name", "outer_lr"), [("lstm-optimizer", 0.03), ("meta-sgd", 0.05)])
def test_meta_training_improves_the_gym_reward_over_the_initial_optimizer(name, outer_lr):
    seeds = range(100, 104)
    learner = build_learner(name, SINUSOID, {"meta_batch": 4, "outer_lr": outer_lr}, seed=0)
    before = gym_reward(learner, seeds)
    sgd = np.mean([-run_episode(make_env(SINUSOID), "sgd", -2.0, seed)["query_loss"] for seed in seeds])
    assert before == pytest.approx(sgd, rel=1e-5)  # untrained, it is SGD at the documented 10**initial_log10_lr
    tasks = seeded_tasks(SINUSOID, seeds)
    losses = [learner.train_step(tasks)["loss"] for _ in range(15)]
    after = gym_reward(learner, seeds)
    assert losses[0] == pytest.approx(-before, rel=1e-5)  # the unrolled loss of the untrained optimizer
    assert after > before + 0.05 * abs(before)  # minus the query loss: at least 5% lower, by the gym path


@pytest.mark.parametrize("name", ["lstm-optimizer", "meta-sgd"])
def test_the_meta_training_unroll_is_the_gym_episode_and_seeds_reproduce(name):
    config = {"meta_batch": 1, "outer_lr": 0.02, "truncation": 4}  # windows of 4, 4 and 2 steps
    learner = build_learner(name, SINUSOID, config, seed=3)
    for _ in range(3):  # move away from the initial optimizer, so its actions vary by step and layer
        learner.train_step(seeded_tasks(SINUSOID, range(20, 24)))
    frozen = build_learner(name, SINUSOID, {**config, "outer_lr": 0.0}, seed=3)
    frozen.load_state_dict(learner.state_dict())
    for group in frozen.optimizer.param_groups:
        group["lr"] = 0.0  # the loaded Adam state carries the old lr: freeze it to read the loss only
    loss = frozen.train_step(seeded_tasks(SINUSOID, range(7, 8)))["loss"]
    assert loss == pytest.approx(-gym_reward(learner, range(7, 8)), rel=1e-5)

    twin = build_learner(name, SINUSOID, config, seed=3)
    for _ in range(3):
        twin.train_step(seeded_tasks(SINUSOID, range(20, 24)))
    for key, value in learner.state_dict()["net"].items():
        assert torch.equal(value, twin.state_dict()["net"][key])
    other = build_learner(name, SINUSOID, config, seed=4)
    if name == "lstm-optimizer":  # Meta-SGD's table starts from a constant: the seed has nothing to draw
        key = "cells.0.weight_ih"
        assert not torch.equal(other.state_dict()["net"][key], twin.state_dict()["net"][key])


def test_lstm_optimizer_trains_and_evaluates_through_the_harness(tmp_path):
    path = train(
        "lstm-optimizer",
        SINUSOID,
        tmp_path,
        iterations=2,
        config={"meta_batch": 2},
        val_interval=2,
        val_episodes=3,
        progress=False,
    )
    learner, checkpoint = load_checkpoint(path)
    assert checkpoint["iteration"] == 2 and (tmp_path / "log.csv").exists()
    summary, records = evaluate(learner, SINUSOID, n_episodes=3, progress=False)
    assert len(records) == 3 and np.isfinite(summary["results"]["reward_mean"])
    observation, _ = make_env(SINUSOID).reset(seed=0)
    learner.reset()
    action = learner.act(observation)
    assert action.shape == (3,) and action.dtype == np.float32 and ((-5 <= action) & (action <= 1)).all()
    with pytest.raises(ValueError, match="MetaOptimizer"):
        build_learner("lstm-optimizer", "MetaSinusoid-10shot-v0")


def test_reference_sgd_is_the_gym_path_and_adam_is_scored_like_it():
    env = make_env(SINUSOID, split="test")
    for log10_lr in (-2.0, -1.5, 0.0):  # 0.0 diverges: the reference stops and scores it as the env does
        reference = run_episode(env, "sgd", log10_lr, seed=5)
        total, info = play(env, np.full(env.horizon * 3, log10_lr), seed=5)
        assert reference["query_loss"] == pytest.approx(-total, rel=1e-5)
        assert (reference["diverged"], reference["updates"]) == (info["diverged"], info["updates"])
    assert reference["diverged"] and reference["query_loss"] == env.divergence_penalty

    summary, records = evaluate_reference(SINUSOID, "adam", -2.0, n_episodes=4, seed=30)
    by_hand = []
    for i in range(4):
        env.reset(seed=30 + i)
        params, functions = env.initial_params(), env.task_functions()
        optimizer = torch.optim.Adam(params.values(), lr=0.01)
        for _ in range(env.steps):
            optimizer.zero_grad()
            functions.support_loss(params).backward()
            optimizer.step()
        by_hand.append(functions.query_loss(params).item())
    np.testing.assert_allclose([-record["reward"] for record in records], by_hand, rtol=1e-6)
    assert summary["results"]["reward_mean"] == pytest.approx(-np.mean(by_hand))
    with pytest.raises(ValueError, match="method"):
        run_episode(env, "rmsprop", -2.0, seed=0)
