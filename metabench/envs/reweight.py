"""MetaReweight: how much each training example counts is the agent (learning to reweight under label noise).

M. Ren, W. Zeng, B. Yang, R. Urtasun. Learning to Reweight Examples for Robust Deep Learning. ICML 2018.
J. Shu, Q. Xie, L. Yi, Q. Zhao, S. Zhou, Z. Xu, D. Meng. Meta-Weight-Net: Learning an Explicit Mapping
for Sample Weighting. NeurIPS 2019.

One episode is one task, drawn by the same sampler as MetaOmniglot / MetaSinusoid, whose *training*
labels are corrupted: exactly ``round(noise_rate * n)`` of the ``n`` training examples, chosen
uniformly, get a wrong target. Noise models (``noise``): Omniglot ``"symmetric"`` (a label uniform among
the other ``n_way - 1`` classes) or ``"pair"`` (label ``y`` becomes ``y + 1 mod n_way``); sinusoid
``"uniform"`` (the target is replaced by a draw from ``U[-5, 5]``, the amplitude range). The
corruption is drawn from the episode's generator right after the task, so ``reset(seed=s)`` gives the
same task and the same corrupted labels bit for bit. The query set's labels are clean.

The env holds a learner, the Conv-4 (max-pool, batch norm with batch statistics) for Omniglot or the
1-40-40-1 ReLU MLP for the sinusoid, started every episode from the same initialisation
(``init_seed``, as :class:`~metabench.envs.optimizer.MetaOptimizerEnv`). ``steps`` times (T) the agent
sees statistics of every training example and answers one weight per example; the env takes one SGD
step of learning rate ``lr`` on the weighted training loss ``sum_i w_i l_i / sum_i w_i`` (weights as
relative importances, as L2RW normalises them; all-zero weights give a zero loss: no update), through
``inner_loop.adapt``. The training batch is the whole training set at every step.

Observation: float32 ``(n, F)``, one row per training example in the (shuffled) task order, columns
named in ``feature_names``: Omniglot ``[loss, margin, entropy, step_fraction, previous_weight]`` (the
cross-entropy on the example's *given* label, that label's logit minus the largest other logit, the
entropy of the predicted distribution, ``t / T``, the agent's previous weight of it, 1 before the first
update); sinusoid ``[loss, residual, step_fraction, previous_weight]`` (squared error and prediction
minus given target). Values are clipped to the declared bounds. It never holds the clean labels, which
examples were corrupted, or anything of the query set.

Action: ``n`` weights in ``[0, 1]``. A wrong shape, NaN or inf raises ``ValueError`` (as every env
here), and so does a negative weight (it would ascend that example's loss); finite weights above 1
are clipped to 1 (only ratios matter).

Reward: with ``L_T = min(clean query loss after T updates, divergence_penalty)`` (mean query
cross-entropy or squared error), 0 for the first T - 1 steps and ``-L_T`` at the last. The last
``info`` holds ``query_loss``, ``diverged``, ``updates`` and the base env's scores (``accuracy`` for
Omniglot, 0.0 when diverged). Divergence, as MetaOptimizer: when after an update a parameter is not
finite, or the weighted training loss is not finite or exceeds ``divergence_penalty`` (default
``10 ln(n_way)``, or 125 for the sinusoid), the episode ends with ``L_T = divergence_penalty``.

Differentiable task (:meth:`MetaReweightEnv.task_functions`): the per-example training losses on the
given (noisy) labels, the weighted training loss of given weights, the clean query loss, and the loss
on a small *trusted* set (``trusted_shots`` clean examples per class, or points, drawn with the task
and used in no other way): the clean meta set of L2RW and Meta-Weight-Net. They see the query set:
use them to meta-train on training tasks (``env.sample_task``), not to act in an episode.
``env.corrupt(episodes, generator)`` turns a clean task of ``env.sampler`` into a noisy one as ``reset`` does.
Privileged, for reference methods only: ``env.corrupted`` (which training labels were corrupted: the oracle
of the headroom study) and ``env.learner_params`` (the learner's current parameters: L2RW).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from metabench import data, models
from metabench.envs.common import as_action_tensor, task_generator
from metabench.envs.omniglot import MetaOmniglotEnv
from metabench.envs.optimizer import INIT_SEED, SINUSOID_TRIVIAL_LOSS, TASKS, _checked_init
from metabench.envs.sinusoid import MetaSinusoidEnv
from metabench.episodes import Episodes, SinusoidEpisodes
from metabench.inner_loop import adapt

NOISE_MODELS = {"omniglot": ("symmetric", "pair"), "sinusoid": ("uniform",)}
FEATURES = {
    "omniglot": ("loss", "margin", "entropy", "step_fraction", "previous_weight"),
    "sinusoid": ("loss", "residual", "step_fraction", "previous_weight"),
}
FEATURE_BOUND = 1e4
DEFAULT_STEPS = {"omniglot": 10, "sinusoid": 100}
DEFAULT_LR = {"omniglot": 0.1, "sinusoid": 0.03}


@dataclass(frozen=True)
class NoisyTask:
    """One task with corrupted training labels: ``episode`` holds the given (noisy) training targets as its
    support, the clean query set, and ``trusted`` clean examples; ``corrupted`` marks the corrupted ones."""

    episode: Episodes
    corrupted: torch.Tensor
    trusted_inputs: torch.Tensor
    trusted_targets: torch.Tensor


class TaskFunctions(NamedTuple):
    """A task as differentiable functions of the learner's parameters (named as ``initial_params``)."""

    support_losses: Callable[[models.Params], torch.Tensor]
    """per-example training losses ``(n,)`` on the given (noisy) labels"""
    support_loss: Callable[[models.Params, torch.Tensor], torch.Tensor]
    """the env's weighted training loss ``sum w l / sum w`` (0 for all-zero weights)"""
    query_loss: Callable[[models.Params], torch.Tensor]
    """mean loss on the clean query set"""
    trusted_loss: Callable[[models.Params], torch.Tensor]
    """mean loss on the trusted clean examples"""


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum w l / sum w``; when every weight is 0, ``sum w l`` (= 0: no update, yet its gradient in ``w`` is the
    losses, which L2RW's look-ahead at ``w = 0`` differentiates)."""
    total = weights.sum()
    return (weights * losses).sum() / torch.where(total > 0, total, torch.ones_like(total))


class MetaReweightEnv(gym.Env):
    """Train a learner on one noisy-label task for ``steps`` updates whose per-example weights are the actions.

    Args:
        task: ``"omniglot"`` (Conv-4) or ``"sinusoid"`` (1-40-40-1 MLP).
        noise, noise_rate: noise model (see the module doc; default the task's first) and the
            corrupted fraction of the training labels (default 0.4).
        steps, lr: updates per episode, T, and their SGD learning rate (defaults: Omniglot 10 and 0.1,
            sinusoid 100 and 0.03).
        trusted_shots: clean examples per class (Omniglot) or points (sinusoid) of the trusted set
            (default 1 and 5).
        init, init_seed, divergence_penalty: as for :class:`~metabench.envs.optimizer.MetaOptimizerEnv`.
        n_way, k_shot, n_query: task shape (defaults: Omniglot 5-way, 10 training and 5 query drawings
            per class; sinusoid 40 training and 50 query points).
        split, scheme, root, preprocessing, manifest_sha256: Omniglot only, as for MetaOmniglot.
        device: where the task and the learner live.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    action_description = "per-example weights"

    def __init__(
        self,
        task: str = "sinusoid",
        noise: str | None = None,
        noise_rate: float = 0.4,
        steps: int | None = None,
        lr: float | None = None,
        trusted_shots: int | None = None,
        init: Mapping[str, Any] | None = None,
        init_seed: int = INIT_SEED,
        divergence_penalty: float | None = None,
        n_way: int = 5,
        k_shot: int | None = None,
        n_query: int | None = None,
        split: str = "train",
        scheme: str = "vinyals",
        device: str | torch.device = "cpu",
        root: str | None = None,
        preprocessing: str = data.PREPROCESSING,
        manifest_sha256: dict[str, dict[str, str]] | None = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        noise = noise or NOISE_MODELS[task][0]
        if noise not in NOISE_MODELS[task]:
            raise ValueError(f"noise for {task} must be one of {NOISE_MODELS[task]}, got {noise!r}")
        if not 0 <= noise_rate <= 1:
            raise ValueError(f"noise_rate must be in [0, 1], got {noise_rate!r}")
        steps = DEFAULT_STEPS[task] if steps is None else steps
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        self.task, self.noise, self.noise_rate = task, noise, float(noise_rate)
        self.steps = self.horizon = int(steps)
        self.lr = float(DEFAULT_LR[task] if lr is None else lr)
        generator = torch.Generator().manual_seed(init_seed)
        if task == "omniglot":
            self.trusted_shots = 1 if trusted_shots is None else int(trusted_shots)
            self.k_shot, n_query = k_shot or 10, n_query or 5
            # the sampler draws the training and the trusted drawings of each class as one support set
            self.task_env: MetaOmniglotEnv | MetaSinusoidEnv = MetaOmniglotEnv(
                n_way,
                self.k_shot + self.trusted_shots,
                n_query,
                split,
                scheme,
                device,
                root,
                preprocessing,
                manifest_sha256,
            )
            self.n = n_way * self.k_shot
            fresh = models.conv4_init(n_way, generator)
            learner, default_penalty = "conv4-64-maxpool-batchstats", 10 * math.log(n_way)
        else:
            self.trusted_shots = 5 if trusted_shots is None else int(trusted_shots)
            self.k_shot, n_query = k_shot or 40, n_query or 50
            self.task_env = MetaSinusoidEnv(self.k_shot + self.trusted_shots, n_query, device)
            self.n = self.k_shot
            fresh = models.mlp_init(generator)
            learner, default_penalty = "mlp-1-40-40-1-relu", 10 * SINUSOID_TRIVIAL_LOSS
        self.n_way = n_way
        self.divergence_penalty = float(default_penalty if divergence_penalty is None else divergence_penalty)
        if not (math.isfinite(self.divergence_penalty) and self.divergence_penalty > 0):
            raise ValueError(f"divergence_penalty must be finite and positive, got {divergence_penalty!r}")
        self.device = self.task_env.device
        self.sampler = self.task_env.sampler
        self._init = _checked_init(init, fresh, self.device)

        self.feature_names = FEATURES[task]
        bounds = {
            "loss": (0.0, FEATURE_BOUND),
            "margin": (-FEATURE_BOUND, FEATURE_BOUND),
            "entropy": (0.0, math.log(n_way)),
            "residual": (-FEATURE_BOUND, FEATURE_BOUND),
            "step_fraction": (0.0, 1.0),
            "previous_weight": (0.0, 1.0),
        }
        low, high = (
            np.tile(np.array([bounds[f][i] for f in self.feature_names], np.float32), (self.n, 1)) for i in (0, 1)
        )
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(0.0, 1.0, (self.n,), np.float32)
        self.protocol = {
            **self.task_env.protocol,
            "k_shot": self.k_shot,
            "learner": learner,
            "init": "given" if init is not None else f"seed {init_seed}",
            "steps": self.steps,
            "lr": self.lr,
            "noise": noise,
            "noise_rate": self.noise_rate,
            "trusted_shots": self.trusted_shots,
            "reward_mode": "final",
            "divergence_penalty": self.divergence_penalty,
        }

        self._generator: torch.Generator | None = None
        self._task: NoisyTask | None = None
        self._active = False

    # --- the learner and its task -----------------------------------------------------------

    def initial_params(self) -> models.Params:
        """A fresh copy of the initialisation (no task dimension), as leaf tensors requiring grad."""
        return {name: value.clone().requires_grad_() for name, value in self._init.items()}

    def sample_task(self, generator: torch.Generator) -> NoisyTask:
        """Draw one task and its label corruption from ``generator`` (what ``reset`` does with the episode's)."""
        return self.corrupt(self.sampler.sample(1, generator), generator)

    def corrupt(self, episode: Episodes, generator: torch.Generator) -> NoisyTask:
        """Split one task of ``sampler`` into training and trusted examples and corrupt the training labels."""
        if self.task == "omniglot":
            # the first ``trusted_shots`` drawings of each class (in the shuffled support order) are the trusted set
            labels = episode.support_targets[0]
            rank = (F.one_hot(labels, self.n_way).cumsum(0) * F.one_hot(labels, self.n_way)).sum(1) - 1
            trusted, kept = rank < self.trusted_shots, rank >= self.trusted_shots
        else:
            trusted = torch.arange(self.k_shot + self.trusted_shots, device=self.device) >= self.k_shot
            kept = ~trusted
        inputs, targets = episode.support_inputs[:, kept], episode.support_targets[:, kept].clone()
        n_corrupted = round(self.noise_rate * self.n)
        corrupted = torch.zeros(self.n, dtype=torch.bool)
        corrupted[torch.randperm(self.n, generator=generator)[:n_corrupted]] = True
        if self.noise == "symmetric":  # a label uniform among the other classes
            noisy = (targets[0].cpu() + torch.randint(1, self.n_way, (self.n,), generator=generator)) % self.n_way
        elif self.noise == "pair":
            noisy = (targets[0].cpu() + 1) % self.n_way
        else:  # uniform: a target anywhere in the amplitude range
            low, high = -SinusoidEpisodes.amplitude[1], SinusoidEpisodes.amplitude[1]
            noisy = low + (high - low) * torch.rand(self.n, 1, generator=generator)
        corrupted = corrupted.to(self.device)
        targets[0, corrupted] = noisy.to(self.device)[corrupted].to(targets.dtype)
        noisy_episode = Episodes(inputs, targets, episode.query_inputs, episode.query_targets)
        trusted_set = (episode.support_inputs[:, trusted], episode.support_targets[:, trusted])
        return NoisyTask(noisy_episode, corrupted, *trusted_set)

    @property
    def tasks(self) -> Episodes | None:
        """The current episode's task with its *noisy* training labels (a batch of one), ``None`` before a reset."""
        return None if self._task is None else self._task.episode

    @property
    def corrupted(self) -> torch.Tensor | None:
        """Which training labels of the current episode are corrupted (privileged: for the oracle only)."""
        return None if self._task is None else self._task.corrupted

    @property
    def learner_params(self) -> models.Params:
        """The learner's current parameters, detached (privileged: for reference methods such as L2RW)."""
        return {name: value.detach().clone() for name, value in self._params.items()}

    def task_functions(self, task: NoisyTask | None = None) -> TaskFunctions:
        """The differentiable losses of ``task`` (default: the current episode's); see :class:`TaskFunctions`."""
        task = self._current(task)
        episode = task.episode

        def support_losses(params: models.Params) -> torch.Tensor:
            return self._losses(self._predict(params, episode.support_inputs), episode.support_targets)[0]

        def support_loss(params: models.Params, weights: torch.Tensor) -> torch.Tensor:
            return weighted_mean(support_losses(params), weights)

        def query_loss(params: models.Params) -> torch.Tensor:
            return self._losses(self._predict(params, episode.query_inputs), episode.query_targets).mean()

        def trusted_loss(params: models.Params) -> torch.Tensor:
            return self._losses(self._predict(params, task.trusted_inputs), task.trusted_targets).mean()

        return TaskFunctions(support_losses, support_loss, query_loss, trusted_loss)

    def update(
        self, params: models.Params, weights: torch.Tensor, task: NoisyTask | None = None, **kwargs: Any
    ) -> models.Params:
        """The env's update of ``params`` under ``weights`` (``kwargs`` go to ``inner_loop.adapt``, e.g.
        ``first_order=True``; differentiable in both otherwise)."""
        support_loss = self.task_functions(task).support_loss
        return adapt(params, lambda p: support_loss(p, weights), 1, self.lr, **kwargs)

    def observe(
        self, params: models.Params, t: int, previous_weights: torch.Tensor, task: NoisyTask | None = None
    ) -> np.ndarray:
        """The observation for a learner at ``params`` after ``t`` updates (see the module doc)."""
        task = self._current(task)
        with torch.no_grad():
            outputs = self._predict(params, task.episode.support_inputs)[0]
            targets = task.episode.support_targets[0]
            losses = self._losses(outputs[None], targets[None])[0]
            if self.task == "omniglot":
                given = outputs.gather(1, targets[:, None])[:, 0]
                others = outputs.scatter(1, targets[:, None], -math.inf).amax(1)
                probabilities = outputs.softmax(1)
                entropy = -(probabilities * outputs.log_softmax(1)).nan_to_num().sum(1)
                columns = [losses, given - others, entropy]
            else:
                columns = [losses, (outputs - targets)[:, 0]]
            step = torch.full_like(losses, t / self.steps)
            values = torch.stack([*columns, step, previous_weights.to(losses)], 1).double().cpu().numpy()
        space = self.observation_space
        values = np.nan_to_num(values, nan=np.inf)  # NaN: as bad as can be, then clipped
        return np.clip(values, space.low.astype(np.float64), space.high.astype(np.float64)).astype(np.float32)

    def diverged(self, params: models.Params, weights: torch.Tensor, task: NoisyTask | None = None) -> bool:
        """The divergence rule after an update with ``weights`` (see the module doc)."""
        with torch.no_grad():
            loss = float(self.task_functions(task).support_loss(params, weights))
        finite = all(bool(torch.isfinite(value).all()) for value in params.values())
        return not (finite and math.isfinite(loss) and loss <= self.divergence_penalty)

    def score(self, params: models.Params, *, diverged: bool = False, task: NoisyTask | None = None) -> dict[str, Any]:
        """The final ``info`` of an episode ending at ``params``: ``query_loss`` is ``L_T``."""
        episode = self._current(task).episode
        info: dict[str, Any] = {"query_loss": self.divergence_penalty, "diverged": diverged}
        if not diverged:
            with torch.no_grad():
                predictions = self._predict(params, episode.query_inputs)
                loss = float(self._losses(predictions, episode.query_targets).mean())
            if math.isfinite(loss):
                info["query_loss"] = min(loss, self.divergence_penalty)
            if bool(torch.isfinite(predictions).all()):
                scores = self.task_env.evaluate(predictions, episode)[1]
                info.update({key: value[0] for key, value in scores.items()})
        if self.task == "omniglot":
            info.setdefault("accuracy", 0.0)
        return info

    # --- the gym interface ------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Sample a new noisy task and restart the learner from the initialisation."""
        super().reset(seed=seed)
        self._generator = task_generator(seed, self.np_random, self._generator)
        self._task = self.sample_task(self._generator)
        self._params = self.initial_params()
        self._t = 0
        self._weights = torch.ones(self.n, device=self.device)
        self._active = True
        return self.observe(self._params, self._t, self._weights), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One SGD step on the training loss weighted by ``action``; reward ``-L_T`` at the last step, else 0."""
        if not self._active:
            raise gym.error.ResetNeeded("step() needs a running episode: call reset() first")
        weights = self.check_weights(action)
        with torch.enable_grad():
            params = self.update(self._params, weights, first_order=True)
        self._params = {name: value.detach().requires_grad_() for name, value in params.items()}
        self._t += 1
        self._weights = weights

        diverged = self.diverged(self._params, weights)
        terminated = diverged or self._t == self.steps
        info: dict[str, Any] = {}
        reward = 0.0
        if terminated:
            info = {**self.score(self._params, diverged=diverged), "updates": self._t}
            reward = -info["query_loss"]
        self._active = not terminated
        return self.observe(self._params, self._t, weights), float(reward), terminated, False, info

    def check_weights(self, action: Any) -> torch.Tensor:
        """``action`` as weights: ``ValueError`` on a wrong shape, NaN, inf or a negative entry; clipped to 1."""
        weights = as_action_tensor(action, self.action_space.shape, self.device, self.action_description)
        if (weights < 0).any():
            raise ValueError(f"{self.action_description} must be >= 0, got {weights.min().item():g}")
        return weights.clamp(max=1.0)

    # --- helpers ----------------------------------------------------------------------------

    def _current(self, task: NoisyTask | None) -> NoisyTask:
        if task is not None:
            return task
        if self._task is None:
            raise gym.error.ResetNeeded("no current task: call reset() first or pass a task")
        return self._task

    def _predict(self, params: models.Params, inputs: torch.Tensor) -> torch.Tensor:
        """The learner's outputs ``(1, n, out)`` for one task's inputs ``(1, n, ...)``."""
        batched = {name: value.unsqueeze(0) for name, value in params.items()}
        return models.conv4(batched, inputs) if self.task == "omniglot" else models.mlp(batched, inputs)

    def _losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-example losses ``(1, n)``: cross-entropy, or squared error."""
        if self.task == "omniglot":
            return F.cross_entropy(outputs[0], targets[0], reduction="none")[None]
        return (outputs - targets).square().squeeze(-1)
