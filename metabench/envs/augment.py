"""MetaAugment: the data-augmentation policy is the agent (AutoAugment, Cubuk et al. 2019; PBA; DADA).

With one example per class, what a learner can do with the support set depends on how it is
augmented. Here the augmentation policy is the learned part of a fixed learning algorithm:

Action: an AutoAugment policy of S sub-policies (``sub_policies``, default :data:`DEFAULT_SUB_POLICIES`
= 5), each an operation, a magnitude bin and a probability bin of :mod:`metabench.augment`, as one
``MultiDiscrete([n_ops, n_magnitudes, n_probabilities] * S)`` action laid out sub-policy by
sub-policy: ``[op_0, magnitude_0, probability_0, op_1, ...]`` (``env.unwrapped.policy(action)``
gives the ``(S, 3)`` table). Operations (12): identity, rotate, shear_x, shear_y, translate_x,
translate_y, scale, elastic, thicken, thin, erase, noise; 10 magnitude bins; 11 probability bins
(0, 0.1, .., 1). An action of another length, with a bin out of range, NaN/inf, non-integer values or
a non-numeric dtype raises ``ValueError`` saying what is wrong.

Episode: one step. ``reset`` draws ``tasks_per_step`` tasks (default :data:`DEFAULT_TASKS_PER_STEP`
= 32) of the chosen split; ``step`` expands each task's support set with ``copies`` augmented copies
of every support image (default :data:`DEFAULT_COPIES` = 4; each copy picks a sub-policy uniformly and
applies it with its probability, :func:`metabench.augment.apply_policy`), adapts the base learner on
it, scores it on the query set and terminates.

Base learner (fixed; part of the env's protocol): the body of the ``pretrain`` baseline (the max-pool
Conv-4 of :mod:`metabench.models` pretrained as a classifier over all training classes, see
``baselines/pretrain.py``), frozen and used with its running batch-norm statistics (each image
embedded on its own: not transductive), then, on the embeddings of the augmented support set
(originals and copies), one of two adaptation rules (``learner=``):

* ``"finetune"`` (default): the ``pretrain`` baseline's own test-time rule with its defaults, an
  N-way linear head from zeros, :data:`FINETUNE_STEPS` = 100 steps of gradient descent with step
  size :data:`FINETUNE_LR` = 0.03 on the mean support cross-entropy (``metabench.inner_loop.adapt``).
* ``"prototypes"``: nearest class mean (Snell et al. 2017), logits ``-|q - c|^2 / temperature`` with
  ``temperature`` = :data:`DEFAULT_TEMPERATURE` = 50, the value that minimises the query loss without
  augmentation on 640 val tasks (5- and 20-way alike) with the default body.

The fine-tuned head is the default because augmentation can help it: on the val classes with the
default body, mild geometric and elastic policies raise its reward by up to 0.02 (20-way; noise,
thickening and large magnitudes lower it), whereas almost every policy lowers the prototype
learner's reward (its copies only move the class means).

Reward: minus the query cross-entropy, averaged over the queries of a task and then over the tasks.
``info``: ``accuracy``; ``reference_reward`` and ``reference_accuracy``, the same learner on the same
tasks with unaugmented copies (copies equal to the originals: the same prototypes, and the same
mean support loss, as the plain support set); ``augmented_fraction`` (share of copies that an
operation changed); per-task arrays ``task_rewards``, ``task_accuracies``, ``reference_task_rewards``,
``reference_task_accuracies``; and the ``policy`` table. A policy that never augments (identity
operations or probability 0 only) reproduces the reference reward exactly.

Observation: a constant ``[0.0]`` (Box of shape (1,)). The policy is open-loop: like AutoAugment,
the agent searches one policy for a whole task distribution, judged on fresh tasks each step, so the
support set is deliberately not shown (a policy that looks at the task would be another problem).

Split: ``split="val"`` by default, for the search; report the found policy on ``split="test"``. The
reward never uses the test classes unless asked. The body is pretrained on the ``train`` split of
the ``vinyals`` scheme (of the env version's edition and preprocessing).

Test protocol: :data:`TEST_EPISODES` = 32 episodes (``test_episodes``; ``horizon`` = 1 step each), so
with the default 32 tasks per step a policy is scored on 1024 test tasks (``metabench evaluate
--agent open-loop``: episode ``i`` is ``reset(seed=2026 + i)``); ``tasks`` is the
:class:`~metabench.episodes.Episodes` of the last reset, which the harness hashes into the protocol.

Pretrained body: a fixed artifact. The registered spec pins ``body_sha256`` (the hash of its weights and
running statistics) and the env loads that body from the files shipped with metabench
(``metabench/protocols/augment/``), checks it, and never trains one on the fly. It was made once by
:func:`pretrained_body` with metabench's own training code
(``metabench.training.train("pretrain", "MetaOmniglot-5w1s-v1", ..., iterations=1500)``) and
:func:`export_body` (the body that the ``pretrain`` baseline's defaults were tuned with). The version-0
body was never shipped (it was trained on the machine that scored v0's policies, and training it again
gives other bits), so v0 MetaAugment envs need ``checkpoint=``. ``checkpoint=`` takes any ``pretrain``
checkpoint or body file instead (its scheme and preprocessing must be the env's);
``env.unwrapped.protocol["body_sha256"]`` identifies the weights that the rewards were computed with, so
a score with another body is never taken for the registered protocol's. With a given body, CPU and GPU
rewards agree to about 1e-4.

Seeding: ``reset(seed=s)`` draws the tasks from a CPU generator seeded with ``s`` (as MetaOmniglot
draws ``tasks_per_step`` tasks), then one integer ``randint(2**63 - 1)`` from it seeds the generator
of the augmentations, so the same seed and action give the same reward, and the task stream does not
depend on the actions.
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from metabench import augment, data, models
from metabench.envs.common import task_generator
from metabench.envs.defaults import AUGMENT_COPIES as DEFAULT_COPIES
from metabench.envs.defaults import AUGMENT_SUB_POLICIES as DEFAULT_SUB_POLICIES
from metabench.envs.defaults import AUGMENT_TASKS_PER_STEP as DEFAULT_TASKS_PER_STEP
from metabench.envs.defaults import AUGMENT_TEMPERATURE as DEFAULT_TEMPERATURE
from metabench.envs.omniglot import MetaOmniglotEnv
from metabench.episodes import Episodes

LEARNERS = ("prototypes", "finetune")
FINETUNE_STEPS = 100
FINETUNE_LR = 0.03
PRETRAIN_ENV_ID = "MetaOmniglot-5w1s-v1"
BODY_FORMAT = "metabench-augment-body/1"
#: Where the bodies that registered MetaAugment versions pin are shipped (package data).
SHIPPED_BODIES = Path(__file__).resolve().parents[1] / "protocols" / "augment"
PRETRAIN_ITERATIONS = 1500
EMBED_CHUNK = 1024
TEST_EPISODES = 32


def pretrained_body(
    env_id: str = PRETRAIN_ENV_ID,
    device: str | torch.device = "cpu",
    iterations: int = PRETRAIN_ITERATIONS,
    seed: int = 0,
    out_dir: str | Path | None = None,
    config: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """The checkpoint of the ``pretrain`` baseline that MetaAugment's learner uses, trained once and cached.

    Trains with :func:`metabench.training.train` on the ``train`` split of the MetaOmniglot id ``env_id``
    (its scheme, split edition and preprocessing; default :data:`PRETRAIN_ENV_ID`) for ``iterations``
    steps into ``out_dir`` (default ``cache_dir()/augment/pretrain-{env_id}-{iterations}it-seed{seed}``),
    or returns the finished checkpoint found there. ``config`` overrides hyperparameters (e.g. a small
    ``{"width": 16}`` for tests).
    """
    from metabench.training import train  # imports the evaluation harness: only when training

    if not env_id.startswith("MetaOmniglot-") or env_id not in gym.registry:
        raise ValueError(f"the body is pretrained on a registered MetaOmniglot id, not {env_id!r}")
    if out_dir is None:
        out_dir = data.cache_dir() / "augment" / f"pretrain-{env_id}-{iterations}it-seed{seed}"
    path = Path(out_dir) / "checkpoint.pt"
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("iteration", 0) >= iterations:
            return path
    print(f"MetaAugment: pretraining its base learner's body ({iterations} iterations) into {path}", file=sys.stderr)
    return train(
        "pretrain",
        env_id,
        out_dir,
        iterations=iterations,
        config=config,
        device=device,
        seed=seed,
        val_interval=max(1, min(500, iterations)),
        val_episodes=200 if iterations >= 500 else 10,
        progress=progress,
    )


def export_body(checkpoint: str | Path, folder: str | Path | None = None) -> Path:
    """Write the body of a ``pretrain`` checkpoint (weights without the head, running statistics, config) as
    ``body-<sha256[:16]>.pt`` into ``folder`` (default: the package's shipped bodies) and return its path.

    This is how a registered body is made (once, from :func:`pretrained_body`'s checkpoint); the env then
    only ever loads it, by the sha256 its registered spec pins.
    """
    from metabench.checkpoints import load_checkpoint  # imports the evaluation harness: only when exporting

    learner, state = load_checkpoint(checkpoint)
    digest = _body_sha256(learner)
    body = {name: value.detach().cpu() for name, value in learner.params.items() if not name.startswith("head.")}
    out = Path(folder) if folder is not None else SHIPPED_BODIES
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"body-{digest[:16]}.pt"
    data.save_atomic(
        {
            "format": BODY_FORMAT,
            "env_id": state["env_id"],
            "config": state["config"],
            "seed": state["seed"],
            "iteration": state["iteration"],
            "params": body,
            "running": {name: value.cpu() for name, value in learner.running.items()},
            "sha256": digest,
        },
        path,
    )
    return path


class MetaAugmentEnv(gym.Env):
    """Search an augmentation policy; one step scores it on a batch of tasks (see the module doc).

    Args:
        n_way, k_shot, n_query: task shape (default 5-way 1-shot, 15 queries per class).
        split: classes the tasks come from (default ``"val"``: the search split).
        scheme: Omniglot split scheme (default ``"vinyals"``).
        sub_policies: S, sub-policies per policy (default 5).
        copies: augmented copies of every support image (default 4).
        tasks_per_step: tasks scored per step (default 32).
        temperature: prototype logits are ``-|q - c|^2 / temperature`` (default :data:`DEFAULT_TEMPERATURE`).
        learner: ``"finetune"`` (default) or ``"prototypes"``: how the learner adapts to the augmented support.
        checkpoint: a ``pretrain`` checkpoint (or a body file of :func:`export_body`) whose body embeds the
            images, instead of the shipped body that ``body_sha256`` names.
        body_sha256: the body the registered version pins (:func:`_body_sha256` of its weights): loaded from
            the files shipped with metabench and checked; never trained on the fly.
        device: where images are augmented and embedded.
        root, preprocessing, manifest_sha256: as for :class:`~metabench.envs.omniglot.MetaOmniglotEnv`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    horizon = 1  # steps per episode
    test_episodes = TEST_EPISODES  # episodes of the frozen test protocol (x tasks_per_step tasks)

    def __init__(
        self,
        n_way: int = 5,
        k_shot: int = 1,
        n_query: int = 15,
        split: str = "val",
        scheme: str = "vinyals",
        sub_policies: int = DEFAULT_SUB_POLICIES,
        copies: int = DEFAULT_COPIES,
        tasks_per_step: int = DEFAULT_TASKS_PER_STEP,
        temperature: float = DEFAULT_TEMPERATURE,
        learner: str = "finetune",
        checkpoint: str | Path | None = None,
        device: str | torch.device = "cpu",
        root: str | None = None,
        preprocessing: str = data.PREPROCESSING,
        manifest_sha256: dict[str, dict[str, str]] | None = None,
        body_sha256: str | None = None,
    ) -> None:
        for name, value in (("sub_policies", sub_policies), ("copies", copies), ("tasks_per_step", tasks_per_step)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be finite and positive, got {temperature!r}")
        if learner not in LEARNERS:
            raise ValueError(f"learner must be one of {LEARNERS}, got {learner!r}")
        self.task_env = MetaOmniglotEnv(
            n_way, k_shot, n_query, split, scheme, device, root, preprocessing, manifest_sha256
        )
        self.device, self.sampler = self.task_env.device, self.task_env.sampler
        self.sub_policies, self.copies, self.tasks_per_step = int(sub_policies), int(copies), int(tasks_per_step)
        self.temperature, self.learner_kind = float(temperature), learner
        self.learner = _load_body(checkpoint, body_sha256, self.task_env.protocol, self.device)

        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.MultiDiscrete(
            np.tile([len(augment.OPS), augment.N_MAGNITUDES, augment.N_PROBABILITIES], self.sub_policies)
        )
        self.protocol = {
            **self.task_env.protocol,
            "sub_policies": self.sub_policies,
            "copies": self.copies,
            "tasks_per_step": self.tasks_per_step,
            "ops": augment.OPS,
            "n_magnitudes": augment.N_MAGNITUDES,
            "n_probabilities": augment.N_PROBABILITIES,
            "learner": f"pretrain-body+{learner}",
            **({"temperature": self.temperature} if learner == "prototypes" else {}),
            **({"finetune_steps": FINETUNE_STEPS, "finetune_lr": FINETUNE_LR} if learner == "finetune" else {}),
            "body_sha256": _body_sha256(self.learner),
        }
        self._generator: torch.Generator | None = None
        self._episodes: Episodes | None = None
        self._tasks: Episodes | None = None
        self._augment_seed = 0

    @property
    def tasks(self) -> Episodes | None:
        """The tasks drawn by the last ``reset`` (scored by the step after it); None before the first reset."""
        return self._tasks

    # --- the gym interface ------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw the step's ``tasks_per_step`` tasks and the seed of its augmentations."""
        super().reset(seed=seed)
        self._generator = task_generator(seed, self.np_random, self._generator)
        self._episodes = self._tasks = self.sampler.sample(self.tasks_per_step, self._generator)
        self._augment_seed = int(torch.randint(2**63 - 1, (1,), generator=self._generator))
        return self._observation(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Score the policy on the step's tasks (reward = minus the mean query loss); the episode ends."""
        if self._episodes is None:
            raise gym.error.ResetNeeded(
                "step() needs tasks: call reset() first (every episode is one step and ends after it)"
            )
        policy = self.policy(action)
        episodes, self._episodes = self._episodes, None
        losses, accuracies, reference_losses, reference_accuracies, changed = self.evaluate(
            policy, episodes, torch.Generator().manual_seed(self._augment_seed)
        )
        task_rewards, reference_rewards = -losses.double(), -reference_losses.double()
        info = {
            "accuracy": float(accuracies.double().mean()),
            "reference_reward": float(reference_rewards.mean()),
            "reference_accuracy": float(reference_accuracies.double().mean()),
            "augmented_fraction": changed,
            "task_rewards": task_rewards.cpu().numpy(),
            "task_accuracies": accuracies.cpu().numpy(),
            "reference_task_rewards": reference_rewards.cpu().numpy(),
            "reference_task_accuracies": reference_accuracies.cpu().numpy(),
            "policy": policy.numpy(),
        }
        return self._observation(), float(task_rewards.mean()), True, False, info

    def policy(self, action: Any) -> torch.Tensor:
        """Check a flat action ``[op, magnitude, probability] * S`` and return it as an ``(S, 3)`` int64 table."""
        return augment.policy_from_action(action, self.sub_policies)

    # --- the learner --------------------------------------------------------------------------

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(n, features)`` of images ``(n, 1, 28, 28)`` by the frozen body (running BN stats)."""
        with torch.no_grad():
            chunks = [self.learner.embed(chunk[None])[0] for chunk in images.split(EMBED_CHUNK)]
        return torch.cat(chunks)

    def evaluate(
        self, policy: torch.Tensor, episodes: Episodes, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """Per-task query losses and accuracies with ``policy`` and without augmentation (the reference).

        Copy ``j`` of support image ``i`` of task ``t`` is row ``(t, j, i)`` of one
        :func:`~metabench.augment.apply_policy` batch; only the copies an operation changed are
        embedded again, the others reuse their original's embedding (hence the exact reference).
        Returns ``(losses, accuracies, reference_losses, reference_accuracies, augmented_fraction)``.
        """
        tasks, n_support = episodes.support_targets.shape
        n_query = episodes.query_targets.shape[1]
        support_images = episodes.support_inputs.flatten(0, 1)
        originals = self.embed(torch.cat([support_images, episodes.query_inputs.flatten(0, 1)]))
        support = originals[: tasks * n_support].view(tasks, 1, n_support, -1)
        query = originals[tasks * n_support :].view(tasks, n_query, -1)

        copies = support.expand(tasks, self.copies, n_support, support.shape[-1])
        ops, magnitudes = augment.sample_policy(policy, copies.shape[0] * self.copies * n_support, generator)
        changed = (ops != augment.IDENTITY).nonzero().flatten()
        augmented = copies.reshape(-1, copies.shape[-1]).clone()
        if len(changed):
            sources = support_images.view(tasks, 1, n_support, *support_images.shape[1:])
            sources = sources.expand(tasks, self.copies, *sources.shape[2:]).flatten(0, 2)
            rows = changed.to(self.device)
            images = augment.apply_ops(sources[rows], ops[changed], magnitudes[changed], generator)
            augmented[rows] = self.embed(images)

        labels = episodes.support_targets.repeat(1, 1 + self.copies)  # (T, (1 + copies) * n_support)
        losses, accuracies = self._score(support, augmented.view_as(copies), labels, query, episodes.query_targets)
        reference = self._score(support, copies, labels, query, episodes.query_targets)
        return losses, accuracies, *reference, len(changed) / len(ops)

    def _score(
        self,
        support: torch.Tensor,
        copies: torch.Tensor,
        labels: torch.Tensor,
        query: torch.Tensor,
        query_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-task mean query cross-entropy and accuracy of the learner adapted on support + copies."""
        tasks = support.shape[0]
        embeddings = torch.cat([support, copies], dim=1).reshape(tasks, -1, support.shape[-1])
        if self.learner_kind == "prototypes":
            prototypes = models.class_means(embeddings, labels, self.task_env.protocol["n_way"])  # (T, N, D)
            logits = -(query[:, :, None, :] - prototypes[:, None, :, :]).square().sum(dim=-1) / self.temperature
        else:
            logits = self.learner.finetune_head(  # the pretrain baseline's own test-time rule
                embeddings, labels, query, self.task_env.protocol["n_way"], FINETUNE_STEPS, FINETUNE_LR
            )
        losses = F.cross_entropy(logits.flatten(0, 1), query_labels.flatten(), reduction="none")
        accuracies = (logits.argmax(dim=-1) == query_labels).float().mean(dim=1)
        return losses.view_as(query_labels).mean(dim=1), accuracies

    def _observation(self) -> np.ndarray:
        return np.zeros(1, np.float32)


def _load_body(checkpoint: str | Path | None, body_sha256: str | None, protocol: dict, device: torch.device) -> Any:
    """The ``pretrain`` learner of ``checkpoint``, or of the shipped body ``body_sha256``, checked to fit the env's
    data (``protocol``: same scheme and preprocessing)."""
    if checkpoint is None:
        if body_sha256 is None:
            raise ValueError("MetaAugmentEnv needs a body: pass checkpoint= or the body_sha256 of a shipped body")
        path = SHIPPED_BODIES / f"body-{body_sha256[:16]}.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"MetaAugment's body {body_sha256[:16]} is not shipped with this metabench ({path} is missing); the "
                "version-0 body never was, so version-0 MetaAugment envs need checkpoint= a pretrain checkpoint "
                f"(see pretrained_body), or use the current id MetaAugment-Omniglot-{protocol['n_way']}w1s-v1, whose "
                "body is shipped. Reinstall metabench if this is a current version."
            )
        learner = _read_body(path, device)
        if _body_sha256(learner) != body_sha256:
            raise ValueError(f"{path} does not hold the body {body_sha256[:16]} (corrupt file): reinstall metabench")
    else:
        learner = _read_body(Path(checkpoint), device)
    for key in ("scheme", "preprocessing"):
        if learner.task.get(key) != protocol[key]:
            raise ValueError(
                f"the body was pretrained on {key} {learner.task.get(key)!r}, but the env uses {protocol[key]!r}"
            )
    return learner


def _read_body(path: Path, device: torch.device) -> Any:
    """A ``pretrain`` learner from a checkpoint of ``metabench train`` or a body file of :func:`export_body`."""
    from metabench.checkpoints import build_learner, load_checkpoint  # imports the evaluation harness: only here

    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        raise ValueError(f"{path} is not a loadable body or checkpoint: {error}") from error
    if isinstance(content, dict) and content.get("format") == BODY_FORMAT:
        learner = build_learner("pretrain", content["env_id"], content["config"], device, content["seed"])
        models.load_params(learner.params, content["params"])
        models.load_params(learner.running, content["running"])
        return learner
    learner, state = load_checkpoint(path, device)
    if state["agent"] != "pretrain" or learner.task.get("dataset") != "omniglot":
        raise ValueError(f"{path} holds {state['agent']} on {state['env_id']}; MetaAugment needs a pretrain body")
    return learner


def _body_sha256(learner: Any) -> str:
    """sha256 of the body's weights and running statistics (float32, sorted by name)."""
    digest = hashlib.sha256()
    tensors = {name: value for name, value in learner.params.items() if not name.startswith("head.")}
    tensors.update({f"running.{name}": value for name, value in learner.running.items()})
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()
