"""Verification: re-run an entry's stored checkpoint and compare the per-episode results with the stored ones.

:func:`verify` loads the checkpoint with ``torch.load(weights_only=True)``, re-evaluates it on the
registered protocol and, when every episode matches within the tolerances of :mod:`.schema`, writes
``verification.json``: the evidence of a full re-run, and re-renders the views.

:func:`check` is what CI runs on every change (``metabench leaderboard check``): it re-scores, for every
entry, a sample of its episodes drawn from the entry's own hash (:func:`spot_check_episodes`: it differs
per entry and changes whenever the entry does), and all of the episodes of an entry without such
evidence. Any mismatch fails the check; it writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metabench.evaluation import CHUNK
from metabench.leaderboard.files import json_bytes, locked, write_atomic
from metabench.leaderboard.render import render_views
from metabench.leaderboard.schema import (
    ACCURACY_FLIP_FRACTION,
    CROSS_DEVICE_REWARD_ATOL,
    REWARD_ATOL,
    REWARD_RTOL,
    VERIFICATION_FORMAT,
    Entry,
    EpisodeRecord,
    LeaderboardError,
    Verification,
)
from metabench.leaderboard.storage import load_entries, load_entry, resolve_entry, write_views
from metabench.leaderboard.validation import check_checkpoint, parse_episodes, scored_queries


@dataclass
class VerificationReport:
    """The outcome of re-running an entry's checkpoint."""

    entry: str
    verified: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def compare_records(
    stored: list[EpisodeRecord], rerun: list[dict[str, Any]], queries: int, reward_atol: float = REWARD_ATOL
) -> tuple[bool, dict[str, Any]]:
    """Compare per-episode results; rewards within float tolerance, accuracies within one query in <= 1% of episodes."""
    by_episode = {record.episode: record for record in stored}
    reward_diffs, accuracy_flips, mismatched = [], 0, []
    for new in rerun:
        old = by_episode.get(new["episode"])
        if old is None:
            mismatched.append(new["episode"])
            continue
        diff = abs(new["reward"] - old.reward)
        reward_diffs.append(diff)
        ok = diff <= reward_atol + REWARD_RTOL * abs(old.reward)
        if old.accuracy is not None:
            accuracy_diff = abs(new.get("accuracy", math.nan) - old.accuracy)
            if accuracy_diff > 1e-6:
                accuracy_flips += 1
                ok = ok and accuracy_diff <= 1 / max(queries, 1) + 1e-6
        if not ok:
            mismatched.append(new["episode"])
    details = {
        "episodes": len(rerun),
        "mismatched_episodes": len(mismatched),
        "first_mismatches": mismatched[:5],
        "max_reward_abs_diff": max(reward_diffs, default=0.0),
        "accuracy_differences": accuracy_flips,
        "reward_atol": reward_atol,
    }
    matches = not mismatched and accuracy_flips <= ACCURACY_FLIP_FRACTION * len(rerun)
    return matches, details


def verify(
    entry: str | Path, root: str | Path | None = None, device: str = "cpu", progress: bool = False
) -> VerificationReport:
    """Re-run the evaluation from the entry's stored checkpoint and mark the entry verified if the episodes match.

    The checkpoint is loaded with ``torch.load(weights_only=True)``; only learners registered in the
    ``metabench.learners`` entry-point group are rebuilt. A mismatch leaves the entry untouched.
    """
    from metabench.evaluation import evaluate
    from metabench.learners import available
    from metabench.training import load_checkpoint

    path = resolve_entry(entry, root)
    root_path = path.parent.parent
    stored = load_entry(path)
    label = f"{stored.env_id}/{stored.name}"

    def refused(message: str, **details: Any) -> VerificationReport:
        return VerificationReport(label, False, message, details)

    if stored.problems:
        return refused("; ".join(stored.problems))
    summary = stored.summary
    if summary.agent not in available():
        return refused(f"learner {summary.agent!r} is not registered here; install the package that provides it")
    records = parse_episodes((path / "episodes.jsonl").read_bytes(), summary)
    try:
        # Safe load and consistency with the summary first: the learner rebuilt is the registered one it names.
        check_checkpoint((path / "checkpoint.pt").read_bytes(), summary, "the stored checkpoint")
        learner, _ = load_checkpoint(path / "checkpoint.pt", device, agent=summary.agent)
    except LeaderboardError as error:
        return refused(str(error))
    except (ValueError, FileNotFoundError, KeyError) as error:
        return refused(f"the stored checkpoint does not load: {error}")
    queries = scored_queries(summary.protocol)
    cross_device = str(device).split(":")[0] != summary.run.device.split(":")[0]
    reward_atol = CROSS_DEVICE_REWARD_ATOL if cross_device else REWARD_ATOL
    # The seeded list is drawn CHUNK episodes at a time, so a short run re-scores exactly its first
    # episodes: a forged entry is caught in seconds, before the full re-run.
    total = int(summary.protocol["episodes"])
    for n_episodes in (min(CHUNK, total), total):
        rerun_summary, rerun = evaluate(learner, stored.env_id, n_episodes=n_episodes, device=device, progress=progress)
        rerun_summary = json.loads(json.dumps(rerun_summary))  # as summary.json stores it (tuples -> lists)
        ignored = ("episodes", "episodes_sha256")  # compared once the full list has been re-run
        protocol = {key: value for key, value in rerun_summary["protocol"].items() if key not in ignored}
        claimed = {key: value for key, value in summary.protocol.items() if key not in ignored}
        if protocol != claimed:
            return refused("the registry's protocol changed since this entry was submitted")
        matches, details = compare_records(records, rerun, queries, reward_atol)
        if not matches:
            return refused(
                f"re-running the checkpoint does not reproduce the stored episodes: {details['mismatched_episodes']} "
                f"of {details['episodes']} episodes differ (first: {details['first_mismatches']}), "
                f"{details['accuracy_differences']} accuracies differ, max reward difference "
                f"{details['max_reward_abs_diff']:.3g}",
                **details,
            )
    if rerun_summary["protocol"] != summary.protocol:
        return refused("the re-run drew different test episodes (episodes_sha256 differs)")
    verification = {
        "format": VERIFICATION_FORMAT,
        "verified": True,
        "checkpoint_sha256": stored.record.files["checkpoint.pt"],
        "episodes_sha256": stored.record.files["episodes.jsonl"],
        "device": rerun_summary["run"]["device"],
        "device_name": rerun_summary["run"]["device_name"],
        "torch_version": rerun_summary["run"]["torch_version"],
        "metabench_version": rerun_summary["run"]["metabench_version"],
        **details,
    }
    Verification.model_validate(verification)
    with locked(root_path):
        write_atomic(path / "verification.json", json_bytes(verification))
        write_views(root_path, render_views(load_entries(root_path)))
    return VerificationReport(label, True, f"{label}: {details['episodes']} episodes reproduced on {device}", details)


#: Tasks a spot check re-scores per entry (at least; all of a shorter protocol). Few-shot boards are re-scored
#: in whole blocks of the evaluation's CHUNK = 25 episodes, the blocks the protocol is scored in, so the re-run
#: is bit for bit the stored one; multi-step boards episode by episode (MetaAugment: 32 tasks an episode).
#: An entry forged in a fraction f of its blocks (episodes) escapes with probability about (1 - f) ** 2.
SPOT_CHECK_TASKS = 50


def spot_check_episodes(entry: Entry, tasks: int = SPOT_CHECK_TASKS) -> list[int]:
    """The episodes a check re-scores for ``entry``: whole ``CHUNK`` blocks (few-shot boards) or single episodes
    (multi-step boards) covering ``tasks`` tasks, drawn by a generator seeded with the sha256 of the entry's
    ``entry.json`` content (which hashes every file), so they differ per entry and move with any edit."""
    protocol = entry.summary.protocol
    total = int(protocol["episodes"])
    # few-shot boards, and design boards (MetaNAS) whose trained learner is scored on a few-shot env
    batched = entry.env_id.startswith(("MetaOmniglot-", "MetaSinusoid-")) or "test_recipe" in protocol
    size = CHUNK if batched else 1
    units = -(-total // size)
    wanted = -(-tasks // (size * int(protocol.get("tasks_per_step", 1))))
    digest = hashlib.sha256(json_bytes(entry.record.model_dump(mode="json"))).digest()
    generator = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    chosen = generator.choice(units, size=min(units, max(1, wanted)), replace=False)
    return sorted(i for unit in chosen.tolist() for i in range(unit * size, min((unit + 1) * size, total)))


@dataclass
class CheckReport:
    """The outcome of checking one entry: which episodes were re-scored and whether they matched."""

    entry: str
    passed: bool
    mode: str
    episodes: int
    seconds: float
    message: str


def check_entry(entry: Entry, sample: int = SPOT_CHECK_TASKS, device: str = "cpu") -> CheckReport:
    """Re-score ``entry``'s spot-check episodes (all of them if it has no verification evidence) and compare."""
    from metabench.evaluation import rescore
    from metabench.learners import available
    from metabench.training import load_checkpoint

    label, start = f"{entry.env_id}/{entry.name}", time.perf_counter()
    full = entry.verification is None or not entry.verification.verified
    total = int(entry.summary.protocol["episodes"])
    episodes = list(range(total)) if full else spot_check_episodes(entry, sample)
    mode = "full re-run (no verification evidence)" if full else "spot check"

    def report(passed: bool, message: str) -> CheckReport:
        return CheckReport(label, passed, mode, len(episodes), time.perf_counter() - start, message)

    if entry.problems:
        return report(False, "; ".join(entry.problems))
    if entry.summary.agent not in available():
        return report(False, f"learner {entry.summary.agent!r} is not registered here")
    try:
        check_checkpoint((entry.path / "checkpoint.pt").read_bytes(), entry.summary, "the stored checkpoint")
        learner, _ = load_checkpoint(entry.path / "checkpoint.pt", device, agent=entry.summary.agent)
        rerun = rescore(learner, entry.env_id, episodes, device=device)
    except LeaderboardError as error:
        return report(False, str(error))
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as error:
        return report(False, f"cannot re-run the stored checkpoint: {error}")
    records = parse_episodes((entry.path / "episodes.jsonl").read_bytes(), entry.summary)
    cross_device = str(device).split(":")[0] != entry.summary.run.device.split(":")[0]
    matches, details = compare_records(
        [records[i] for i in episodes],
        rerun,
        scored_queries(entry.summary.protocol),
        CROSS_DEVICE_REWARD_ATOL if cross_device else REWARD_ATOL,
    )
    if not matches:
        return report(
            False,
            f"{details['mismatched_episodes']} of {len(episodes)} re-scored episodes differ from the stored ones "
            f"(first: {details['first_mismatches']}), {details['accuracy_differences']} accuracies differ, max "
            f"reward difference {details['max_reward_abs_diff']:.3g}",
        )
    return report(True, f"{len(episodes)} episodes reproduced")


def check(root: str | Path | None = None, sample: int = SPOT_CHECK_TASKS, device: str = "cpu") -> Iterator[CheckReport]:
    """:func:`check_entry` for every stored entry, in the board's order; yields each report as it is made."""
    for entry in load_entries(root):
        yield check_entry(entry, sample, device)
