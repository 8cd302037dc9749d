"""metabench's Gymnasium environments and their registration.

Every id is versioned; a change to the data, split, preprocessing, spaces or reward of an
environment bumps its version. ``gym.make("MetaOmniglot-5w1s")`` resolves to the latest version.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import TYPE_CHECKING, Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec, load_env_creator, register, registry

from metabench.envs import defaults

if TYPE_CHECKING:
    import torch

    from metabench.envs.common import TaskEnv

#: The env classes, each imported from its module on first use: registering the ids imports no env module
#: (nor torch), so ``import metabench`` and ``metabench --help`` stay fast.
_CLASSES = {
    "MetaAugmentEnv": "metabench.envs.augment",
    "MetaAugmentTrainingEnv": "metabench.envs.augment_training",
    "MetaNASEnv": "metabench.envs.nas",
    "MetaOmniglotEnv": "metabench.envs.omniglot",
    "MetaOmniglotVectorEnv": "metabench.envs.omniglot",
    "MetaOptimizerEnv": "metabench.envs.optimizer",
    "MetaReweightEnv": "metabench.envs.reweight",
    "MetaSinusoidEnv": "metabench.envs.sinusoid",
    "MetaSinusoidVectorEnv": "metabench.envs.sinusoid",
}


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEPRECATED_IDS",
    "ENV_IDS",
    "MetaAugmentEnv",
    "MetaAugmentTrainingEnv",
    "MetaNASEnv",
    "MetaOmniglotEnv",
    "MetaOmniglotVectorEnv",
    "MetaOptimizerEnv",
    "MetaReweightEnv",
    "MetaSinusoidEnv",
    "MetaSinusoidVectorEnv",
    "check_env_kwargs",
    "make_env",
    "resolve_env_id",
]

OMNIGLOT_TASKS = ((5, 1), (5, 5), (20, 1), (20, 5))
SINUSOID_SHOTS = (5, 10)

#: The split manifests (sha256 of each class list) that version 0 of MetaOmniglot is defined on;
#: an env refuses to start if the installed split files hash differently.
OMNIGLOT_V0_MANIFESTS = {
    "vinyals": {
        "train": "20cf4ca61b2f435252ce19ef69cd6bef72393fbe673f587a144d2322aca72be8",
        "val": "9634e325a10941789448bc65e0a0e0f22e0605f01178f8544ea4578c81179daf",
        "test": "3d9746431741d7b397647b44d8ac9b20a137e093f268bfb86d6808df310f21fa",
    },
    "lake": {
        "train": "2c7cf83a3873804308dd77a06c9a250f82a2c1800e3de2c6ca103e44be73c34c",
        "val": "14949bf19c49ac410a0027d097ca5c8fb32741c69521213d3ccbae3af7fb65e0",
        "test": "65dffcfda486aa33e12cbee87c1fec7a25e744c311c4a5e7ba0b2917664ad3dc",
    },
}

#: Version 1: the standard Vinyals et al. (2016) split (``vinyals`` edition v1) and the same ``lake`` split.
OMNIGLOT_V1_MANIFESTS = {
    "vinyals": {
        "train": "4c40ad99e6e61107b8da5b9455cd04208a0aa457969f78f11bd8f8303d047d48",
        "val": "a35444bf6c791ac4055fbefedbe79288783f46e6dbfe344565a20f2ff3b7a7b5",
        "test": "da7e4de1cbad0e49a59366904e1f9cfb532c33c27ad0ffb722bc9895ba8aa5ca",
    },
    "lake": OMNIGLOT_V0_MANIFESTS["lake"],
}
#: What changed from one version of the Omniglot-based envs to the next (see CHANGELOG.md).
OMNIGLOT_VERSIONS = {
    0: {
        "preprocessing": "area-105to28-ink255",
        "manifest_sha256": OMNIGLOT_V0_MANIFESTS,
        # the body the v0 MetaAugment results were computed with; it was never shipped (see CHANGELOG.md)
        "body_sha256": "65a3223e8b0d096b6ee2ceedbcbc92254241449572893e126d95d60d4cec8f5d",
    },
    1: {
        "preprocessing": "pillow-nearest-105to28-ink255",
        "manifest_sha256": OMNIGLOT_V1_MANIFESTS,
        "body_sha256": "408bb899a826ed8dedeb92d402ffd1e5fb285be2bfc5890b232417163e6787db",
    },
}

ENV_IDS: list[str] = []


def _register(env_id: str, entry_point: str, vector_entry_point: str | None, kwargs: dict) -> None:
    if env_id not in registry:
        register(id=env_id, entry_point=entry_point, vector_entry_point=vector_entry_point, kwargs=kwargs)
    ENV_IDS.append(env_id)


for version, pins in OMNIGLOT_VERSIONS.items():
    data_pins = {"preprocessing": pins["preprocessing"], "manifest_sha256": pins["manifest_sha256"]}
    # version 1 records the task sampling in the protocol; version 0 predates it (uniform)
    sampling = {"task_sampling": "uniform"} if version >= 1 else {}
    for n_way, k_shot in OMNIGLOT_TASKS:
        _register(
            f"MetaOmniglot-{n_way}w{k_shot}s-v{version}",
            "metabench.envs.omniglot:MetaOmniglotEnv",
            "metabench.envs.omniglot:MetaOmniglotVectorEnv",
            {
                "n_way": n_way,
                "k_shot": k_shot,
                "n_query": 15,
                "split": "train",
                "scheme": "vinyals",
                **data_pins,
                **sampling,
            },
        )
    if version >= 1:
        # The official Lake protocol: background alphabets to learn from, evaluation alphabets to test on;
        # tasks of classes from anywhere in the split, or all from one alphabet (Lake et al. 2015's one-shot task).
        for name, task_sampling in (("Lake", "uniform"), ("LakeWithinAlphabet", "within-alphabet")):
            _register(
                f"MetaOmniglot-{name}-20w1s-v{version}",
                "metabench.envs.omniglot:MetaOmniglotEnv",
                "metabench.envs.omniglot:MetaOmniglotVectorEnv",
                {
                    "n_way": 20,
                    "k_shot": 1,
                    "n_query": 15,
                    "split": "train",
                    "scheme": "lake",
                    **data_pins,
                    "task_sampling": task_sampling,
                },
            )
    # MetaOptimizer: the agent is the learner's optimizer (per-layer learning rates), T = 10 SGD steps per task
    _register(
        f"MetaOptimizer-Omniglot-5w1s-v{version}",
        "metabench.envs.optimizer:MetaOptimizerEnv",
        None,
        {
            "task": "omniglot",
            "steps": 10,
            "reward_mode": "final",
            "init_seed": 0,
            "n_way": 5,
            "k_shot": 1,
            "n_query": 15,
            "split": "train",
            "scheme": "vinyals",
            **data_pins,
        },
    )
    # MetaAugment: the agent is a data-augmentation policy of the support set; searched on val, 32 tasks per step
    for n_way in (5, 20):
        _register(
            f"MetaAugment-Omniglot-{n_way}w1s-v{version}",
            "metabench.envs.augment:MetaAugmentEnv",
            None,
            {
                "n_way": n_way,
                "k_shot": 1,
                "n_query": 15,
                "split": "val",
                "scheme": "vinyals",
                "sub_policies": defaults.AUGMENT_SUB_POLICIES,
                "copies": defaults.AUGMENT_COPIES,
                "tasks_per_step": defaults.AUGMENT_TASKS_PER_STEP,
                "learner": "finetune",
                "temperature": defaults.AUGMENT_TEMPERATURE,
                **data_pins,
                "body_sha256": pins["body_sha256"],
            },
        )
    # MetaNAS: the agent designs ProtoNets' embedding network (4 cells x 3 decisions); trained on train, scored on val
    for n_way in (5, 20):
        _register(
            f"MetaNAS-Omniglot-{n_way}w1s-v{version}",
            "metabench.envs.nas:MetaNASEnv",
            None,
            {
                "n_way": n_way,
                "k_shot": 1,
                "n_query": 15,
                "mode": "sequential",
                "fidelity": defaults.NAS_FIDELITY,
                "train_seed": 0,
                "val_episodes": defaults.NAS_VAL_EPISODES,
                "test_train_episodes": defaults.NAS_TEST_TRAIN_EPISODES,
                "scheme": "vinyals",
                **data_pins,
            },
        )
# MetaAugment v2: the policy augments the training episodes of ProtoNets on a data-poor split (AutoAugment's problem)
_register(
    "MetaAugment-Omniglot-5w1s-v2",
    "metabench.envs.augment_training:MetaAugmentTrainingEnv",
    None,
    {
        "n_way": 5,
        "k_shot": 1,
        "n_query": 15,
        "train_classes": defaults.AUGMENT_TRAINING_CLASSES,
        "train_episodes": defaults.AUGMENT_TRAINING_EPISODES,
        "train_way": defaults.AUGMENT_TRAINING_WAY,
        "train_query": defaults.AUGMENT_TRAINING_QUERY,
        "train_seed": 0,
        "val_episodes": defaults.AUGMENT_TRAINING_VAL_EPISODES,
        "sub_policies": defaults.AUGMENT_SUB_POLICIES,
        "scheme": "vinyals",
        "preprocessing": OMNIGLOT_VERSIONS[1]["preprocessing"],
        "manifest_sha256": OMNIGLOT_V1_MANIFESTS,
    },
)
# MetaReweight: the agent weights every training example of a task with 40% symmetric label noise, T = 10 SGD steps
_register(
    "MetaReweight-Omniglot-5w10s-v1",
    "metabench.envs.reweight:MetaReweightEnv",
    None,
    {
        "task": "omniglot",
        "noise": "symmetric",
        "noise_rate": 0.4,
        "steps": 10,
        "lr": 0.1,
        "trusted_shots": 1,
        "init_seed": 0,
        "n_way": 5,
        "k_shot": 10,
        "n_query": 5,
        "split": "train",
        "scheme": "vinyals",
        "preprocessing": OMNIGLOT_VERSIONS[1]["preprocessing"],
        "manifest_sha256": OMNIGLOT_V1_MANIFESTS,
    },
)
for k_shot in SINUSOID_SHOTS:
    _register(
        f"MetaSinusoid-{k_shot}shot-v0",
        "metabench.envs.sinusoid:MetaSinusoidEnv",
        "metabench.envs.sinusoid:MetaSinusoidVectorEnv",
        {"k_shot": k_shot, "n_query": 10},
    )
_register(
    "MetaOptimizer-Sinusoid-v0",
    "metabench.envs.optimizer:MetaOptimizerEnv",
    None,
    {"task": "sinusoid", "steps": 10, "reward_mode": "final", "init_seed": 0, "k_shot": 10, "n_query": 10},
)
_register(
    "MetaReweight-Sinusoid-v0",
    "metabench.envs.reweight:MetaReweightEnv",
    None,
    {
        "task": "sinusoid",
        "noise": "uniform",
        "noise_rate": 0.4,
        "steps": 100,
        "lr": 0.03,
        "trusted_shots": 5,
        "init_seed": 0,
        "k_shot": 40,
        "n_query": 50,
    },
)


def _version(env_id: str) -> tuple[str, int]:
    name, version = env_id.rsplit("-v", 1)
    return name, int(version)


#: Ids kept registered so that their results stay valid and verifiable, but superseded by a newer version.
DEPRECATED_IDS: set[str] = {
    env_id
    for env_id in ENV_IDS
    if any(_version(other)[0] == _version(env_id)[0] and _version(other)[1] > _version(env_id)[1] for other in ENV_IDS)
}


def make_env(env_id: str | EnvSpec, split: str = "train", device: str | torch.device = "cpu", **kwargs: Any) -> TaskEnv:
    """The unwrapped env of ``env_id`` (or of a spec: what a worker process without the id's registration
    is given) on ``split`` (ignored by data-free envs such as the sinusoid)."""
    spec = env_id if isinstance(env_id, EnvSpec) else gym.spec(resolve_env_id(env_id))
    check_env_arguments(spec, kwargs)
    if "split" in spec.kwargs:
        kwargs["split"] = split
    return gym.make(spec, device=device, **kwargs).unwrapped


def resolve_env_id(env_id: str) -> str:
    """The registered, versioned id ``env_id`` names: itself, or for an unversioned id (``MetaOmniglot-5w1s``)
    its latest version, as ``gym.make`` resolves it; a ``metabench:`` prefix is dropped. An unknown id raises a
    ``ValueError`` with the closest registered id and the reminder that ``import metabench`` registers them."""
    from metabench.envs.common import did_you_mean

    env_id = env_id.removeprefix("metabench:")
    if env_id in gym.registry:  # metabench's ids and any other registered one (e.g. a test env)
        return env_id
    versioned = {other: re.fullmatch(r"(.+)-v(\d+)", other) for other in gym.registry}
    versions = {other: int(match[2]) for other, match in versioned.items() if match and match[1] == env_id}
    if versions:
        return max(versions, key=versions.get)
    names = {*ENV_IDS, *(other.rsplit("-v", 1)[0] for other in ENV_IDS)}
    raise ValueError(
        f"unknown env id {env_id!r}{did_you_mean(env_id, names)}: `metabench envs` lists the registered ids "
        "(in Python, `import metabench` registers them, or give gym.make the id as 'metabench:ID')"
    )


def check_env_arguments(spec: EnvSpec, kwargs: dict[str, Any]) -> None:
    """Refuse env arguments that the env class of ``spec`` does not take, naming the ones it does."""
    from metabench.envs.common import did_you_mean

    creator = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
    parameters = inspect.signature(creator).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return
    unknown = sorted(set(kwargs) - set(parameters) - {"device"})
    if unknown:
        raise ValueError(
            f"unknown env argument {unknown[0]!r}{did_you_mean(unknown[0], parameters)} for {spec.id}; "
            f"it takes {', '.join(sorted(set(parameters) - {'device', 'split'}))}"
        )


def check_env_kwargs(env_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Env arguments given to a run (e.g. ``{"scheme": "lake"}``), as a plain dict; ``device`` and ``split``
    are the harness's own and refused."""
    env_kwargs = dict(env_kwargs or {})
    reserved = sorted({"device", "split"} & set(env_kwargs))
    if reserved:
        raise ValueError(f"env arguments {reserved} are set by the harness (--device; train/val/test), not by hand")
    return env_kwargs
