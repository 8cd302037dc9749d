"""Black-box search over open-loop candidates: the harness behind ``metabench search``.

Some learned parts of a learning algorithm are searched rather than trained by gradient: an
augmentation policy (MetaAugment), an architecture (MetaNAS), a learning-rate schedule
(MetaOptimizer). The harness treats them alike. A *candidate* is what an open-loop agent does in one
episode: the env's action at each of its ``horizon`` steps (``env.unwrapped.horizon``, default 1),
flattened into one vector of :func:`candidate_space` (a ``MultiDiscrete`` for discrete actions, a
``Box`` for continuous ones). A :class:`Searcher` proposes candidates (``ask``) and learns from their
rewards (``tell``); :func:`search` runs one for a budget of evaluations and writes its trace, its
best candidate, and that candidate as an :class:`OpenLoop` agent checkpoint that ``metabench
evaluate`` scores on the test protocol like any other agent. :func:`plot_best_so_far` compares
methods over seeds at equal numbers of evaluations.

Searchers are found by name through the ``metabench.searchers`` entry-point group (the reference
ones in ``baselines/search.py``: ``random``, ``evolution``, ``reinforce``, ``cmaes``) or by an import
path ``"package.module:ClassName"``.

Search runs on the env's ``val`` split when it has one (``split`` in its spec), never on ``test``.
The env is made once; its first reset is seeded with the search seed and later resets continue its
task stream, so every method run with the same seed is scored on the same sequence of tasks.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from tqdm import tqdm

from metabench.checkpoints import checkpoint_content, save_checkpoint
from metabench.envs import make_env
from metabench.envs.common import device_name
from metabench.learners import Learner, load_class, registered
from metabench.training import write_csv

ENTRY_POINT_GROUP = "metabench.searchers"
Space = spaces.MultiDiscrete | spaces.Box


class Searcher:
    """Base class of ask/tell black-box searchers that maximise the reward of candidates in ``space``.

    Args:
        space: the candidate space (:func:`candidate_space` of the env).
        seed: seeds every random choice of the searcher.
        **config: the searcher's hyperparameters (keyword arguments of the subclass).
    """

    name: ClassVar[str]
    batch: int | None = 1
    """How :func:`search` may run the searcher on parallel workers: ``None`` for an asynchronous searcher
    (a new :meth:`ask` whenever a worker is free; :meth:`tell` in order of arrival, which need not be the
    order of asking); an integer ``k`` for a batch-synchronous one (``k`` asks, then their ``k`` tells in
    the order asked, then the next ``k``: a CMA-ES generation). ``1``, the safe default, alternates ask
    and tell; a searcher whose asks within a batch do not depend on pending tells gives the same trace
    with any number of workers."""

    def __init__(self, space: Space, seed: int) -> None:
        self.space = space
        self.seed = seed

    def ask(self) -> np.ndarray:
        """The next candidate to evaluate, an element of ``space``."""
        raise NotImplementedError

    def tell(self, candidate: np.ndarray, reward: float) -> None:
        """Learn from the reward of a candidate returned by an earlier :meth:`ask` (see :attr:`batch`)."""
        raise NotImplementedError

    def recommend(self) -> np.ndarray | None:
        """The searcher's own final answer, if it has a better one than the best single evaluation.

        A single evaluation on a few tasks is noisy, so the best-scoring candidate is partly the
        luckiest; a model-based searcher (e.g. CMA-ES's distribution mean) can do better. ``None``
        (the default): the best evaluated candidate is the answer.
        """
        return None

    def attach(self, env: gym.Env) -> None:
        """Called by :func:`search` with the env before the first :meth:`ask`: a searcher that needs more than the
        candidate space (DARTS trains the env's continuous relaxation) takes it here; by default nothing."""

    def costs(self) -> dict[str, float]:
        """What the searcher itself spent beside the env's evaluations (DARTS: its supernet training's seconds),
        written to ``best.json`` as ``total_searcher_<key>``; none by default."""
        return {}


def available_searchers() -> dict[str, str]:
    """Registered searcher names and their import paths."""
    return registered(ENTRY_POINT_GROUP)


def load_searcher(name: str) -> type[Searcher]:
    """The searcher class registered as ``name``, or at the import path ``"module:Class"``."""
    return load_class(ENTRY_POINT_GROUP, name, Searcher, "search method")


# --------------------------------------------------------------------------- candidates and playing them


def horizon(env: gym.Env) -> int:
    """Steps of one episode of ``env`` (its ``horizon`` attribute; 1 for one-step envs)."""
    return int(getattr(env.unwrapped, "horizon", 1))


def candidate_space(env: gym.Env) -> Space:
    """The open-loop candidates of ``env``: its action at each of its ``horizon`` steps, flattened."""
    step, steps = env.unwrapped.action_space, horizon(env)
    if isinstance(step, spaces.Discrete):
        if int(step.start) != 0:
            raise ValueError(f"candidate_space supports Discrete spaces starting at 0, got start {step.start}")
        return spaces.MultiDiscrete(np.full(steps, int(step.n)), seed=0)
    if isinstance(step, spaces.MultiDiscrete):
        return spaces.MultiDiscrete(np.tile(step.nvec.ravel(), steps), seed=0)
    if isinstance(step, spaces.Box):
        low, high = (np.tile(bound.ravel(), steps).astype(np.float64) for bound in (step.low, step.high))
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError("candidate_space needs a bounded Box action space")
        return spaces.Box(low, high, dtype=np.float64, seed=0)
    raise ValueError(f"candidate_space supports Discrete, MultiDiscrete and Box actions, not {step}")


def step_actions(env: gym.Env, candidate: Any) -> list[Any]:
    """Split a candidate into the env's actions, one per step; refuses candidates outside the space clearly."""
    space = candidate_space(env)
    vector = np.asarray(candidate, dtype=np.float64)
    if vector.shape != space.shape:
        name = env.spec.id if env.spec else type(env.unwrapped).__name__
        raise ValueError(f"a candidate of {name} has shape {space.shape}, got {vector.shape}")
    if not np.isfinite(vector).all():
        raise ValueError("a candidate must be finite (no NaN or inf)")
    if isinstance(space, spaces.MultiDiscrete):
        if (vector != np.round(vector)).any() or (vector < 0).any() or (vector >= space.nvec).any():
            raise ValueError(f"a candidate must hold integers 0 <= c[i] < {space.nvec.tolist()}, got {vector.tolist()}")
    step = env.unwrapped.action_space
    rows = np.split(vector, horizon(env))
    if isinstance(step, spaces.Discrete):
        return [int(row[0]) for row in rows]
    if isinstance(step, spaces.MultiDiscrete):
        return [row.astype(np.int64).reshape(step.shape) for row in rows]
    return [row.astype(step.dtype).reshape(step.shape) for row in rows]


def play(env: gym.Env, candidate: Any, seed: int | None = None) -> tuple[float, dict[str, Any]]:
    """Reset ``env`` (with ``seed``) and play ``candidate`` step by step; returns the total reward and last info."""
    actions = step_actions(env, candidate)
    env.reset(seed=seed)
    total, done, info = 0.0, False, {}
    for action in actions:  # an episode may end early (e.g. a diverged learner); the rest is not played
        _, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        done = terminated or truncated
        if done:
            break
    if not done:
        raise RuntimeError(f"the episode did not end after the env's horizon of {len(actions)} steps")
    return total, info


class OpenLoop(Learner):
    """An agent that plays a fixed candidate (``config.candidate``): a found policy, architecture or schedule.

    It ignores its observations, so it is the agent that open-loop search methods produce; any
    env's protocol scores it through :func:`metabench.evaluation.evaluate`.
    """

    name = "open-loop"
    transductive = False

    @dataclasses.dataclass
    class Config:
        candidate: list[float] = dataclasses.field(default_factory=list)
        meta_batch: int = 1

    def __init__(self, config: Config, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(config, task, device, seed)
        self._actions = step_actions(make_env(task["env_id"], split="val", device="cpu"), config.candidate)
        self._t = 0

    def reset(self) -> None:
        self._t = 0

    def act(self, observation: Any) -> Any:
        if self._t >= len(self._actions):
            raise RuntimeError(f"the candidate has {len(self._actions)} steps; call reset() between episodes")
        self._t += 1
        return self._actions[self._t - 1]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def open_loop_checkpoint(
    env_id: str,
    candidate: Any,
    path: str | Path,
    *,
    training: dict[str, Any],
    iterations: int = 0,
    seed: int = 0,
    env: gym.Env | None = None,
) -> Path:
    """Write ``candidate`` as an :class:`OpenLoop` agent checkpoint that ``metabench evaluate`` loads.

    ``training`` is the budget that found it: ``wall_seconds``, ``meta_batch`` (episodes per
    evaluation), ``episodes_seen``, ``device``, ``device_name`` and optionally ``command``;
    ``iterations`` is the number of evaluations. The candidate is checked against ``env``'s spaces
    (default: ``env_id`` as registered; pass the env at hand to avoid building another one).
    """
    values = [float(value) for value in np.asarray(candidate, dtype=np.float64).ravel()]
    step_actions(make_env(env_id, split="val") if env is None else env, values)  # refuse what the env cannot play
    config = OpenLoop.Config(candidate=values, meta_batch=int(training["meta_batch"]))
    content = checkpoint_content(
        OpenLoop,
        env_id,
        config=dataclasses.asdict(config),
        seed=seed,
        state={},
        iteration=iterations,
        training=training,
    )
    return save_checkpoint(content, path)


# --------------------------------------------------------------------------- one search, many searches


@dataclasses.dataclass
class SearchResult:
    """What :func:`search` found: the best evaluated candidate, its reward, the answer and the trace."""

    best_candidate: list[float]
    best_reward: float
    answer: list[float]  # what checkpoint.pt plays: the searcher's recommendation, else the best candidate
    trace: list[dict[str, Any]]
    out_dir: Path


class SearchInterrupted(KeyboardInterrupt):
    """Raised by :func:`search` on Ctrl-C: ``path`` (its trace) and ``evaluations`` (recorded) say what is kept."""

    def __init__(self, path: Path, evaluations: int) -> None:
        super().__init__(f"search interrupted after {evaluations} evaluations; trace saved to {path}")
        self.path, self.evaluations = path, evaluations


def task_seeds(seed: int, evaluation: int, episodes: int, fixed_tasks: bool = False) -> list[int]:
    """The env reset seeds of evaluation ``evaluation`` (1, 2, ...) of a search with ``seed``.

    Fresh tasks for every evaluation, derived from ``(seed, evaluation)`` alone so that any worker scores
    an evaluation on the same tasks; with ``fixed_tasks`` the same ``seed, seed + 1, ...`` for all.
    """
    if fixed_tasks:
        return [seed + episode for episode in range(episodes)]
    return [int(value) for value in np.random.SeedSequence([seed, evaluation]).generate_state(episodes)]


class CandidateWorker:
    """Scores candidates on an env: the search's own env in this process, or on each parallel worker its
    own copy (:meth:`make`)."""

    def __init__(self, env: gym.Env) -> None:
        self.env = env

    @classmethod
    def make(cls, spec: gym.envs.registration.EnvSpec, env_kwargs: dict[str, Any], device: str) -> CandidateWorker:
        """A worker with its own env, built from the spec (a worker process need not have the id registered)."""
        return cls(gym.make(spec, device=device, **env_kwargs))

    def score(self, candidate: np.ndarray, seeds: list[int]) -> dict[str, Any]:
        """The mean reward of ``candidate`` over the episodes reset with ``seeds``, the sums of the env's
        numeric ``info["cost_*"]`` and the seconds it took."""
        start = time.perf_counter()
        rewards, costs = [], defaultdict(float)
        for seed in seeds:
            reward, info = play(self.env, candidate, seed=seed)
            rewards.append(reward)
            for key, value in info.items():
                if key.startswith("cost_") and isinstance(value, int | float | np.number):
                    costs[key] += float(value)
        return {"reward": float(np.mean(rewards)), "costs": dict(costs), "seconds": time.perf_counter() - start}


def format_candidate(candidate: np.ndarray) -> str:
    """Space-separated, each value in the shortest form that reads back exactly (``3``, ``0.1``)."""
    return " ".join(repr(float(value)).removesuffix(".0") for value in np.asarray(candidate, dtype=np.float64))


def _parse_candidate(text: str) -> np.ndarray:
    return np.array([float(value) for value in text.split()], dtype=np.float64)


def search(
    method: str,
    env_id: str,
    *,
    evaluations: int,
    out_dir: str | Path,
    seed: int = 0,
    episodes: int = 1,
    fixed_tasks: bool = False,
    env_kwargs: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    command: str | None = None,
    workers: int = 1,
    address: str | None = None,
    gpus_per_worker: float | None = None,
) -> SearchResult:
    """Run searcher ``method`` on ``env_id`` for ``evaluations`` candidates, each scored on ``episodes`` episodes.

    Writes into ``out_dir``: ``search.json`` (the settings), ``trace.csv`` (one row per evaluation, appended
    as each result arrives: reward, best reward so far, the evaluation's own seconds, seconds since the
    search began, the candidate, and the sums of any numeric ``info["cost_*"]`` the env reports, e.g. a
    simulated training cost), then ``best.json`` and ``checkpoint.pt`` (the best candidate as an
    ``open-loop`` agent: what :meth:`Searcher.recommend` returns if not ``None``, else the best evaluated
    candidate). Returns the :class:`SearchResult`.

    Tasks: evaluation ``i`` is scored on the episodes reset with :func:`task_seeds` ``(seed, i)``: fresh
    tasks for each candidate (an unbiased but noisy score), the same on any worker. ``fixed_tasks=True``
    scores every candidate on the same ``episodes`` episodes (reset seeds ``seed, seed + 1, ...``):
    differences between candidates are then not blurred by task-to-task variation (common random
    numbers), at the risk of fitting those tasks; select the winner on other val tasks.

    Workers: ``workers > 1`` scores candidates on that many Ray workers (:class:`metabench.cluster.Pool`;
    ``address`` joins a cluster; on CUDA they share one GPU unless ``gpus_per_worker`` says otherwise), as the
    searcher's :attr:`Searcher.batch` allows: asynchronous searchers
    get a new candidate whenever a worker is free, batch-synchronous ones a batch at a time, and for those
    the trace equals the serial one. Resume: a search interrupted before ``best.json`` was written (Ctrl-C,
    a killed driver) continues from its ``trace.csv`` when run again with the same settings; the searcher
    replays the recorded rewards, and for a serial or batch-synchronous search the result is the same as
    an uninterrupted run.
    """
    from metabench.cluster import Pool, gpu_share

    if evaluations < 1 or episodes < 1:
        raise ValueError(f"evaluations and episodes must be >= 1, got {evaluations} and {episodes}")
    env_kwargs = dict(env_kwargs or {})
    spec = gym.spec(env_id)
    if "split" in spec.kwargs:
        env_kwargs.setdefault("split", "val")
    if env_kwargs.get("split") == "test":
        raise ValueError("search never runs on the test split: it would select on the tasks it is reported on")
    env = gym.make(env_id, device=device, **env_kwargs)
    searcher_class = load_searcher(method)
    searcher = searcher_class(candidate_space(env), seed, **(config or {}))
    searcher.attach(env)
    config = {**searcher_defaults(searcher_class), **(config or {})}  # recorded in full: defaults may change
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "method": method,
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "seed": seed,
        "episodes_per_evaluation": episodes,
        "fixed_tasks": fixed_tasks,
        "config": config,
    }
    trace = _resume(out, settings, searcher)
    (out / "search.json").write_text(json.dumps({**settings, "evaluations": evaluations}, indent=1, default=str) + "\n")

    best_reward, best_candidate, costs = -math.inf, None, defaultdict(float)
    for row in trace:
        if row["reward"] > best_reward:
            best_reward, best_candidate = row["reward"], _parse_candidate(row["candidate"])
    if trace:
        costs.update({key[len("total_") :]: value for key, value in trace[-1].items() if key.startswith("total_")})
    elapsed_before = trace[-1]["elapsed"] if trace else 0.0
    started = time.perf_counter()

    def record(index: int, candidate: np.ndarray, result: dict[str, Any]) -> None:
        nonlocal best_reward, best_candidate
        searcher.tell(candidate, result["reward"])
        for key, value in result["costs"].items():
            costs[key] += value
        if result["reward"] > best_reward:
            best_reward, best_candidate = result["reward"], np.asarray(candidate, dtype=np.float64)
        trace.append(
            {
                "evaluation": index,
                "reward": result["reward"],
                "best_reward": best_reward,
                "seconds": round(result["seconds"], 4),
                "elapsed": round(elapsed_before + time.perf_counter() - started, 3),
                **{f"total_{key}": round(value, 4) for key, value in costs.items()},
                "candidate": format_candidate(candidate),
            }
        )
        write_csv(trace, out / "trace.csv")  # after every result: an interrupted search resumes from here
        bar.update(1)
        bar.set_postfix(reward=f"{result['reward']:.4f}", best=f"{best_reward:.4f}")

    batch = searcher.batch
    next_index = max((row["evaluation"] for row in trace), default=0) + 1
    asked, candidates = len(trace), {}
    generation: list[list[Any]] = []  # batch-synchronous: [index, candidate, result or None] in ask order

    def submit() -> None:
        nonlocal next_index, asked
        candidate = np.asarray(searcher.ask())
        candidates[next_index] = candidate
        pool.submit(next_index, "score", candidate, task_seeds(seed, next_index, episodes, fixed_tasks))
        if batch is not None:
            generation.append([next_index, candidate, None])
        next_index, asked = next_index + 1, asked + 1

    description = f"search {method} on {env_id} (seed {seed}{f', {workers} workers' if workers > 1 else ''})"
    try:
        with (
            Pool(
                CandidateWorker.make,
                spec,
                env_kwargs,
                str(device),
                workers=workers,
                address=address,
                gpus=gpu_share(str(device), workers, gpus_per_worker),
                local=CandidateWorker(env),  # serially, the env made above scores the candidates
            ) as pool,
            tqdm(total=evaluations, initial=len(trace), desc=description, disable=not progress) as bar,
        ):
            if workers > 1 and progress:
                bar.write(f"search {method} on {env_id}: {pool.describe()}")
            while len(trace) < evaluations:
                if batch is None:
                    while asked < evaluations and (pool.idle() or not pool.pending()):
                        submit()
                elif not generation:  # the rest of a batch a resumed trace ended in, else a whole one
                    for _ in range(min(batch - asked % batch, evaluations - asked)):
                        submit()
                index, result = pool.next()
                if batch is None:
                    record(index, candidates.pop(index), result)
                    continue
                next(entry for entry in generation if entry[0] == index)[2] = result
                while generation and generation[0][2] is not None:  # tell in the order asked
                    index, candidate, result = generation.pop(0)
                    record(index, candidate, result)
    except KeyboardInterrupt:  # the trace holds every result so far
        raise SearchInterrupted(out / "trace.csv", len(trace)) from None
    return write_result(
        out,
        settings,
        trace,
        best_reward,
        best_candidate,
        searcher.recommend(),
        {**costs, **{f"searcher_{key}": value for key, value in searcher.costs().items()}},
        workers=workers,
        evaluations=evaluations,
        device=device,
        command=command,
        env=env,
    )


def write_result(
    out: Path,
    settings: dict[str, Any],
    trace: list[dict[str, Any]],
    best_reward: float,
    best_candidate: Any,
    recommended: Any,
    totals: dict[str, float],
    *,
    workers: int,
    evaluations: int,
    device: str | torch.device,
    command: str | None,
    env: gym.Env | None = None,
) -> SearchResult:
    """Write a finished search's ``best.json`` and ``checkpoint.pt`` (its answer as an ``open-loop`` agent: the
    searcher's ``recommended`` candidate if not None, else the best evaluated one); returns the result."""
    best = [float(value) for value in np.asarray(best_candidate, dtype=np.float64)]
    answer = best if recommended is None else [float(value) for value in np.asarray(recommended, dtype=np.float64)]
    wall = trace[-1]["elapsed"]
    (out / "best.json").write_text(
        json.dumps(
            {
                **settings,
                "evaluations": evaluations,
                "workers": workers,
                "best_reward": best_reward,
                "best_evaluation": next(row["evaluation"] for row in trace if row["reward"] == best_reward),
                "best_candidate": best,
                "recommended_candidate": None if recommended is None else answer,
                "wall_seconds": round(wall, 2),
                **{f"total_{key}": value for key, value in totals.items()},
            },
            indent=1,
        )
        + "\n"
    )
    searched = ("method", "scheduler", "env_kwargs", "config", "fixed_tasks")
    training = {
        "wall_seconds": round(wall, 3),
        "meta_batch": settings["episodes_per_evaluation"],
        "episodes_seen": len(trace) * settings["episodes_per_evaluation"],
        "device": str(torch.device(device)),
        "device_name": device_name(device),
        "search": {key: settings[key] for key in searched if key in settings},
        **({"command": command} if command else {}),
    }
    path = out / "checkpoint.pt"
    open_loop_checkpoint(
        settings["env_id"], answer, path, training=training, iterations=len(trace), seed=settings["seed"], env=env
    )
    return SearchResult(best, best_reward, answer, trace, out)


def _resume(out: Path, settings: dict[str, Any], searcher: Searcher) -> list[dict[str, Any]]:
    """The trace of an unfinished search in ``out`` (none if there is none or it finished), replayed into
    ``searcher``; refuses a trace written with other settings."""
    path = out / "trace.csv"
    if (out / "best.json").exists() or not path.exists():
        return []
    previous = json.loads((out / "search.json").read_text()) if (out / "search.json").exists() else None
    if previous is None or json.loads(json.dumps(settings, default=str)) != {
        key: value for key, value in previous.items() if key != "evaluations"
    }:
        raise ValueError(
            f"{out} holds an unfinished search with other settings: resume it as it was, or use another --out"
        )
    with open(path, newline="") as handle:
        trace = [
            {
                key: value if key == "candidate" else int(value) if key == "evaluation" else float(value)
                for key, value in row.items()
            }
            for row in csv.DictReader(handle)
        ]
    for row in trace:
        recorded = _parse_candidate(row["candidate"])
        asked = np.asarray(searcher.ask(), dtype=np.float64)
        if searcher.batch is not None and not np.array_equal(asked, recorded):
            method = settings["method"]
            raise ValueError(f"{path} does not replay: evaluation {row['evaluation']} is not what {method} asks now")
        searcher.tell(asked if searcher.batch is not None else recorded, row["reward"])
    where = f"{settings['method']} on {settings['env_id']} (seed {settings['seed']})"
    print(f"resuming {where} after {len(trace)} evaluations")
    return trace


def searcher_defaults(searcher_class: type[Searcher]) -> dict[str, Any]:
    """The keyword defaults of a searcher's ``__init__`` (its hyperparameters)."""
    parameters = inspect.signature(searcher_class.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def load_runs(run_dirs: list[str | Path]) -> dict[str, list[dict[str, Any]]]:
    """The search runs found in ``run_dirs`` (folders holding ``best.json`` and ``trace.csv``, searched
    recursively), grouped by method: ``{method: [{"dir": folder, "best": best.json, "rows": trace rows,
    "best_reward": array}, ...]}``."""
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run_dir in run_dirs:
        found = sorted(Path(run_dir).rglob("best.json"))
        if not found:
            raise FileNotFoundError(f"no search run (best.json) under {run_dir}")
        for path in found:
            best = json.loads(path.read_text())
            with open(path.parent / "trace.csv", newline="") as handle:
                rows = list(csv.DictReader(handle))
            runs[best["method"]].append(
                {
                    "dir": path.parent,
                    "best": best,
                    "rows": rows,
                    "best_reward": np.array([float(row["best_reward"]) for row in rows]),
                }
            )
    return dict(runs)


def summarize(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per method: seeds, evaluations, and the mean and 95% CI over seeds of the best reward found."""
    from metabench.evaluation import mean_ci95

    rows = []
    for method, method_runs in runs.items():
        evaluations = min(len(run["best_reward"]) for run in method_runs)
        finals = np.array([run["best_reward"][evaluations - 1] for run in method_runs])
        mean, ci = mean_ci95(finals)
        rows.append(
            {
                "method": method,
                "seeds": len(method_runs),
                "evaluations": evaluations,
                "best_reward_mean": mean,
                "best_reward_ci95": ci,
                "wall_seconds_mean": float(np.mean([run["best"]["wall_seconds"] for run in method_runs])),
            }
        )
    return rows


def _env_of(run: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return run["best"]["env_id"], run["best"].get("env_kwargs") or {}


def runs_env(runs: dict[str, list[dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    """The env id and env arguments every run in ``runs`` searched; ``ValueError`` if they differ, since rewards of
    different problems (another env, or the same env with other arguments) are not comparable on one axis."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for method_runs in runs.values():
        for run in method_runs:
            env_id, env_kwargs = _env_of(run)
            found.setdefault(json.dumps([env_id, env_kwargs], sort_keys=True, default=str), (env_id, env_kwargs))
    if len(found) != 1:
        listed = "; ".join(f"{env_id} {env_kwargs}" for env_id, env_kwargs in found.values())
        raise ValueError(f"the search runs are on {len(found)} different envs ({listed}): compare one env at a time")
    return next(iter(found.values()))


def max_reward(env_id: str, env_kwargs: dict[str, Any] | None = None) -> float | None:
    """The largest total reward an episode of ``env_id`` can earn, where metabench knows it: 0 for its envs, whose
    reward is minus a loss (except ``reward_mode="delta"``, whose rewards sum to a loss decrease); else None."""
    from metabench import ENV_IDS

    if env_id not in ENV_IDS:
        return None
    reward_mode = {**gym.spec(env_id).kwargs, **(env_kwargs or {})}.get("reward_mode", "final")
    return None if reward_mode == "delta" else 0.0


def plot_best_so_far(runs: dict[str, list[dict[str, Any]]], path: str | Path, title: str = "") -> Path:
    """Best-so-far reward against evaluations: mean over seeds and its 95% CI band, one line per method.

    Every run must be on the same env (:func:`runs_env`), which labels the plot; the band is clipped at the
    env's :func:`max_reward` (0 for metabench's envs: no reward is above it). Without ``title`` the env names it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env_id, env_kwargs = runs_env(runs)
    bound = max_reward(env_id, env_kwargs)
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for method, method_runs in sorted(runs.items()):
        evaluations = min(len(run["best_reward"]) for run in method_runs)
        curves = np.stack([run["best_reward"][:evaluations] for run in method_runs])
        mean = curves.mean(axis=0)
        half = 1.96 * curves.std(axis=0, ddof=1) / math.sqrt(len(curves)) if len(curves) > 1 else 0 * mean
        x = np.arange(1, evaluations + 1)
        axis.plot(x, mean, label=f"{method} ({len(curves)} seeds)")
        upper = mean + half if bound is None else np.minimum(mean + half, bound)
        axis.fill_between(x, mean - half, upper, alpha=0.2)
    axis.set_xlabel("evaluations")
    axis.set_ylabel(f"best reward so far on {env_id}\n(mean, 95% CI over seeds)")
    arguments = {key: value for key, value in env_kwargs.items() if key != "split"}
    axis.set_title(title or " ".join([env_id, *(f"{key}={value}" for key, value in arguments.items())]))
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
