"""Sweeps: one learner trained over seeds x a config grid, each trial an ordinary run, evaluated and aggregated.

``metabench sweep AGENT --env ENV --seeds 0 1 2 --grid lr=0.001,0.003`` runs every (grid point, seed)
as a *trial*: ``metabench train`` into its own run folder ``OUT/<point>-s<seed>`` (checkpoint, log,
curve). ``sweep.csv`` has one row per trial and ``summary.csv`` one per grid point: mean and standard
deviation across seeds of the last validation score, the one to choose a grid point by. The test split
is scored only when asked (``test=True``): then every trial runs the frozen test protocol of
``metabench evaluate`` on its last checkpoint (``evaluation-ENV/``), and each trial's ``test_runs.jsonl``
records the test runs of every trial of the sweep, so that ``metabench submit`` refuses a trial chosen
from the sweep declared with ``--test-data-for-model-selection no``.

With ``workers > 1`` the trials are Ray Tune trials (one CPU each; ``address`` joins a cluster), and
a sweep that was interrupted resumes: finished trials are kept, unfinished runs continue from their
checkpoints. Serially (``workers=1``) trials run one after another in this process, which needs no
Ray and resumes the same way, through the run folders.
"""

from __future__ import annotations

import csv
import itertools
import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metabench.training import write_csv

RESULT = "trial.json"


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the order given (one empty point for an empty grid)."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[key] for key in keys))]


def point_name(point: dict[str, Any]) -> str:
    """A folder name for a grid point: ``lr=0.001,width=32``; ``default`` for the empty point."""
    return ",".join(f"{key}={value}" for key, value in point.items()) or "default"


def run_trial(
    agent: str,
    env_id: str,
    out_dir: str,
    *,
    seed: int,
    config: dict[str, Any],
    iterations: int,
    time_budget: float | None,
    env_kwargs: dict[str, Any],
    device: str = "cpu",
    test: bool = False,
) -> dict[str, Any]:
    """Train one trial into ``out_dir`` (resuming its checkpoint if any) and, if ``test``, run the test protocol
    on it once.

    Returns (and writes to ``trial.json``) the trial's record: its grid point, seed, iterations, wall time,
    last validation score and (if tested) test score. A trial whose ``trial.json`` exists is not run again.
    """
    from metabench.evaluation import evaluate_checkpoint
    from metabench.training import train

    out = Path(out_dir)
    if (out / RESULT).exists():
        return json.loads((out / RESULT).read_text())
    path = train(
        agent,
        env_id,
        out,
        iterations=iterations,
        config=config,
        seed=seed,
        time_budget=time_budget,
        device=device,
        progress=False,
        env_kwargs=env_kwargs,
    )
    with open(out / "log.csv", newline="") as handle:  # one row per validation; the last is the run's end
        last = {key: float(value) for key, value in list(csv.DictReader(handle))[-1].items() if value}
    training = torch.load(path, map_location="cpu", weights_only=True)
    result = {
        "point": point_name(config),
        "seed": seed,
        "iterations": training["iteration"],
        "wall_seconds": training["training"]["wall_seconds"],
        "val_accuracy": last.get("val_accuracy"),
        "val_reward": last.get("val_reward"),
        "run": str(out),
    }
    if test:
        command = shlex.join(["metabench", "evaluate", "--agent", agent, "--checkpoint", str(path), "--env", env_id])
        summary, _ = evaluate_checkpoint(path, env_id, agent=agent, device=device, progress=False, command=command)
        result["test_accuracy"] = summary["results"].get("accuracy_mean")
        result["test_reward"] = summary["results"]["reward_mean"]
    (out / RESULT).write_text(json.dumps(result, indent=1) + "\n")
    return result


def sweep(
    agent: str,
    env_id: str,
    out_dir: str | Path,
    *,
    seeds: list[int],
    grid: dict[str, list[Any]] | None = None,
    config: dict[str, Any] | None = None,
    iterations: int = 60_000,
    time_budget: float | None = None,
    env_kwargs: dict[str, Any] | None = None,
    device: str = "cpu",
    workers: int = 1,
    address: str | None = None,
    test: bool = False,
) -> list[dict[str, Any]]:
    """Run every (grid point, seed) trial (:func:`run_trial`) and write ``sweep.csv`` and ``summary.csv``.

    ``config`` holds settings shared by every trial, ``grid`` the ones that vary; ``test`` scores every trial on
    the test split and records the sweep's test runs in every trial's folder (:func:`record_sweep_test_runs`).
    Returns the summary rows.
    """
    if not seeds:
        raise ValueError("a sweep needs at least one seed")
    out = Path(out_dir).resolve()  # Ray Tune runs trials in folders of its own
    points = [{**(config or {}), **point} for point in grid_points(grid or {})]
    trials = [(point, seed) for point in points for seed in seeds]
    common = {"iterations": iterations, "time_budget": time_budget, "env_kwargs": dict(env_kwargs or {})}
    common |= {"device": device, "test": test}

    def grid_point(point: dict[str, Any]) -> dict[str, Any]:
        return {key: point[key] for key in (grid or {})}

    def folder(point: dict[str, Any], seed: int) -> str:
        return str(out / f"{point_name(grid_point(point))}-s{seed}")

    if workers == 1:
        results = []
        for number, (point, seed) in enumerate(trials, start=1):
            print(f"trial {number}/{len(trials)}: {point_name(grid_point(point))}, seed {seed}", flush=True)
            results.append(run_trial(agent, env_id, folder(point, seed), seed=seed, config=point, **common))
    else:
        results = _tune(agent, env_id, out, trials, folder, common, workers, address)
    for result, (point, _) in zip(results, trials, strict=True):
        result["point"] = point_name(grid_point(point))
    if test:
        record_sweep_test_runs([Path(result["run"]) for result in results], env_id)
    write_csv(results, out / "sweep.csv")
    summary = aggregate(results)
    write_csv(summary, out / "summary.csv")
    return summary


def _tune(agent, env_id, out, trials, folder, common, workers, address) -> list[dict[str, Any]]:
    """The trials as Ray Tune trials (one CPU each, ``workers`` at a time); resumes an interrupted sweep."""
    from ray import tune

    from metabench.cluster import connect

    connect(address)

    # a trial is named by its run folder (``lr=0.01-s0``): Tune's status table and trial folders show the settings
    by_name = {Path(folder(point, seed)).name: (point, seed) for point, seed in trials}

    def trainable(spec: dict[str, Any]) -> None:
        point, seed = by_name[spec["trial"]]
        tune.report(run_trial(agent, env_id, folder(point, seed), seed=seed, config=point, **common))

    resources = tune.with_resources(trainable, {"cpu": 1})
    experiment = out / "tune"
    if tune.Tuner.can_restore(str(experiment)):
        tuner = tune.Tuner.restore(str(experiment), trainable=resources, resume_errored=True)
    else:
        tuner = tune.Tuner(
            resources,
            param_space={"trial": tune.grid_search(list(by_name))},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=workers,
                trial_name_creator=lambda trial: trial.config["trial"],
                trial_dirname_creator=lambda trial: trial.config["trial"],
            ),
            run_config=tune.RunConfig(
                storage_path=str(out), name="tune", failure_config=tune.FailureConfig(max_failures=2), verbose=1
            ),
        )
    grid = tuner.fit()
    errors = [result.error for result in grid if result.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} sweep trial(s) failed; the first: {errors[0]}")
    # each trial's record is its trial.json (a restored Tune run may not hold the metrics of every trial)
    return [json.loads((Path(folder(point, seed)) / RESULT).read_text()) for point, seed in trials]


def record_sweep_test_runs(runs: list[Path], env_id: str) -> None:
    """Append to each run folder's ``test_runs.jsonl`` the test runs of the sweep's other trials (once each):
    a trial picked from a sweep scored on test is one of many checkpoints run on test, and its record says so."""
    from metabench.evaluation import read_test_runs, record_test_run

    summaries = [json.loads((run / f"evaluation-{env_id}" / "summary.json").read_text()) for run in runs]
    for run in runs:
        recorded = {record["checkpoint_sha256"] for record in read_test_runs(run) or []}
        for summary in summaries:
            if summary["checkpoint"]["sha256"] not in recorded:
                record_test_run(run / "checkpoint.pt", summary)


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per grid point: seeds, and the mean and standard deviation across seeds of every score."""
    rows = []
    for point in dict.fromkeys(result["point"] for result in results):
        trials = [result for result in results if result["point"] == point]
        row: dict[str, Any] = {"point": point, "seeds": " ".join(str(trial["seed"]) for trial in trials)}
        for key in ("val_accuracy", "val_reward", "test_accuracy", "test_reward", "iterations", "wall_seconds"):
            values = np.array([trial[key] for trial in trials if trial.get(key) is not None], dtype=np.float64)
            if len(values):
                row[f"{key}_mean"] = float(values.mean())
                row[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        rows.append(row)
    return rows
