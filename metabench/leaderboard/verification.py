"""Verification: re-run an entry's stored checkpoint and compare the per-episode results with the stored ones.

:func:`check_entry` is what CI runs on every entry (``metabench leaderboard check``): ``submit``'s validation
of the stored files against the registry (:func:`~metabench.leaderboard.validation.check_evaluation`), the
duplicate checks against the entries submitted before it, then an **audit**: a re-score of episodes drawn
from a fresh random seed (:func:`new_audit_seed`, printed so a failure can be reproduced with ``--seed``),
never from anything the submitter writes, in the numbers :func:`audit_episodes` takes from the registered
protocol. ``full`` re-scores every episode and re-trains a design board's design by the board's recipe
(:func:`check_design`). :func:`verify` is the full check of one entry and, when it passes, writes
``verification.json`` and re-renders the views. :func:`check` checks every entry and the committed views.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metabench.leaderboard.files import json_bytes, locked, read_submitted_file, write_atomic
from metabench.leaderboard.render import render_views
from metabench.leaderboard.schema import (
    AUDIT_TASKS,
    CROSS_DEVICE_REWARD_ATOL,
    ENTRY_FILES,
    REWARD_ATOL,
    VERIFICATION_FORMAT,
    Entry,
    LeaderboardError,
    Verification,
)
from metabench.leaderboard.storage import duplicate_of, entry_folders, load_entries, load_entry, resolve_entry
from metabench.leaderboard.validation import check_evaluation, compare_records, scored_queries

#: On another platform than the stored run's (another CPU or GPU model or kernel set: other rounding; or an entry
#: that did not record its thread count, :func:`same_platform`) a re-run that differs is judged as a paired sample
#: of the stored episodes, not episode by episode (an audit sample that fails re-scores every episode and judges
#: those the same way): an unrolled inner loop carries a last-bit difference into visible ones (measured on an
#: Intel Xeon, entries evaluated on an AMD EPYC with the same AVX-512 kernels: 1 of 20 Meta-SGD episodes 0.19
#: apart; 220 of 1,000 Meta-Weight-Net episodes beyond the tolerance, up to 0.44, mean difference -0.0003). It
#: passes if at least this fraction of the episodes still reproduce to the per-episode tolerance (a forgery that
#: reshapes the results, e.g. to narrow their CI, changes most of them) ...
OTHER_HARDWARE_MIN_REPRODUCED = 0.5
#: ... and the mean signed reward and accuracy differences are within this many standard errors of the paired
#: differences (or the same-device bound, if larger): other rounding has no favoured sign, a forgery does.
OTHER_HARDWARE_MEAN_Z = 3.0
#: A design board's design, re-trained by its recipe (``full``), must score within this much mean accuracy of
#: the stored checkpoint on the protocol's episodes: re-training on another machine may round differently.
RETRAIN_ACCURACY_TOL = 0.02


def new_audit_seed() -> int:
    """A fresh 63-bit seed from the operating system's randomness (``secrets``): one per CI run."""
    return secrets.randbits(63)


def registered_protocol(env_id: str) -> dict[str, Any]:
    """The registry's test protocol of ``env_id`` as ``summary.json`` stores it (tuples as lists)."""
    from metabench.evaluation import test_protocol

    return json.loads(json.dumps(test_protocol(env_id)))


def audit_episodes(env_id: str, label: str, seed: int, tasks: int = AUDIT_TASKS) -> list[int]:
    """The episodes an audit with ``seed`` re-scores for the entry ``label`` (``ENV_ID/NAME``): episode count
    and tasks per episode come from the registered protocol, the draw from ``seed`` and the label alone."""
    protocol = registered_protocol(env_id)
    total = int(protocol["episodes"])
    size = min(total, -(-tasks // int(protocol.get("tasks_per_step", 1))))
    stream = int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "big")
    generator = np.random.default_rng([seed, stream])
    return sorted(generator.choice(total, size=size, replace=False).tolist())


@dataclass
class CheckReport:
    """The outcome of checking one entry (or the views): which episodes were re-scored and whether they matched."""

    entry: str
    passed: bool
    mode: str
    episodes: int
    seconds: float
    message: str
    details: dict[str, Any] | None = None


def same_platform(entry: Entry, device: str) -> bool:
    """Whether ``device`` here is the stored run's platform, on which an audit must reproduce every episode: the
    same hardware (:func:`~metabench.envs.common.device_name`), on CPU the same kernel set, and a known thread
    count (the audit re-scores at it). An entry from before threads were recorded was scored at a count no one
    knows, so a mismatch is judged as on other hardware."""
    import torch

    from metabench.envs.common import device_name

    run = entry.summary.run
    capability = torch.backends.cpu.get_cpu_capability() if torch.device(device).type == "cpu" else None
    return (
        run.device_name == device_name(device)
        and run.threads is not None
        and (run.cpu_capability is None or capability is None or run.cpu_capability == capability)
    )


def reproduces(entry: Entry, learner: Any, episodes: list[int], device: str) -> tuple[bool, dict[str, Any]]:
    """Re-score ``episodes`` of ``entry`` with ``learner`` at the stored run's thread count and compare with its
    stored records."""
    from metabench.evaluation import rescore

    rerun = rescore(learner, entry.env_id, episodes, device=device, threads=entry.summary.run.threads)
    cross_device = str(device).split(":")[0] != entry.summary.run.device.split(":")[0]
    return compare_records(
        [entry.records[i] for i in episodes],
        rerun,
        scored_queries(registered_protocol(entry.env_id)),
        CROSS_DEVICE_REWARD_ATOL if cross_device else REWARD_ATOL,
    )


def as_paired_sample(details: dict[str, Any]) -> bool:
    """Whether a re-run on another platform agrees with the stored episodes as a paired sample (the bounds of
    :data:`OTHER_HARDWARE_MIN_REPRODUCED` and :data:`OTHER_HARDWARE_MEAN_Z`), given :func:`compare_records`'s
    ``details``."""
    return (
        details["mismatched_episodes"] <= (1 - OTHER_HARDWARE_MIN_REPRODUCED) * details["episodes"]
        and abs(details["mean_reward_diff"])
        <= max(details["mean_reward_tolerance"], OTHER_HARDWARE_MEAN_Z * details["reward_diff_se"])
        and abs(details["mean_accuracy_diff"]) <= max(1e-9, OTHER_HARDWARE_MEAN_Z * details["accuracy_diff_se"])
    )


def check_design(entry: Entry, device: str = "cpu") -> float:
    """A design board's entry (MetaNAS, MetaAugment v2): re-train its design by the board's recipe and score the
    protocol's episodes; refused unless the mean accuracy is within ``RETRAIN_ACCURACY_TOL`` of the stored one.
    Returns the re-trained learner's mean accuracy."""
    from metabench.envs import make_env
    from metabench.evaluation import rescore

    design = entry.summary.design
    if design is None:
        raise LeaderboardError("summary.json of a design board's entry has no design")
    learner = make_env(entry.env_id, split="test", device=device).train_for_test(design.answer)
    rerun = rescore(learner, entry.env_id, list(range(len(entry.records))), device=device)
    retrained = float(np.mean([record.get("accuracy", record["reward"]) for record in rerun]))
    stored = entry.score[0]
    if abs(retrained - stored) > RETRAIN_ACCURACY_TOL:
        raise LeaderboardError(
            f"the board's recipe re-trains the design to {retrained:.4f}, the stored checkpoint scores {stored:.4f} "
            f"(tolerance {RETRAIN_ACCURACY_TOL}): the checkpoint is not the recipe's"
        )
    return retrained


def check_entry(
    entry: Entry, earlier: list[Entry], seed: int, *, full: bool = False, device: str = "cpu"
) -> CheckReport:
    """``submit``'s validation of the stored ``entry`` and its duplicate checks against the ``earlier`` entries,
    then the audit (:func:`audit_episodes` with ``seed``; every episode if ``full`` or it has no verification
    evidence, and with ``full`` a design board's re-train, :func:`check_design`)."""
    from metabench.checkpoints import load_checkpoint
    from metabench.envs.common import device_name
    from metabench.learners import available

    label, start = f"{entry.env_id}/{entry.name}", time.perf_counter()
    full = full or not entry.verified
    mode = "full re-run" if full else f"audit (seed {seed})"
    episodes: list[int] = []

    def report(passed: bool, message: str, details: dict[str, Any] | None = None) -> CheckReport:
        return CheckReport(label, passed, mode, len(episodes), time.perf_counter() - start, message, details)

    try:
        if entry.problems:
            raise LeaderboardError("; ".join(entry.problems))
        if entry.summary.agent not in available():
            raise LeaderboardError(f"learner {entry.summary.agent!r} is not registered here")
        files = {name: read_submitted_file(entry.path / name, name, size) for name, size in ENTRY_FILES.items()}
        check_evaluation(entry.summary, files["episodes.jsonl"], files["checkpoint.pt"], "the stored checkpoint")
        queries = scored_queries(registered_protocol(entry.env_id))
        duplicate = duplicate_of(entry.env_id, files, list(entry.records), queries, earlier)
        if duplicate is not None:
            first, reason = duplicate
            raise LeaderboardError(
                f"{reason}; submitted {first.record.submitted}, before this entry ({entry.record.submitted})"
            )
        total = int(registered_protocol(entry.env_id)["episodes"])
        episodes = list(range(total)) if full else audit_episodes(entry.env_id, label, seed)
        learner, _ = load_checkpoint(entry.path / "checkpoint.pt", device, agent=entry.summary.agent)
        matches, details = reproduces(entry, learner, episodes, device)
        if not matches and not same_platform(entry, device):
            matches = as_paired_sample(details)
            if not matches and not full:
                mode = f"audit (seed {seed}), then a full re-run on another platform ({device_name(device)})"
                episodes = list(range(total))
                matches, details = reproduces(entry, learner, episodes, device)
                matches = matches or as_paired_sample(details)
        if not matches:
            return report(
                False,
                f"{details['mismatched_episodes']} of {len(episodes)} re-scored episodes differ from the stored ones "
                f"(first: {details['first_mismatches']}), {details['accuracy_differences']} accuracies differ, max "
                f"reward difference {details['max_reward_abs_diff']:.3g}, mean reward difference "
                f"{details['mean_reward_diff']:+.3g} ± {details['reward_diff_se']:.2g} s.e. (same-device bound "
                f"{details['mean_reward_tolerance']:.3g})",
                details,
            )
        retrained = ""
        if full and "test_recipe" in registered_protocol(entry.env_id):
            retrained = f"; the recipe re-trains the design to {check_design(entry, device):.4f} ({entry.score[0]:.4f})"
    except LeaderboardError as error:
        return report(False, " ".join(str(error).split()))
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as error:
        return report(False, "cannot re-run the stored checkpoint: " + " ".join(str(error).split()))
    differ = (
        f" ({details['mismatched_episodes']} differ, as a paired sample within the other-hardware bounds: mean "
        f"reward difference {details['mean_reward_diff']:+.2g} ± {details['reward_diff_se']:.2g} s.e.)"
        if details["mismatched_episodes"]
        else ""
    )
    return report(True, f"{len(episodes)} episodes reproduced{differ}{retrained}", details)


def _folder_label(path: Path) -> str:
    return ascii(f"{path.parent.name}/{path.name}")[1:-1]


def check(
    root: str | Path | None = None, seed: int | None = None, *, full: bool = False, device: str = "cpu"
) -> Iterator[CheckReport]:
    """:func:`check_entry` for every stored entry (each against the entries of its board submitted before it),
    in the board's order, then a report on the committed views (``README.md``, ``index.html``), which must be
    the ones the entries render. ``seed`` defaults to :func:`new_audit_seed`. Writes nothing."""
    from metabench.leaderboard.storage import root_or_default

    root = root_or_default(root)
    seed = new_audit_seed() if seed is None else seed
    entries, broken = [], 0
    for path in entry_folders(root):
        try:
            entries.append(load_entry(path))
        except LeaderboardError as error:
            broken += 1
            yield CheckReport(_folder_label(path), False, "validation", 0, 0.0, " ".join(str(error).split()))
    for entry in entries:
        earlier = [e for e in entries if e.env_id == entry.env_id and e.submission_order < entry.submission_order]
        yield check_entry(entry, earlier, seed, full=full, device=device)
    yield check_views(root, entries, broken)


def check_views(root: Path, entries: list[Entry], broken: int = 0) -> CheckReport:
    """Whether the committed views are byte for byte the ones ``entries`` render (``broken``: folders that did
    not load, so the views cannot be regenerated)."""
    start = time.perf_counter()

    def report(passed: bool, message: str) -> CheckReport:
        return CheckReport("views", passed, "regenerated", 0, time.perf_counter() - start, message)

    if broken:
        return report(False, f"cannot regenerate the views: {broken} entry folder(s) do not load")
    stale = [name for name, content in render_views(entries).items() if _read(root / name) != content]
    if stale:
        return report(
            False,
            f"{', '.join(stale)} differ(s) from the views the entries render: never edit them by hand; run "
            "`metabench leaderboard` and commit the result",
        )
    return report(True, "README.md and index.html are the views the entries render")


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() and not path.is_symlink() else None


def verify(entry: str | Path, root: str | Path | None = None, device: str = "cpu") -> CheckReport:
    """The full check of one entry (every episode re-scored; a design board's design re-trained) and, when it
    passes, ``verification.json`` written and the views re-rendered. A failure leaves the entry untouched."""
    import torch

    import metabench
    from metabench.envs.common import device_name
    from metabench.leaderboard.storage import root_or_default, write_views

    path = resolve_entry(entry, root)
    root_path = root_or_default(root).resolve()
    stored = load_entry(path)
    entries = load_entries(root_path)
    earlier = [e for e in entries if e.env_id == stored.env_id and e.submission_order < stored.submission_order]
    report = check_entry(stored, earlier, 0, full=True, device=device)
    if not report.passed:
        return report
    verification = {
        "format": VERIFICATION_FORMAT,
        "verified": True,
        "checkpoint_sha256": stored.record.files["checkpoint.pt"],
        "episodes_sha256": stored.record.files["episodes.jsonl"],
        "device": str(device),
        "device_name": device_name(device),
        "threads": stored.summary.run.threads or torch.get_num_threads(),
        "torch_version": torch.__version__,
        "metabench_version": metabench.__version__,
        **(report.details or {}),
    }
    Verification.model_validate(verification)
    with locked(root_path):
        write_atomic(path / "verification.json", json_bytes(verification))
        write_views(root_path, render_views(load_entries(root_path)))
    report.message = f"{report.entry}: {report.episodes} episodes reproduced on {device}"
    return report
