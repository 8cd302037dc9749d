"""The agent contract, and how to find an agent by name.

A :class:`Learner` is the learned part phi of an environment's learning algorithm. For the few-shot
envs (MetaOmniglot, MetaSinusoid) it is the whole learner F_phi: given a task's support set it
returns predictions for the query inputs (logits for classification, values for regression),
batched over tasks (:meth:`Learner.predict`). For the multi-step envs (MetaOptimizer, MetaAugment,
MetaNAS) it is a policy that acts step by step through :meth:`Learner.act`, with :meth:`Learner.reset`
at the start of each episode. The same object is trained by :mod:`metabench.training`, scored by
:mod:`metabench.evaluation`, and plugs into any metabench env through :meth:`Learner.act`.

Learners are found by name through the ``metabench.learners`` entry-point group (the reference
baselines register ``maml``, ``fomaml``, ``anil``, ``reptile``, ``protonet``, ``pretrain``), or by
an import path ``"package.module:ClassName"`` for your own.
"""

from __future__ import annotations

import dataclasses
import importlib
from importlib.metadata import entry_points
from typing import Any, ClassVar

import torch

from metabench.episodes import Episodes

ENTRY_POINT_GROUP = "metabench.learners"


class Learner:
    """Base class of agents: few-shot learners and step-by-step policies.

    Subclasses set ``name``, ``transductive`` (whether query predictions use statistics of the
    whole query set, e.g. batch norm over it) and ``Config`` (a dataclass of hyperparameters), and
    implement :meth:`state_dict` and :meth:`load_state_dict`; few-shot learners implement
    :meth:`predict`, policies :meth:`act` (and :meth:`reset` if they keep per-episode state), and
    learners trained by :func:`metabench.training.train` implement :meth:`train_step`.

    Args:
        config: hyperparameters (an instance of ``Config``).
        task: the environment id and its protocol, e.g. ``{"env_id": "MetaOmniglot-5w1s-v0",
            "dataset": "omniglot", "n_way": 5, "k_shot": 1, "n_query": 15, ...}``; an agent that
            needs its env builds it with ``metabench.evaluation.make_env(task["env_id"], ...)``.
        device: where parameters live.
        seed: seeds the parameter initialisation.
    """

    name: ClassVar[str]
    transductive: ClassVar[bool]
    progress: float = 0.0
    """Fraction of the planned training run done before the current step, set by the training harness
    (:func:`metabench.training.train`): what schedules that anneal over a run read."""

    @dataclasses.dataclass
    class Config:
        pass

    def __init__(self, config: Any, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0) -> None:
        self.config = config
        self.task = dict(task)
        self.device = torch.device(device)
        self.seed = seed

    @classmethod
    def defaults(cls, task: dict[str, Any]) -> dict[str, Any]:
        """Hyperparameters that differ from ``Config``'s defaults for this task (e.g. 20-way settings)."""
        return {}

    def train_env_kwargs(self) -> dict[str, Any]:
        """Env arguments for the training tasks when they differ from the evaluated ones (e.g. a higher way)."""
        return {}

    def predict(
        self, support_inputs: torch.Tensor, support_targets: torch.Tensor, query_inputs: torch.Tensor
    ) -> torch.Tensor:
        """Adapt to each task's support set and return its query predictions ``(T, n_query_total, out)``."""
        raise NotImplementedError

    def train_step(self, episodes: Episodes) -> dict[str, float]:
        """One meta-training iteration on a meta-batch of training tasks; returns metrics to log."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume training (tensors and plain Python values only)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """Called at the start of every episode; agents with per-episode state (e.g. an LSTM) clear it here."""

    def act(self, observation: Any) -> Any:
        """The gym contract; by default query predictions for one observation (or a vector env's batch of them)."""
        keys = ("support_images", "support_labels", "query_images")
        if "support_x" in observation:
            keys = ("support_x", "support_y", "query_x")
        tensors = [torch.as_tensor(observation[key], device=self.device) for key in keys]
        single = tensors[0].dim() == (2 if keys[0] == "support_x" else 4)
        if single:
            tensors = [tensor[None] for tensor in tensors]
        with torch.no_grad():
            predictions = self.predict(*tensors)
        return (predictions[0] if single else predictions).float().cpu().numpy()


def task_losses(task: dict[str, Any], predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean loss per task ``(T,)``: cross-entropy for classification, squared error for regression."""
    if task["dataset"] == "sinusoid":
        return (predictions - targets).square().mean(dim=(1, 2))
    losses = torch.nn.functional.cross_entropy(predictions.flatten(0, 1), targets.flatten(), reduction="none")
    return losses.view_as(targets).mean(dim=1)


def config_from_dict(learner_class: type[Learner], values: dict[str, Any]) -> Any:
    """Build a learner's ``Config`` from a plain dict (e.g. one stored in a checkpoint)."""
    known = {field.name for field in dataclasses.fields(learner_class.Config)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {learner_class.name} hyperparameters: {sorted(unknown)}; known: {sorted(known)}")
    return learner_class.Config(**values)


def registered(group: str) -> dict[str, str]:
    """Names and import paths registered in the entry-point ``group``."""
    return {entry.name: entry.value for entry in entry_points(group=group)}


def load_class(group: str, name: str, base: type, what: str) -> type:
    """The ``base`` subclass registered as ``name`` in entry-point ``group``, or at the path ``"module:Class"``."""
    names = registered(group)
    path = names.get(name, name)
    if ":" not in path:
        raise ValueError(f"unknown {what} {name!r}; registered: {sorted(names)} (or give 'module:Class')")
    module_name, class_name = path.split(":", 1)
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import {what} {path!r}: {error}") from error
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ValueError(f"{path!r} is not a {base.__module__}.{base.__qualname__} subclass")
    return found


def available() -> dict[str, str]:
    """Registered learner names and their import paths."""
    return registered(ENTRY_POINT_GROUP)


def load_learner_class(name: str) -> type[Learner]:
    """The learner class registered as ``name``, or at the import path ``"module:Class"``."""
    return load_class(ENTRY_POINT_GROUP, name, Learner, "learner")
