"""A learned optimizer for the MetaOptimizer envs: a coordinate-wise LSTM that sets per-layer learning rates.

M. Andrychowicz, M. Denil, S. Gomez, M. W. Hoffman, D. Pfau, T. Schaul, B. Shillingford, N. de
Freitas. Learning to learn by gradient descent by gradient descent. NeurIPS 2016.

As in the paper, one small two-layer LSTM (20 hidden units) is shared by all coordinates and
meta-trained by back-propagating the loss of the optimizee through the unrolled optimization,
dropping the second derivatives of the optimizee (``second_order=False``: the support gradients
are constants of the meta-gradient), with truncated back-propagation through time.

Deviation from the paper (forced by the env's action space, which every method acts through so that
all are scored by the same gym path at equal T): the coordinates are the learner's *layers*, not its
parameters, and the LSTM outputs a log10 learning rate of plain SGD for its layer, not an update.
Each layer's input is read from the env's observation: ``log10`` support loss, the layer's ``log10``
gradient and parameter norms, ``t / T`` and the layer's previous log10 learning rate. The output
layer starts at zero weight and bias ``initial_log10_lr`` (default -2: the common 0.01), so the
untrained optimizer is plain SGD with that step size.

Meta-training (:meth:`UnrolledOptimizer.train_step`): for each training task of the meta-batch, the
learner starts from the env's initialisation and takes the env's update,
``inner_loop.adapt(params, support_loss, 1, env.learning_rates(log10_lrs))`` with the actions clipped
to the env's bounds, on the env's differentiable task functions. Every ``truncation`` steps (the BPTT
window; default 10 = T, i.e. the whole episode is one window on the registered envs) the meta-loss,
the mean query loss at the window's end over the meta-batch, is back-propagated, Adam takes a step,
and the learner's parameters and the LSTM state are detached. A task whose loss is not finite or
exceeds the env's divergence penalty is dropped from the meta-gradient (counted in ``diverged``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from metabench import models
from metabench.envs import make_env
from metabench.envs.optimizer import LOG10_LR_BOUNDS, MetaOptimizerEnv
from metabench.episodes import Episodes
from metabench.inner_loop import adapt
from metabench.learners import Learner

FEATURES = ("log10_support_loss", "log10_grad_norm", "log10_param_norm", "step_fraction", "previous_log10_lr")


class UnrolledOptimizer(Learner):
    """Base of optimizers that act through a MetaOptimizer env's per-layer log10 learning rates.

    A subclass builds ``self.net`` (the meta-learned module) in :meth:`build` and maps one step's
    observation to the layers' log10 learning rates in :meth:`log10_lrs`; this class meta-trains it
    by truncated back-propagation through the unrolled inner loop and plays it in the gym loop.
    The learner's task needs ``env_id`` (given by the harness): the env supplies the
    initialisation, the layers, the update and the differentiable task.
    """

    # The agent sets learning rates and never sees the query set; that the env's Conv-4 normalises the
    # query set with its batch statistics is part of the env's protocol, the same for every agent.
    transductive: ClassVar[bool] = False
    #: whether :meth:`log10_lrs` reads the observation (meta-training skips computing it otherwise)
    needs_observation: ClassVar[bool] = True

    @dataclasses.dataclass
    class Config:
        meta_batch: int = 16
        outer_lr: float = 0.01
        initial_log10_lr: float = -2.0
        truncation: int = 10
        """BPTT window in inner steps (one Adam step per window); T = 10 on the registered envs."""
        second_order: bool = False
        """Keep the second derivatives of the learner's loss (Andrychowicz et al. drop them)."""

    def __init__(self, config: Any, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0) -> None:
        super().__init__(config, task, device, seed)
        if "env_id" not in task:
            raise ValueError(f"{type(self).__name__} needs task['env_id'] (a MetaOptimizer env id)")
        env = make_env(task["env_id"], split="train", device=device)
        if not isinstance(env, MetaOptimizerEnv):
            raise ValueError(f"{type(self).__name__} acts in MetaOptimizer envs, not {task['env_id']}")
        if config.meta_batch < 1 or config.truncation < 1:
            raise ValueError("meta_batch and truncation must be positive")
        self.env: MetaOptimizerEnv = env
        self.n_layers, self.steps = len(env.layers), env.steps
        names = env.observation_names
        self._index = {name: names.index(name) for name in ("support_loss", "step_fraction")}
        self._layer_index = {
            kind: [names.index(f"{kind}/{layer}") for layer in env.layers]
            for kind in ("log10_grad_norm", "log10_param_norm", "previous_log10_lr")
        }
        with models.seeded(seed):
            self.net = self.build().to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.outer_lr)
        self._state: Any = None

    def build(self) -> nn.Module:
        """The meta-learned module (built under the learner's seed)."""
        raise NotImplementedError

    def log10_lrs(self, t: int, features: torch.Tensor | None, state: Any) -> tuple[torch.Tensor, Any]:
        """The layers' log10 learning rates ``(L,)`` for update ``t`` and the recurrent state to carry on.

        ``features`` (``(L, len(FEATURES))``, see :meth:`features`) is ``None`` when
        ``needs_observation`` is false; ``state`` is ``None`` at the start of an episode.
        """
        raise NotImplementedError

    def features(self, observation: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Per-layer inputs ``(L, 5)`` (see :data:`FEATURES`) from one env observation."""
        obs = torch.as_tensor(observation, dtype=torch.float32, device=self.device)
        shared = torch.stack(
            [torch.log10(obs[self._index["support_loss"]] + 1e-6), obs[self._index["step_fraction"]]]
        ).expand(self.n_layers, 2)
        per_layer = {kind: obs[index] for kind, index in self._layer_index.items()}
        return torch.stack(
            [
                shared[:, 0],
                per_layer["log10_grad_norm"],
                per_layer["log10_param_norm"],
                shared[:, 1],
                per_layer["previous_log10_lr"],
            ],
            dim=1,
        )

    # --- the gym contract ---------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the recurrent state: a new episode (task) starts."""
        self._state = None

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The layers' log10 learning rates for this step of the episode, within the env's bounds."""
        obs = torch.as_tensor(observation, dtype=torch.float32, device=self.device)
        t = round(float(obs[self._index["step_fraction"]]) * self.steps)
        with torch.no_grad():
            features = self.features(obs) if self.needs_observation else None
            log10_lrs, self._state = self.log10_lrs(t, features, self._state)
        return log10_lrs.detach().clamp(*LOG10_LR_BOUNDS).float().cpu().numpy()

    # --- meta-training ------------------------------------------------------------------------

    def train_step(self, episodes: Episodes) -> dict[str, float]:
        """One meta-iteration: unroll T steps on each task, one Adam step per BPTT window."""
        env, tasks = self.env, len(episodes)
        functions = [env.task_functions(episodes[i]) for i in range(tasks)]
        params = [env.initial_params() for _ in range(tasks)]
        states: list[Any] = [None] * tasks
        previous = [torch.zeros(self.n_layers, device=self.device) for _ in range(tasks)]
        alive = [True] * tasks
        window_losses: list[float] = []
        for start in range(0, self.steps, self.config.truncation):
            stop = min(start + self.config.truncation, self.steps)
            self.optimizer.zero_grad()
            losses = []
            for i in range(tasks):
                if not alive[i]:
                    continue
                for t in range(start, stop):
                    features = None
                    if self.needs_observation:
                        features = self.features(env.observe(params[i], t, previous[i], episodes[i]))
                    log10_lrs, states[i] = self.log10_lrs(t, features, states[i])
                    log10_lrs = log10_lrs.clamp(*LOG10_LR_BOUNDS)
                    params[i] = adapt(
                        params[i],
                        functions[i].support_loss,
                        1,
                        env.learning_rates(log10_lrs),
                        first_order=not self.config.second_order,
                    )
                    previous[i] = log10_lrs.detach()
                loss = functions[i].query_loss(params[i])
                if not (math.isfinite(loss.item()) and loss.item() <= env.divergence_penalty):
                    alive[i] = False  # diverged: no meta-gradient from it, and it stops here
                    continue
                (loss / tasks).backward()
                losses.append(loss.item())
                params[i] = {name: value.detach().requires_grad_() for name, value in params[i].items()}
                states[i] = _detached(states[i])
            nn.utils.clip_grad_norm_(self.net.parameters(), 10.0)
            self.optimizer.step()
            window_losses.append(sum(losses) / max(len(losses), 1))
        return {"loss": window_losses[-1], "diverged": 1.0 - sum(alive) / tasks}

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])


def _detached(state: Any) -> Any:
    """A recurrent state (tensors, possibly nested in tuples/lists) cut from the graph."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple | list):
        return type(state)(_detached(item) for item in state)
    return state


class CoordinatewiseLSTM(nn.Module):
    """A stacked LSTM applied to every coordinate (row) independently, with a linear read-out."""

    def __init__(self, inputs: int, hidden: int, layers: int, output_bias: float) -> None:
        super().__init__()
        self.cells = nn.ModuleList(nn.LSTMCell(inputs if i == 0 else hidden, hidden) for i in range(layers))
        self.readout = nn.Linear(hidden, 1)
        nn.init.zeros_(self.readout.weight)
        nn.init.constant_(self.readout.bias, output_bias)

    def forward(
        self, x: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]] | None
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """``x (coordinates, inputs)`` -> ``(coordinates,)`` outputs and the new state (one per cell)."""
        new_state = []
        h = x
        for i, cell in enumerate(self.cells):
            h, c = cell(h, None if state is None else state[i])
            new_state.append((h, c))
        return self.readout(h).squeeze(-1), new_state


class LSTMOptimizer(UnrolledOptimizer):
    """The coordinate-wise (per-layer) LSTM optimizer; see the module docstring."""

    name = "lstm-optimizer"

    @dataclasses.dataclass
    class Config(UnrolledOptimizer.Config):
        outer_lr: float = 0.01
        hidden: int = 20
        lstm_layers: int = 2

    def build(self) -> nn.Module:
        config = self.config
        return CoordinatewiseLSTM(len(FEATURES), config.hidden, config.lstm_layers, config.initial_log10_lr)

    def log10_lrs(self, t: int, features: torch.Tensor | None, state: Any) -> tuple[torch.Tensor, Any]:
        return self.net(features, state)
