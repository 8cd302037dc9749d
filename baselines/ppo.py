"""Plug in your RL agent: stable-baselines3 PPO on any metabench environment, as a metabench ``Learner``.

Every metabench env is a plain Gymnasium env, so an off-the-shelf RL library trains on it as it is.
This file is the worked example of turning such an agent into a metabench agent that the evaluation
harness and the leaderboard can score:

1. Train: ``python -m metabench_baselines.ppo --env MetaAugment-Omniglot-5w1s-v0 --timesteps 64 --seed 0 --out
   runs/ppo-augment --config n_steps=16 batch_size=16`` trains SB3 PPO (``MlpPolicy``; ``MultiInputPolicy``
   for the dict observations of MetaOmniglot/MetaSinusoid) on the env as registered (``--env-kwargs k=v``
   overrides its arguments). It writes ``trace.csv``, one row per finished episode (``episode``,
   ``reward`` = the episode's total reward, ``seconds`` since training started, and ``accuracy`` when
   the env reports one), comparable with the traces of ``metabench search`` evaluation by evaluation
   for the one-step envs, and ``checkpoint.pt``.
2. The checkpoint is a metabench checkpoint (``metabench.checkpoints.CHECKPOINT_FORMAT``, agent ``ppo``):
   the policy network's tensors (``state_dict``) and :class:`PPO.Config` (the SB3 hyperparameters and
   the env arguments). ``metabench.checkpoints.load_checkpoint`` rebuilds the :class:`PPO` learner from
   the env's spaces and loads the tensors; no pickled Python objects, loadable with ``weights_only``.
3. Evaluate: the learner acts deterministically (the policy's most likely action) through
   :meth:`PPO.act`, so ``metabench evaluate --agent ppo --checkpoint runs/ppo-augment/checkpoint.pt
   --env MetaAugment-Omniglot-5w1s-v0`` scores it on the frozen test protocol.

To plug in another agent, keep the shape: train it however you like, save its tensors and
hyperparameters in a metabench checkpoint, and write a ``Learner`` whose ``act`` maps an observation
to an action; register it in the ``metabench.learners`` entry-point group.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback

from metabench.checkpoints import checkpoint_content, save_checkpoint
from metabench.cli import parse_key_values
from metabench.envs import make_env
from metabench.envs.common import device_name
from metabench.learners import Learner, config_from_dict

# SB3 hyperparameters of PPO.Config, passed to stable_baselines3.PPO as they are
from metabench.training import write_csv

SB3_KWARGS = (
    "learning_rate",
    "n_steps",
    "batch_size",
    "n_epochs",
    "gamma",
    "gae_lambda",
    "clip_range",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
)


class PPO(Learner):
    """A stable-baselines3 PPO policy network acting in a metabench env (trained by :func:`train_ppo`).

    ``task`` must hold ``env_id`` (the harness passes ``{"env_id": ..., **protocol}``): the learner
    builds that env with ``Config.env_kwargs`` to get its observation and action spaces, and rebuilds
    the SB3 policy network for them.
    """

    name = "ppo"
    transductive = True  # in the few-shot envs the policy sees a task's whole query set at once

    @dataclasses.dataclass
    class Config:
        """SB3 PPO's hyperparameters (its defaults), the policy network and the env's arguments."""

        policy: str = "auto"  # an SB3 policy name; "auto": MultiInputPolicy for dict observations, else MlpPolicy
        net_arch: list[int] = dataclasses.field(default_factory=lambda: [64, 64])
        learning_rate: float = 3e-4
        n_steps: int = 2048
        batch_size: int = 64
        n_epochs: int = 10
        gamma: float = 0.99
        gae_lambda: float = 0.95
        clip_range: float = 0.2
        ent_coef: float = 0.0
        vf_coef: float = 0.5
        max_grad_norm: float = 0.5
        env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __init__(self, config: Config, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0) -> None:
        super().__init__(config, task, device, seed)
        if "env_id" not in task:
            raise ValueError("the ppo learner needs task['env_id'] to build the env's spaces")
        env_kwargs = dict(config.env_kwargs)
        env = make_env(task["env_id"], split=env_kwargs.pop("split", "val"), device="cpu", **env_kwargs)
        self.observation_space, self.action_space = env.observation_space, env.action_space
        env.close()
        torch.manual_seed(seed)
        self.policy = policy_class(config, self.observation_space)(
            self.observation_space,
            self.action_space,
            lambda _: config.learning_rate,
            net_arch=list(config.net_arch),
        ).to(self.device)
        self.policy.set_training_mode(False)

    def act(self, observation: Any) -> np.ndarray:
        """The policy's deterministic action for one observation (or a batch of them)."""
        action, _ = self.policy.predict(observation, deterministic=True)
        return action

    def predict(
        self, support_inputs: torch.Tensor, support_targets: torch.Tensor, query_inputs: torch.Tensor
    ) -> torch.Tensor:
        """The few-shot envs' batched path: the policy's action for each task's observation, as predictions."""
        if not isinstance(self.observation_space, spaces.Dict):
            raise ValueError(f"predict() serves the few-shot envs; {self.task['env_id']} is played through act()")
        keys = ("support_x", "support_y", "query_x")
        if "support_images" in self.observation_space.spaces:
            keys = ("support_images", "support_labels", "query_images")
        inputs = (support_inputs, support_targets, query_inputs)
        observation = {key: tensor.cpu().numpy() for key, tensor in zip(keys, inputs, strict=True)}
        return torch.as_tensor(self.act(observation), device=support_inputs.device)

    def train_step(self, episodes: Any) -> dict[str, float]:
        raise NotImplementedError(
            "PPO trains by interacting with its env: python -m metabench_baselines.ppo --env ID ..."
        )

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])


def policy_class(config: PPO.Config, observation_space: spaces.Space) -> type:
    """The SB3 policy class that ``config.policy`` names (``"auto"`` picks by the observation space)."""
    name = config.policy
    if name == "auto":
        name = "MultiInputPolicy" if isinstance(observation_space, spaces.Dict) else "MlpPolicy"
    aliases = stable_baselines3.PPO.policy_aliases
    if name not in aliases:
        raise ValueError(f"unknown SB3 policy {config.policy!r}; choose 'auto' or one of {sorted(aliases)}")
    return aliases[name]


class _EpisodeTrace(BaseCallback):
    """Collects one row per finished episode from the ``Monitor`` wrapper that SB3 puts around the env."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.start = time.perf_counter()

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:
                row = {"episode": len(self.rows), "reward": float(info["episode"]["r"])}
                row["seconds"] = round(time.perf_counter() - self.start, 3)
                if "accuracy" in info:
                    row["accuracy"] = float(info["accuracy"])
                self.rows.append(row)
        return True


def train_ppo(
    env_id: str,
    out_dir: str | Path,
    *,
    timesteps: int,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    command: str | None = None,
) -> Path:
    """Train SB3 PPO on ``env_id`` for ``timesteps`` env steps; write ``trace.csv`` and ``checkpoint.pt``.

    ``config`` overrides :class:`PPO.Config` (SB3 hyperparameters), ``env_kwargs`` the env's registered
    arguments; ``device`` is where the env computes (the small policy network trains on the CPU).
    Returns the checkpoint path.
    """
    if isinstance(timesteps, bool) or int(timesteps) != timesteps or timesteps < 1:
        raise ValueError(f"timesteps must be a positive integer, got {timesteps!r}")
    env_kwargs = dict(env_kwargs or {})
    if "device" in env_kwargs:
        raise ValueError("pass the env's device as device=, not in env_kwargs")
    values = {**dataclasses.asdict(PPO.Config()), **(config or {}), "env_kwargs": env_kwargs}
    ppo_config = config_from_dict(PPO, values)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    env = gym.make(env_id, device=device, **env_kwargs)
    model = stable_baselines3.PPO(
        policy_class(ppo_config, env.observation_space),
        env,
        policy_kwargs={"net_arch": list(ppo_config.net_arch)},
        seed=seed,
        device="cpu",
        **{key: getattr(ppo_config, key) for key in SB3_KWARGS},
    )
    trace = _EpisodeTrace()
    start = time.perf_counter()
    model.learn(total_timesteps=int(timesteps), callback=trace)
    wall = time.perf_counter() - start
    env.close()

    write_csv(trace.rows, out / "trace.csv")
    content = checkpoint_content(
        PPO,
        env_id,
        config=dataclasses.asdict(ppo_config),
        seed=seed,
        state={"policy": {key: value.cpu() for key, value in model.policy.state_dict().items()}},
        iteration=int(model.num_timesteps),
        # env arguments of the run, as metabench.training stores them (the split is the harness's)
        env_kwargs={key: value for key, value in env_kwargs.items() if key != "split"},
        history=trace.rows,
        training={
            "wall_seconds": round(wall, 3),
            "meta_batch": 1,
            "episodes_seen": len(trace.rows),
            "device": str(torch.device(device)),
            "device_name": device_name(device),
            **({"command": command} if command else {}),
        },
    )
    return save_checkpoint(content, out / "checkpoint.pt")


def main(argv: list[str] | None = None) -> int:
    """``python -m metabench_baselines.ppo --env ID --timesteps N --seed S --out DIR [--env-kwargs k=v ...]``."""
    parser = argparse.ArgumentParser(prog="python -m metabench_baselines.ppo", description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True, help="a metabench env id, e.g. MetaAugment-Omniglot-5w1s-v0")
    parser.add_argument("--timesteps", type=int, required=True, help="env steps to train for")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="folder for trace.csv and checkpoint.pt")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="K=V", help="env arguments to override")
    parser.add_argument("--config", nargs="*", default=[], metavar="K=V", help="PPO.Config overrides, e.g. n_steps=16")
    parser.add_argument("--device", default="cpu", help="where the env computes")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    path = train_ppo(
        args.env,
        args.out,
        timesteps=args.timesteps,
        seed=args.seed,
        config=parse_key_values(args.config),
        env_kwargs=parse_key_values(args.env_kwargs, "--env-kwargs"),
        device=args.device,
        command=shlex.join(["python", "-m", "metabench_baselines.ppo", *argv]),
    )
    print(f"checkpoint: {path}\ntrace: {path.parent / 'trace.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
