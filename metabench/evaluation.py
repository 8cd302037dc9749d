"""The frozen evaluation protocol: a fixed, seeded list of test episodes scored through the env.

Everyone evaluated on an environment id sees the same episodes, and their sha256 (over every
support and query tensor) is recorded, so a score can always be traced to its episodes:

* one-step few-shot envs (MetaOmniglot, MetaSinusoid: :class:`~metabench.envs.common.TaskEnv`):
  ``TEST_EPISODES`` tasks of the ``test`` split, drawn by the env's own sampler ``CHUNK`` tasks at a
  time from a CPU generator seeded with ``TEST_SEED``, scored in batches from
  :meth:`~metabench.learners.Learner.predict`;
* every other env (MetaOptimizer, MetaAugment, ...): the gym loop. Episode ``i`` starts with
  ``learner.reset()`` and ``env.reset(seed=TEST_SEED + i)`` and runs ``learner.act`` until it ends;
  its reward is the sum of the step rewards and its accuracy the last ``info["accuracy"]``. The env's
  ``test_episodes`` attribute (default ``TEST_EPISODES``) sets the length of its protocol, and its
  ``tasks`` attribute (the current :class:`~metabench.episodes.Episodes`), if any, is hashed.

* design envs, whose answer is a learner still to be trained (MetaNAS: an architecture), which
  declare a ``test_learner``, a ``test_recipe`` and a few-shot ``test_env``: the trained learner is
  scored on ``test_env``'s episodes as above, under the env's protocol plus the recipe;
  :func:`evaluate_checkpoint` trains the agent's design first (:func:`train_design`) and keeps the
  trained learner as the checkpoint it scored.

Rewards are the environment's own (minus query losses). The summary reports mean accuracy and
reward with 95% confidence intervals (1.96 standard errors), wall time, device and peak memory, and
whether the learner was transductive.
"""

from __future__ import annotations

import hashlib
import json
import math
import resource
import time
from collections.abc import Iterator
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec, load_env_creator
from tqdm import tqdm

import metabench
from metabench.checkpoints import learner_checkpoint, load_checkpoint, save_checkpoint, transfer_checkpoint
from metabench.envs import check_env_kwargs, make_env
from metabench.envs.common import TaskEnv, device_name
from metabench.episodes import Episodes
from metabench.learners import Learner, load_learner_class

TEST_EPISODES = 1000
TEST_SEED = 2026
CHUNK = 25
FORMAT = "metabench-evaluation/1"
TEST_RUNS_FILE = "test_runs.jsonl"


def protocol_episodes(env: gym.Env) -> int:
    """Length of ``env``'s frozen test protocol: its ``test_episodes`` attribute, else ``TEST_EPISODES``."""
    return int(getattr(env, "test_episodes", TEST_EPISODES))


def scored_env(env: gym.Env) -> tuple[gym.Env, dict[str, Any]]:
    """The env whose test episodes score a learner, and the protocol they are recorded under: ``env`` itself,
    or for a design env (MetaNAS: it names a ``test_learner`` to train) its few-shot ``test_env``, under
    ``env``'s protocol plus its ``test_recipe``."""
    if getattr(env, "test_learner", None) is None:
        return env, env.protocol
    return env.test_env, {**env.protocol, "test_recipe": env.test_recipe}


def episode_chunks(env: TaskEnv, n_episodes: int, seed: int, chunk: int = CHUNK) -> Iterator[Episodes]:
    """The seeded episode list of an env, ``chunk`` tasks per draw (the last draw may be smaller)."""
    for _, episodes in episode_chunk_states(env, n_episodes, seed, chunk):
        yield episodes


def episode_chunk_states(
    env: TaskEnv, n_episodes: int, seed: int, chunk: int = CHUNK
) -> Iterator[tuple[torch.Tensor, Episodes]]:
    """:func:`episode_chunks` with the generator state before each draw: what redraws that chunk alone
    (``env.sampler.sample(len(episodes), torch.Generator().set_state(state))``), e.g. on a parallel worker."""
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, n_episodes, chunk):
        state = generator.get_state()
        yield state, env.sampler.sample(min(chunk, n_episodes - start), generator)


def _update_hash(digest: Any, episodes: Episodes) -> None:
    for tensor in (episodes.support_inputs, episodes.support_targets, episodes.query_inputs, episodes.query_targets):
        digest.update(tensor.contiguous().cpu().numpy().tobytes())


@cache
def test_protocol(env_id: str, n_episodes: int | None = None, seed: int = TEST_SEED) -> dict[str, Any]:
    """The protocol a test score on ``env_id`` is measured under, with the sha256 of its episodes."""
    env, protocol = scored_env(make_env(env_id, split="test"))
    n_episodes = protocol_episodes(env) if n_episodes is None else n_episodes
    digest = hashlib.sha256()
    if isinstance(env, TaskEnv):
        for episodes in episode_chunks(env, n_episodes, seed):
            _update_hash(digest, episodes)
    else:
        for i in range(n_episodes):
            env.reset(seed=seed + i)
            if getattr(env, "tasks", None) is not None:
                _update_hash(digest, env.tasks)
    return {**protocol, "episodes": n_episodes, "episode_seed": seed, "episodes_sha256": digest.hexdigest()}


def mean_ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of its normal 95% confidence interval."""
    values = np.asarray(values, dtype=np.float64)
    half_width = 1.96 * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(half_width)


def paired_difference(evaluation: str | Path, baseline: str | Path) -> dict[str, Any]:
    """Per-episode difference ``evaluation - baseline`` of two scorings of the same protocol episodes (folders of
    ``metabench evaluate`` or leaderboard entries): mean and 95% CI of the reward (and accuracy) differences and the
    share of episodes on which ``evaluation`` scores a higher reward. Paired over the same tasks, the CI is far
    narrower than the unpaired ones when both agents find the same tasks hard."""
    folders = [Path(evaluation), Path(baseline)]
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in folders]
    hashes = [summary["protocol"]["episodes_sha256"] for summary in summaries]
    if hashes[0] != hashes[1]:
        raise ValueError(f"{evaluation} and {baseline} were scored on different episodes ({hashes[0]}, {hashes[1]})")
    records = [
        [json.loads(line) for line in (folder / "episodes.jsonl").read_text().splitlines()] for folder in folders
    ]
    result: dict[str, Any] = {
        "env_id": summaries[0].get("env_id"),
        "episodes": len(records[0]),
        "episodes_sha256": hashes[0],
    }
    for key in ("reward", "accuracy"):
        if all(key in record for record in records[0] + records[1]):
            difference = np.array([a[key] - b[key] for a, b in zip(*records, strict=True)])
            result[f"{key}_difference_mean"], result[f"{key}_difference_ci95"] = mean_ci95(difference)
            if key == "reward":
                result["better_fraction"] = float(np.mean(difference > 0))
    return result


def evaluate(
    learner: Learner,
    env_id: str,
    *,
    split: str = "test",
    n_episodes: int | None = None,
    seed: int = TEST_SEED,
    device: str | torch.device | None = None,
    progress: bool = True,
    env_kwargs: dict[str, Any] | None = None,
    workers: int = 1,
    address: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score ``learner`` on the seeded episode list; returns the summary and one record per episode.

    ``n_episodes=None`` runs the env's whole protocol (:func:`protocol_episodes`). ``env_kwargs`` are
    env arguments beyond the registered ones (e.g. ``{"scheme": "lake"}``); they are recorded in the
    summary's protocol, so such a score is never mistaken for one on the registered protocol.
    ``workers > 1`` splits the episodes across that many Ray workers (:class:`metabench.cluster.Pool`,
    ``address`` joins a cluster), each with a copy of the learner; the records and the protocol hash
    are those of the serial run.
    """
    device = torch.device(device) if device is not None else learner.device
    env_kwargs = check_env_kwargs(env_kwargs)
    made = make_env(env_id, split=split, device=device, **env_kwargs)
    n_episodes = protocol_episodes(made) if n_episodes is None else n_episodes
    if n_episodes < 1:
        raise ValueError(f"{env_id} has no test protocol ({type(made).__name__}.test_episodes = 0); see its docs")
    env, protocol = scored_env(made)
    if env is not made and learner.name != made.test_learner:
        raise ValueError(
            f"{env_id} scores the {made.test_learner} its agent's design trains, not a {learner.name}: "
            "`metabench evaluate` on the agent's checkpoint trains the design first"
        )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    digest = hashlib.sha256()
    start = time.perf_counter()
    with tqdm(total=n_episodes, desc=f"evaluate {learner.name} on {env_id} [{split}]", disable=not progress) as bar:
        if workers > 1:
            worker = (learner, gym.spec(env_id), split, str(device), env_kwargs)
            reward, accuracy = _score_parallel(worker, env, n_episodes, seed, digest, bar, workers, address)
        else:
            score = _score_batched if isinstance(env, TaskEnv) else _score_gym_loop
            reward, accuracy = score(learner, env, n_episodes, seed, digest, bar)
    wall = time.perf_counter() - start

    if not np.isfinite(reward).all():  # the batched path scores predictions without the env's check of actions
        first = int(np.flatnonzero(~np.isfinite(reward))[0])
        raise ValueError(
            f"{learner.name} predicted NaN or inf (episode {first} of the {split} protocol): every query prediction "
            "must be finite, as the env's step requires; the learner's weights or outputs have diverged"
        )
    records = [
        {"episode": i, "reward": float(reward[i]), **({"accuracy": float(accuracy[i])} if accuracy is not None else {})}
        for i in range(n_episodes)
    ]
    results: dict[str, Any] = {"episodes": n_episodes}
    results["reward_mean"], results["reward_ci95"] = mean_ci95(reward)
    if accuracy is not None:
        results["accuracy_mean"], results["accuracy_ci95"] = mean_ci95(accuracy)
    summary = {
        "format": FORMAT,
        "env_id": env_id,
        "agent": learner.name,
        "transductive": learner.transductive,
        "protocol": {
            **protocol,
            **({"env_kwargs": env_kwargs} if env_kwargs else {}),
            "episodes": n_episodes,
            "episode_seed": seed,
            "episodes_sha256": digest.hexdigest(),
        },
        "results": results,
        "run": {
            "device": str(device),
            "device_name": device_name(device),
            "wall_seconds": round(wall, 3),
            "workers": workers,
            # each scoring process's intra-op threads (a Ray worker runs one): audits re-score at this count
            "threads": 1 if workers > 1 else torch.get_num_threads(),
            **({"cpu_capability": torch.backends.cpu.get_cpu_capability()} if device.type == "cpu" else {}),
            "peak_memory_bytes": torch.cuda.max_memory_allocated(device)
            if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "metabench_version": metabench.__version__,
            "torch_version": torch.__version__,
        },
    }
    return summary, records


def evaluate_checkpoint(
    checkpoint: str | Path,
    env_id: str,
    *,
    agent: str | None = None,
    device: str = "cpu",
    n_episodes: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    workers: int = 1,
    address: str | None = None,
    command: str | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], Path]:
    """The test protocol on a ``metabench train`` checkpoint, as ``metabench evaluate`` runs it.

    Checks that the checkpoint holds ``agent`` (a name or ``"module:Class"``; default: the checkpoint's own)
    trained on ``env_id`` (or on an env of another way, for a learner that moves: :func:`transfer_checkpoint`
    saves the scored checkpoint in ``out_dir``), evaluates it (env arguments: the checkpoint's, updated by
    ``env_kwargs``), adds
    the training record, the checkpoint's sha256 and ``command`` to the summary, writes it with the
    episode records to ``out_dir`` (default ``evaluation-ENV`` beside the checkpoint) and records the test
    run in the run folder (:func:`record_test_run`). Returns the summary and the folder.
    """
    path = Path(checkpoint)
    learner, state = load_checkpoint(path, device, agent=agent)
    if agent is not None and state["agent"] != load_learner_class(agent).name:
        raise ValueError(f"{path} is a {state['agent']} checkpoint, not {agent}")
    env_kwargs = {**(state.get("env_kwargs") or {}), **(env_kwargs or {})}
    out = Path(out_dir or path.parent / f"evaluation-{env_id}")
    if state["env_id"] != env_id:  # e.g. a ProtoNets model validated on 5-way, scored on the 20-way board
        path = transfer_checkpoint(learner, state, env_id, out / "checkpoint.pt", device=device)
        learner, state = load_checkpoint(path, device)
    test_learner = getattr(load_env_creator(gym.spec(env_id).entry_point), "test_learner", None)
    if test_learner is not None and state["agent"] != test_learner:  # a design agent (MetaNAS): train its design
        path = train_design(learner, state, env_id, out / "checkpoint.pt", device=device, env_kwargs=env_kwargs)
        learner, state = load_checkpoint(path, device)
    summary, records = evaluate(
        learner,
        env_id,
        n_episodes=n_episodes,
        device=device,
        env_kwargs=env_kwargs,
        workers=workers,
        address=address,
        progress=progress,
    )
    if n_episodes is not None and n_episodes != (full := protocol_episodes(make_env(env_id, split="test"))):
        summary["note"] = f"{n_episodes} episodes instead of the protocol's {full}: not a test score"
    summary["training"] = {
        **state["training"],
        "iterations": state["iteration"],
        "seed": state["seed"],
        "config": state["config"],
    }
    summary["checkpoint"] = {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    if command is not None:
        summary["command"] = command
    if "design" in state:
        summary["design"] = state["design"]
    out = write_evaluation(summary, records, out)
    record_test_run(path, summary)
    return summary, out


def train_design(
    agent: Learner,
    state: dict[str, Any],
    env_id: str,
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    env_kwargs: dict[str, Any] | None = None,
) -> Path:
    """The first stage of a design env's test protocol (MetaNAS): ``agent`` (a checkpoint's learner, with its
    checkpoint ``state``) designs its answer, the env trains it by its ``test_recipe``, and the trained
    learner is saved at ``path``. That checkpoint is what the protocol scores; it keeps the agent's budget
    (``training``, ``iteration``, ``seed``: what found the design) and records the design under ``design``."""
    env = make_env(env_id, split="test", device=device, **(env_kwargs or {}))
    start = time.perf_counter()
    agent.reset()
    design = env.design(agent.act)
    learner = env.train_for_test(design)
    content = learner_checkpoint(
        learner,
        env_id,
        env_kwargs=env_kwargs,
        seed=state["seed"],
        iteration=state["iteration"],
        training=state["training"],
        design={
            "agent": state["agent"],
            "agent_config": state["config"],
            "answer": design,
            "recipe": env.test_recipe,
            "recipe_wall_seconds": round(time.perf_counter() - start, 3),
            "recipe_device_name": device_name(device),
        },
    )
    return save_checkpoint(content, path)


def score_tasks(learner: Learner, env: TaskEnv, episodes: Episodes) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-task rewards (minus the mean query loss) and accuracies (None for regression) of a batch of tasks."""
    with torch.no_grad():
        predictions = learner.predict(episodes.support_inputs, episodes.support_targets, episodes.query_inputs)
    losses, info = env.evaluate(predictions.float(), episodes)
    return -losses.mean(dim=1).double().cpu().numpy(), info.get("accuracy")


def _score_batched(
    learner: Learner, env: TaskEnv, n_episodes: int, seed: int, digest: Any, bar: tqdm
) -> tuple[np.ndarray, np.ndarray | None]:
    """Few-shot envs: ``CHUNK`` tasks at a time through :meth:`Learner.predict` and the env's batched scoring."""
    rewards, accuracies = [], []
    for episodes in episode_chunks(env, n_episodes, seed):
        _update_hash(digest, episodes)
        reward, accuracy = score_tasks(learner, env, episodes)
        rewards.append(reward)
        if accuracy is not None:
            accuracies.append(accuracy)
        bar.update(len(episodes))
        if accuracies:
            bar.set_postfix(accuracy=f"{np.concatenate(accuracies).mean():.4f}")
    accuracy = np.concatenate(accuracies).astype(np.float64) if accuracies else None
    return np.concatenate(rewards), accuracy


def _score_gym_loop(
    learner: Learner, env: gym.Env, n_episodes: int, seed: int, digest: Any, bar: tqdm
) -> tuple[np.ndarray, np.ndarray | None]:
    """Multi-step envs: episode ``i`` is ``env.reset(seed=seed + i)`` played by ``learner.act`` to its end."""
    classification = env.protocol.get("dataset") == "omniglot"
    rewards, accuracies = np.zeros(n_episodes), np.zeros(n_episodes)
    for i in range(n_episodes):
        rewards[i], accuracy = _play_episode(learner, env, seed + i, digest)
        if accuracy is not None:
            accuracies[i] = accuracy
            bar.set_postfix(accuracy=f"{accuracies[: i + 1].mean():.4f}")
        bar.update(1)
    return rewards, accuracies if classification else None


class ProtocolWorker:
    """Scores parts of a test protocol with its own env and copy of the learner: a parallel worker of
    :func:`evaluate`. Few-shot envs: a chunk of tasks redrawn from the episode generator's saved state;
    multi-step envs: the episodes of given reset seeds."""

    def __init__(
        self, learner: Learner, env_id: str | EnvSpec, split: str, device: str, env_kwargs: dict[str, Any]
    ) -> None:
        self.learner = learner
        self.env, _ = scored_env(make_env(env_id, split=split, device=device, **env_kwargs))

    def score_chunk(self, state: torch.Tensor, count: int) -> tuple[np.ndarray, np.ndarray | None]:
        return score_tasks(self.learner, self.env, self.env.sampler.sample(count, torch.Generator().set_state(state)))

    def play(self, seeds: list[int]) -> list[tuple[float, float | None]]:
        return [_play_episode(self.learner, self.env, seed) for seed in seeds]


def _score_parallel(
    worker: tuple, env: gym.Env, n_episodes: int, seed: int, digest: Any, bar: tqdm, workers: int, address: str | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The protocol scored on ``workers`` :class:`ProtocolWorker` copies; this process draws (few-shot) or
    resets (multi-step) every episode in order to hash it, as the serial run does."""
    from metabench.cluster import Pool, gpu_share

    with Pool(ProtocolWorker, *worker, workers=workers, address=address, gpus=gpu_share(worker[3], workers)) as pool:
        if isinstance(env, TaskEnv):
            calls = []
            for state, episodes in episode_chunk_states(env, n_episodes, seed):
                _update_hash(digest, episodes)
                calls.append((state, len(episodes)))
            chunks = pool.map("score_chunk", calls, progress=lambda result: bar.update(len(result[0])))
            accuracy = [chunk[1] for chunk in chunks if chunk[1] is not None]
            return np.concatenate([chunk[0] for chunk in chunks]), np.concatenate(accuracy) if accuracy else None
        for i in range(n_episodes):
            env.reset(seed=seed + i)
            if getattr(env, "tasks", None) is not None:
                _update_hash(digest, env.tasks)
        blocks = [list(range(start, min(start + 10, n_episodes))) for start in range(0, n_episodes, 10)]
        played = pool.map("play", [([seed + i for i in block],) for block in blocks], lambda r: bar.update(len(r)))
    episodes = [episode for block in played for episode in block]
    accuracy = np.array([0.0 if a is None else a for _, a in episodes], dtype=np.float64)
    return np.array([r for r, _ in episodes]), accuracy if env.protocol.get("dataset") == "omniglot" else None


def _play_episode(learner: Learner, env: gym.Env, seed: int, digest: Any = None) -> tuple[float, float | None]:
    """One gym-loop episode from ``env.reset(seed=seed)``: the sum of its rewards and (classification) the
    last ``info["accuracy"]``; hashes the episode's tasks into ``digest`` if given."""
    learner.reset()
    observation, info = env.reset(seed=seed)
    if digest is not None and getattr(env, "tasks", None) is not None:
        _update_hash(digest, env.tasks)
    total, done = 0.0, False
    while not done:
        observation, reward, terminated, truncated, info = env.step(learner.act(observation))
        total += reward
        done = terminated or truncated
    if env.protocol.get("dataset") != "omniglot":
        return total, None
    if "accuracy" not in info:
        raise ValueError(
            f"{env.spec.id if env.spec else env} ended the episode of seed {seed} without info['accuracy']"
        )
    return total, float(info["accuracy"])


def rescore(
    learner: Learner,
    env_id: str,
    episodes: list[int],
    *,
    seed: int = TEST_SEED,
    device: str | torch.device | None = None,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """The records of test episodes ``episodes`` (indices into the protocol's list) alone, exactly as
    :func:`evaluate` wrote them: what a spot check of a stored result re-runs.

    ``threads``: torch's intra-op threads to score with, the stored run's (``summary.json`` ``run.threads``):
    another count sums in another order, and an unrolled inner loop (MetaOptimizer, MetaReweight) carries that
    last-bit difference into visible ones (measured: 40-50 of 100 MetaReweight episodes beyond the tolerance
    at 2 threads after an evaluation at 1). ``None`` keeps the current count.

    Few-shot envs draw the seeded list in whole ``CHUNK`` draws, as :func:`evaluate` does, up to the end of
    the chunk holding the last index (cheap), and score the chosen tasks in batches of at least ``CHUNK``
    (all of a chunk's tasks: the very batches of :func:`evaluate`; a task's scores can otherwise differ in
    their last bits, within the leaderboard's tolerance); multi-step envs reset straight to episode ``i``'s seed.
    """
    if threads is not None and threads != torch.get_num_threads():
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return rescore(learner, env_id, episodes, seed=seed, device=device)
        finally:
            torch.set_num_threads(previous)
    device = torch.device(device) if device is not None else learner.device
    env, _ = scored_env(make_env(env_id, split="test", device=device))
    wanted = sorted(set(episodes))
    if not wanted:
        return []
    if wanted[0] < 0 or wanted[-1] >= protocol_episodes(env):
        raise ValueError(f"episode indices must lie in 0..{protocol_episodes(env) - 1}")
    rewards: dict[int, float] = {}
    accuracies: dict[int, float] = {}
    if isinstance(env, TaskEnv):
        # whole chunks, as evaluate drew them: a shorter last draw would give other tasks
        drawn = min(protocol_episodes(env), (wanted[-1] // CHUNK + 1) * CHUNK)
        pending: list[tuple[list[int], Episodes]] = []
        for start, chunk in zip(range(0, drawn, CHUNK), episode_chunks(env, drawn, seed), strict=True):
            picked = [i for i in wanted if start <= i < start + len(chunk)]
            if picked:
                pending.append((picked, chunk if len(picked) == len(chunk) else chunk[torch.tensor(picked) - start]))
            if pending and (sum(len(part) for _, part in pending) >= CHUNK or start + CHUNK >= drawn):
                indices = [i for picked, _ in pending for i in picked]
                batch = Episodes(*(torch.cat([getattr(part, f.name) for _, part in pending]) for f in fields(Episodes)))
                reward, accuracy = score_tasks(learner, env, batch)
                rewards.update((i, float(value)) for i, value in zip(indices, reward, strict=True))
                if accuracy is not None:
                    accuracies.update((i, float(value)) for i, value in zip(indices, accuracy, strict=True))
                pending = []
    else:
        for i in wanted:
            reward, accuracy = _play_episode(learner, env, seed + i)
            rewards[i] = reward
            if accuracy is not None:
                accuracies[i] = accuracy
    return [
        {"episode": i, "reward": float(rewards[i]), **({"accuracy": accuracies[i]} if i in accuracies else {})}
        for i in wanted
    ]


def record_test_run(checkpoint: str | Path, summary: dict[str, Any]) -> Path:
    """Append this test-split run to ``test_runs.jsonl`` beside the checkpoint: the run folder's record of
    every checkpoint scored on test, which ``metabench submit`` reads to check the declared model selection."""
    path = Path(checkpoint).parent / TEST_RUNS_FILE
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "env_id": summary["env_id"],
        "checkpoint_sha256": summary["checkpoint"]["sha256"],
        "episodes": summary["results"]["episodes"],
        "accuracy_mean": summary["results"].get("accuracy_mean"),
        "reward_mean": summary["results"]["reward_mean"],
        "command": summary.get("command"),
    }
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    return path


def read_test_runs(folder: str | Path) -> list[dict[str, Any]] | None:
    """The test runs recorded in a run folder (see :func:`record_test_run`), or None if it keeps no record."""
    path = Path(folder) / TEST_RUNS_FILE
    if not path.is_file():
        return None
    runs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            run = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} line {number} is not JSON: {error}") from None
        if not isinstance(run, dict) or not isinstance(run.get("checkpoint_sha256"), str):
            raise ValueError(f"{path} line {number} is not a test-run record")
        runs.append(run)
    return runs


def write_evaluation(summary: dict[str, Any], records: list[dict[str, Any]], out_dir: str | Path) -> Path:
    """Write ``summary.json`` and ``episodes.jsonl`` (one record per episode) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "episodes.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return out
