"""Meta-training loop shared by every learner: meta-batches, validation, checkpoints, logs, curves.

``train`` draws meta-batches from the environment's own episode sampler on the ``train`` split,
runs ``learner.train_step`` on each, scores a fixed, seeded list of ``val`` episodes every
``val_interval`` iterations, and writes into ``out_dir``:

* ``checkpoint.pt`` — learner state, sampler generator state, iteration, history: a dict of tensors
  and plain values, written atomically and loadable with ``torch.load(weights_only=True)``. Re-running
  the same command resumes from it; the resumed run continues exactly as an uninterrupted one would.
  SIGINT/SIGTERM save a checkpoint before exiting.
* ``log.csv`` — one row per validation: iteration, wall time, training and validation metrics.
* ``curve.png`` — the learning curve.
"""

from __future__ import annotations

import csv
import dataclasses
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from metabench.data import save_atomic
from metabench.evaluation import check_env_kwargs, device_name, evaluate, make_env
from metabench.learners import Learner, config_from_dict, load_learner_class

CHECKPOINT_FORMAT = "metabench-checkpoint/1"
VAL_SEED = 1
TRAIN_SEED_OFFSET = 10_000  # the sampler of a run seeded s uses generator seed s + offset


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

    The learner's ``task`` is the env's protocol, plus ``env_kwargs`` when there are any.
    """
    learner_class = load_learner_class(name)
    env_kwargs = check_env_kwargs(env_kwargs)
    task = {"env_id": env_id, **make_env(env_id, split="val", **env_kwargs).protocol}
    if env_kwargs:
        task["env_kwargs"] = env_kwargs
    values = {**dataclasses.asdict(learner_class.Config()), **learner_class.defaults(task), **(config or {})}
    return learner_class(config_from_dict(learner_class, values), task, device, seed)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Learner, dict[str, Any]]:
    """Load a checkpoint safely (``weights_only=True``) and rebuild its learner on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        raise ValueError(f"{path} is not a loadable metabench checkpoint: {error}") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a metabench checkpoint (format {CHECKPOINT_FORMAT})")
    learner = build_learner(
        checkpoint["agent"],
        checkpoint["env_id"],
        checkpoint["config"],
        device,
        checkpoint["seed"],
        checkpoint.get("env_kwargs"),
    )
    learner.load_state_dict(checkpoint["learner"])
    return learner, checkpoint


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write dict rows as CSV (columns: every key, in order of first appearance): logs, traces, tables."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def plot_curve(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Training loss and validation accuracy (or reward) against iterations, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = [row["iteration"] for row in history]
    metric = "val_accuracy" if "val_accuracy" in history[0] else "val_reward"
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(iterations, [row["train_loss"] for row in history])
    left.set(xlabel="meta-iteration", ylabel="meta-training loss (mean of last interval)", yscale="log")
    right.errorbar(
        iterations, [row[metric] for row in history], yerr=[row[f"{metric}_ci95"] for row in history], capsize=2
    )
    right.set(xlabel="meta-iteration", ylabel=metric.replace("_", " ") + " (95% CI)")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def train(
    name: str,
    env_id: str,
    out_dir: str | Path,
    *,
    iterations: int,
    config: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    val_interval: int = 500,
    val_episodes: int = 200,
    checkpoint_interval: int | None = None,
    time_budget: float | None = None,
    progress: bool = True,
    command: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Meta-train learner ``name`` on ``env_id`` for ``iterations`` meta-iterations; returns the checkpoint path.

    ``time_budget`` (seconds of training in this call, validation excluded) stops earlier, e.g. for
    a CPU-budget run or one slice of a long run. Before every step the learner's ``progress`` is set
    to the fraction of the planned run done (iterations, or the time budget if that ends first), so
    schedules such as Reptile's annealed step size span the run they are in. ``env_kwargs`` are env
    arguments (e.g. ``{"scheme": "lake"}``) for the training, validation and test envs; they are stored
    in the checkpoint. An existing checkpoint in ``out_dir`` for the same learner and env is resumed;
    the recorded wall time is the total over all calls. ``command`` (the command line that started
    the run) is recorded in the checkpoint's training block.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "checkpoint.pt"
    checkpoint_interval = checkpoint_interval or val_interval

    if path.exists():
        learner, state = load_checkpoint(path, device)
        if (state["agent"], state["env_id"]) != (load_learner_class(name).name, env_id):
            raise ValueError(
                f"{path} holds {state['agent']} on {state['env_id']}, not {name} on {env_id}: use another out_dir"
            )
        if state.get("env_kwargs", {}) != check_env_kwargs(env_kwargs):
            raise ValueError(f"{path} was trained with env arguments {state.get('env_kwargs', {})}, not {env_kwargs}")
        generator = torch.Generator().manual_seed(0)
        generator.set_state(state["generator"].cpu())
        iteration, history, elapsed = state["iteration"], state["history"], state["training"]["wall_seconds"]
    else:
        learner = build_learner(name, env_id, config, device, seed, env_kwargs)
        generator = torch.Generator().manual_seed(seed + TRAIN_SEED_OFFSET)
        iteration, history, elapsed = 0, [], 0.0
    env_kwargs = check_env_kwargs(env_kwargs)
    sampler = make_env(env_id, split="train", device=device, **{**env_kwargs, **learner.train_env_kwargs()}).sampler
    meta_batch = learner.config.meta_batch

    def save() -> None:
        save_atomic(
            {
                "format": CHECKPOINT_FORMAT,
                "agent": learner.name,
                "env_id": env_id,
                "env_kwargs": env_kwargs,
                "config": dataclasses.asdict(learner.config),
                "seed": learner.seed,
                "iteration": iteration,
                "learner": learner.state_dict(),
                "generator": generator.get_state(),
                "history": history,
                "training": {
                    "wall_seconds": elapsed,
                    "meta_batch": meta_batch,
                    "episodes_seen": iteration * meta_batch,
                    "device": str(torch.device(device)),
                    "device_name": device_name(device),
                    **({"command": command} if command else {}),
                },
            },
            path,
        )

    interrupted = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal interrupted
        interrupted = True

    in_main_thread = threading.current_thread() is threading.main_thread()  # signals can only be caught there
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}
    window: list[float] = []
    budget_end = None if time_budget is None else elapsed + time_budget
    try:
        with tqdm(
            total=iterations, initial=iteration, desc=f"train {learner.name} on {env_id}", disable=not progress
        ) as bar:
            while iteration < iterations and not interrupted and (budget_end is None or elapsed < budget_end):
                start = time.perf_counter()
                learner.progress = max(iteration / iterations, 0.0 if budget_end is None else elapsed / budget_end)
                metrics = learner.train_step(sampler.sample(meta_batch, generator))
                elapsed += time.perf_counter() - start
                iteration += 1
                window.append(metrics["loss"])
                bar.update(1)
                bar.set_postfix({key: f"{value:.4f}" for key, value in metrics.items()})
                last = iteration == iterations or (budget_end is not None and elapsed >= budget_end)
                if iteration % val_interval == 0 or last:
                    summary, _ = evaluate(
                        learner,
                        env_id,
                        split="val",
                        n_episodes=val_episodes,
                        seed=VAL_SEED,
                        progress=False,
                        env_kwargs=env_kwargs,
                    )
                    results = summary["results"]
                    row = {
                        "iteration": iteration,
                        "wall_seconds": round(elapsed, 2),
                        "train_loss": sum(window) / len(window),
                    }
                    for key in ("accuracy", "reward"):
                        if f"{key}_mean" in results:
                            row[f"val_{key}"] = results[f"{key}_mean"]
                            row[f"val_{key}_ci95"] = results[f"{key}_ci95"]
                    history.append(row)
                    window = []
                    bar.write(
                        " ".join(
                            f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                            for key, value in row.items()
                        )
                    )
                    write_csv(history, out / "log.csv")
                    plot_curve(history, out / "curve.png", f"{learner.name} on {env_id}")
                if iteration % checkpoint_interval == 0 or last:
                    save()
        if interrupted or iteration % checkpoint_interval:
            save()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if interrupted:
        raise KeyboardInterrupt(f"training interrupted at iteration {iteration}; checkpoint saved to {path}")
    return path
