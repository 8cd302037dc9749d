"""What every metabench environment shares: action checking, seeding and the batched vector env.

The environment files themselves (``omniglot.py``, ``sinusoid.py``) define the spaces, the
observation and the reward; :class:`FewShotVectorEnv` runs any of them as one meta-batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from metabench.episodes import Episodes

MAX_QUERY_LOSS = 1e9
"""The largest per-query loss an env reports: a loss above it (e.g. cross-entropy of logits 1e10 apart, or the
squared error of a prediction 1e5 off) is scored as this value, so that every finite action gets a finite reward.
No sensible action comes near it: it changes no other score."""

FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'X'?)`` for the choice closest to a mistyped ``name``, or ``""`` if none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_positive_int(what: str, value: Any) -> int:
    """``value`` as an int if it is a whole number >= 1 (an int, or a numpy integer), else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def check_seed(seed: Any) -> int | None:
    """A reset's ``seed``: None or a non-negative int (``True`` or ``1.5`` are refused with a ``ValueError``)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0):
        raise ValueError(f"seed must be None or a non-negative integer, got {seed!r}")
    return None if seed is None else int(seed)


TASK_SHAPE = ("n_way", "k_shot", "n_query")
"""The few-shot task's size arguments, each a positive integer."""

DEVICE_TYPES = ("cpu", "cuda")
"""The device types metabench's envs, learners and harness run on."""


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, refusing one this machine cannot use with a clear ``ValueError``.

    Only ``"cpu"`` and ``"cuda"`` (``"cuda:1"``, ...) are accepted (``"mps"`` or ``"meta"`` are refused: not
    every operation metabench uses runs there). ``"cuda"`` without a usable CUDA device (a CPU-only torch build,
    no visible GPU, or an index beyond the GPUs present) is refused here rather than deep inside torch.
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda' ({error})") from None
    if resolved.type not in DEVICE_TYPES:
        raise ValueError(f"device {str(device)!r} is not supported: use 'cpu' or 'cuda'")
    if resolved.type == "cuda":
        if torch.version.cuda is None:
            raise ValueError(
                f"device {str(device)!r}: CUDA is not available in this torch build (torch {torch.__version__} is "
                "CPU-only); use device 'cpu', or install a CUDA build of torch (see the README's torch section)"
            )
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r}: CUDA is not available (torch {torch.__version__}, built for CUDA "
                f"{torch.version.cuda}, sees no GPU: check the driver and CUDA_VISIBLE_DEVICES); use device 'cpu'"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {str(device)!r}: there is no CUDA device {resolved.index} ({count} visible)")
    return resolved


def device_name(device: str | torch.device) -> str:
    """Human-readable name of the hardware behind ``device``: the GPU model, or the CPU model and core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores"


def as_action_tensor(action: Any, shape: tuple[int, ...], device: torch.device, what: str) -> torch.Tensor:
    """Check an action and return it as a float32 tensor on ``device``.

    Accepts numpy arrays, torch tensors and nested lists of real numbers. Raises ``ValueError``
    naming the expected shape on a wrong shape, a non-numeric dtype or a NaN/inf entry. Finite
    entries beyond float32's range (float64 up to 1.8e308) become float32's largest value of their sign.
    """
    if isinstance(action, torch.Tensor):
        tensor = action.detach()
        if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_meta:
            kind = "quantized" if tensor.is_quantized else "meta" if tensor.is_meta else str(tensor.layout)
            raise ValueError(f"expected {what}: a dense tensor of real numbers of shape {shape}, got a {kind} tensor")
        if tensor.dtype.is_floating_point and tensor.dtype.itemsize == 1:  # float8: no arithmetic of its own
            tensor = tensor.float()
    else:
        array = np.asarray(action)
        if array.dtype.kind not in "iuf":
            raise ValueError(f"expected {what}: real numbers of shape {shape}, got dtype {array.dtype}")
        if array.dtype.kind == "f" and array.dtype.itemsize > 8:  # longdouble: torch has no such type
            array = array.astype(np.float64)
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("=")))
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"expected {what}: real numbers of shape {shape}, got dtype {tensor.dtype}")
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"expected {what} of shape {shape}, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{what} contains NaN or inf; every entry must be finite")
    if tensor.dtype == torch.float64:  # keep finite values finite through the float32 cast
        tensor = tensor.clamp(-FLOAT32_MAX, FLOAT32_MAX)
    return tensor.to(device=device, dtype=torch.float32)


def task_generator(
    seed: int | None, np_random: np.random.Generator, current: torch.Generator | None
) -> torch.Generator:
    """The CPU generator an env draws its tasks from after ``reset(seed=seed)``.

    A seed gives a fresh generator seeded with it; without one, the first reset seeds it from
    gymnasium's ``np_random`` and later resets continue the current stream.
    """
    seed = check_seed(seed)
    if seed is not None:
        return torch.Generator().manual_seed(seed)
    if current is None:
        return torch.Generator().manual_seed(int(np_random.integers(2**63 - 1)))
    return current


class TaskEnv(gym.Env):
    """Base of the one-task-per-episode environments: a seeded torch generator and episode state.

    Subclasses set ``sampler``, the spaces, and implement ``observe`` (batched observation of
    :class:`Episodes`) and ``evaluate`` (batched per-query losses and the ``info`` entries); their
    ``reset`` and ``step`` use :meth:`_new_task` and :meth:`_score`.
    """

    sampler: Any
    device: torch.device
    action_description: ClassVar[str] = "action"

    def __init__(self) -> None:
        self._generator: torch.Generator | None = None
        self._episode: Episodes | None = None
        self._observation: dict[str, np.ndarray] | None = None

    def _new_task(self, seed: int | None) -> dict[str, np.ndarray]:
        """Sample the episode's task (see :func:`task_generator` for seeding) and return its observation."""
        self._generator = task_generator(seed, self.np_random, self._generator)
        self._episode = self.sampler.sample(1, self._generator)
        self._observation = {key: value[0] for key, value in self.observe(self._episode).items()}
        return self._observation

    def _score(self, action: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """Check the action and score it on the task: per-query losses and the ``info`` dict; ends the task."""
        if self._episode is None:
            raise gym.error.ResetNeeded(
                "step() needs a task: call reset() first (every episode is one task and ends after one step)"
            )
        action = as_action_tensor(action, self.action_space.shape, self.device, self.action_description)
        losses, info = self.evaluate(action[None], self._episode)
        self._episode = None
        return losses[0], {key: value[0] for key, value in info.items()}

    def _final_observation(self) -> dict[str, np.ndarray]:
        """The finished task's observation again, as new arrays (the caller may keep the old ones)."""
        return {key: value.copy() for key, value in self._observation.items()}

    def observe(self, episodes: Episodes) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def evaluate(self, action: torch.Tensor, episodes: Episodes) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        raise NotImplementedError


class FewShotVectorEnv(VectorEnv):
    """``num_envs`` tasks of a :class:`TaskEnv` sampled, observed and scored as one batch.

    Every episode lasts one step, so the env uses gymnasium's ``SAME_STEP`` autoreset: ``step``
    scores the current meta-batch and returns the observation of a freshly sampled one, with the
    finished tasks' observation in ``info["final_obs"]`` and their statistics (accuracy, per-query
    losses, true query targets) in ``info["final_info"]``.

    Task ``i`` of the batch is drawn from its own generator, seeded ``seed + i`` by ``reset(seed=seed)``, as
    gymnasium's ``SyncVectorEnv`` and ``AsyncVectorEnv`` seed their sub-envs: the native, ``"sync"`` and
    ``"async"`` vector modes of ``gym.make_vec`` give the same tasks (with ``SAME_STEP`` autoreset, step by
    step), and sub-env 0 the tasks of ``gym.make(...).reset(seed=seed)``.
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP}
    single_env_class: ClassVar[type[TaskEnv]]

    def __init__(self, num_envs: int = 1, **kwargs: Any) -> None:
        num_envs = check_positive_int("num_envs", num_envs)
        self.env = self.single_env_class(**kwargs)
        self.num_envs = num_envs
        self.single_observation_space = self.env.observation_space
        self.single_action_space = self.env.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.metadata = {**self.env.metadata, **self.metadata}
        self._generators: list[torch.Generator] | None = None
        self._episodes: Episodes | None = None
        self._observation: dict[str, np.ndarray] | None = None

    def _sample(self) -> Episodes:
        """One task from each sub-env's generator, as one batch."""
        tasks = [self.env.sampler.sample(1, generator) for generator in self._generators]
        return Episodes(*(torch.cat([getattr(task, f.name) for task in tasks]) for f in dataclasses.fields(Episodes)))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Sample a new meta-batch of ``num_envs`` tasks, task ``i`` from the generator seeded ``seed + i``."""
        super().reset(seed=seed)
        seed = check_seed(seed)
        if seed is not None or self._generators is None:
            self._generators = [
                task_generator(None if seed is None else seed + i, self.np_random, None) for i in range(self.num_envs)
            ]
        self._episodes = self._sample()
        self._observation = self.env.observe(self._episodes)
        return self._observation, {}

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Score every task of the meta-batch (reward = minus its mean query loss), then resample."""
        if self._episodes is None:
            raise gym.error.ResetNeeded("step() needs tasks: call reset() first")
        actions = as_action_tensor(
            actions, self.action_space.shape, self.env.device, f"batched {self.env.action_description}"
        )
        losses, final_info = self.env.evaluate(actions, self._episodes)
        rewards = -losses.mean(dim=1).double().cpu().numpy()
        done = np.ones(self.num_envs, dtype=bool)
        info = {"final_obs": self._observation, "_final_obs": done, "final_info": final_info, "_final_info": done}

        self._episodes = self._sample()
        self._observation = self.env.observe(self._episodes)
        return self._observation, rewards, done, np.zeros(self.num_envs, dtype=bool), info
