"""MetaOptimizer: the update rule is the agent (learning to learn by gradient descent, Andrychowicz et al. 2016).

One episode is one task, drawn by the same sampler as MetaOmniglot / MetaSinusoid (the same seed
gives the same task). The environment holds a learner, the Conv-4 (max-pool, batch norm with batch
statistics) for Omniglot or the 1-40-40-1 ReLU MLP for the sinusoid, which starts every episode
from the same initialisation: ``models.conv4_init`` / ``models.mlp_init`` drawn from a CPU generator
seeded with ``init_seed`` (default :data:`INIT_SEED` = 0), or a given ``init`` (e.g. weights learned
by MAML). The agent is the optimizer: ``steps`` times (T, default :data:`DEFAULT_STEPS` = 10) it sees
training statistics and picks one log10 learning rate per layer, and the env applies one plain SGD
step on the support loss, ``p <- p - 10**action[layer] * dL_support/dp`` for every parameter ``p`` of
the layer (exactly ``inner_loop.adapt(params, support_loss, 1, env.learning_rates(action))``).

Layers: ``conv0``..``conv3`` (convolution and its batch-norm scale and shift) and ``head`` for the
Conv-4; ``fc0``..``fc2`` for the MLP.

Observation: a float32 vector, named entry by entry in ``observation_names``, for L layers:
``[support_loss, log10_grad_norm/<layer> x L, log10_param_norm/<layer> x L, step_fraction,
previous_log10_lr/<layer> x L]``: the support loss of the current parameters, the L2 norms of each
layer's support gradient and parameters, ``t / T`` (updates done so far) and the previous action
(zeros before the first update). Values are clipped to the declared bounds (norms to
:data:`LOG10_NORM_BOUNDS`, the loss to ``[0, divergence_penalty]``). It never holds query inputs,
labels or losses.

Action: L log10 learning rates in :data:`LOG10_LR_BOUNDS` = [-5, 1]; finite actions outside are
clipped into the bounds, a wrong shape or NaN/inf raises ``ValueError``. With ``unit_actions=True``
(e.g. ``gym.make("MetaOptimizer-Sinusoid-v0", unit_actions=True)``) the action space is [-1, 1] instead,
mapped affinely onto the same range (``log10 lr = -2 + 3 a``), so that the zero-mean, unit-scale Gaussian
policies of off-the-shelf RL agents (CleanRL's or SB3's PPO, A2C) start at a learning rate of 0.01 rather
than 1 to 10, where every episode diverges; rewards and observations (``previous_log10_lr`` included) are
the same as for the log10 action of the default space, and so is the protocol.

Reward: with ``L_t = min(query loss after t updates, divergence_penalty)`` (mean query cross-entropy
or squared error, as MetaOmniglot / MetaSinusoid score it), ``reward_mode="final"`` gives 0 for the
first T - 1 steps and ``-L_T`` at the last; ``"delta"`` gives ``L_{t-1} - L_t`` each step, whose sum
telescopes to ``L_0 - L_T``: the final reward plus the constant ``L_0`` of the task (the query loss
of the initialisation). The episode terminates after T updates; the last ``info`` then holds
``query_loss`` (``L_T``), ``diverged``, ``updates``, the base env's scores (``accuracy``,
``query_losses``, ``query_labels`` / ``query_targets``) and, in delta mode, ``initial_query_loss``
(``L_0``). For Omniglot it always holds ``accuracy``: 0.0 when the learner diverged (or its
predictions are not finite), like the loss the worst possible score. Intermediate ``info`` is empty.

Divergence: when after an update a parameter or gradient is not finite, or the support loss is
not finite or exceeds ``divergence_penalty``, the episode terminates with ``L_T =
divergence_penalty`` (so the reward is ``-divergence_penalty`` in final mode), never NaN. Default
penalty: 10 times the loss of a trivial predictor, ``10 ln(n_way)`` (uniform logits) for Omniglot
and ``10 * 12.5 = 125`` (predicting 0 on an amplitude-5 sinusoid, mean ``A^2 / 2``) for the
sinusoid. The clipping of ``L_t`` makes it the worst possible outcome, so diverging never pays.

Differentiable task: :meth:`MetaOptimizerEnv.task_functions` returns the current episode's (or a
given single task's) ``support_loss(params)`` and ``query_loss(params)`` as differentiable torch
functions (no clipping), and :meth:`MetaOptimizerEnv.initial_params` the initialisation, so an
optimizer can be meta-trained by back-propagating through unrolled inner loops
(``inner_loop.adapt``) on tasks drawn from ``env.sampler``, without stepping the env. They see the
query set: use them for meta-training on training tasks, not to act in an episode. For such
off-env unrolls the env also gives what the gym path computes: :meth:`MetaOptimizerEnv.observe`
(the observation of given parameters), :meth:`MetaOptimizerEnv.diverged` (the divergence rule) and
:meth:`MetaOptimizerEnv.score` (the final ``info``, hence the reward ``-score(...)["query_loss"]``).

Harness attributes: ``horizon`` (= ``steps``, the number of actions per episode) and ``tasks`` (the
current episode's :class:`~metabench.episodes.Episodes`, ``None`` before the first reset).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from metabench import data, models
from metabench.envs.common import as_action_tensor, task_generator
from metabench.envs.omniglot import MetaOmniglotEnv
from metabench.envs.sinusoid import MetaSinusoidEnv
from metabench.episodes import Episodes, SinusoidEpisodes
from metabench.inner_loop import adapt
from metabench.learners import task_losses

TASKS = ("omniglot", "sinusoid")
REWARD_MODES = ("final", "delta")
DEFAULT_STEPS = 10
INIT_SEED = 0
LOG10_LR_BOUNDS = (-5.0, 1.0)
LOG10_NORM_BOUNDS = (-40.0, 40.0)
#: Mean squared error of predicting 0 on the largest-amplitude sinusoid (A = 5): about A^2 / 2.
SINUSOID_TRIVIAL_LOSS = SinusoidEpisodes.amplitude[1] ** 2 / 2


class TaskFunctions(NamedTuple):
    """The current episode's task as differentiable functions of the learner's parameters.

    Each takes a dict of parameters named and shaped as :meth:`MetaOptimizerEnv.initial_params`
    (a leading task dimension of 1, as in :mod:`metabench.models`, is also accepted) and returns the
    scalar mean loss on the support or the query set.
    """

    support_loss: Callable[[models.Params], torch.Tensor]
    query_loss: Callable[[models.Params], torch.Tensor]


class MetaOptimizerEnv(gym.Env):
    """Train a learner on one task for ``steps`` updates whose per-layer learning rates are the actions.

    Args:
        task: ``"omniglot"`` (Conv-4 learner) or ``"sinusoid"`` (1-40-40-1 MLP learner).
        steps: updates per episode, T (default 10).
        reward_mode: ``"final"`` (minus the final query loss at the last step) or ``"delta"``
            (the decrease of the query loss at every step).
        init: the learner's initialisation, a dict of tensors with the names and shapes of
            :meth:`initial_params`; default: drawn from ``init_seed``.
        init_seed: seed of the default initialisation (default 0); the same for every episode.
        divergence_penalty: bound on the query loss and penalty of a diverged learner (default:
            ``10 ln(n_way)`` for Omniglot, 125 for the sinusoid).
        n_way, k_shot, n_query: task shape (defaults: Omniglot 5-way 1-shot 15 queries per class;
            sinusoid 10 support and 10 query points).
        downsample: Conv-4 down-sampling, ``"maxpool"`` (default) or ``"stride"`` (MAML's).
        split, scheme, root, preprocessing, manifest_sha256: Omniglot only, as for
            :class:`~metabench.envs.omniglot.MetaOmniglotEnv`.
        device: where the task and the learner live.
        unit_actions: actions in [-1, 1], mapped onto the log10 learning rates (see the module doc).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        task: str = "sinusoid",
        steps: int = DEFAULT_STEPS,
        reward_mode: str = "final",
        init: Mapping[str, Any] | None = None,
        init_seed: int = INIT_SEED,
        divergence_penalty: float | None = None,
        n_way: int = 5,
        k_shot: int | None = None,
        n_query: int | None = None,
        downsample: str = "maxpool",
        split: str = "train",
        scheme: str = "vinyals",
        device: str | torch.device = "cpu",
        root: str | None = None,
        preprocessing: str = data.PREPROCESSING,
        manifest_sha256: dict[str, dict[str, str]] | None = None,
        unit_actions: bool = False,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        self.task, self.steps, self.reward_mode, self.downsample = task, int(steps), reward_mode, downsample
        self.horizon = self.steps  # actions per episode, as the search harness calls it
        generator = torch.Generator().manual_seed(init_seed)
        k_shot_default, n_query_default = (1, 15) if task == "omniglot" else (10, 10)
        k_shot = k_shot_default if k_shot is None else k_shot
        n_query = n_query_default if n_query is None else n_query
        if task == "omniglot":
            self.task_env: MetaOmniglotEnv | MetaSinusoidEnv = MetaOmniglotEnv(
                n_way, k_shot, n_query, split, scheme, device, root, preprocessing, manifest_sha256
            )
            fresh = models.conv4_init(n_way, generator, downsample=downsample)
            learner = f"conv4-64-{downsample}-batchstats"
            default_penalty = 10 * math.log(n_way)
        else:
            self.task_env = MetaSinusoidEnv(k_shot, n_query, device)
            fresh = models.mlp_init(generator)
            learner = "mlp-1-40-40-1-relu"
            default_penalty = 10 * SINUSOID_TRIVIAL_LOSS
        self.divergence_penalty = float(default_penalty if divergence_penalty is None else divergence_penalty)
        if not (math.isfinite(self.divergence_penalty) and self.divergence_penalty > 0):
            raise ValueError(f"divergence_penalty must be finite and positive, got {divergence_penalty!r}")
        self.device = self.task_env.device
        self.sampler = self.task_env.sampler
        self._init = _checked_init(init, fresh, self.device)

        self.layers: dict[str, tuple[str, ...]] = {}
        for name in self._init:
            layer = name.split(".")[0].replace("norm", "conv")  # batch norm belongs to its convolution's layer
            self.layers[layer] = (*self.layers.get(layer, ()), name)
        layers = list(self.layers)
        self.observation_names = [
            "support_loss",
            *(f"log10_grad_norm/{layer}" for layer in layers),
            *(f"log10_param_norm/{layer}" for layer in layers),
            "step_fraction",
            *(f"previous_log10_lr/{layer}" for layer in layers),
        ]
        n = len(layers)
        lr_low, lr_high = LOG10_LR_BOUNDS
        norm_low, norm_high = LOG10_NORM_BOUNDS
        low = np.array([0.0, *[norm_low] * (2 * n), 0.0, *[lr_low] * n], np.float32)
        high = np.array([self.divergence_penalty, *[norm_high] * (2 * n), 1.0, *[lr_high] * n], np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.unit_actions = bool(unit_actions)
        action_bounds = (-1.0, 1.0) if self.unit_actions else LOG10_LR_BOUNDS
        self.action_space = spaces.Box(*action_bounds, (n,), np.float32)
        self.action_description = f"per-layer {'unit-scale' if self.unit_actions else 'log10'} learning rates"
        self.protocol = {
            **self.task_env.protocol,
            "learner": learner,
            "init": "given" if init is not None else f"seed {init_seed}",
            "steps": self.steps,
            "reward_mode": reward_mode,
            "log10_lr_bounds": list(LOG10_LR_BOUNDS),  # a list, as it reads back from JSON
            "divergence_penalty": self.divergence_penalty,
        }

        self._generator: torch.Generator | None = None
        self._episode: Episodes | None = None
        self._functions: TaskFunctions | None = None
        self._active = False

    # --- the learner and its task -----------------------------------------------------------

    def initial_params(self) -> models.Params:
        """A fresh copy of the initialisation (no task dimension), as leaf tensors requiring grad."""
        return {name: value.clone().requires_grad_() for name, value in self._init.items()}

    def learning_rates(self, log10_lrs: Any) -> models.Params:
        """Per-parameter step sizes ``10**log10_lrs[layer]`` for ``inner_loop.adapt`` (differentiable, unclipped)."""
        rates = torch.pow(10.0, torch.as_tensor(log10_lrs, dtype=torch.float32, device=self.device))
        return {name: rates[i] for i, names in enumerate(self.layers.values()) for name in names}

    def log10_lrs(self, action: torch.Tensor) -> torch.Tensor:
        """The log10 learning rates an action stands for, clipped into :data:`LOG10_LR_BOUNDS` (with
        ``unit_actions``: the action clipped into [-1, 1], then mapped affinely onto the bounds)."""
        low, high = LOG10_LR_BOUNDS
        if self.unit_actions:
            return (low + high) / 2 + action.clamp(-1.0, 1.0) * (high - low) / 2
        return action.clamp(low, high)

    @property
    def tasks(self) -> Episodes | None:
        """The current episode's task (a batch of one), ``None`` before the first reset."""
        return self._episode

    def task_functions(self, episodes: Episodes | None = None) -> TaskFunctions:
        """Support and query losses of ``episodes`` (one task, e.g. ``sampler.sample(1, generator)``; default:
        the current episode's) as differentiable functions (see :class:`TaskFunctions`)."""
        episode, task = self._task(episodes), self.task_env.protocol

        def support_loss(params: models.Params) -> torch.Tensor:
            return task_losses(task, self._predict(params, episode.support_inputs), episode.support_targets)[0]

        def query_loss(params: models.Params) -> torch.Tensor:
            return task_losses(task, self._predict(params, episode.query_inputs), episode.query_targets)[0]

        return TaskFunctions(support_loss, query_loss)

    def observe(
        self, params: models.Params, t: int, previous_log10_lrs: Any, episodes: Episodes | None = None
    ) -> np.ndarray:
        """The observation the env gives for a learner at ``params`` after ``t`` updates, the last with
        ``previous_log10_lrs`` (zeros before the first), on ``episodes`` (default: the current task)."""
        if not 0 <= t <= self.steps:
            raise ValueError(f"t must be in [0, {self.steps}], got {t}")
        previous = torch.as_tensor(previous_log10_lrs, dtype=torch.float32, device=self.device).detach()
        if previous.shape != (len(self.layers),):
            raise ValueError(f"previous_log10_lrs must have shape ({len(self.layers)},), got {tuple(previous.shape)}")
        params = {name: value.detach().requires_grad_() for name, value in params.items()}
        loss, grads = self._support_loss_and_grads(params, self.task_functions(episodes))
        return self._observation_of(params, loss, grads, t, previous)

    def diverged(self, params: models.Params, episodes: Episodes | None = None) -> bool:
        """The env's divergence rule for a learner at ``params`` on ``episodes`` (default: the current task)."""
        params = {name: value.detach().requires_grad_() for name, value in params.items()}
        loss, grads = self._support_loss_and_grads(params, self.task_functions(episodes))
        return self._is_diverged(params, loss, grads)

    def score(
        self, params: models.Params, *, diverged: bool = False, episodes: Episodes | None = None
    ) -> dict[str, Any]:
        """The final ``info`` of an episode ending at ``params`` (``diverged``: it ended by divergence).

        ``query_loss`` is ``L_T``: the query loss clipped to the penalty, the penalty if diverged.
        """
        episode = self._task(episodes)
        info: dict[str, Any] = {"query_loss": self.divergence_penalty, "diverged": diverged}
        if not diverged:
            with torch.no_grad():  # one forward pass of the query set gives the loss and the scores
                predictions = self._predict(params, episode.query_inputs)
                loss = float(task_losses(self.task_env.protocol, predictions, episode.query_targets)[0])
            if math.isfinite(loss):
                info["query_loss"] = min(loss, self.divergence_penalty)
            if bool(torch.isfinite(predictions).all()):
                scores = self.task_env.evaluate(predictions, episode)[1]
                info.update({key: value[0] for key, value in scores.items()})
        if self.task == "omniglot":
            info.setdefault("accuracy", 0.0)  # diverged or non-finite predictions: the worst score
        return info

    def _task(self, episodes: Episodes | None) -> Episodes:
        """``episodes`` checked to be one task, or the current episode's."""
        if episodes is None:
            if self._episode is None:
                raise gym.error.ResetNeeded("no current task: call reset() first or pass episodes")
            return self._episode
        if not isinstance(episodes, Episodes) or len(episodes) != 1:
            raise ValueError("episodes must be an Episodes batch of exactly one task, e.g. episodes[i]")
        return episodes

    def _predict(self, params: models.Params, inputs: torch.Tensor) -> torch.Tensor:
        """The learner's outputs ``(1, n, out)`` for one task's inputs ``(1, n, ...)``."""
        batched = {
            name: value if value.dim() > self._init[name].dim() else value.unsqueeze(0)
            for name, value in params.items()
        }
        if self.task == "omniglot":
            return models.conv4(batched, inputs, self.downsample)
        return models.mlp(batched, inputs)

    # --- the gym interface ------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Sample a new task and restart the learner from the initialisation."""
        super().reset(seed=seed)
        self._generator = task_generator(seed, self.np_random, self._generator)
        self._episode = self.sampler.sample(1, self._generator)
        self._functions = self.task_functions()
        self._params = self.initial_params()
        self._t = 0
        self._previous_action = torch.zeros(len(self.layers), device=self.device)
        self._support_loss, self._grads = self._support_loss_and_grads(self._params, self._functions)
        self._query_loss = self._initial_query_loss = (
            self._clipped_query_loss(self._params, self._functions) if self.reward_mode == "delta" else math.nan
        )
        self._active = True
        return self._observation(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply one SGD step with per-layer learning rates ``10**action``; see the module doc for the reward."""
        if not self._active:
            raise gym.error.ResetNeeded("step() needs a running episode: call reset() first")
        action = self.log10_lrs(as_action_tensor(action, self.action_space.shape, self.device, self.action_description))
        with torch.enable_grad():  # the shared inner loop (it recomputes the support gradient: one small pass)
            params = adapt(self._params, self._functions.support_loss, 1, self.learning_rates(action), first_order=True)
        self._params = {name: value.detach().requires_grad_() for name, value in params.items()}
        self._t += 1
        self._previous_action = action
        self._support_loss, self._grads = self._support_loss_and_grads(self._params, self._functions)

        diverged = self._is_diverged(self._params, self._support_loss, self._grads)
        terminated = diverged or self._t == self.steps
        previous_loss = self._query_loss
        info: dict[str, Any] = {}
        if terminated:
            info = {**self.score(self._params, diverged=diverged), "updates": self._t}
            self._query_loss = info["query_loss"]
            if self.reward_mode == "delta":
                info["initial_query_loss"] = self._initial_query_loss
        elif self.reward_mode == "delta":
            self._query_loss = self._clipped_query_loss(self._params, self._functions)

        if self.reward_mode == "delta":
            reward = previous_loss - self._query_loss
        else:
            reward = -self._query_loss if terminated else 0.0
        self._active = not terminated
        return self._observation(), float(reward), terminated, False, info

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _support_loss_and_grads(
        params: models.Params, functions: TaskFunctions
    ) -> tuple[float, tuple[torch.Tensor, ...]]:
        with torch.enable_grad():
            loss = functions.support_loss(params)
            grads = torch.autograd.grad(loss, list(params.values()))
        return float(loss.detach()), grads

    def _is_diverged(self, params: models.Params, support_loss: float, grads: tuple[torch.Tensor, ...]) -> bool:
        finite = all(bool(torch.isfinite(t).all()) for t in (*params.values(), *grads))
        return not (finite and math.isfinite(support_loss) and support_loss <= self.divergence_penalty)

    def _clipped_query_loss(self, params: models.Params, functions: TaskFunctions) -> float:
        """``min(query loss, divergence_penalty)``, the penalty also for a non-finite loss."""
        with torch.no_grad():
            loss = float(functions.query_loss(params))
        return min(loss, self.divergence_penalty) if math.isfinite(loss) else self.divergence_penalty

    def _observation(self) -> np.ndarray:
        return self._observation_of(self._params, self._support_loss, self._grads, self._t, self._previous_action)

    def _observation_of(
        self,
        params: models.Params,
        support_loss: float,
        grads: tuple[torch.Tensor, ...],
        t: int,
        previous_action: torch.Tensor,
    ) -> np.ndarray:
        grads = dict(zip(params, grads, strict=True))

        def log10_norms(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
            norms = [
                torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(tensors[n].double()) for n in names]))
                for names in self.layers.values()
            ]
            return torch.stack(norms).log10()

        values = torch.cat(
            [
                torch.tensor([support_loss], dtype=torch.float64),
                log10_norms(grads).cpu(),
                log10_norms(params).detach().cpu(),
                torch.tensor([t / self.steps], dtype=torch.float64),
                previous_action.double().cpu(),
            ]
        )
        space = self.observation_space
        observation = np.nan_to_num(values.numpy(), nan=np.inf)  # NaN: as bad as can be, then clipped
        return np.clip(observation, space.low.astype(np.float64), space.high.astype(np.float64)).astype(np.float32)


def _checked_init(init: Mapping[str, Any] | None, fresh: models.Params, device: torch.device) -> models.Params:
    """The initialisation as float32 tensors on ``device``: ``fresh``, or ``init`` checked against its shapes."""
    if init is None:
        return {name: value.to(device) for name, value in fresh.items()}
    missing, unexpected = sorted(set(fresh) - set(init)), sorted(set(init) - set(fresh))
    if missing or unexpected:
        raise ValueError(
            f"init must have the learner's parameters {list(fresh)}; missing {missing}, unexpected {unexpected}"
        )
    params = {}
    for name, expected in fresh.items():
        value = torch.as_tensor(init[name]).detach()
        if tuple(value.shape) != tuple(expected.shape):
            raise ValueError(
                f"init[{name!r}] has shape {tuple(value.shape)}, the learner needs {tuple(expected.shape)} "
                "(no task dimension; for the Conv-4, check n_way and downsample)"
            )
        if not torch.isfinite(value).all():
            raise ValueError(f"init[{name!r}] contains NaN or inf")
        params[name] = value.to(device=device, dtype=torch.float32).clone()
    return params
