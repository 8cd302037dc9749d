"""The search harness (metabench.search), the reference searchers (baselines/search.py) and the gym-loop evaluation."""

from __future__ import annotations

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.envs.registration import register, registry

from metabench import evaluation
from metabench.checkpoints import load_checkpoint
from metabench.cli import main
from metabench.evaluation import evaluate
from metabench.search import (
    OpenLoop,
    candidate_space,
    load_runs,
    load_searcher,
    play,
    plot_best_so_far,
    search,
    step_actions,
    summarize,
)
from metabench_baselines.search import CMAES, RandomSearch, RegularizedEvolution, Reinforce

TARGET = np.array([3, 1, 4, 1, 5, 2])


class TargetEnv(gym.Env):
    """A toy multi-step env: ``horizon`` actions, reward at the end = minus their distance to a target.

    Each reset adds seeded noise to the reward, so the harness's seeding is observable.
    """

    def __init__(self, kind: str = "discrete", horizon: int = 3, noise: float = 0.0, device: str = "cpu", split="val"):
        self.kind, self.horizon, self.noise = kind, horizon, noise
        width = len(TARGET) // horizon
        if kind == "discrete":
            self.action_space = spaces.Discrete(6) if width == 1 else spaces.MultiDiscrete([6] * width)
        else:
            self.action_space = spaces.Box(0.0, 6.0, (width,), np.float32)
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.protocol = {"dataset": "toy", "split": split, "horizon": horizon}
        self.test_episodes = 7

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._actions, self._offset = [], float(self.np_random.normal()) * self.noise
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self._actions.append(np.atleast_1d(np.asarray(action, dtype=np.float64)))
        done = len(self._actions) == self.horizon
        reward = -float(np.abs(np.concatenate(self._actions) - TARGET).sum()) + self._offset if done else 0.0
        return np.zeros(1, np.float32), reward, done, False, {"cost_units": 2.0} if done else {}


for _kind, _horizon in (("discrete", 6), ("discrete", 2), ("continuous", 3)):
    _id = f"metabench-test/Target-{_kind}-h{_horizon}-v0"
    if _id not in registry:
        register(_id, entry_point=TargetEnv, kwargs={"kind": _kind, "horizon": _horizon, "split": "val"})


def test_candidate_space_flattens_the_horizon():
    assert candidate_space(TargetEnv("discrete", 6)) == spaces.MultiDiscrete([6] * 6)
    assert candidate_space(TargetEnv("discrete", 2)) == spaces.MultiDiscrete([6] * 6)
    box = candidate_space(TargetEnv("continuous", 3))
    assert isinstance(box, spaces.Box) and box.shape == (6,) and (box.high == 6).all()


def test_play_sums_rewards_and_refuses_bad_candidates():
    for env in (TargetEnv("discrete", 6), TargetEnv("discrete", 2), TargetEnv("continuous", 3)):
        assert play(env, TARGET)[0] == 0.0
        assert play(env, TARGET + (TARGET < 5))[0] == -float((TARGET < 5).sum())
    env = TargetEnv("discrete", 2)
    assert [a.tolist() for a in step_actions(env, TARGET)] == [[3, 1, 4], [1, 5, 2]]
    for bad, message in (([1, 2], "shape"), ([0, 0, 0, 0, 0, 6], "integers"), ([0.5] * 6, "integers")):
        with pytest.raises(ValueError, match=message):
            play(env, bad)
    with pytest.raises(ValueError, match="finite"):
        play(TargetEnv("continuous", 3), [np.nan] * 6)


def test_unknown_search_method_is_refused():
    with pytest.raises(ValueError, match="unknown search method"):
        load_searcher("gradient-descent")
    assert load_searcher("evolution") is RegularizedEvolution


def _run(searcher, evaluations: int, env: gym.Env) -> list[float]:
    rewards = []
    for _ in range(evaluations):
        candidate = searcher.ask()
        assert candidate_space(env).contains(candidate.astype(candidate_space(env).dtype))
        reward = play(env, candidate)[0]
        searcher.tell(candidate, reward)
        rewards.append(reward)
    return rewards


def test_searchers_are_seeded():
    space = candidate_space(TargetEnv("discrete", 6))
    for searcher_class in (RandomSearch, RegularizedEvolution, Reinforce):
        runs = [_run(searcher_class(space, seed=3), 30, TargetEnv("discrete", 6)) for _ in range(2)]
        assert runs[0] == runs[1]
        assert runs[0] != _run(searcher_class(space, seed=4), 30, TargetEnv("discrete", 6))


def test_evolution_and_reinforce_beat_random_search_on_a_toy_problem():
    env = TargetEnv("discrete", 6)
    space = candidate_space(env)
    best = {name: [] for name in ("random", "evolution", "reinforce")}
    for seed in range(3):
        for name, searcher in (
            ("random", RandomSearch(space, seed)),
            ("evolution", RegularizedEvolution(space, seed)),
            ("reinforce", Reinforce(space, seed, lr=0.05)),
        ):
            rewards = _run(searcher, 150, env)
            best[name].append(max(rewards))
            if name == "reinforce":  # the controller's mean reward improves as it learns
                assert np.mean(rewards[-30:]) > np.mean(rewards[:30]) + 2
    assert np.mean(best["evolution"]) > np.mean(best["random"])
    assert np.mean(best["reinforce"]) > np.mean(best["random"])


def test_regularized_evolution_retires_the_oldest():
    searcher = RegularizedEvolution(candidate_space(TargetEnv("discrete", 6)), 0, population=4, sample=2)
    for i in range(6):
        searcher.tell(np.full(6, i % 6), float(i))
    assert [member[1] for member in searcher.population] == [2.0, 3.0, 4.0, 5.0]
    child = searcher.ask()
    parents = [member[0] for member in searcher.population]
    assert min(int((child != parent).sum()) for parent in parents) == 1  # one coordinate mutated


def test_cmaes_minimises_a_continuous_problem():
    env = TargetEnv("continuous", 3)
    searcher = CMAES(candidate_space(env), seed=0, sigma0=0.3)
    rewards = _run(searcher, 300, env)
    assert max(rewards) > -0.5 and np.mean(rewards[-20:]) > np.mean(rewards[:20]) + 3
    assert play(env, searcher.recommend())[0] > np.mean(rewards[-20:])  # the mean beats its samples
    assert RandomSearch(candidate_space(env), 0).recommend() is None  # the best evaluated candidate is the answer
    with pytest.raises(ValueError, match="Box"):
        CMAES(candidate_space(TargetEnv("discrete", 6)), 0)
    with pytest.raises(ValueError, match="MultiDiscrete"):
        Reinforce(candidate_space(env), 0)


def test_search_writes_trace_best_and_an_evaluable_checkpoint(tmp_path):
    env_id = "metabench-test/Target-discrete-h2-v0"
    result = search("evolution", env_id, evaluations=25, out_dir=tmp_path / "evolution", seed=1, progress=False)
    with open(tmp_path / "evolution" / "trace.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 25 and float(rows[-1]["best_reward"]) == result.best_reward
    rewards = [float(row["reward"]) for row in rows]
    assert [float(row["best_reward"]) for row in rows] == list(np.maximum.accumulate(rewards))
    assert float(rows[-1]["total_cost_units"]) == 50.0  # the env's cost_* info is accumulated
    assert result.answer == result.best_candidate
    best = json.loads((tmp_path / "evolution" / "best.json").read_text())
    assert best["best_candidate"] == result.best_candidate and best["best_reward"] == result.best_reward

    agent, checkpoint = load_checkpoint(tmp_path / "evolution" / "checkpoint.pt")
    assert isinstance(agent, OpenLoop) and checkpoint["iteration"] == 25
    summary, records = evaluate(agent, env_id, progress=False)
    assert summary["results"]["episodes"] == 7 and len(records) == 7  # the env's test_episodes
    assert all(record["reward"] == result.best_reward for record in records)  # noise-free env: the same reward
    assert summary["protocol"]["split"] == "test" and "accuracy_mean" not in summary["results"]

    search("random", env_id, evaluations=25, out_dir=tmp_path / "random" / "seed-1", seed=1, progress=False)
    runs = load_runs([tmp_path])
    assert sorted(runs) == ["evolution", "random"]
    rows = {row["method"]: row for row in summarize(runs)}
    assert rows["evolution"]["evaluations"] == 25 and rows["random"]["seeds"] == 1
    assert plot_best_so_far(runs, tmp_path / "plot.png").stat().st_size > 1000
    assert best["config"] == {"population": 20, "sample": 5, "sigma": 0.2}  # defaults recorded in full

    assert main(["search-plot", str(tmp_path), "--out", str(tmp_path / "p.png"), "--csv", str(tmp_path / "s.csv")]) == 0
    with open(tmp_path / "s.csv", newline="") as handle:
        table = {row["method"]: row for row in csv.DictReader(handle)}
    assert float(table["evolution"]["best_reward_mean"]) == result.best_reward


def test_search_seeds_the_task_stream_and_never_uses_test(tmp_path):
    env_id = "metabench-test/Target-discrete-h2-v0"
    kwargs = {"noise": 1.0}
    a = search("random", env_id, evaluations=5, out_dir=tmp_path / "a", seed=2, env_kwargs=kwargs, progress=False)
    b = search("random", env_id, evaluations=5, out_dir=tmp_path / "b", seed=2, env_kwargs=kwargs, progress=False)
    c = search("random", env_id, evaluations=5, out_dir=tmp_path / "c", seed=5, env_kwargs=kwargs, progress=False)
    assert [row["reward"] for row in a.trace] == [row["reward"] for row in b.trace]
    assert [row["reward"] for row in a.trace] != [row["reward"] for row in c.trace]
    fixed = search(
        "random",
        env_id,
        evaluations=6,
        out_dir=tmp_path / "f",
        seed=2,
        episodes=2,
        fixed_tasks=True,
        env_kwargs=kwargs,
        config={},
        progress=False,
    )

    def noise(trace):  # the reward's seeded offset: reward + distance to the target
        return [row["reward"] + np.abs(np.array(row["candidate"].split(), float) - TARGET).sum() for row in trace]

    assert np.allclose(noise(fixed.trace), noise(fixed.trace)[0])  # every candidate met the same two episodes
    assert not np.allclose(noise(a.trace), noise(a.trace)[0])  # by default each evaluation meets fresh ones
    with pytest.raises(ValueError, match="test split"):
        search("random", env_id, evaluations=1, out_dir=tmp_path / "t", env_kwargs={"split": "test"}, progress=False)


def test_gym_loop_protocol_is_seeded_per_episode():
    env_id = "metabench-test/Target-discrete-h2-v0"
    protocol = evaluation.test_protocol(env_id)
    assert protocol["episodes"] == 7 and protocol["episode_seed"] == 2026
