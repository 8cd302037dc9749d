"""metabench's Gymnasium environments and their registration.

Every id is versioned; a change to the data, split, preprocessing, spaces or reward of an
environment bumps its version. ``gym.make("MetaOmniglot-5w1s")`` resolves to the latest version.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from metabench import data
from metabench.envs.augment import DEFAULT_TEMPERATURE, MetaAugmentEnv
from metabench.envs.nas import DEFAULT_FIDELITY, DEFAULT_VAL_EPISODES, MetaNASEnv
from metabench.envs.omniglot import MetaOmniglotEnv, MetaOmniglotVectorEnv
from metabench.envs.optimizer import MetaOptimizerEnv
from metabench.envs.sinusoid import MetaSinusoidEnv, MetaSinusoidVectorEnv

__all__ = [
    "ENV_IDS",
    "MetaAugmentEnv",
    "MetaNASEnv",
    "MetaOmniglotEnv",
    "MetaOmniglotVectorEnv",
    "MetaOptimizerEnv",
    "MetaSinusoidEnv",
    "MetaSinusoidVectorEnv",
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

ENV_IDS: list[str] = []


def _register(env_id: str, entry_point: str, vector_entry_point: str | None, kwargs: dict) -> None:
    if env_id not in registry:
        register(id=env_id, entry_point=entry_point, vector_entry_point=vector_entry_point, kwargs=kwargs)
    ENV_IDS.append(env_id)


for n_way, k_shot in OMNIGLOT_TASKS:
    _register(
        f"MetaOmniglot-{n_way}w{k_shot}s-v0",
        "metabench.envs.omniglot:MetaOmniglotEnv",
        "metabench.envs.omniglot:MetaOmniglotVectorEnv",
        {
            "n_way": n_way,
            "k_shot": k_shot,
            "n_query": 15,
            "split": "train",
            "scheme": "vinyals",
            "preprocessing": data.PREPROCESSING,
            "manifest_sha256": OMNIGLOT_V0_MANIFESTS,
        },
    )
for k_shot in SINUSOID_SHOTS:
    _register(
        f"MetaSinusoid-{k_shot}shot-v0",
        "metabench.envs.sinusoid:MetaSinusoidEnv",
        "metabench.envs.sinusoid:MetaSinusoidVectorEnv",
        {"k_shot": k_shot, "n_query": 10},
    )
# MetaOptimizer: the agent is the learner's optimizer (per-layer learning rates), T = 10 SGD steps per task
_register(
    "MetaOptimizer-Omniglot-5w1s-v0",
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
        "preprocessing": data.PREPROCESSING,
        "manifest_sha256": OMNIGLOT_V0_MANIFESTS,
    },
)
_register(
    "MetaOptimizer-Sinusoid-v0",
    "metabench.envs.optimizer:MetaOptimizerEnv",
    None,
    {"task": "sinusoid", "steps": 10, "reward_mode": "final", "init_seed": 0, "k_shot": 10, "n_query": 10},
)
# MetaAugment: the agent is a data-augmentation policy of the support set; searched on val, 32 tasks per step
for n_way in (5, 20):
    _register(
        f"MetaAugment-Omniglot-{n_way}w1s-v0",
        "metabench.envs.augment:MetaAugmentEnv",
        None,
        {
            "n_way": n_way,
            "k_shot": 1,
            "n_query": 15,
            "split": "val",
            "scheme": "vinyals",
            "sub_policies": 5,
            "copies": 4,
            "tasks_per_step": 32,
            "learner": "finetune",
            "temperature": DEFAULT_TEMPERATURE,
            "preprocessing": data.PREPROCESSING,
            "manifest_sha256": OMNIGLOT_V0_MANIFESTS,
        },
    )
# MetaNAS: the agent designs ProtoNets' embedding network (4 cells x 3 decisions); trained on train, scored on val
for n_way in (5, 20):
    _register(
        f"MetaNAS-Omniglot-{n_way}w1s-v0",
        "metabench.envs.nas:MetaNASEnv",
        None,
        {
            "n_way": n_way,
            "k_shot": 1,
            "n_query": 15,
            "mode": "sequential",
            "fidelity": DEFAULT_FIDELITY,
            "train_seed": 0,
            "val_episodes": DEFAULT_VAL_EPISODES,
            "scheme": "vinyals",
            "preprocessing": data.PREPROCESSING,
            "manifest_sha256": OMNIGLOT_V0_MANIFESTS,
        },
    )
