"""MetaAugment v2: the policy augments the episodes a few-shot learner is *trained* on (AutoAugment's problem).

AutoAugment (Cubuk et al. 2019) searched the augmentation of the data a network is trained on, on a
reduced training set (4,000 CIFAR-10 images), rewarded by validation accuracy. This env poses that
problem for meta-learning: the augmentation policy is the part of the learning algorithm F_phi that is
learned, and a fixed learner is meta-trained on a data-poor split with it.

Action: the AutoAugment policy of :class:`~metabench.envs.augment.MetaAugmentEnv` (S sub-policies of
operation, magnitude bin and probability bin, one ``MultiDiscrete([12, 10, 11] * S)`` action;
:func:`metabench.augment.policy_from_action` checks it). Observation: a constant (the policy is
open-loop). Episode: one step.

Step: ProtoNets (Conv-4; ``train_way``-way 1-shot episodes with ``train_query`` queries per class, Adam
1e-3; the ``protonet`` baseline, initialised from ``train_seed``) is meta-trained for ``train_episodes``
episodes drawn from the first ``train_classes`` classes of the ``train`` split (task generator seeded
``train_seed + TRAIN_SEED_OFFSET``), every image of every training episode augmented by the policy
(:func:`metabench.augment.apply_policy`; draws from a generator of their own, seeded ``train_seed +
AUGMENT_SEED_OFFSET``, so every policy sees the same episodes and initialisation). It then predicts a
fixed, seeded list of ``val_episodes`` ``val`` tasks (N-way K-shot, 15 queries; seed ``val_seed``).
**Reward**: minus their mean query cross-entropy. ``info``: ``val_accuracy`` (= ``accuracy``),
``val_reward_ci95``, ``augmented_fraction``, ``cost_seconds`` and ``cost_train_episodes``.

Seed-averaged reward (``train_seeds=R``, for searches): a policy's gain varies by 0.075 (s.d.) across train
seeds (``benchmarks/README.md``), more than most gaps between good policies, so a search can ask for the mean
reward of R learners trained with seeds ``train_seed .. train_seed + R - 1`` on the same val tasks (R times
the cost). The test protocol stays the registered one: one learner, ``train_seed``.

Why a data-poor split: on all 4,112 ``train`` classes, at this budget every measured policy lowered the
val reward (the learner under-fits; augmentation only slows it), while on 100 classes the learner
over-fits and augmentation raises the reward by about 0.1 (``benchmarks/augment_headroom.py``). The
defaults are that measured regime.

Test protocol (a design env, as MetaNAS): ``metabench evaluate`` plays the agent's policy, trains the
learner exactly as the reward does (:meth:`train_for_test`) and scores the trained ProtoNets on the 1,000
test episodes of the same task shape (``test_env``, MetaOmniglot's ``test`` split and episode seeds); the
evaluation keeps the trained network as its checkpoint.

Cache: a policy's result is kept in ``env.unwrapped.cache`` (the reward is a deterministic function of the
policy on a given device), so a repeated candidate costs nothing; ``reset(seed=)`` changes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from metabench import augment, data
from metabench.envs.augment import DEFAULT_SUB_POLICIES
from metabench.envs.defaults import AUGMENT_TRAINING_CLASSES as TRAIN_CLASSES
from metabench.envs.defaults import AUGMENT_TRAINING_EPISODES as TRAIN_EPISODES
from metabench.envs.defaults import AUGMENT_TRAINING_QUERY as TRAIN_QUERY
from metabench.envs.defaults import AUGMENT_TRAINING_VAL_EPISODES as VAL_EPISODES
from metabench.envs.defaults import AUGMENT_TRAINING_WAY as TRAIN_WAY
from metabench.envs.design import DesignEnv
from metabench.envs.omniglot import MetaOmniglotEnv
from metabench.episodes import Episodes, OmniglotEpisodes
from metabench.evaluation import episode_chunks
from metabench.learners import Learner, config_from_dict, load_learner_class

LEARNER = "protonet"
VAL_SEED = 1
AUGMENT_SEED_OFFSET = 20_000


class MetaAugmentTrainingEnv(DesignEnv):
    """Choose the augmentation of a few-shot learner's training episodes; reward = minus its val query loss.

    Args:
        n_way, k_shot, n_query: shape of the val (and test) tasks that score the trained learner.
        train_classes: the first this many classes of the ``train`` split are all the learner sees.
        train_episodes, train_way, train_query: the fixed training budget and its episode shape.
        train_seed: seeds the learner's initialisation, its training episodes and the augmentation draws.
        train_seeds: the reward averages this many learners, seeded ``train_seed``, ``train_seed + 1``, ...
        val_episodes, val_seed: the fixed list of val tasks that scores a policy.
        sub_policies: S, the policy's sub-policies.
        device, scheme, root, preprocessing, manifest_sha256: as for
            :class:`~metabench.envs.omniglot.MetaOmniglotEnv`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    horizon = 1
    test_learner = LEARNER  # a design env: the test protocol trains ProtoNets (see the module doc)

    def __init__(
        self,
        n_way: int = 5,
        k_shot: int = 1,
        n_query: int = 15,
        train_classes: int = TRAIN_CLASSES,
        train_episodes: int = TRAIN_EPISODES,
        train_way: int = TRAIN_WAY,
        train_query: int = TRAIN_QUERY,
        train_seed: int = 0,
        train_seeds: int = 1,
        val_episodes: int = VAL_EPISODES,
        val_seed: int = VAL_SEED,
        sub_policies: int = DEFAULT_SUB_POLICIES,
        device: str | torch.device = "cpu",
        scheme: str = "vinyals",
        root: str | None = None,
        preprocessing: str = data.PREPROCESSING,
        manifest_sha256: dict[str, dict[str, str]] | None = None,
    ) -> None:
        sizes = {
            "train_classes": train_classes,
            "train_episodes": train_episodes,
            "train_way": train_way,
            "train_query": train_query,
            "train_seeds": train_seeds,
            "val_episodes": val_episodes,
            "sub_policies": sub_policies,
        }
        for name, value in sizes.items():
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.device = torch.device(device)
        self.train_episodes, self.train_seed, self.train_seeds = int(train_episodes), int(train_seed), int(train_seeds)
        self.sub_policies = int(sub_policies)
        self.task_args = (n_way, k_shot, n_query, scheme, self.device, root, preprocessing, manifest_sha256)
        self.val_env = MetaOmniglotEnv(
            n_way, k_shot, n_query, "val", scheme, self.device, root, preprocessing, manifest_sha256
        )
        train_env = MetaOmniglotEnv(
            n_way, k_shot, n_query, "train", scheme, self.device, root, preprocessing, manifest_sha256
        )
        available = len(train_env.sampler.classes)
        if train_classes > available:
            raise ValueError(f"train_classes={train_classes} exceeds the {available} classes of the train split")
        if train_way > train_classes:
            raise ValueError(f"train_way={train_way} exceeds train_classes={train_classes}")
        self.train_sampler = OmniglotEpisodes(
            data.load_omniglot(root, self.device, preprocessing=preprocessing),
            train_env.sampler.classes[: int(train_classes)],
            int(train_way),
            1,
            int(train_query),
            source=(root, preprocessing),
        )
        self.learner_class = load_learner_class(LEARNER)
        values = {**self.learner_class.defaults(self.val_env.protocol), "train_way": train_way}
        values["train_query"] = train_query
        self.learner_config = dataclasses.asdict(config_from_dict(self.learner_class, values))
        self.val_tasks = list(episode_chunks(self.val_env, int(val_episodes), int(val_seed)))

        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.MultiDiscrete(
            np.tile([len(augment.OPS), augment.N_MAGNITUDES, augment.N_PROBABILITIES], self.sub_policies)
        )
        self.protocol = {
            **{key: value for key, value in self.val_env.protocol.items() if key not in ("split", "manifest_sha256")},
            "train_manifest_sha256": train_env.protocol["manifest_sha256"],
            "val_manifest_sha256": self.val_env.protocol["manifest_sha256"],
            "sub_policies": self.sub_policies,
            "ops": augment.OPS,
            "n_magnitudes": augment.N_MAGNITUDES,
            "n_probabilities": augment.N_PROBABILITIES,
            "learner": LEARNER,
            "learner_config": self.learner_config,
            "train_classes": int(train_classes),
            "train_episodes": self.train_episodes,
            "train_seed": self.train_seed,
            "val_episodes": int(val_episodes),
            "val_seed": int(val_seed),
        }
        if self.train_seeds > 1:  # recorded only then: the registered protocol (one seed) is unchanged
            self.protocol["train_seeds"] = self.train_seeds
        self.cache: dict[str, dict[str, Any]] = {}
        self._started = False

    # --- the gym interface ------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: the observation is a constant (one open-loop policy for the task distribution)."""
        super().reset(seed=seed)
        self._started = True
        return self._observation(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Train the learner under the policy ``action`` and score it on the val tasks; the episode ends."""
        if not self._started:
            raise gym.error.ResetNeeded("step() needs an episode: call reset() first (an episode is one step)")
        policy = augment.policy_from_action(action, self.sub_policies)
        self._started = False
        key = json.dumps(policy.tolist())
        if key not in self.cache:
            start = time.perf_counter()
            learners, fractions = zip(
                *(self._train(policy, seed) for seed in range(self.train_seed, self.train_seed + self.train_seeds)),
                strict=True,
            )
            self.cache[key] = {
                **self.score_val(*learners),
                "augmented_fraction": float(np.mean(fractions)),
                "cost_seconds": time.perf_counter() - start,
            }
        result = self.cache[key]
        info = {
            **{name: value for name, value in result.items() if name != "reward"},
            "accuracy": result["val_accuracy"],
            "cost_train_episodes": self.train_episodes * self.train_seeds,
            "policy": policy.numpy(),
        }
        return self._observation(), result["reward"], True, False, info

    # --- training and scoring ---------------------------------------------------------------

    def _train(self, policy: torch.Tensor, seed: int) -> tuple[Learner, float]:
        """ProtoNets meta-trained from ``seed`` on the policy's augmented episodes; also the fraction of images
        changed."""
        from metabench.training import TRAIN_SEED_OFFSET, train_fixed_budget

        learner = self.learner_class(
            config_from_dict(self.learner_class, self.learner_config),
            self.val_env.protocol,
            self.device,
            seed,
        )
        draws = torch.Generator().manual_seed(seed + AUGMENT_SEED_OFFSET)
        changed, total = 0, 0

        def augmented(episodes: Episodes) -> Episodes:
            nonlocal changed, total
            inputs = []
            for images in (episodes.support_inputs, episodes.query_inputs):
                ops, magnitudes = augment.sample_policy(policy, images.shape[0] * images.shape[1], draws)
                changed, total = changed + int((ops != augment.IDENTITY).sum()), total + len(ops)
                flat = augment.apply_ops(images.flatten(0, 1), ops, magnitudes, draws)
                inputs.append(flat.view(images.shape))
            return Episodes(inputs[0], episodes.support_targets, inputs[1], episodes.query_targets)

        tasks = torch.Generator().manual_seed(seed + TRAIN_SEED_OFFSET)
        for _ in train_fixed_budget(learner, self.train_sampler, [self.train_episodes], tasks, augmented):
            pass
        return learner, changed / max(total, 1)

    # --- the test protocol ----------------------------------------------------------------------

    def design(self, act: Callable[[np.ndarray], Any]) -> str:
        """The policy an agent answers, as a JSON list of the flat action (nothing is trained or scored)."""
        observation, _ = self.reset()
        policy = augment.policy_from_action(act(observation), self.sub_policies)
        self._started = False
        return json.dumps(policy.flatten().tolist())

    def train_for_test(self, design: str) -> Learner:
        """ProtoNets trained under the policy ``design`` exactly as the reward trains it (its first seed)."""
        policy = augment.policy_from_action(np.array(json.loads(design)), self.sub_policies)
        learner, _ = self._train(policy, self.train_seed)
        return learner

    def recipe(self) -> dict[str, Any]:
        """The test recipe's budget: the reward's own training (its data and shape are in ``protocol``)."""
        return {"train_episodes": self.train_episodes}

    def _observation(self) -> np.ndarray:
        return np.zeros(1, dtype=np.float32)
