"""MetaAugment's fixed policies, the search harness on it, and choosing a searched policy on val tasks."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import metabench  # noqa: F401  (registers the envs)
from metabench import augment
from metabench.envs.augment import MetaAugmentEnv, pretrained_body
from metabench.search import candidate_space, play, search
from metabench_baselines import augment_policies

ENV_ID = "MetaAugment-Omniglot-5w1s-v1"  # the current version, whose data MetaAugmentEnv's defaults are


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """Env arguments of a tiny MetaAugment: a small pretrained body, 2-way tasks, prototypes, many copies."""
    body = pretrained_body(  # on the train split of ENV_ID's version
        "MetaOmniglot-5w1s-v1",
        out_dir=tmp_path_factory.mktemp("body"),
        iterations=10,
        config={"width": 16, "batch_size": 32},
        progress=False,
    )
    return {
        "checkpoint": str(body),
        "n_way": 2,
        "tasks_per_step": 8,
        "copies": 8,
        "learner": "prototypes",
        "temperature": 0.5,
    }


def test_fixed_policies(tiny):
    env = MetaAugmentEnv(**tiny)
    names = ("no-augmentation", "hand-written", "random")
    none, hand, drawn = (augment_policies.FIXED[name](env.sub_policies) for name in names)
    assert all(env.action_space.contains(policy) for policy in (none, hand, drawn))
    assert np.array_equal(drawn, augment_policies.random_policy(seed=0))
    assert not np.array_equal(drawn, augment_policies.random_policy(seed=1))
    assert augment_policies.describe(none) == "; ".join(["identity"] * env.sub_policies)
    assert augment_policies.describe(hand).startswith("rotate m2 p1.0; shear_x m2 p1.0")

    reward, info = play(env, none, seed=4)
    assert reward == info["reference_reward"] and info["accuracy"] == info["reference_accuracy"]
    assert info["augmented_fraction"] == 0.0
    reward, info = play(env, hand, seed=4)
    assert info["augmented_fraction"] == 1.0 and reward != info["reference_reward"]


def test_the_env_exposes_the_harness_protocol(tiny):
    env = MetaAugmentEnv(**tiny)
    assert env.horizon == 1 and env.test_episodes == 32 and env.tasks is None
    assert np.array_equal(candidate_space(env).nvec, env.action_space.nvec)
    env.reset(seed=7)
    tasks = env.tasks
    assert tasks.support_inputs.shape[0] == tiny["tasks_per_step"]
    env.step(augment_policies.no_augmentation(env.sub_policies))
    assert env.tasks is tasks  # the tasks just scored stay readable after the step
    env.reset(seed=7)
    assert torch.equal(env.tasks.support_inputs, tasks.support_inputs)
    env.reset()
    assert not torch.equal(env.tasks.query_inputs, tasks.query_inputs)


def test_selection_rescores_the_searches_best_candidates_on_fixed_val_tasks(tiny, tmp_path):
    for seed in (0, 1):
        out = tmp_path / f"seed-{seed}"
        search("random", ENV_ID, evaluations=4, out_dir=out, seed=seed, env_kwargs=tiny, progress=False)
    found = augment_policies.searched_candidates([tmp_path], top=2)
    assert len(found) == 4 and len({tuple(row["candidate"]) for row in found.values()}) == 4
    for name, row in found.items():
        trace = (Path(name).parent / "trace.csv").read_text()
        assert f",{row['search_reward']}," in trace  # the search reward of that candidate, as traced

    candidates = {name: row["candidate"] for name, row in found.items()}
    candidates["none"] = augment_policies.no_augmentation().tolist()
    scores = augment_policies.score_on_val(ENV_ID, candidates, steps=2, env_kwargs=tiny)
    assert scores == augment_policies.score_on_val(ENV_ID, candidates, steps=2, env_kwargs=tiny)
    assert scores["none"]["reward_minus_reference_mean"] == 0.0
    assert scores["none"]["accuracy_minus_reference_ci95"] == 0.0
    references = {name: score["reward_mean"] - score["reward_minus_reference_mean"] for name, score in scores.items()}
    assert np.allclose(list(references.values()), scores["none"]["reward_mean"])  # same tasks for all
    with pytest.raises(ValueError, match="top"):
        augment_policies.searched_candidates([tmp_path], top=0)
    with pytest.raises(FileNotFoundError, match="no search run"):
        augment_policies.searched_candidates([tmp_path / "seed-0" / "trace.csv"], top=1)


HARMFUL = [augment.OPS.index(op) for op in ("thicken", "thin", "erase", "noise")]


def harm(candidate) -> float:
    """Mean ``probability x magnitude fraction`` of the sub-policies whose operation is harmful."""
    table = augment.check_policy(torch.as_tensor(np.asarray(candidate, dtype=np.int64)).view(-1, 3))
    harmful = torch.isin(table[:, 0], torch.tensor(HARMFUL))
    return float((harmful * augment.probability(table[:, 2]) * augment.magnitude_fraction(table[:, 1])).mean())


class SyntheticAugmentEnv(gym.Env):
    """MetaAugment's action space with a cheap synthetic reward: minus :func:`harm`, plus task-like noise."""

    horizon = 1

    def __init__(self, device: str = "cpu") -> None:
        self.action_space = spaces.MultiDiscrete(
            np.tile([len(augment.OPS), augment.N_MAGNITUDES, augment.N_PROBABILITIES], 5)
        )
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.protocol = {"dataset": "synthetic"}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        reward = -harm(action) + 0.02 * float(self.np_random.standard_normal())
        return np.zeros(1, np.float32), reward, True, False, {}


@pytest.mark.parametrize("method", ["evolution", "reinforce"])
def test_a_short_search_improves_reward(method, tmp_path):
    """On MetaAugment's policy space with a noisy synthetic reward, a short search moves towards better policies.

    (On the real env's tiny configurations the query-loss differences between policies are smaller
    than the noise of fresh tasks at every evaluation, so a short search there proves nothing.)
    """
    if "SyntheticAugment-v0" not in gym.registry:
        gym.register("SyntheticAugment-v0", entry_point=SyntheticAugmentEnv)
    config = {"population": 10, "sample": 3} if method == "evolution" else {"lr": 0.03}
    result = search(
        method, "SyntheticAugment-v0", evaluations=80, out_dir=tmp_path, seed=0, config=config, progress=False
    )
    harms = [harm([float(v) for v in row["candidate"].split()]) for row in result.trace]
    assert np.mean(harms[-20:]) < 0.5 * np.mean(harms[:20])
    assert harm(result.best_candidate) < np.mean(harms[:20])
