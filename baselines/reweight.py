"""Reference weightings for the MetaReweight envs, all scored by the env's own gym loop on the same tasks.

Agents (act from the observation only; ``metabench.learners`` entry points):

* :class:`UniformWeights` (``uniform-weights``): every example weighs 1, the ordinary learner.
* :class:`SmallLoss` (``small-loss``): the small-loss trick (B. Han et al., Co-teaching, NeurIPS 2018:
  noisy labels are learned late, so the largest losses are the suspects): weight 0 on the fraction
  ``drop * min(1, (t/T) / ramp)`` of the batch with the largest loss, 1 on the rest (Co-teaching's drop
  rate, rising linearly to ``drop`` over the first ``ramp`` of the episode; ``ramp = 0``: from the start);
  ``drop`` and ``ramp`` tuned on ``val`` tasks.
* :class:`WeightingFunction` (``weighting-function``): ``w = sigmoid(a + (b + c t/T) z)`` with ``z`` the
  example's loss standardised over the batch; ``(a, b, c)`` found by CMA-ES (``metabench.search``'s
  ``cmaes`` searcher, ask/tell) on ``val`` tasks.
* :class:`MetaWeightNet` (``meta-weight-net``): J. Shu et al., Meta-Weight-Net: Learning an Explicit
  Mapping for Sample Weighting, NeurIPS 2019. An MLP (1-100-1, ReLU, sigmoid output, as the paper)
  maps an example's loss to its weight; weights are normalised by their sum (the env does it, as the
  paper's code). Meta-training follows the paper's one-step look-ahead along the unrolled episode: at
  every step ``t`` of a training task the look-ahead ``p' = update(p_t, MWN(losses))`` is kept
  differentiable in the MWN's parameters, the clean loss at ``p'`` is back-propagated, and the learner
  then takes the env's step. Deviation: the clean meta-loss is the training task's query set (the
  meta-training tasks' held-out examples, as for the MetaOptimizer agents), not a separate meta set.

Reference methods (read the env's learner, so they are not gym agents; reported beside them):

* ``oracle``: weight 0 on the corrupted examples (``env.corrupted``), 1 on the rest: the headroom.
* ``l2rw``: M. Ren, W. Zeng, B. Yang, R. Urtasun, Learning to Reweight Examples for Robust Deep
  Learning, ICML 2018. At every step, per-example perturbations ``eps = 0`` weigh the training losses
  of a look-ahead step ``p' = p - lr grad sum_i eps_i l_i``; the weights are ``max(-d L_trusted(p') /
  d eps, 0)``, with ``L_trusted`` the loss on the task's small clean trusted set (the paper's clean
  validation batch), normalised by the env.

Run: ``python -m metabench_baselines.reweight --env MetaReweight-Sinusoid-v0 --out DIR`` tunes and
trains every method, then scores all on the same ``test`` tasks, writing ``episodes.csv`` and
``summary.json`` (means with 95% CIs, and each method's paired difference to uniform weights). With
``--checkpoints`` every gym agent is also written as a metabench checkpoint ``METHOD/checkpoint.pt`` (its
training block the tuning's budget), which ``metabench evaluate`` scores on the full test protocol and
``metabench submit`` stores; ``--test-episodes 0`` then skips the comparison.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from metabench import models
from metabench.checkpoints import learner_checkpoint, save_checkpoint
from metabench.envs import make_env
from metabench.envs.common import device_name
from metabench.envs.reweight import MetaReweightEnv
from metabench.episodes import Episodes
from metabench.evaluation import TEST_SEED, mean_ci95
from metabench.learners import Learner
from metabench.search import load_searcher
from metabench.training import VAL_SEED

#: a weighting policy of the study: ``(env, observation) -> weights``; agents read only the observation
Policy = Callable[[MetaReweightEnv, np.ndarray], np.ndarray]


def _reweight_env(task: dict[str, Any], device: str | torch.device) -> MetaReweightEnv:
    env = make_env(task["env_id"], split="train", device=device)
    if not isinstance(env, MetaReweightEnv):
        raise ValueError(f"{task['env_id']} is not a MetaReweight env")
    return env


class WeightingAgent(Learner):
    """Base of the agents: per-example weights from the observation, through the gym contract."""

    transductive: ClassVar[bool] = False

    def __init__(self, config: Any, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0) -> None:
        super().__init__(config, task, device, seed)
        self.features = _reweight_env(task, "cpu").feature_names

    def column(self, observation: np.ndarray, name: str) -> np.ndarray:
        return np.asarray(observation, dtype=np.float64)[:, self.features.index(name)]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class UniformWeights(WeightingAgent):
    """Every training example weighs 1."""

    name = "uniform-weights"

    def act(self, observation: np.ndarray) -> np.ndarray:
        return np.ones(len(observation), np.float32)


class SmallLoss(WeightingAgent):
    """Weight 0 on the largest losses (ties by position), a fraction rising from 0 to ``drop`` over ``ramp``."""

    name = "small-loss"

    @dataclasses.dataclass
    class Config:
        drop: float = 0.4
        ramp: float = 0.0

    def act(self, observation: np.ndarray) -> np.ndarray:
        losses, t = self.column(observation, "loss"), float(self.column(observation, "step_fraction")[0])
        drop = self.config.drop * (min(1.0, t / self.config.ramp) if self.config.ramp > 0 else 1.0)
        weights = np.ones(len(losses), np.float32)
        weights[np.argsort(-losses, kind="stable")[: round(drop * len(losses))]] = 0.0
        return weights


class WeightingFunction(WeightingAgent):
    """``w = sigmoid(a + (b + c t/T) z)``, ``z`` the loss standardised over the batch; ``coefficients = [a, b, c]``."""

    name = "weighting-function"
    bounds: ClassVar[tuple[float, float]] = (-6.0, 6.0)

    @dataclasses.dataclass
    class Config:
        coefficients: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.0, 0.0])

    def act(self, observation: np.ndarray) -> np.ndarray:
        a, b, c = self.config.coefficients
        losses, t = self.column(observation, "loss"), self.column(observation, "step_fraction")
        z = (losses - losses.mean()) / (losses.std() + 1e-8)
        return (1 / (1 + np.exp(-(a + (b + c * t) * z)))).astype(np.float32)


class MetaWeightNet(WeightingAgent):
    """The Meta-Weight-Net (loss -> weight MLP), meta-trained by one-step look-aheads along the episode."""

    name = "meta-weight-net"

    @dataclasses.dataclass
    class Config:
        meta_batch: int = 4
        hidden: int = 100
        outer_lr: float = 1e-3

    def __init__(self, config: Any, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0) -> None:
        super().__init__(config, task, device, seed)
        self.env = _reweight_env(task, device)
        with models.seeded(seed):
            self.net = nn.Sequential(nn.Linear(1, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 1), nn.Sigmoid())
        self.net.to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.outer_lr)
        self.generator = torch.Generator().manual_seed(seed)  # the training tasks' label corruption

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        return self.net(losses.detach()[:, None].float())[:, 0]

    def act(self, observation: np.ndarray) -> np.ndarray:
        losses = torch.as_tensor(self.column(observation, "loss"), device=self.device)
        with torch.no_grad():
            return self.weights(losses).cpu().numpy().astype(np.float32)

    def train_step(self, episodes: Episodes) -> dict[str, float]:
        """One meta-iteration on clean tasks of the env's sampler, corrupted here as the env corrupts them."""
        env = self.env
        tasks = [env.corrupt(episodes[i], self.generator) for i in range(len(episodes))]
        self.optimizer.zero_grad()
        meta_losses = []
        for task in tasks:
            functions, params = env.task_functions(task), env.initial_params()
            for _ in range(env.steps):
                weights = self.weights(functions.support_losses(params))
                lookahead = env.update(params, weights, task)  # differentiable in the net's parameters
                meta_loss = functions.query_loss(lookahead) / (len(tasks) * env.steps)
                meta_loss.backward()
                meta_losses.append(meta_loss.item() * len(tasks) * env.steps)
                params = env.update(params, weights.detach(), task, first_order=True)
                params = {name: value.detach().requires_grad_() for name, value in params.items()}
        nn.utils.clip_grad_norm_(self.net.parameters(), 10.0)
        self.optimizer.step()
        return {"loss": float(np.mean(meta_losses))}

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])


# --- reference methods ------------------------------------------------------------------------------


def oracle(env: MetaReweightEnv, observation: np.ndarray) -> np.ndarray:
    """Weight 0 on the corrupted training labels, 1 on the clean ones."""
    return (~env.corrupted).float().cpu().numpy()


def l2rw(env: MetaReweightEnv, observation: np.ndarray) -> np.ndarray:
    """Ren et al. (2018): minus the gradient of the trusted loss after a look-ahead step w.r.t. per-example eps."""
    params = {name: value.requires_grad_() for name, value in env.learner_params.items()}
    eps = torch.zeros(env.n, device=env.device, requires_grad=True)
    with torch.enable_grad():
        lookahead = env.update(params, eps)  # all-zero weights: the unnormalised sum_i eps_i l_i
        (gradient,) = torch.autograd.grad(env.task_functions().trusted_loss(lookahead), eps)
    return (-gradient).clamp(min=0).cpu().numpy().astype(np.float32)


def agent_policy(agent: Learner) -> Policy:
    def policy(env: MetaReweightEnv, observation: np.ndarray) -> np.ndarray:
        return agent.act(observation)

    return policy


def play(env: MetaReweightEnv, policy: Policy, seed: int) -> dict[str, Any]:
    """Episode ``env.reset(seed=seed)`` played by ``policy``; its reward, accuracy and divergence."""
    observation, _ = env.reset(seed=seed)
    terminated, reward, info = False, 0.0, {}
    while not terminated:
        observation, reward, terminated, _, info = env.step(policy(env, observation))
    return {"reward": reward, "accuracy": float(info.get("accuracy", np.nan)), "diverged": bool(info["diverged"])}


def mean_reward(env: MetaReweightEnv, policy: Policy, seeds: list[int]) -> float:
    return float(np.mean([play(env, policy, seed)["reward"] for seed in seeds]))


# --- tuning and training ----------------------------------------------------------------------------


SMALL_LOSS_GRID = ((0.0, 0.0), *((drop, ramp) for drop in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6) for ramp in (0.0, 0.5, 1.0)))


def tune_small_loss(env_id: str, val_episodes: int, grid: tuple[tuple[float, float], ...] = SMALL_LOSS_GRID):
    """The ``(drop, ramp)`` of the grid with the best mean reward on ``val`` episodes ``VAL_SEED + i``."""
    env, task = make_env(env_id, split="val"), {"env_id": env_id}
    seeds = [VAL_SEED + i for i in range(val_episodes)]
    scores = {point: mean_reward(env, agent_policy(SmallLoss(SmallLoss.Config(*point), task)), seeds) for point in grid}
    return SmallLoss(SmallLoss.Config(*max(scores, key=scores.get)), task), scores


def search_weighting_function(env_id: str, evaluations: int, episodes: int, seed: int = 0):
    """CMA-ES (the ``cmaes`` searcher of ``metabench.search``) over ``[a, b, c]``, each candidate on fresh ``val``
    tasks; the answer is the searcher's recommendation (the distribution's mean)."""
    from gymnasium import spaces

    env, task = make_env(env_id, split="val"), {"env_id": env_id}
    low, high = WeightingFunction.bounds
    searcher = load_searcher("cmaes")(spaces.Box(low, high, (3,), np.float64, seed=seed), seed)
    rng = np.random.default_rng(seed)
    trace = []
    for _ in range(evaluations):
        candidate = searcher.ask()
        agent = WeightingFunction(WeightingFunction.Config([float(x) for x in candidate]), task)
        reward = mean_reward(env, agent_policy(agent), [int(s) for s in rng.integers(2**31, size=episodes)])
        searcher.tell(candidate, reward)
        trace.append(reward)
    best = searcher.recommend()
    return WeightingFunction(WeightingFunction.Config([float(x) for x in best]), task), trace


def train_meta_weight_net(env_id: str, iterations: int, seed: int = 0, **config: Any) -> tuple[MetaWeightNet, list]:
    """Meta-train a :class:`MetaWeightNet` on ``train`` tasks of the env's sampler."""
    agent = MetaWeightNet(MetaWeightNet.Config(**config), {"env_id": env_id}, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    history = [
        agent.train_step(agent.env.sampler.sample(agent.config.meta_batch, generator))["loss"]
        for _ in range(iterations)
    ]
    return agent, history


def compare(env_id: str, policies: dict[str, Policy], episodes: int, split: str = "test") -> tuple[list, dict]:
    """Every policy on the same episodes ``reset(seed=TEST_SEED + i)``: rows and a summary with 95% CIs, each
    policy's paired difference to ``uniform`` included when it is there."""
    env = make_env(env_id, split=split)
    rows = []
    for name, policy in policies.items():
        rows += [{"policy": name, "episode": i, **play(env, policy, TEST_SEED + i)} for i in range(episodes)]
    summary: dict[str, Any] = {"env_id": env_id, "split": split, "episodes": episodes, "episode_seed": TEST_SEED}
    rewards = {name: np.array([r["reward"] for r in rows if r["policy"] == name]) for name in policies}
    for name, values in rewards.items():
        entry = {"reward": mean_ci95(values)}
        accuracy = np.array([r["accuracy"] for r in rows if r["policy"] == name])
        if not np.isnan(accuracy).any():
            entry["accuracy"] = mean_ci95(accuracy)
        if "uniform" in rewards and name != "uniform":
            entry["minus_uniform"] = mean_ci95(values - rewards["uniform"])
        entry["diverged"] = float(np.mean([r["diverged"] for r in rows if r["policy"] == name]))
        summary[name] = entry
    return rows, summary


METHODS = ("uniform", "oracle", "small-loss", "l2rw", "weighting-function", "meta-weight-net")


def save_agent(agent: WeightingAgent, env_id: str, path: Path, *, iterations: int, tasks: int, seconds: float) -> Path:
    """Write a tuned or trained agent as a metabench checkpoint: ``iterations`` evaluations (grid points, search
    candidates, meta-iterations) of ``tasks`` tasks each in ``seconds``, recorded as its training budget."""
    training = {
        "wall_seconds": round(seconds, 3),
        "meta_batch": tasks,
        "episodes_seen": iterations * tasks,
        "device": "cpu",
        "device_name": device_name("cpu"),
        "command": shlex.join([sys.executable, "-m", "metabench_baselines.reweight", *sys.argv[1:]]),
    }
    return save_checkpoint(learner_checkpoint(agent, env_id, iteration=iterations, training=training), path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Tune, train and compare the MetaReweight references.")
    parser.add_argument("--env", default="MetaReweight-Sinusoid-v0")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--test-episodes", type=int, default=200, help="test tasks of the comparison (0: none)")
    parser.add_argument("--checkpoints", action="store_true", help="also write every gym agent as METHOD/checkpoint.pt")
    parser.add_argument("--val-episodes", type=int, default=50, help="tasks per small-loss grid point")
    parser.add_argument("--cmaes-evaluations", type=int, default=60)
    parser.add_argument("--cmaes-episodes", type=int, default=8, help="val tasks per CMA-ES candidate")
    parser.add_argument("--mwn-iterations", type=int, default=100)
    parser.add_argument("--mwn-outer-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    policies: dict[str, Policy] = {}
    record: dict[str, Any] = {"command": vars(args) | {"out": str(args.out)}}
    for method in args.methods:
        start = time.perf_counter()
        agent, budget = None, {"iterations": 0, "tasks": 1}
        if method == "uniform":
            agent = UniformWeights(UniformWeights.Config(), {"env_id": args.env})
            policies[method] = agent_policy(agent)
        elif method == "oracle":
            policies[method] = oracle
        elif method == "l2rw":
            policies[method] = l2rw
        elif method == "small-loss":
            agent, scores = tune_small_loss(args.env, args.val_episodes)
            record[method] = {
                "config": dataclasses.asdict(agent.config),
                "val_rewards": {str(k): v for k, v in scores.items()},
            }
            policies[method] = agent_policy(agent)
            budget = {"iterations": len(scores), "tasks": args.val_episodes}
        elif method == "weighting-function":
            agent, trace = search_weighting_function(args.env, args.cmaes_evaluations, args.cmaes_episodes, args.seed)
            record[method] = {"coefficients": agent.config.coefficients, "trace": trace}
            policies[method] = agent_policy(agent)
            budget = {"iterations": args.cmaes_evaluations, "tasks": args.cmaes_episodes}
        else:
            agent, history = train_meta_weight_net(args.env, args.mwn_iterations, args.seed, outer_lr=args.mwn_outer_lr)
            torch.save(agent.state_dict(), args.out / "meta-weight-net.pt")
            record[method] = {"history": history}
            policies[method] = agent_policy(agent)
            budget = {"iterations": args.mwn_iterations, "tasks": agent.config.meta_batch}
        seconds = time.perf_counter() - start
        record.setdefault(method, {})["seconds"] = round(seconds, 1)
        if args.checkpoints and agent is not None:
            path = save_agent(agent, args.env, args.out / method / "checkpoint.pt", seconds=seconds, **budget)
            print(f"{method}: {path}", flush=True)
        print(f"{method}: ready in {record[method]['seconds']} s", flush=True)
    if args.test_episodes == 0:
        return record
    rows, summary = compare(args.env, policies, args.test_episodes)
    with (args.out / "episodes.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary["training"] = record
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "training"}, indent=2))
    return summary


if __name__ == "__main__":
    main()
