"""MetaSinusoid: the MAML paper's K-shot sinusoid regression, one task per episode. Needs no data.

A task is ``y = A sin(x - phase)`` with ``A ~ U[0.1, 5]``, ``phase ~ U[0, pi]``, ``x ~ U[-5, 5]``.
``reset`` hands the agent K support points and the query inputs; ``step`` takes its predictions
for the query inputs.

Reward: minus the mean squared error of the predictions on the query targets (the query loss).
The action space declares predictions in ``[-5, 5]``, the range of every target; any finite
prediction is accepted and scored as given (as float32), with one guard that keeps every reward
finite: a query's squared error is capped at :data:`~metabench.envs.common.MAX_QUERY_LOSS` (1e9,
reached only by a prediction about 3e4 off), so even a prediction of 1e19 or 3.4e38 gets a finite
reward; no other score changes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces

from metabench.envs.common import MAX_QUERY_LOSS, FewShotVectorEnv, TaskEnv, check_positive_int, resolve_device
from metabench.episodes import Episodes, SinusoidEpisodes


class MetaSinusoidEnv(TaskEnv):
    """One sinusoid regression task per episode; reward = minus the query MSE.

    Args:
        k_shot: support points per task.
        n_query: query points per task (default 10).
        device: where tasks are assembled (``"cpu"`` or ``"cuda"``; ``"cuda"`` without a usable GPU raises
            ``ValueError``).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    action_description = "query predictions"

    def __init__(self, k_shot: int = 5, n_query: int = 10, device: str | torch.device = "cpu") -> None:
        super().__init__()
        k_shot, n_query = check_positive_int("k_shot", k_shot), check_positive_int("n_query", n_query)
        self.device = resolve_device(device)
        self.sampler = SinusoidEpisodes(k_shot, n_query, self.device)
        self.protocol = {"dataset": "sinusoid", "k_shot": k_shot, "n_query": n_query}

        x_low, x_high = SinusoidEpisodes.x_range
        y_max = SinusoidEpisodes.amplitude[1]
        self.observation_space = spaces.Dict(
            {
                "support_x": spaces.Box(x_low, x_high, (k_shot, 1), np.float32),
                "support_y": spaces.Box(-y_max, y_max, (k_shot, 1), np.float32),
                "query_x": spaces.Box(x_low, x_high, (n_query, 1), np.float32),
            }
        )
        self.action_space = spaces.Box(-y_max, y_max, (n_query, 1), np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Sample a new task; the query targets stay hidden until ``step``."""
        super().reset(seed=seed)
        return self._new_task(seed), {}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Score the query predictions ``(n_query, 1)``; the episode terminates."""
        losses, info = self._score(action)  # per-query squared error (see ``evaluate``)
        reward = -float(losses.mean())
        return self._final_observation(), reward, True, False, info

    def observe(self, episodes: Episodes) -> dict[str, np.ndarray]:
        """Batched observation: support points and query inputs (no query targets)."""
        return {
            "support_x": episodes.support_inputs.cpu().numpy(),
            "support_y": episodes.support_targets.cpu().numpy(),
            "query_x": episodes.query_inputs.cpu().numpy(),
        }

    def evaluate(self, predictions: torch.Tensor, episodes: Episodes) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """Per-query squared error ``(B, n_query)`` (each capped at ``MAX_QUERY_LOSS``) and the ``info`` entries."""
        losses = (predictions - episodes.query_targets).square().squeeze(-1).clamp(max=MAX_QUERY_LOSS)
        info = {"query_losses": losses.cpu().numpy(), "query_targets": episodes.query_targets.cpu().numpy()}
        return losses, info


class MetaSinusoidVectorEnv(FewShotVectorEnv):
    """``num_envs`` sinusoid tasks per step, sampled as one batch."""

    single_env_class = MetaSinusoidEnv
