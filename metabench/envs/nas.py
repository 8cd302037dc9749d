"""MetaNAS: the embedding architecture of a few-shot learner is the action (Zoph & Le 2017; Real et al. 2019).

In the learning algorithm F_phi, the architecture is one more part of phi; the meta-objective is not
differentiable in it, so it is searched by reinforcement learning, evolution or random search. This
env packages that problem: an episode designs one architecture of :mod:`metabench.nas` (4 cells x
(operation, width, down-sampling), 4 options each; ``4**12`` architectures, Conv-4 among them), then
the env trains it and scores it.

Modes (``mode=``):

* ``"sequential"``: ``horizon`` = 12 steps, one decision each (``Discrete(4)``, in the order
  ``cell0.op, cell0.width, cell0.downsampling, cell1.op, ...`` of ``metabench.nas.DECISION_NAMES``),
  as an RNN controller emits them. Reward 0 until the last decision, whose step trains and scores the
  network.
* ``"oneshot"``: ``horizon`` = 1 step, the whole architecture as one ``MultiDiscrete([4] * 12)`` action
  (for evolution and random search). The same 12 decisions in either mode give the same network and
  the same reward.

Observation (both modes): ``MultiDiscrete([5] * 12)``, decision ``i`` + 1 for the decisions made so
far and 0 for those not yet made (all zeros after ``reset``).

Evaluation of a finished architecture (the fixed learner is part of the env's protocol): Prototypical
Networks (``baselines/protonet.py``, found through ``load_learner_class("protonet")``, with the
``architecture`` config and otherwise its defaults: 60-way training episodes with 5 queries per class,
Adam 1e-3, running batch-norm statistics), initialised and fed from seed ``train_seed``, is
meta-trained for ``fidelity`` episodes drawn from the ``train`` split (as ``metabench train`` would:
sampler generator seeded ``train_seed + metabench.training.TRAIN_SEED_OFFSET``), then predicts a
fixed, seeded list of ``val_episodes`` ``val`` episodes (seed ``val_seed``; 15 queries per class).
**Reward**: minus the mean query cross-entropy over those episodes (never the ``test`` split).

The final ``info``: ``val_accuracy`` (also ``accuracy``), ``val_accuracy_ci95``, ``params``, ``flops``
(one image's forward pass, :func:`metabench.nas.flops`), ``architecture`` (its string) and
``decisions``, ``cost_seconds`` (the seconds spent training and scoring the architecture, measured
when it was first computed and charged again on a cache hit: the simulated cost that lets search
methods be compared at equal budget) and ``cost_train_episodes`` (``fidelity``, charged likewise).
The info is a function of the architecture, so repeating a step repeats it exactly (gymnasium's
``check_env`` passes). What a step really cost is kept on the env: ``last_cached``,
``last_seconds`` (0 on a cache hit), and the totals ``evaluations``, ``cache_hits``,
``total_seconds`` (real) and ``total_cost_seconds`` (simulated).

Test protocol (what ``metabench evaluate`` runs on a search's answer, ``test_recipe``): the agent
designs its architecture (:meth:`MetaNASEnv.design`: its decisions, no training), the env trains it
with the reward's recipe for ``test_train_episodes`` (default :data:`TEST_TRAIN_EPISODES` = 500)
episodes (:meth:`MetaNASEnv.train_for_test`), and the trained ProtoNets is scored on the
``test_episodes`` = 1,000 test episodes of the same task shape (``test_env``: MetaOmniglot on the
``test`` split, episode seeds as for MetaOmniglot), so a MetaNAS score is directly comparable with
the MetaOmniglot board. The evaluation stores the trained ProtoNets as the checkpoint it scored. The
reward itself never reads the ``test`` split.

Cache: results are kept by (architecture, fidelity, train_seed, learner config, val episodes, device
type) in a dict shared by everything that uses the env instance (``env.unwrapped.cache``), and, with
``cache_dir=``, in one JSON file per result in that folder (shared between runs and processes).
Revisiting an architecture costs no real time.

Seeding: the reward is a deterministic function of the architecture (given ``fidelity``,
``train_seed`` and the val episodes); ``reset(seed=)`` seeds only gymnasium's ``np_random``.

Continuous relaxation (for gradient-based search, DARTS: Liu et al. 2019): :meth:`MetaNASEnv.relaxation` gives
what a searcher needs to train the relaxed space by the reward's recipe without stepping the env: the
supernet's initial parameters, ProtoNets' query loss of episodes under given architecture weights
(:func:`metabench.nas.relaxed_forward`: a softmax per decision over its 4 options; see there how widths and the
differently sized down-samplings are mixed), the reward's train sampler and its val episodes. The searcher
submits a discrete architecture (e.g. :func:`metabench.nas.argmax`) as its action, scored like any other.

Cost: see :data:`DEFAULT_FIDELITY`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from metabench import data, models, nas
from metabench.envs.defaults import NAS_FIDELITY as DEFAULT_FIDELITY
from metabench.envs.defaults import NAS_TEST_TRAIN_EPISODES as TEST_TRAIN_EPISODES
from metabench.envs.defaults import NAS_VAL_EPISODES as DEFAULT_VAL_EPISODES
from metabench.envs.design import DesignEnv
from metabench.envs.omniglot import MetaOmniglotEnv
from metabench.episodes import Episodes
from metabench.evaluation import episode_chunks
from metabench.learners import Learner, config_from_dict, load_learner_class

MODES = ("sequential", "oneshot")
VAL_SEED = 1
LEARNER = "protonet"
CACHE_FORMAT = "metabench-nas-result/1"


class Relaxation(NamedTuple):
    """MetaNAS's search space relaxed for a gradient-based searcher (:meth:`MetaNASEnv.relaxation`).

    ``widths`` are the relaxation's width options (index ``j`` stands for ``metabench.nas.WIDTHS[j]``); ``init``
    draws the supernet's parameters (:func:`metabench.nas.supernet_init`, no task dimension) from a generator;
    ``loss(params, weights, episodes)`` is ProtoNets' training loss (query cross-entropy of squared distances to
    the prototypes, each task's support and query embedded together with batch statistics, as ProtoNets trains)
    of ``episodes`` embedded by :func:`metabench.nas.relaxed_forward` with ``weights`` ``(CELLS, 3, CHOICES)``
    probabilities; ``train_episodes(generator)`` draws one meta-batch from the reward's train sampler (ProtoNets'
    60-way episodes); ``val_episodes`` are the reward's fixed val tasks, all in one batch.
    """

    widths: tuple[int, ...]
    init: Callable[[torch.Generator], models.Params]
    loss: Callable[[models.Params, torch.Tensor, Episodes], torch.Tensor]
    train_episodes: Callable[[torch.Generator], Episodes]
    val_episodes: Episodes


class MetaNASEnv(DesignEnv):
    """Design a few-shot learner's embedding network; reward = minus its val query loss (see the module doc).

    Args:
        n_way, k_shot, n_query: shape of the val tasks that score an architecture.
        mode: ``"sequential"`` (one decision per step) or ``"oneshot"`` (the whole architecture at once).
        fidelity: meta-training episodes per candidate.
        train_seed: seeds the candidate's initialisation and its training episodes.
        val_episodes, val_seed: the fixed list of val episodes that scores a candidate.
        learner_config: overrides of the ProtoNet hyperparameters (tests use a small ``train_way``).
        test_train_episodes: meta-training episodes of a design before its test score (the test protocol).
        cache_dir: folder of the on-disk result cache (None: in-memory only).
        device, scheme, root, preprocessing, manifest_sha256: as for
            :class:`~metabench.envs.omniglot.MetaOmniglotEnv`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    test_learner = LEARNER  # a design env: the test protocol trains ProtoNets (see the module doc)

    def __init__(
        self,
        n_way: int = 5,
        k_shot: int = 1,
        n_query: int = 15,
        mode: str = "sequential",
        fidelity: int = DEFAULT_FIDELITY,
        train_seed: int = 0,
        val_episodes: int = DEFAULT_VAL_EPISODES,
        val_seed: int = VAL_SEED,
        learner_config: dict[str, Any] | None = None,
        test_train_episodes: int = TEST_TRAIN_EPISODES,
        cache_dir: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        scheme: str = "vinyals",
        root: str | None = None,
        preprocessing: str = data.PREPROCESSING,
        manifest_sha256: dict[str, dict[str, str]] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        for name, value in (
            ("fidelity", fidelity),
            ("val_episodes", val_episodes),
            ("test_train_episodes", test_train_episodes),
        ):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.mode, self.fidelity, self.train_seed = mode, int(fidelity), int(train_seed)
        self.test_train_episodes = int(test_train_episodes)
        self.horizon = nas.N_DECISIONS if mode == "sequential" else 1
        self.device = torch.device(device)
        self.task_args = (n_way, k_shot, n_query, scheme, self.device, root, preprocessing, manifest_sha256)
        self.val_env = MetaOmniglotEnv(
            n_way, k_shot, n_query, "val", scheme, self.device, root, preprocessing, manifest_sha256
        )
        self.learner_class = load_learner_class(LEARNER)
        task = self.val_env.protocol
        learner_values = {**self.learner_class.defaults(task), **(learner_config or {})}
        if "architecture" in learner_values:
            raise ValueError("learner_config must not set the architecture: it is the agent's action")
        self.learner_config = dataclasses.asdict(config_from_dict(self.learner_class, learner_values))
        train_kwargs = self.learner_class(
            config_from_dict(self.learner_class, self.learner_config), task
        ).train_env_kwargs()
        train_env = MetaOmniglotEnv(
            **{"n_way": n_way, "k_shot": k_shot, "n_query": n_query, **train_kwargs},
            split="train",
            scheme=scheme,
            device=self.device,
            root=root,
            preprocessing=preprocessing,
            manifest_sha256=manifest_sha256,
        )
        self.train_sampler = train_env.sampler
        self.val_tasks = list(episode_chunks(self.val_env, int(val_episodes), val_seed))
        digest = hashlib.sha256()
        for episodes in self.val_tasks:
            for field in dataclasses.fields(episodes):
                digest.update(getattr(episodes, field.name).contiguous().cpu().numpy().tobytes())

        self.action_space: spaces.Space = (
            spaces.Discrete(nas.CHOICES)
            if mode == "sequential"
            else spaces.MultiDiscrete([nas.CHOICES] * nas.N_DECISIONS)
        )
        self.observation_space = spaces.MultiDiscrete([nas.CHOICES + 1] * nas.N_DECISIONS)
        self.protocol = {
            **{key: value for key, value in task.items() if key not in ("split", "manifest_sha256")},
            "train_manifest_sha256": train_env.protocol["manifest_sha256"],
            "val_manifest_sha256": task["manifest_sha256"],
            "search_space": {
                "ops": nas.OPS,
                "widths": nas.WIDTHS,
                "downsamplings": nas.DOWNSAMPLINGS,
                "cells": nas.CELLS,
            },
            "mode": mode,
            "learner": LEARNER,
            "learner_config": {key: value for key, value in self.learner_config.items() if key != "architecture"},
            "fidelity": self.fidelity,
            "train_seed": self.train_seed,
            "val_episodes": int(val_episodes),
            "val_seed": int(val_seed),
            "val_episodes_sha256": digest.hexdigest(),
        }
        self.cache: dict[str, dict[str, Any]] = {}
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        if self.cache_dir is not None and self.cache_dir.exists() and not self.cache_dir.is_dir():
            raise ValueError(f"cache_dir {str(cache_dir)!r} is a file; expected a folder for the result cache")
        self.evaluations, self.cache_hits, self.total_seconds, self.total_cost_seconds = 0, 0, 0.0, 0.0
        self.last_cached, self.last_seconds = False, 0.0
        self._decisions: list[int] | None = None

    # --- the gym interface ------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new architecture: no decision made yet."""
        super().reset(seed=seed)
        self._decisions = []
        return self._observation(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Take one decision (sequential) or the whole architecture (oneshot); the last one trains and scores it."""
        if self._decisions is None:
            raise gym.error.ResetNeeded(
                "step() needs an episode: call reset() first (an episode ends when its network is scored)"
            )
        self._decide(action)
        if len(self._decisions) < nas.N_DECISIONS:
            return self._observation(), 0.0, False, False, {}
        decisions, observation = self._decisions, self._observation()
        self._decisions = None
        result = self.score(decisions)
        info = {key: value for key, value in result.items() if key != "reward"}
        return observation, result["reward"], True, False, info

    def _decide(self, action: Any) -> None:
        if self.mode == "sequential":
            self._decisions.append(nas.check_decision(len(self._decisions), action))
        else:
            self._decisions = [int(value) for value in nas.encode(nas.decode(action))]

    # --- the test protocol ----------------------------------------------------------------------

    def design(self, act: Callable[[np.ndarray], Any]) -> str:
        """The architecture (its string) an agent designs: ``act`` answers the observations an episode would
        show, and nothing is trained or scored (the first stage of the test protocol)."""
        observation, _ = self.reset()
        for _ in range(self.horizon):
            self._decide(act(observation))
            observation = self._observation()
        architecture, self._decisions = nas.decode(self._decisions), None
        return nas.to_string(architecture)

    def train_for_test(self, design: str) -> Learner:
        """ProtoNets with the architecture ``design`` trained by the reward's recipe for ``test_train_episodes``
        episodes."""
        _, learner, _ = next(self.train(nas.parse(design), [self.test_train_episodes]))
        return learner

    def recipe(self) -> dict[str, Any]:
        """The test recipe's budget: ``test_train_episodes`` of the reward's training."""
        return {"train_episodes": self.test_train_episodes}

    # --- the continuous relaxation -----------------------------------------------------------------

    def relaxation(self, width: int = max(nas.WIDTHS)) -> Relaxation:
        """The search space relaxed (see :class:`Relaxation`), its widths scaled to a widest ``width`` (64: the
        space's own; fewer: a cheaper proxy, :func:`metabench.nas.proxy_widths`)."""
        widths = nas.proxy_widths(width)
        learner = self.learner_class(config_from_dict(self.learner_class, self.learner_config), self.val_env.protocol)

        def init(generator: torch.Generator) -> models.Params:
            return {name: value.to(self.device) for name, value in nas.supernet_init(generator, widths).items()}

        def loss(params: models.Params, weights: torch.Tensor, episodes: Episodes) -> torch.Tensor:
            n_way, n_support = int(episodes.support_targets.max()) + 1, episodes.support_inputs.shape[1]
            images = torch.cat([episodes.support_inputs, episodes.query_inputs], dim=1)
            tasks, n = images.shape[:2]
            flat = images.reshape(1, tasks * n, *images.shape[2:])
            embeddings = nas.relaxed_forward(models.expand(params, 1), weights, flat, widths).view(tasks, n, -1)
            support, query = embeddings[:, :n_support], embeddings[:, n_support:]
            prototypes = models.class_means(support, episodes.support_targets, n_way)
            # ProtoNets' logits (minus squared distances) written out: cdist has no second derivative
            logits = -(query.unsqueeze(2) - prototypes.unsqueeze(1)).square().sum(dim=-1)
            return learner.loss(logits, episodes.query_targets)

        def train_episodes(generator: torch.Generator) -> Episodes:
            return self.train_sampler.sample(learner.config.meta_batch, generator)

        val = Episodes(
            *(
                torch.cat([getattr(chunk, field.name) for chunk in self.val_tasks])
                for field in dataclasses.fields(Episodes)
            )
        )
        return Relaxation(widths, init, loss, train_episodes, val)

    # --- scoring ------------------------------------------------------------------------------

    def score(self, decisions: Any) -> dict[str, Any]:
        """Train and score (or look up in the cache) a decision vector's architecture: final info and ``reward``."""
        architecture = nas.decode(decisions)
        key = self._cache_key(architecture)
        result, cached = self.cache.get(key), True
        if result is None and self.cache_dir is not None:
            path = self.cache_dir / f"{key}.json"
            if path.is_file():
                result = json.loads(path.read_text())["result"]
                self.cache[key] = result
        if result is None:
            result, cached = self._train_and_score(architecture), False
            self.cache[key] = result
            if self.cache_dir is not None:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                temporary = self.cache_dir / f".{key}.{os.getpid()}.tmp"
                record = {"format": CACHE_FORMAT, "key": self._key_fields(architecture), "result": result}
                temporary.write_text(json.dumps(record))
                os.replace(temporary, self.cache_dir / f"{key}.json")
        self.last_cached, self.last_seconds = cached, 0.0 if cached else result["cost_seconds"]
        self.evaluations += 1
        self.cache_hits += cached
        self.total_seconds += self.last_seconds
        self.total_cost_seconds += result["cost_seconds"]
        return {
            **result,
            "accuracy": result["val_accuracy"],
            "decisions": nas.encode(architecture),
            "cost_train_episodes": self.fidelity,
        }

    def _key_fields(self, architecture: nas.Architecture) -> dict[str, Any]:
        return {
            "architecture": nas.to_string(architecture),
            "device": self.device.type,
            **{key: value for key, value in self.protocol.items() if key != "mode"},
        }

    def _cache_key(self, architecture: nas.Architecture) -> str:
        text = json.dumps(self._key_fields(architecture), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def train(
        self, architecture: nas.Architecture, checkpoints: Sequence[int]
    ) -> Iterator[tuple[int, Learner, list[float]]]:
        """Meta-train ProtoNets with ``architecture`` by the env's recipe, yielding ``(episodes, learner, train
        losses)`` after each of the increasing episode counts ``checkpoints``.

        One run passes every fidelity on its way: the learner after ``f`` episodes is the one the reward at
        ``fidelity=f`` scores (the recipe has no schedule that depends on the budget), which is what makes a
        fidelity study cost one training run per architecture.
        """
        from metabench.training import TRAIN_SEED_OFFSET, train_fixed_budget

        config = {**self.learner_config, "architecture": nas.to_string(architecture)}
        learner = self.learner_class(
            config_from_dict(self.learner_class, config), self.val_env.protocol, self.device, self.train_seed
        )
        generator = torch.Generator().manual_seed(self.train_seed + TRAIN_SEED_OFFSET)
        for episodes, losses in train_fixed_budget(learner, self.train_sampler, checkpoints, generator):
            yield episodes, learner, losses

    def _train_and_score(self, architecture: nas.Architecture) -> dict[str, Any]:
        """Meta-train ProtoNets with the architecture for ``fidelity`` episodes and score the val episodes."""
        start = time.perf_counter()
        _, learner, losses = next(self.train(architecture, [self.fidelity]))
        return {
            **self.score_val(learner),
            "train_loss_last": float(np.mean(losses[-10:])),
            "architecture": nas.to_string(architecture),
            "params": nas.count_params(architecture),
            "flops": nas.flops(architecture),
            "cost_seconds": time.perf_counter() - start,
        }

    def _observation(self) -> np.ndarray:
        observation = np.zeros(nas.N_DECISIONS, dtype=np.int64)
        made = self._decisions or []
        observation[: len(made)] = np.asarray(made, dtype=np.int64) + 1
        return observation
