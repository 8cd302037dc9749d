"""baselines/ppo.py: SB3 PPO trained on metabench envs, saved as a metabench checkpoint, acting as a Learner."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import metabench  # noqa: F401  (registers the envs)
from metabench.checkpoints import CHECKPOINT_FORMAT, load_checkpoint
from metabench.envs import make_env
from metabench.envs.augment import pretrained_body
from metabench.evaluation import evaluate
from metabench_baselines import ppo

TINY = {"n_steps": 8, "batch_size": 8, "n_epochs": 2, "net_arch": [16]}


@pytest.fixture(scope="module")
def augment_run(tmp_path_factory):
    """PPO for 16 one-step episodes of a tiny MetaAugment (tiny body, 2 tasks per step), via the CLI."""
    body = pretrained_body(  # a v0 env needs a body pretrained on a v0 id (its split edition and preprocessing)
        "MetaOmniglot-5w1s-v0",
        out_dir=tmp_path_factory.mktemp("body"),
        iterations=2,
        config={"width": 16, "batch_size": 16},
        progress=False,
    )
    out = tmp_path_factory.mktemp("ppo")
    env_kwargs = [f"checkpoint={body}", "tasks_per_step=2", "copies=1"]
    argv = ["--env", "MetaAugment-Omniglot-5w1s-v0", "--timesteps", "16", "--seed", "3", "--out", str(out)]
    config = [f"{key}={json.dumps(value)}" for key, value in TINY.items()]
    assert ppo.main([*argv, "--env-kwargs", *env_kwargs, "--config", *config]) == 0
    return out, {"checkpoint": str(body), "tasks_per_step": 2, "copies": 1}


def test_trace_has_one_row_per_episode(augment_run):
    out, _ = augment_run
    with open(out / "trace.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["episode"]) for row in rows] == list(range(16))  # MetaAugment episodes are one step
    seconds = [float(row["seconds"]) for row in rows]
    assert seconds == sorted(seconds) and seconds[0] > 0
    assert all(np.isfinite(float(row["reward"])) and 0 <= float(row["accuracy"]) <= 1 for row in rows)


def test_checkpoint_rebuilds_a_deterministic_policy_that_plays_the_env(augment_run):
    out, env_kwargs = augment_run
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["format"] == CHECKPOINT_FORMAT and state["agent"] == "ppo" and state["iteration"] == 16
    assert state["config"]["env_kwargs"] == env_kwargs and state["config"]["n_steps"] == 8
    learner, _ = load_checkpoint(out / "checkpoint.pt")
    assert isinstance(learner, ppo.PPO)
    for name, tensor in learner.policy.state_dict().items():
        assert torch.equal(tensor, state["learner"]["policy"][name])
    untrained = ppo.PPO(learner.config, learner.task, seed=3)
    fresh = untrained.state_dict()["policy"]
    assert any(not torch.equal(fresh[name], tensor) for name, tensor in state["learner"]["policy"].items())

    env = make_env("MetaAugment-Omniglot-5w1s-v0", split="val", **env_kwargs)
    observation, _ = env.reset(seed=0)
    action = learner.act(observation)
    assert env.action_space.contains(action)
    again, _ = load_checkpoint(out / "checkpoint.pt")
    assert np.array_equal(again.act(observation), action)
    _, reward, terminated, _, info = env.step(action)
    assert terminated and np.isfinite(reward) and "accuracy" in info


def test_dict_observations_and_box_actions_through_the_batched_harness(tmp_path):
    path = ppo.train_ppo("MetaSinusoid-5shot-v0", tmp_path, timesteps=16, seed=0, config=TINY)
    learner, state = load_checkpoint(path)
    assert state["config"]["policy"] == "auto" and learner.policy.__class__.__name__ == "MultiInputActorCriticPolicy"
    env = make_env("MetaSinusoid-5shot-v0")
    observation, _ = env.reset(seed=1)
    action = learner.act(observation)
    assert action.shape == env.action_space.shape and env.action_space.contains(action)
    summary, records = evaluate(learner, "MetaSinusoid-5shot-v0", n_episodes=6, progress=False)
    assert len(records) == 6 and np.isfinite(summary["results"]["reward_mean"])
    episodes = env.sampler.sample(2, torch.Generator().manual_seed(0))
    batched = learner.predict(episodes.support_inputs, episodes.support_targets, episodes.query_inputs)
    keys = ("support_x", "support_y", "query_x")
    inputs = (episodes.support_inputs, episodes.support_targets, episodes.query_inputs)
    single = learner.act({key: tensor[1].numpy() for key, tensor in zip(keys, inputs, strict=True)})
    assert np.allclose(batched[1].numpy(), single)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="timesteps"):
        ppo.train_ppo("MetaSinusoid-5shot-v0", tmp_path, timesteps=0)
    with pytest.raises(ValueError, match="unknown SB3 policy"):
        ppo.train_ppo("MetaSinusoid-5shot-v0", tmp_path, timesteps=8, config={"policy": "Transformer"})
    with pytest.raises(ValueError, match="unknown ppo hyperparameters"):
        ppo.train_ppo("MetaSinusoid-5shot-v0", tmp_path, timesteps=8, config={"n_step": 8})
    with pytest.raises(ValueError, match="device="):
        ppo.train_ppo("MetaSinusoid-5shot-v0", tmp_path, timesteps=8, env_kwargs={"device": "cpu"})
