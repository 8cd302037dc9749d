"""Parallel work on Ray (metabench.cluster): searches and test protocols on workers equal their serial runs,
a killed worker's calls are retried exactly once, and an interrupted search resumes from its trace."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time

import numpy as np
import pytest
import test_search
import torch
from gymnasium.envs.registration import register, registry

from metabench.checkpoints import build_learner, load_checkpoint
from metabench.cluster import Pool, connect, gpu_share
from metabench.evaluation import evaluate, read_test_runs
from metabench.multifidelity import asha_search, rungs
from metabench.search import search
from metabench.sweep import sweep

ray = pytest.importorskip("ray")
TARGET = "metabench-test/Target-continuous-h3-v0"
DISCRETE = "metabench-test/Target-discrete-h2-v0"


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs) for the module; test classes travel by value to its workers."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for module in (test_search, sys.modules[__name__]):
        ray.cloudpickle.register_pickle_by_value(module)
    connect(cpus=2)
    yield
    ray.shutdown()


class Slow:
    """A worker whose calls take a while, so that one can be killed mid-call."""

    def work(self, x: int) -> tuple[int, int]:
        time.sleep(1.0)
        return x * x, os.getpid()

    def pid(self) -> int:
        return os.getpid()


@contextlib.contextmanager
def one_thread():
    """Torch on one thread, as each Ray worker: float results then match the workers' bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _without_timing(trace: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key not in ("seconds", "elapsed")} for row in trace]


def test_a_killed_worker_has_its_calls_retried_once_and_nothing_lost(local_ray):
    with Pool(Slow, workers=2) as pool:
        before = set(pool.pids())
        priority = os.getpriority(os.PRIO_PROCESS, 0)  # workers run at the driver's priority, not Ray's nice 15
        assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in before] == [priority, priority]
        for x in range(6):
            pool.submit(x, "work", x)
        time.sleep(0.5)  # both workers are inside their first call
        os.kill(next(iter(before)), signal.SIGKILL)
        results = [pool.next() for _ in range(6)]
        assert pool.pending() == 0
    assert sorted(tag for tag, _ in results) == list(range(6))  # every call answered once
    assert all(value == tag * tag for tag, (value, _) in results)
    assert {pid for _, (_, pid) in results} - before  # a restarted worker answered some


def test_batch_synchronous_search_on_workers_equals_the_serial_trace(local_ray, tmp_path):
    kwargs = {"noise": 1.0}  # seeded task noise: the workers must reset with the serial run's seeds
    config = {"popsize": 4}
    common = {"evaluations": 10, "seed": 3, "env_kwargs": kwargs, "config": config, "progress": False}
    serial = search("cmaes", TARGET, out_dir=tmp_path / "serial", **common)
    parallel = search("cmaes", TARGET, out_dir=tmp_path / "parallel", workers=2, **common)
    assert _without_timing(parallel.trace) == _without_timing(serial.trace)
    assert parallel.answer == serial.answer
    assert [row["evaluation"] for row in parallel.trace] == list(range(1, 11))


def test_asynchronous_search_on_workers_scores_each_candidate_once(local_ray, tmp_path):
    result = search(
        "evolution",
        DISCRETE,
        evaluations=12,
        out_dir=tmp_path / "evolution",
        seed=1,
        config={"population": 4, "sample": 2},
        progress=False,
        workers=2,
    )
    assert sorted(row["evaluation"] for row in result.trace) == list(range(1, 13))
    target = test_search.TARGET
    for row in result.trace:  # noise-free env: the reward is minus the candidate's distance to the target
        assert row["reward"] == -np.abs(np.array(row["candidate"].split(), float) - target).sum()
    assert result.best_reward == max(row["reward"] for row in result.trace)


@pytest.mark.parametrize("method", ["random", "cmaes", "reinforce"])
def test_an_interrupted_search_resumes_to_the_uninterrupted_result(tmp_path, method):
    env_id = DISCRETE if method != "cmaes" else TARGET
    common = {"evaluations": 10, "seed": 4, "env_kwargs": {"noise": 0.5}, "progress": False}
    config = {"batch": 3} if method == "reinforce" else {}
    whole = search(method, env_id, out_dir=tmp_path / "whole", config=config, **common)
    search(method, env_id, out_dir=tmp_path / "cut", config=config, **common)
    lines = (tmp_path / "cut" / "trace.csv").read_text().splitlines(keepends=True)
    (tmp_path / "cut" / "trace.csv").write_text("".join(lines[:5]))  # as if killed after 4 evaluations
    (tmp_path / "cut" / "best.json").unlink()
    resumed = search(method, env_id, out_dir=tmp_path / "cut", config=config, **common)
    assert _without_timing(resumed.trace) == _without_timing(whole.trace)
    assert resumed.answer == whole.answer
    with pytest.raises(ValueError, match="other settings"):
        (tmp_path / "cut" / "best.json").unlink()
        search(method, env_id, out_dir=tmp_path / "cut", config=config, **{**common, "seed": 5})


def test_test_protocol_on_workers_equals_the_serial_run(local_ray, tmp_path):
    learner = build_learner("protonet", "MetaOmniglot-5w1s-v1", {"width": 8}, "cpu", 0)
    with one_thread():
        serial = evaluate(learner, "MetaOmniglot-5w1s-v1", n_episodes=60, progress=False)
    parallel = evaluate(learner, "MetaOmniglot-5w1s-v1", n_episodes=60, progress=False, workers=2)
    assert parallel[1] == serial[1] and len(serial[1]) == 60  # 3 chunks, the last one partial
    assert parallel[0]["protocol"] == serial[0]["protocol"] and parallel[0]["results"] == serial[0]["results"]
    assert parallel[0]["run"]["workers"] == 2

    search("random", DISCRETE, evaluations=3, out_dir=tmp_path / "s", progress=False)  # a multi-step agent
    agent, _ = load_checkpoint(tmp_path / "s" / "checkpoint.pt")
    serial = evaluate(agent, DISCRETE, progress=False)
    parallel = evaluate(agent, DISCRETE, progress=False, workers=2)
    assert parallel[1] == serial[1] and parallel[0]["protocol"] == serial[0]["protocol"]


def test_a_sweep_runs_every_trial_once_on_tune_workers_and_resumes(local_ray, tmp_path):
    common = {"seeds": [0, 1], "grid": {"width": [4]}, "config": {"train_way": 5}, "iterations": 2, "test": True}
    with one_thread():
        serial = sweep("protonet", "MetaOmniglot-5w1s-v1", tmp_path / "serial", **common)
    parallel = sweep("protonet", "MetaOmniglot-5w1s-v1", tmp_path / "tune", workers=2, **common)
    (row,) = serial
    assert row["point"] == "width=4" and row["seeds"] == "0 1"
    trials = [json.loads((tmp_path / "serial" / f"width=4-s{seed}" / "trial.json").read_text()) for seed in (0, 1)]
    scores = [trial["test_accuracy"] for trial in trials]
    assert row["test_accuracy_mean"] == pytest.approx(np.mean(scores))
    assert row["test_accuracy_sd"] == pytest.approx(np.std(scores, ddof=1))
    assert scores[0] != scores[1]  # the seeds differ
    for key in ("test_accuracy_mean", "val_accuracy_mean", "iterations_mean"):
        assert parallel[0][key] == row[key]  # the same trials, on Tune's workers
    tune_folders = {path.name for path in (tmp_path / "tune" / "tune").iterdir() if path.is_dir()}
    assert {"width=4-s0", "width=4-s1"} <= tune_folders  # Tune names each trial by its settings, not 0, 1
    assert (tmp_path / "serial" / "width=4-s1" / "evaluation-MetaOmniglot-5w1s-v1" / "summary.json").exists()
    # each trial's selection record holds the whole sweep's test runs: a trial picked from it was chosen on test
    assert len(read_test_runs(tmp_path / "serial" / "width=4-s0")) == 2

    kept = (tmp_path / "serial" / "width=4-s0" / "trial.json").stat().st_mtime_ns
    (tmp_path / "serial" / "width=4-s1" / "trial.json").unlink()  # as if interrupted before trial 2 finished
    again = sweep("protonet", "MetaOmniglot-5w1s-v1", tmp_path / "serial", **common)
    assert (tmp_path / "serial" / "width=4-s0" / "trial.json").stat().st_mtime_ns == kept  # not run again
    assert again[0]["test_accuracy_mean"] == pytest.approx(row["test_accuracy_mean"])


class NoisyTarget(test_search.TargetEnv):
    """TargetEnv with a ``fidelity``: its reward's seeded noise shrinks as the fidelity grows, which costs that many
    ``cost_train_episodes`` (as MetaNAS's training episodes)."""

    def __init__(self, fidelity: int = 27, **kwargs):
        super().__init__(**kwargs)
        self.fidelity = fidelity

    def step(self, action):
        observation, reward, terminated, truncated, _ = super().step(action)
        if not terminated:
            return observation, reward, terminated, truncated, {}
        noise = float(self.np_random.normal()) * 3.0 / self.fidelity
        return observation, reward + noise, terminated, truncated, {"cost_train_episodes": float(self.fidelity)}


NOISY = "metabench-test/NoisyTarget-v0"
if NOISY not in registry:
    register(NOISY, entry_point=NoisyTarget, kwargs={"kind": "discrete", "horizon": 2, "fidelity": 27, "split": "val"})


def test_asha_promotes_few_candidates_to_the_full_fidelity_and_charges_every_rung(local_ray, tmp_path):
    assert rungs(3, 27) == [3, 9, 27] and rungs(4, 30) == [4, 12, 30] and rungs(27, 27) == [27]
    result = asha_search("random", NOISY, evaluations=9, out_dir=tmp_path, seed=0, min_fidelity=3, workers=2)
    fidelities = [row["fidelity"] for row in result.trace]
    assert sorted(set(row["trial"] for row in result.trace)) == list(range(1, 10))  # every candidate started
    assert fidelities.count(3) == 9 and fidelities.count(27) < 9  # ASHA stopped some early
    assert result.trace[-1]["total_cost_train_episodes"] == sum(fidelities)  # every rung charged
    full = [row for row in result.trace if row["fidelity"] == 27]
    assert result.best_reward == max(row["reward"] for row in full)
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["scheduler"]["rungs"] == [3, 9, 27] and best["env_kwargs"]["fidelity"] == 27
    assert (tmp_path / "checkpoint.pt").exists()
    with pytest.raises(ValueError, match="no fidelity"):
        asha_search("random", DISCRETE, evaluations=2, out_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="batch-synchronous"):
        asha_search("reinforce", NOISY, evaluations=2, out_dir=tmp_path / "y", config={"batch": 2})


def test_ctrl_c_in_a_search_keeps_its_trace_and_the_rerun_resumes(tmp_path, monkeypatch):
    from metabench import search as search_module

    common = {"evaluations": 8, "seed": 2, "env_kwargs": {"noise": 0.5}, "progress": False}
    whole = search("evolution", DISCRETE, out_dir=tmp_path / "whole", config={"population": 3, "sample": 2}, **common)
    play, calls = search_module.play, []

    def interrupted_play(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return play(*args, **kwargs)

    monkeypatch.setattr(search_module, "play", interrupted_play)
    with pytest.raises(search_module.SearchInterrupted, match="after 5 evaluations"):
        search("evolution", DISCRETE, out_dir=tmp_path / "cut", config={"population": 3, "sample": 2}, **common)
    assert not (tmp_path / "cut" / "best.json").exists()
    monkeypatch.setattr(search_module, "play", play)
    resumed = search("evolution", DISCRETE, out_dir=tmp_path / "cut", config={"population": 3, "sample": 2}, **common)
    assert _without_timing(resumed.trace) == _without_timing(whole.trace)


def test_workers_on_cuda_share_one_gpu_unless_told_otherwise():
    assert gpu_share("cuda", 4) == 0.25 and gpu_share("cuda:0", 2) == 0.5  # fractional GPUs: one card shared
    assert gpu_share("cpu", 4) == 0.0 and gpu_share("cuda", 1) == 0.0  # a single worker runs in this process
    assert gpu_share("cuda", 4, gpus_per_worker=1.0) == 1.0  # a multi-GPU cluster: one card each
