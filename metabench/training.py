"""Meta-training loop shared by every learner: meta-batches, validation, checkpoints, logs, curves.

``train`` draws meta-batches from the environment's own episode sampler on the ``train`` split,
runs ``learner.train_step`` on each, scores a fixed, seeded list of ``val`` episodes every
``val_interval`` iterations, and writes into ``out_dir``:

* ``checkpoint.pt`` — learner state, sampler generator state, iteration, history: a dict of tensors
  and plain values, written atomically and loadable with ``torch.load(weights_only=True)``. Re-running
  the same command resumes from it; the resumed run continues exactly as an uninterrupted one would.
  A resume keeps the checkpoint's hyperparameters and seed: giving other ones is refused.
  SIGINT/SIGTERM save a checkpoint, then raise :class:`TrainingInterrupted`.
* ``best.pt`` — with ``patience`` (early stopping), the inference-only checkpoint of the best validation so
  far (parameters without optimizer state): what a run stopped early is scored from.
* ``log.csv`` — one row per validation (the first at iteration 0): iteration, wall and CPU seconds,
  training and validation metrics.
* ``curve.png`` — the learning curve.

Every call of :func:`train` on a run folder is a *slice*; the checkpoint lists each slice's iterations,
wall and CPU seconds, threads and machine, so a run resumed across machines says where its time went.
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from metabench import distributed
from metabench.checkpoints import build_learner, learner_checkpoint, load_checkpoint
from metabench.data import save_atomic, write_atomic
from metabench.envs import check_env_kwargs, make_env
from metabench.envs.common import device_name, resolve_device
from metabench.episodes import Episodes
from metabench.evaluation import evaluate
from metabench.learners import Learner, check_config, load_learner_class, meta_batch_size

RESUME_KEYS = ("iteration", "generator", "history", "training")
"""The fields a checkpoint that training can resume has beyond :data:`metabench.checkpoints.CHECKPOINT_KEYS`."""
VAL_POINTS = 20
"""Validations a run makes by default (besides the one at iteration 0): its learning curve's resolution."""
MIN_VAL_INTERVAL = 25
"""The fewest iterations between two default validations: a run of a few iterations validates at its start and end."""
VAL_SEED = 1
TRAIN_SEED_OFFSET = 10_000  # the sampler of a run seeded s uses generator seed s + offset


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :func:`train` on SIGINT/SIGTERM once the checkpoint is saved; ``path`` and ``iteration`` say where."""

    def __init__(self, path: Path, iteration: int) -> None:
        super().__init__(f"training interrupted at iteration {iteration}; checkpoint saved to {path}")
        self.path, self.iteration = path, iteration


RUN_FILES = ("checkpoint.pt", "best.pt", "log.csv", "curve.png")
"""What :func:`train` writes into a run folder (each through a temporary file renamed over it)."""


def lock_run_folder(out: Path) -> Any:
    """Lock ``out`` for one :func:`train` call: an open file holding an exclusive ``flock`` on ``out/.train.lock``
    (released when it is closed, or when the process ends, even by kill -9). A folder locked by another process
    raises ``ValueError``. The temporary files of :data:`RUN_FILES` left by a killed run are removed."""
    handle = open(out / ".train.lock", "a+")
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the folder is not locked
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise ValueError(
            f"{out} is in use by another metabench train (pid {owner}): wait for it to end, or train in another folder"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    for name in RUN_FILES:
        for orphan in out.glob(f".{name}.*.tmp"):
            orphan.unlink(missing_ok=True)
    return handle


def train_fixed_budget(
    learner: Learner,
    sampler: Any,
    checkpoints: Sequence[int],
    generator: torch.Generator,
    transform: Callable[[Episodes], Episodes] | None = None,
) -> Iterator[tuple[int, list[float]]]:
    """Meta-train ``learner`` one meta-batch of ``sampler`` (drawn from ``generator``) per step, ``transform``
    applied to each batch first (e.g. an augmentation), yielding ``(episodes done, train losses)`` after each
    of the increasing episode counts ``checkpoints``: the fixed recipe the design envs (MetaNAS, MetaAugment)
    score a design with, without the harness's validation, logging and checkpointing."""
    losses: list[float] = []
    for checkpoint in checkpoints:
        if checkpoint < len(losses):
            raise ValueError(f"checkpoints must increase, got {list(checkpoints)}")
        while len(losses) < checkpoint:
            episodes = sampler.sample(learner.config.meta_batch, generator)
            losses.append(learner.train_step(episodes if transform is None else transform(episodes))["loss"])
        yield checkpoint, losses


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write dict rows as CSV (columns: every key, in order of first appearance): logs, traces, tables. The file
    is replaced whole (:func:`~metabench.data.write_atomic`): a failed write leaves the old one."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(text.getvalue().encode(), Path(path))


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
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=100)
    plt.close(figure)
    write_atomic(image.getbuffer(), path)


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists, to compare values given on the command line with stored ones."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def check_resume(
    learner_class: type[Learner],
    checkpoint: dict[str, Any],
    config: dict[str, Any] | None,
    seed: int | None,
    where: str = "the checkpoint",
) -> None:
    """Refuse to resume ``checkpoint`` with hyperparameters ``config`` or a ``seed`` other than its own.

    A resume continues the stored run, so it keeps the checkpoint's settings: ``config`` may repeat them
    (or any part of them) or be empty, and ``seed`` may repeat the stored one or be None.
    """
    config = config or {}
    check_config(learner_class, config)
    stored = checkpoint["config"]
    differences = [
        f"{key}={value!r} (checkpoint: {stored.get(key)!r})"
        for key, value in config.items()
        if _plain(value) != _plain(stored.get(key))
    ]
    if seed is not None and seed != checkpoint["seed"]:
        differences.append(f"seed={seed} (checkpoint: {checkpoint['seed']})")
    if differences:
        raise ValueError(
            f"cannot resume {where} with other settings: "
            f"{', '.join(differences)}; a resume keeps the checkpoint's config and seed: repeat them or leave them "
            "out, or train a new run in another folder"
        )


def progress_bar(
    iterations: int, iteration: int, time_budget: float | None, description: str, disable: bool = False
) -> tqdm:
    """The training bar: iterations done of ``iterations``, or, with a time budget, seconds of training done of it."""
    if time_budget is None:
        return tqdm(total=iterations, initial=iteration, desc=description, disable=disable)
    return tqdm(
        total=time_budget,
        desc=description,
        disable=disable,
        unit="s",
        bar_format="{l_bar}{bar}| {n:.1f}/{total:g} s of training [{elapsed}<{remaining}{postfix}]",
    )


def train(
    name: str,
    env_id: str,
    out_dir: str | Path,
    *,
    iterations: int,
    config: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    val_interval: int | None = None,
    val_episodes: int = 200,
    checkpoint_interval: int | None = None,
    time_budget: float | None = None,
    patience: int | None = None,
    progress: bool = True,
    command: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Meta-train learner ``name`` on ``env_id`` for ``iterations`` meta-iterations; returns the checkpoint path.

    ``time_budget`` (seconds of training **in this call**, validation excluded) stops earlier, e.g. for
    a CPU-budget run or one slice of a long run: a resumed run trains up to ``time_budget`` seconds more
    (``iterations``, by contrast, is the run's total). With a budget the progress bar counts seconds of
    training, not iterations. Before every step the learner's ``progress`` is set to the fraction of the
    planned run done (iterations, or the time budget if that ends first), so schedules such as Reptile's
    annealed step size span the run they are in. ``env_kwargs`` are env arguments (e.g.
    ``{"scheme": "lake"}``) for the training, validation and test envs; they are stored in the checkpoint.

    A new run validates at iteration 0, then every ``val_interval`` iterations and at its end; by default
    (``val_interval=None``) :data:`VAL_POINTS` times a run: every ``iterations // VAL_POINTS`` iterations and,
    with a ``time_budget``, also every ``time_budget / VAL_POINTS`` seconds of training, but never within
    :data:`MIN_VAL_INTERVAL` iterations of the last validation. Each validation saves
    the checkpoint, then ``log.csv``. The run folder is locked while a call trains in it (:func:`lock_run_folder`).
    ``patience`` turns on early stopping, as Prototypical Networks' code does: the run keeps the best validation so far
    (highest val reward, i.e. lowest val query loss) in ``best.pt`` and stops once ``patience`` validations in
    a row have not improved on it. Patience is a setting of the run, kept by a resume.

    ``seed`` (default 0) seeds a new run. An existing checkpoint in ``out_dir`` for the same learner and env
    is resumed with its own hyperparameters, seed and env arguments: ``config`` and ``seed`` may repeat them
    or be left out, and any other value is refused (:func:`check_resume`), as is a different learner, env or
    ``env_kwargs``. The recorded wall and CPU seconds are totals over all calls. ``command`` (the command line
    that started the run) is recorded in the checkpoint's training block. SIGINT/SIGTERM end the run after the
    current step: the checkpoint is saved, then :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) is raised.
    """
    resolve_device(device)
    settings = (("iterations", iterations), ("val_interval", 1 if val_interval is None else val_interval))
    for option, value in (*settings, ("val_episodes", val_episodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{option} must be a positive integer, got {value!r}")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be a positive integer (validations without improvement), got {patience!r}")
    if time_budget is not None and not (0 < time_budget < float("inf")):
        raise ValueError(f"time_budget must be a positive, finite number of seconds, got {time_budget!r}")
    rank, ranks = distributed.start(device)  # torchrun: data-parallel over ranks (metabench.distributed)
    out = Path(out_dir)
    path = out / "checkpoint.pt"
    val_interval_given = val_interval is not None
    val_interval = max(MIN_VAL_INTERVAL, iterations // VAL_POINTS) if val_interval is None else val_interval
    checkpoint_interval = checkpoint_interval or val_interval

    if path.exists():
        learner, state = load_checkpoint(path, device)
        if any(key not in state for key in RESUME_KEYS):
            raise ValueError(f"{path} cannot be resumed: it lacks {[key for key in RESUME_KEYS if key not in state]}")
        if (state["agent"], state["env_id"]) != (load_learner_class(name).name, env_id):
            raise ValueError(
                f"{path} holds {state['agent']} on {state['env_id']}, not {name} on {env_id}: use another out_dir"
            )
        if state.get("env_kwargs", {}) != check_env_kwargs(env_kwargs):
            raise ValueError(f"{path} was trained with env arguments {state.get('env_kwargs', {})}, not {env_kwargs}")
        check_resume(type(learner), state, config, seed, f"the run in {out}")
        stopping = state.get("early_stopping")
        stored_patience = None if stopping is None else stopping["patience"]
        if patience is not None and patience != stored_patience:
            raise ValueError(f"cannot resume the run in {out} with patience={patience} (checkpoint: {stored_patience})")
        generator = torch.Generator().manual_seed(0)
        generator.set_state(state["generator"].cpu())
        iteration, history = state["iteration"], state["history"]
        elapsed, cpu = state["training"]["wall_seconds"], state["training"].get("cpu_seconds", 0.0)
        slices = state["training"].get("slices", [])
    else:
        seed = 0 if seed is None else seed
        learner = build_learner(name, env_id, config, device, seed, env_kwargs)
        generator = torch.Generator().manual_seed(seed + TRAIN_SEED_OFFSET)
        iteration, history, elapsed, cpu, slices = 0, [], 0.0, 0.0, []
        stopping = None if patience is None else {"patience": patience, "best_iteration": None, "stopped": False}
    out.mkdir(parents=True, exist_ok=True)  # once the settings are accepted: a refused run leaves no folder
    stopped = stopping is not None and stopping["stopped"]
    if iteration:
        more = f"; this call trains for up to {time_budget:g} s more" if time_budget is not None else ""
        done = "" if iteration < iterations else ": nothing left to train (raise iterations to continue)"
        if stopped:
            done = f": stopped early (best validation at iteration {stopping['best_iteration']}), nothing left to train"
        tqdm.write(
            f"resuming from iteration {iteration} (of {iterations}), {elapsed:.0f} s of training so far{more}{done}"
        )
    env_kwargs = check_env_kwargs(env_kwargs)
    sampler = make_env(env_id, split="train", device=device, **{**env_kwargs, **learner.train_env_kwargs()}).sampler
    meta_batch = meta_batch_size(learner)
    if ranks > 1:
        if meta_batch % ranks:
            raise ValueError(f"meta_batch {meta_batch} does not split over {ranks} ranks")
        distributed.average_gradients(learner)
        progress = progress and rank == 0
    this_slice = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": device_name(device),
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "ranks": ranks,
        "start_iteration": iteration,
        "planned_iterations": iterations,
        **({"command": command} if command else {}),
    }
    slice_wall, slice_cpu = time.perf_counter(), time.process_time()

    def content(inference_only: bool = False) -> dict[str, Any]:
        slice_now = {
            **this_slice,
            "end_iteration": iteration,
            "wall_seconds": round(time.perf_counter() - slice_wall, 2),
            "cpu_seconds": round(time.process_time() - slice_cpu, 2),
        }
        return learner_checkpoint(
            learner,
            env_id,
            inference_only=inference_only,
            env_kwargs=env_kwargs,
            iteration=iteration,
            history=history,
            training={
                "wall_seconds": elapsed,
                "cpu_seconds": cpu,
                "meta_batch": meta_batch,
                "episodes_seen": iteration * meta_batch,
                "device": str(torch.device(device)),
                "device_name": device_name(device),
                "slices": [*slices, slice_now],
                **({"command": command} if command else {}),
            },
            **({} if inference_only else {"generator": generator.get_state()}),
            **({"early_stopping": stopping} if stopping is not None else {}),
        )

    def validate(train_losses: list[float], bar: tqdm) -> None:
        """Score the fixed val episodes, log a row, and keep the best so far (early stopping)."""
        nonlocal stopped
        summary, _ = evaluate(
            learner, env_id, split="val", n_episodes=val_episodes, seed=VAL_SEED, progress=False, env_kwargs=env_kwargs
        )
        results = summary["results"]
        row: dict[str, Any] = {
            "iteration": iteration,
            "episodes": iteration * meta_batch,
            "wall_seconds": round(elapsed, 2),
            "cpu_seconds": round(cpu, 2),
            "train_loss": sum(train_losses) / len(train_losses) if train_losses else float("nan"),
        }
        for key in ("accuracy", "reward"):
            if f"{key}_mean" in results:
                row[f"val_{key}"] = results[f"{key}_mean"]
                row[f"val_{key}_ci95"] = results[f"{key}_ci95"]
        history.append(row)
        if stopping is not None:
            best = next((old for old in history if old["iteration"] == stopping["best_iteration"]), None)
            if best is None or row["val_reward"] > best["val_reward"]:
                stopping["best_iteration"] = iteration
                save_atomic(content(inference_only=True), out / "best.pt")
            since_best = sum(old["iteration"] > stopping["best_iteration"] for old in history)
            stopped = stopping["stopped"] = since_best >= stopping["patience"]
            row["validations_since_best"] = since_best
        bar.write(
            " ".join(
                f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in row.items()
            )
        )
        if "val_accuracy" in row:
            bar.set_postfix({"val_accuracy": f"{row['val_accuracy']:.4f}"}, refresh=False)

    def save_and_record() -> None:
        """Save the checkpoint, then write log.csv and curve.png from its history: a failed save (a full disk)
        leaves the log as it was, never ahead of the checkpoint."""
        save_atomic(content(), path)
        write_csv(history, out / "log.csv")
        plot_curve(history, out / "curve.png", f"{learner.name} on {env_id}")

    interrupted = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal interrupted
        interrupted = True

    in_main_thread = threading.current_thread() is threading.main_thread()  # signals can only be caught there
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}
    window: list[float] = []
    budget_end = None if time_budget is None else elapsed + time_budget
    # by default about VAL_POINTS validations per run: per iterations, and with a time budget per seconds too
    val_seconds = None if val_interval_given or time_budget is None else time_budget / VAL_POINTS
    next_val = None if val_seconds is None else elapsed + val_seconds
    lock = None
    try:
        if rank == 0:
            lock = lock_run_folder(out)
            if history:  # the log as the checkpoint has it (a run killed after logging had it ahead)
                write_csv(history, out / "log.csv")
            elif path.exists():
                raise ValueError(f"another metabench train started a run in {out} meanwhile; re-run to resume it")
        with progress_bar(
            iterations, iteration, time_budget, f"train {learner.name} on {env_id}", disable=not progress
        ) as bar:
            if not history and rank == 0:
                validate([], bar)
                save_and_record()
            while not distributed.agree(
                iteration >= iterations or interrupted or stopped or (budget_end is not None and elapsed >= budget_end)
            ):
                start, start_cpu = time.perf_counter(), time.process_time()
                learner.progress = max(iteration / iterations, 0.0 if budget_end is None else elapsed / budget_end)
                episodes = sampler.sample(meta_batch, generator)  # the same draw on every rank
                metrics = learner.train_step(distributed.shard(episodes, rank, ranks))
                seconds = time.perf_counter() - start
                elapsed += seconds
                cpu += time.process_time() - start_cpu
                iteration += 1
                window.append(metrics["loss"])
                postfix = {key: f"{value:.4f}" for key, value in metrics.items()}
                if history and "val_accuracy" in history[-1]:
                    postfix["val_accuracy"] = f"{history[-1]['val_accuracy']:.4f}"
                if time_budget is None:
                    bar.update(1)
                else:
                    bar.update(max(min(seconds, bar.total - bar.n), 0.0))
                    postfix = {"iteration": f"{iteration}/{iterations}", **postfix}
                bar.set_postfix(postfix)
                last = iteration == iterations or (budget_end is not None and elapsed >= budget_end)
                if rank > 0:  # rank 0 validates, logs and saves
                    continue
                due = (
                    next_val is not None
                    and elapsed >= next_val
                    and iteration - history[-1]["iteration"] >= MIN_VAL_INTERVAL
                )
                validating = iteration % val_interval == 0 or last or due
                if validating:
                    validate(window, bar)
                    window = []
                    while next_val is not None and next_val <= elapsed:
                        next_val += val_seconds
                if validating or stopped:
                    save_and_record()
                elif iteration % checkpoint_interval == 0:
                    save_atomic(content(), path)
        if rank == 0 and (interrupted or iteration % checkpoint_interval):
            save_atomic(content(), path)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if lock is not None:
            lock.close()
    distributed.barrier()
    if interrupted:
        raise TrainingInterrupted(path, iteration)
    return path
