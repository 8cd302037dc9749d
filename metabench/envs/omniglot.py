"""MetaOmniglot: N-way K-shot classification on the real Omniglot, one task per episode.

The agent is the learning algorithm. ``reset`` hands it a task's support set (images and labels)
and its query images; ``step`` takes its logits for every query image and scores them.

Reward: minus the mean cross-entropy of the logits on the true query labels (the query loss). The
episode then terminates; ``info`` reveals the query labels, the per-query losses and the accuracy.

The action space declares logits in ``[-10, 10]`` (a finite Box, as RL libraries require; logits
10 apart already give a query loss below 1e-8). Any finite logits are accepted and scored as given
(as float32), with one guard that keeps every reward finite: a query's cross-entropy is capped at
:data:`~metabench.envs.common.MAX_QUERY_LOSS` (1e9 nats, reached only by logits about 1e9 apart), so
even float32 logits of +-3.4e38 get a finite reward; no other score changes.

Protocol (part of the env id's version): images are the official drawings reduced from 105 to 28
pixels by a preprocessing of :mod:`metabench.data` (version 1: Pillow's nearest-neighbour resize of
the 1-bit drawing, binary pixels, as the published pipelines; version 0: an area filter); classes
come from a split of :mod:`metabench.splits`, whose manifest sha256 is pinned in the registered spec
and selects the split's edition; tasks draw their classes uniformly or, as in Lake et al. (2015),
all from one alphabet (``task_sampling``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from metabench import data, splits
from metabench.envs.common import (
    MAX_QUERY_LOSS,
    TASK_SHAPE,
    FewShotVectorEnv,
    TaskEnv,
    check_positive_int,
    resolve_device,
)
from metabench.episodes import Episodes, OmniglotEpisodes

LOGIT_BOUND = 10.0


class MetaOmniglotEnv(TaskEnv):
    """One N-way K-shot Omniglot task per episode; reward = minus the query cross-entropy.

    Args:
        n_way, k_shot: task shape (classes per task, support drawings per class).
        n_query: query drawings per class (default 15; ``k_shot + n_query <= 20``).
        split: ``"train"``, ``"val"`` or ``"test"`` classes of ``scheme``.
        scheme: ``"vinyals"`` (default: the standard Vinyals et al. split, rotations as classes) or
            ``"lake"`` (official background/evaluation alphabets, no rotations); see :mod:`metabench.splits`.
        device: where the data tensor lives and episodes are assembled (``"cpu"`` or ``"cuda"``; ``"cuda"``
            without a usable GPU raises ``ValueError``).
        root: folder with the raw Omniglot files (else ``$METABENCH_DATA``).
        preprocessing: one of :data:`metabench.data.PREPROCESSINGS` (default: the current one).
        manifest_sha256: pinned ``{scheme: {split: sha256}}`` of the registered version: selects the
            installed edition of the split with that hash, and raises if there is none, so a changed
            split cannot hide behind an old id. None: the scheme's current edition.
        task_sampling: ``"uniform"`` (N classes of the split) or ``"within-alphabet"`` (N classes of one
            alphabet, Lake et al. 2015). None (version 0 ids) means uniform and leaves it out of the protocol.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    action_description = "query logits"

    def __init__(
        self,
        n_way: int = 5,
        k_shot: int = 1,
        n_query: int = 15,
        split: str = "train",
        scheme: str = "vinyals",
        device: str | torch.device = "cpu",
        root: str | None = None,
        preprocessing: str = data.PREPROCESSING,
        manifest_sha256: dict[str, dict[str, str]] | None = None,
        task_sampling: str | None = None,
    ) -> None:
        super().__init__()
        n_way, k_shot, n_query = map(check_positive_int, TASK_SHAPE, (n_way, k_shot, n_query))
        data.check_preprocessing(preprocessing)
        pinned = (manifest_sha256 or {}).get(scheme, {}).get(split)
        edition = splits.find_edition(scheme, split, pinned)
        digest = splits.manifest_sha256(scheme, split, edition)
        self.device = resolve_device(device)
        classes = splits.class_table(scheme, split, edition)
        self.sampler = OmniglotEpisodes(
            data.load_omniglot(root, self.device, preprocessing=preprocessing),
            classes,
            n_way,
            k_shot,
            n_query,
            groups=torch.from_numpy(splits.alphabet_of_rows())[classes[:, 0]],
            task_sampling=task_sampling or "uniform",
            source=(root, preprocessing),
        )
        self.protocol = {
            "dataset": "omniglot",
            "scheme": scheme,
            "split": split,
            "n_way": n_way,
            "k_shot": k_shot,
            "n_query": n_query,
            "preprocessing": preprocessing,
            "manifest_sha256": digest,
            "data_sha256": data.PREPROCESSINGS[preprocessing],
            **({"task_sampling": task_sampling} if task_sampling is not None else {}),
        }

        size = data.IMAGE_SIZE
        self.observation_space = spaces.Dict(
            {
                "support_images": spaces.Box(0, 255, (n_way * k_shot, 1, size, size), np.uint8),
                "support_labels": spaces.MultiDiscrete(np.full(n_way * k_shot, n_way)),
                "query_images": spaces.Box(0, 255, (n_way * n_query, 1, size, size), np.uint8),
            }
        )
        self.action_space = spaces.Box(-LOGIT_BOUND, LOGIT_BOUND, (n_way * n_query, n_way), np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Sample a new task; the query labels stay hidden until ``step``."""
        super().reset(seed=seed)
        return self._new_task(seed), {}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Score the query logits ``(n_way * n_query, n_way)``; the episode terminates."""
        losses, info = self._score(action)  # per-query cross-entropy (see ``evaluate``)
        reward = -float(losses.mean())
        return self._final_observation(), reward, True, False, info

    def observe(self, episodes: Episodes) -> dict[str, np.ndarray]:
        """Batched observation of tasks: support images and labels, query images (no query labels)."""
        return {
            "support_images": episodes.support_inputs.cpu().numpy(),
            "support_labels": episodes.support_targets.cpu().numpy(),
            "query_images": episodes.query_inputs.cpu().numpy(),
        }

    def evaluate(self, logits: torch.Tensor, episodes: Episodes) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """Per-query cross-entropy ``(B, n_way * n_query)`` of batched logits (each capped at ``MAX_QUERY_LOSS``),
        and the ``info`` entries."""
        labels = episodes.query_targets
        losses = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
        losses = losses.clamp(max=MAX_QUERY_LOSS)  # float32 overflows to inf for logits ~1e38 apart
        accuracy = (logits.argmax(dim=-1) == labels).float().mean(dim=1)
        info = {
            "accuracy": accuracy.cpu().numpy(),
            "query_losses": losses.cpu().numpy(),
            "query_labels": labels.cpu().numpy(),
        }
        return losses, info


class MetaOmniglotVectorEnv(FewShotVectorEnv):
    """``num_envs`` Omniglot tasks per step, sampled in one batched gather (a meta-batch)."""

    single_env_class = MetaOmniglotEnv
