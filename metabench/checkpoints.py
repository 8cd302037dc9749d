"""Checkpoints: the one home of a learner's saved form, from building the learner to loading it back.

A checkpoint is a dict of tensors and plain values (loadable with ``torch.load(weights_only=True)``), written by
:func:`save_checkpoint` in the layout of :func:`checkpoint_content`: the agent's name and the reference that
finds its class (``agent_reference``), the env id and arguments, the learner's config, seed and state, the
iterations and the training record (budget, machine, command), plus what the writer adds (``generator`` and
``history`` for a resumable run, ``design`` for a design env's trained answer). Training
(:mod:`metabench.training`), the search harness, the evaluation harness and the baselines all write and read
through this module; :func:`load_checkpoint` refuses a damaged, hand-made or shape-mismatched one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from metabench.data import save_atomic
from metabench.envs import check_env_kwargs, make_env
from metabench.envs.common import resolve_device
from metabench.learners import Learner, check_config, config_from_dict, learner_reference, load_learner_class

CHECKPOINT_FORMAT = "metabench-checkpoint/1"
CHECKPOINT_KEYS = ("agent", "env_id", "config", "seed", "learner")
"""The fields every checkpoint has."""


def build_learner(
    name: str,
    env_id: str,
    config: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
) -> Learner:
    """Instantiate the learner ``name`` for ``env_id`` (with env arguments ``env_kwargs``, e.g.
    ``{"scheme": "lake"}``) and hyperparameter overrides ``config``.

    The learner's ``task`` is the env's protocol, plus ``env_kwargs`` when there are any. Unknown
    hyperparameters and values of the wrong type are refused (:func:`metabench.learners.check_config`), as is a device
    this machine cannot use.
    """
    resolve_device(device)
    learner_class = load_learner_class(name)
    check_config(learner_class, config or {})
    env_kwargs = check_env_kwargs(env_kwargs)
    task = {"env_id": env_id, **make_env(env_id, split="val", **env_kwargs).protocol}
    if env_kwargs:
        task["env_kwargs"] = env_kwargs
    values = {**dataclasses.asdict(learner_class.Config()), **learner_class.defaults(task), **(config or {})}
    try:
        return learner_class(config_from_dict(learner_class, values), task, device, seed)
    except (MemoryError, RuntimeError) as error:
        if not isinstance(error, MemoryError) and "allocate" not in str(error):
            raise
        raise ValueError(
            f"cannot build {name} with config {config or {}}: out of memory ({str(error).splitlines()[0][:160]}); "
            "choose a smaller configuration"
        ) from None


OPTIMIZER_STATE_KEYS = ("optimizer", "scheduler")
"""Top-level keys of a learner's state that only training needs: an inference-only checkpoint leaves them out."""


def inference_state(learner: Learner) -> dict[str, Any]:
    """``learner.state_dict()`` without optimizer and scheduler state: all that scoring needs, a third of the size
    of a Conv-4 learner's full state under Adam."""
    return {key: value for key, value in learner.state_dict().items() if key not in OPTIMIZER_STATE_KEYS}


def checkpoint_content(
    learner_class: type[Learner],
    env_id: str,
    *,
    config: dict[str, Any],
    seed: int,
    state: dict[str, Any],
    iteration: int,
    training: dict[str, Any],
    env_kwargs: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    inference_only: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """The checkpoint of a ``learner_class`` agent with ``config``, ``seed`` and learner ``state`` for ``env_id``:
    the one layout every writer uses. ``training`` is the budget that made it (``wall_seconds``, ``meta_batch``,
    ``episodes_seen``, ``device``, ``device_name``, ...), ``iteration`` its iterations; ``inference_only`` marks a
    state without optimizer state (:func:`inference_state`); ``extra`` fields are stored as they are."""
    return {
        "format": CHECKPOINT_FORMAT,
        "agent": learner_class.name,
        "agent_reference": learner_reference(learner_class),
        "env_id": env_id,
        "env_kwargs": dict(env_kwargs or {}),
        "config": config,
        "seed": seed,
        "iteration": iteration,
        "learner": state,
        **({"inference_only": True} if inference_only else {}),
        "history": list(history or []),
        "training": training,
        **extra,
    }


def learner_checkpoint(
    learner: Learner, env_id: str, *, inference_only: bool = False, seed: int | None = None, **fields: Any
) -> dict[str, Any]:
    """:func:`checkpoint_content` of a built ``learner`` (its class, config, state without optimizer state if
    ``inference_only``, and seed, unless ``seed`` records another: a design env's trained answer keeps the seed of
    the agent that found it); ``fields`` are the other arguments of :func:`checkpoint_content`."""
    return checkpoint_content(
        type(learner),
        env_id,
        config=dataclasses.asdict(learner.config),
        seed=learner.seed if seed is None else seed,
        state=inference_state(learner) if inference_only else learner.state_dict(),
        inference_only=inference_only,
        **fields,
    )


def save_checkpoint(content: dict[str, Any], path: str | Path) -> Path:
    """Write ``content`` (:func:`checkpoint_content`) to ``path`` atomically, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(content, path)
    return path


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", agent: str | None = None
) -> tuple[Learner, dict[str, Any]]:
    """Load a checkpoint safely (``weights_only=True``) and rebuild its learner on ``device``: the class ``agent``
    (a registered name or ``"module:Class"``) if given, else the one the checkpoint's ``agent_reference`` finds.

    An inference-only checkpoint (``"inference_only": True``, e.g. a run's ``best.pt``) gets a fresh optimizer."""
    path = Path(path)
    resolve_device(device)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        raise ValueError(f"{path} is not a loadable metabench checkpoint: {error}") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a metabench checkpoint (format {CHECKPOINT_FORMAT})")
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"{path} lacks the checkpoint field(s) {', '.join(missing)}: it is damaged or hand-made")
    reference = agent if agent is not None else checkpoint.get("agent_reference", checkpoint["agent"])
    if load_learner_class(reference).name != checkpoint["agent"]:
        raise ValueError(f"{path} is a {checkpoint['agent']} checkpoint, not {reference}")
    # a field the checkpoint's config lacks was added after it was written: it takes the value that meant then
    config = {**getattr(load_learner_class(reference), "legacy_config", {}), **checkpoint["config"]}
    learner = build_learner(
        reference,
        checkpoint["env_id"],
        config,
        device,
        checkpoint["seed"],
        checkpoint.get("env_kwargs"),
    )
    state = checkpoint["learner"]
    fresh = learner.state_dict()
    scored = [{key: value for key, value in part.items() if key not in OPTIMIZER_STATE_KEYS} for part in (state, fresh)]
    check_state(*scored, str(path))
    if checkpoint.get("inference_only"):
        state = {**fresh, **state}
    learner.load_state_dict(state)
    return learner, checkpoint


def check_state(stored: Any, expected: Any, where: str, name: str = "learner") -> None:
    """Refuse a stored learner state that does not match ``expected`` (a fresh learner's) exactly: every tensor
    of ``expected`` present with its shape (``load_state_dict``'s copies would broadcast a wrong one), no
    unexpected entries, and no NaN or inf in any floating-point tensor of ``stored``."""
    if isinstance(stored, torch.Tensor):
        if stored.is_floating_point() and not bool(torch.isfinite(stored).all()):
            raise ValueError(f"{where}: {name} holds NaN or inf; the checkpoint's weights are not usable")
        if isinstance(expected, torch.Tensor) and stored.shape != expected.shape:
            raise ValueError(
                f"{where}: {name} has shape {tuple(stored.shape)}, the learner built from the checkpoint's config "
                f"needs {tuple(expected.shape)}"
            )
        return
    if isinstance(expected, torch.Tensor):
        raise ValueError(f"{where}: {name} is a {type(stored).__name__}, the learner needs a tensor")
    if isinstance(stored, dict):
        if isinstance(expected, dict):
            missing = sorted(set(expected) - set(stored), key=str)
            unexpected = sorted(set(stored) - set(expected), key=str)
            if missing or unexpected:
                raise ValueError(
                    f"{where}: {name} does not match the learner's state: missing {missing}, unexpected {unexpected}"
                )
        for key, value in stored.items():
            check_state(value, expected.get(key) if isinstance(expected, dict) else None, where, f"{name}[{key!r}]")
    elif isinstance(stored, list | tuple):
        same = isinstance(expected, list | tuple) and len(expected) == len(stored)
        for index, value in enumerate(stored):
            check_state(value, expected[index] if same else None, where, f"{name}[{index}]")


def transfer_checkpoint(
    learner: Learner, state: dict[str, Any], env_id: str, path: str | Path, *, device: str | torch.device = "cpu"
) -> Path:
    """Save ``learner`` (loaded from a checkpoint ``state`` trained on another env) as an inference-only checkpoint
    for ``env_id``, as the papers score one model on several boards (Prototypical Networks: the 1-shot model on
    5-way and 20-way 1-shot). Only a learner whose class sets ``any_way = True`` (its classifier is built from
    the support set, for any number of classes) moves, and only between envs whose protocols differ in ``n_way``
    alone; the training record names the env it was trained and validated on (``trained_on``)."""
    source = state["env_id"]
    if not getattr(type(learner), "any_way", False):
        raise ValueError(f"{state['agent']} was trained on {source}, not {env_id}, and cannot move to another way")
    env_kwargs = state.get("env_kwargs") or {}
    protocols = [dict(make_env(name, split="val", **env_kwargs).protocol) for name in (source, env_id)]
    for protocol in protocols:
        protocol.pop("n_way")
    if protocols[0] != protocols[1]:
        raise ValueError(f"{state['agent']} was trained on {source}, its protocol and {env_id}'s differ beyond n_way")
    reference, config = state.get("agent_reference", state["agent"]), dataclasses.asdict(learner.config)
    moved = build_learner(reference, env_id, config, device, learner.seed, env_kwargs)
    moved.load_state_dict({**moved.state_dict(), **inference_state(learner)})
    extra = {key: state[key] for key in ("early_stopping", "design") if key in state}
    return save_checkpoint(
        learner_checkpoint(
            moved,
            env_id,
            inference_only=True,
            env_kwargs=env_kwargs,
            iteration=state["iteration"],
            history=state.get("history"),
            training={**state["training"], "trained_on": source},
            **extra,
        ),
        path,
    )
