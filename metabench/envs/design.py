"""Design envs: the agent answers a design that the env trains into a few-shot learner by a fixed recipe.

MetaNAS (an architecture) and MetaAugment v2 (a training-time augmentation policy) share this shape: the
reward trains a learner with the agent's design and scores it on a fixed, seeded list of ``val`` tasks
(:meth:`DesignEnv.score_val`); the test protocol trains it the same way (:meth:`DesignEnv.train_for_test`)
and scores the trained learner on the 1,000 test episodes of the same task shape (:attr:`DesignEnv.test_env`,
MetaOmniglot's ``test`` split and episode seeds). :mod:`metabench.evaluation` recognises a design env by its
``test_learner`` and keeps the trained learner as the checkpoint it scores.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from metabench.envs.omniglot import MetaOmniglotEnv
from metabench.episodes import Episodes
from metabench.evaluation import TEST_EPISODES, mean_ci95, score_tasks
from metabench.learners import Learner


class DesignEnv(gym.Env):
    """Base of the design envs. Subclasses set ``test_learner``, ``train_seed``, ``val_env``, ``val_tasks`` and
    ``task_args`` (the MetaOmniglotEnv arguments of the task shape but the split), and define :meth:`design`,
    :meth:`train_for_test` and :meth:`recipe`."""

    test_episodes = TEST_EPISODES
    test_learner: str
    train_seed: int
    val_env: MetaOmniglotEnv
    val_tasks: list[Episodes]
    task_args: tuple

    def design(self, act: Callable[[np.ndarray], Any]) -> str:
        """The design (as text) an agent answers: ``act`` sees the observations an episode would show, and
        nothing is trained or scored (the first stage of the test protocol)."""
        raise NotImplementedError

    def train_for_test(self, design: str) -> Learner:
        """The learner the recipe trains with ``design``, exactly as the reward trains it."""
        raise NotImplementedError

    def recipe(self) -> dict[str, Any]:
        """The env's training budget, for the test protocol's record (e.g. ``{"train_episodes": 500}``)."""
        raise NotImplementedError

    def score_val(self, *learners: Learner) -> dict[str, float]:
        """The reward of trained learners: minus their mean query loss on the fixed val tasks (and the accuracy,
        with 95% CIs over the tasks), each task's scores averaged over the learners; a diverged learner makes it
        10x the chance loss."""
        per_learner = []
        for learner in learners:
            scores = [score_tasks(learner, self.val_env, episodes) for episodes in self.val_tasks]
            per_learner.append([np.concatenate(column) for column in zip(*scores, strict=True)])
        rewards, accuracies = (np.mean(column, axis=0) for column in zip(*per_learner, strict=True))
        reward, reward_ci95 = mean_ci95(rewards)
        accuracy, accuracy_ci95 = mean_ci95(accuracies)
        if not np.isfinite(reward):
            reward = -float(np.log(self.val_env.protocol["n_way"])) * 10
        return {
            "reward": reward,
            "val_reward_ci95": reward_ci95,
            "val_accuracy": accuracy,
            "val_accuracy_ci95": accuracy_ci95,
        }

    @functools.cached_property
    def test_env(self) -> MetaOmniglotEnv:
        """The few-shot env whose test episodes score a trained design (built on first use: the reward never
        reads the ``test`` split)."""
        n_way, k_shot, n_query, scheme, device, root, preprocessing, manifests = self.task_args
        return MetaOmniglotEnv(n_way, k_shot, n_query, "test", scheme, device, root, preprocessing, manifests)

    @property
    def test_recipe(self) -> dict[str, Any]:
        """How a design is trained before its test score: part of the test protocol's record."""
        return {
            "learner": self.test_learner,
            **self.recipe(),
            "train_seed": self.train_seed,
            "test_manifest_sha256": self.test_env.protocol["manifest_sha256"],
        }
