"""MetaAugment v2: the policy augments the training episodes; the reward is the trained learner's val loss."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import gymnasium.utils.env_checker as gym_checker
import numpy as np
import pytest
import torch

import metabench  # noqa: F401  (registers the envs)
from metabench import augment, data
from metabench.checkpoints import build_learner
from metabench.envs import make_env
from metabench.episodes import OmniglotEpisodes
from metabench.evaluation import episode_chunks, evaluate, evaluate_checkpoint, score_tasks
from metabench.search import open_loop_checkpoint
from metabench.training import TRAIN_SEED_OFFSET

ENV_ID = "MetaAugment-Omniglot-5w1s-v2"
TINY = {"train_classes": 12, "train_episodes": 3, "train_way": 5, "train_query": 2, "val_episodes": 6}
NONE = np.zeros(15, dtype=np.int64)  # identity everywhere
ROTATE = np.array([augment.OPS.index("rotate"), 9, 10] * 5)  # rotate every image by up to 30 degrees


def tiny_env(**kwargs) -> gym.Env:
    return gym.make(ENV_ID, **{**TINY, **kwargs})


def play(env: gym.Env, action: np.ndarray) -> tuple[float, dict]:
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(action)
    assert terminated and not truncated
    return reward, info


def test_the_reward_is_the_val_loss_of_protonets_trained_on_the_first_classes():
    """No augmentation reproduces a by-hand ProtoNets run on the first train classes, scored on the val tasks."""
    env = tiny_env()
    reward, info = play(env, NONE)
    assert info["augmented_fraction"] == 0.0 and info["cost_train_episodes"] == 3

    learner = build_learner("protonet", "MetaOmniglot-5w1s-v1", {"train_way": 5, "train_query": 2}, seed=0)
    train = make_env("MetaOmniglot-5w1s-v1", split="train")
    sampler = OmniglotEpisodes(data.load_omniglot(), train.sampler.classes[:12], 5, 1, 2)
    generator = torch.Generator().manual_seed(TRAIN_SEED_OFFSET)
    for _ in range(3):
        learner.train_step(sampler.sample(1, generator))
    val = make_env("MetaOmniglot-5w1s-v1", split="val")
    rewards = np.concatenate([score_tasks(learner, val, tasks)[0] for tasks in episode_chunks(val, 6, 1)])
    assert reward == pytest.approx(rewards.mean(), abs=1e-6)


def test_a_policy_changes_the_training_and_results_repeat_exactly():
    env = tiny_env()
    none, _ = play(env, NONE)
    rotated, info = play(env, ROTATE)
    assert info["augmented_fraction"] == 1.0 and rotated != none
    again, again_info = play(env, ROTATE)
    assert again == rotated and again_info["cost_seconds"] == info["cost_seconds"]  # a cache hit
    fresh, _ = play(tiny_env(), ROTATE)
    assert fresh == rotated  # deterministic: the cache changes nothing
    other_seed, _ = play(tiny_env(train_seed=1), ROTATE)
    assert other_seed != rotated


def test_a_seed_averaged_reward_is_the_mean_over_learners_trained_from_consecutive_seeds():
    """``train_seeds=2``: the reward and accuracy average the learners of train seeds 3 and 4 (a search's less noisy
    signal); the cost doubles, the protocol records it, and the registered protocol (one seed) is unchanged."""
    one, two = play(tiny_env(train_seed=3), ROTATE), play(tiny_env(train_seed=4), ROTATE)
    env = tiny_env(train_seed=3, train_seeds=2)
    reward, info = play(env, ROTATE)
    assert reward == pytest.approx((one[0] + two[0]) / 2, abs=1e-6)
    assert info["accuracy"] == pytest.approx((one[1]["accuracy"] + two[1]["accuracy"]) / 2, abs=1e-6)
    assert info["cost_train_episodes"] == 2 * one[1]["cost_train_episodes"]
    assert env.unwrapped.protocol["train_seeds"] == 2 and "train_seeds" not in tiny_env().unwrapped.protocol
    with pytest.raises(ValueError, match="train_seeds"):
        tiny_env(train_seeds=0)


def test_bad_actions_and_settings_are_refused_clearly():
    env = tiny_env()
    with pytest.raises(gym.error.ResetNeeded):
        env.unwrapped.step(NONE)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.unwrapped.step(NONE[:14])
    with pytest.raises(ValueError, match="NaN"):
        env.unwrapped.step(np.where(np.arange(15) == 2, np.nan, 0.0))
    for bad in ({"train_classes": 0}, {"train_classes": 5000}, {"train_way": 13}, {"train_episodes": 1.5}):
        with pytest.raises(ValueError):
            tiny_env(**bad)


def test_the_env_passes_gymnasiums_checker_and_never_reads_the_test_split(splits_read):
    env = tiny_env(train_episodes=1, val_episodes=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_checker.check_env(env.unwrapped)
    assert sorted(set(splits_read)) == ["train", "val"]


def test_a_policy_is_tested_by_training_under_it_and_scoring_the_omniglot_test_episodes(tmp_path):
    training = {"wall_seconds": 1.0, "meta_batch": 1, "episodes_seen": 4, "device": "cpu", "device_name": "cpu"}
    answer = open_loop_checkpoint(ENV_ID, ROTATE, tmp_path / "search" / "checkpoint.pt", training=training)
    summary, out = evaluate_checkpoint(answer, ENV_ID, env_kwargs=TINY, n_episodes=20, progress=False)
    assert summary["agent"] == "protonet" and json.loads(summary["design"]["answer"]) == ROTATE.tolist()
    assert summary["protocol"]["test_recipe"]["train_episodes"] == 3
    env = tiny_env()
    by_hand, records = evaluate(
        env.unwrapped.train_for_test(summary["design"]["answer"]), "MetaOmniglot-5w1s-v1", n_episodes=20, progress=False
    )
    assert [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()] == records
    assert summary["protocol"]["episodes_sha256"] == by_hand["protocol"]["episodes_sha256"]
