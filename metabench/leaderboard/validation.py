"""Validation of a submission: everything :func:`validate_submission` checks before anything is stored.

A submission is the folder ``metabench evaluate`` wrote (``summary.json``, ``episodes.jsonl``), the
evaluated checkpoint and the submitter's metadata. It must match its schema and the registered
protocol, its summary must be exactly what its per-episode records give, and the checkpoint must be
the evaluated one and load safely (``torch.load(weights_only=True)``).

Every file is untrusted input: it must be a regular file (not a symbolic link) within its size limit,
checked before it is read, and its JSON finite, unambiguous and at most ``MAX_JSON_DEPTH`` deep. The
checkpoint's run folder's record of test-split runs must agree with the declared model selection.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

import metabench
from metabench.evaluation import TEST_RUNS_FILE, read_test_runs
from metabench.leaderboard.files import check_submitted_file, read_submitted_file, sha256_bytes
from metabench.leaderboard.schema import (
    ACCURACY_FLIP_FRACTION,
    ENTRY_NAME,
    MAX_CHECKPOINT_BYTES,
    MAX_EPISODES_BYTES,
    MAX_JSON_DEPTH,
    MAX_METADATA_BYTES,
    MAX_SUMMARY_BYTES,
    MAX_TEST_RUNS_BYTES,
    REWARD_ATOL,
    REWARD_RTOL,
    SUMMARY_REL_TOL,
    VERSIONED_ID,
    EpisodeRecord,
    LeaderboardError,
    Metadata,
    Selection,
    Summary,
    error_lines,
    recompute_results,
    validation_message,
)


def check_name(name: str, what: str = "entry name") -> str:
    """Return ``name`` if it is a safe file name (``[A-Za-z0-9._-]``, no leading dot, <= 80), else raise."""
    if not isinstance(name, str) or not name:
        raise LeaderboardError(f"{what} is empty")
    if "\0" in name:
        raise LeaderboardError(f"{what} {name!r} contains a NUL byte")
    if os.path.isabs(name) or name.startswith(("/", "\\", "~")):
        raise LeaderboardError(f"{what} {name!r} is an absolute path; give a plain name")
    if ".." in name or "/" in name or "\\" in name:
        raise LeaderboardError(f"{what} {name!r} contains a path component ('..', '/' or '\\')")
    if not ENTRY_NAME.match(name):
        raise LeaderboardError(
            f"{what} {name!r} must be 1-80 characters of [A-Za-z0-9._-] starting with a letter or digit"
        )
    return name


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe version of ``text``: ``[A-Za-z0-9._-]``, lower case, no leading dot, at most ``limit``."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._").lower()
    value = re.sub(r"\.{2,}", ".", value)[:limit].strip("-._")
    return value or "entry"


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if it is versioned (``...-vN``) and registered by metabench, else raise."""
    if not VERSIONED_ID.match(env_id):
        raise LeaderboardError(
            f"env id {env_id!r} is not a versioned id (expected e.g. 'MetaOmniglot-5w1s-v0'); "
            f"registered: {', '.join(metabench.ENV_IDS)}"
        )
    if env_id not in metabench.ENV_IDS:
        raise LeaderboardError(f"env id {env_id!r} is not registered; registered: {', '.join(metabench.ENV_IDS)}")
    return env_id


@dataclass(frozen=True)
class Submission:
    """A fully validated submission, ready to be stored."""

    summary: Summary
    records: list[EpisodeRecord]
    metadata: Metadata
    files: dict[str, bytes]
    name: str
    selection: Selection | None = None

    @property
    def env_id(self) -> str:
        return self.summary.env_id


def compare_records(
    stored: list[EpisodeRecord], rerun: list[dict[str, Any]], queries: int, reward_atol: float = REWARD_ATOL
) -> tuple[bool, dict[str, Any]]:
    """Compare per-episode results: every reward within ``reward_atol + REWARD_RTOL * |reward|``, their mean
    signed difference within the same-device tolerance whatever ``reward_atol`` (rounding averages out, a
    forgery in the submitter's favour does not), and accuracies within one query in <= 1% of the episodes."""
    by_episode = {record.episode: record for record in stored}
    signed, signed_accuracy, accuracy_flips, mismatched = [], [], 0, []
    for new in rerun:
        old = by_episode.get(new["episode"])
        if old is None:
            mismatched.append(new["episode"])
            continue
        signed.append(new["reward"] - old.reward)
        ok = abs(signed[-1]) <= reward_atol + REWARD_RTOL * abs(old.reward)
        if old.accuracy is not None:
            signed_accuracy.append(new.get("accuracy", math.nan) - old.accuracy)
            accuracy_diff = abs(signed_accuracy[-1])
            if not accuracy_diff <= 1e-6:
                accuracy_flips += 1
                ok = ok and accuracy_diff <= 1 / max(queries, 1) + 1e-6
        if not ok:
            mismatched.append(new["episode"])
    mean_diff = float(np.mean(signed)) if signed else 0.0
    mean_tolerance = REWARD_ATOL + REWARD_RTOL * float(np.mean([abs(record.reward) for record in stored] or [0.0]))
    details = {
        "episodes": len(rerun),
        "mismatched_episodes": len(mismatched),
        "first_mismatches": mismatched[:5],
        "max_reward_abs_diff": max(map(abs, signed), default=0.0),
        "mean_reward_diff": mean_diff,
        "mean_reward_tolerance": mean_tolerance,
        "reward_diff_se": standard_error(signed),
        "mean_accuracy_diff": float(np.mean(signed_accuracy)) if signed_accuracy else 0.0,
        "accuracy_diff_se": standard_error(signed_accuracy),
        "accuracy_differences": accuracy_flips,
        "reward_atol": reward_atol,
    }
    matches = (
        not mismatched and accuracy_flips <= ACCURACY_FLIP_FRACTION * len(rerun) and abs(mean_diff) <= mean_tolerance
    )
    return matches, details


def standard_error(values: list[float]) -> float:
    """The standard error of the mean of ``values`` (0 for fewer than two)."""
    return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def _not_finite(text: str) -> float:
    raise ValueError(f"{text} is not a finite number (JSON files must hold finite numbers only)")


def _finite(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else _not_finite(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        repeated = sorted(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise ValueError(f"repeated key(s) {repeated[:3]} in one object")
    return value


def parse_json(content: bytes | str, where: str) -> Any:
    """Parse untrusted JSON: UTF-8, finite numbers only (no NaN, Infinity or overflowing literal), no repeated
    keys, no unpaired surrogate, nested at most ``MAX_JSON_DEPTH`` deep; else a :class:`LeaderboardError`."""
    too_deep = f"{where} is nested more than {MAX_JSON_DEPTH} levels deep"
    try:
        text = content.decode("utf-8") if isinstance(content, bytes) else content
        value = json.loads(text, parse_float=_finite, parse_constant=_not_finite, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise LeaderboardError(f"{where} is not UTF-8 text") from None
    except RecursionError:
        raise LeaderboardError(too_deep) from None
    except ValueError as error:  # json.JSONDecodeError, the hooks above, an integer of over 4300 digits
        raise LeaderboardError(f"{where} is not valid JSON: {error}") from None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise LeaderboardError(too_deep)
            stack.extend((child, depth + 1) for child in ([*item, *item.values()] if isinstance(item, dict) else item))
        elif isinstance(item, str) and re.search("[\ud800-\udfff]", item):
            raise LeaderboardError(f"{where} holds a string with an unpaired surrogate (e.g. \\ud800)")
    return value


def parse_summary(content: bytes) -> Summary:
    """Validate ``summary.json``: JSON as :func:`parse_json` accepts it, then its schema."""
    value = parse_json(content, "summary.json")
    try:
        return Summary.model_validate(value)
    except ValidationError as error:
        raise LeaderboardError(validation_message("summary.json", error)) from None


def check_protocol(summary: Summary) -> None:
    """The submission's protocol (split manifest, preprocessing, test-episode hash) must equal the registry's."""
    from metabench.evaluation import test_protocol

    if summary.note:
        raise LeaderboardError(f"summary.json is not a test score: {summary.note}")
    expected = json.loads(json.dumps(test_protocol(summary.env_id)))  # as summary.json stores it (tuples -> lists)
    claimed = summary.protocol
    problems = [
        f"{key}: submission has {claimed.get(key, '(missing)')!r}, the registry has {expected.get(key, '(missing)')!r}"
        for key in sorted(set(expected) | set(claimed))
        if claimed.get(key) != expected.get(key)
    ]
    if problems:
        raise LeaderboardError(
            f"the submission's protocol differs from the current registry's for {summary.env_id}:\n  - "
            + "\n  - ".join(problems)
        )


def protocol_count(protocol: dict[str, Any], key: str, default: int | None = None) -> int:
    """``protocol[key]`` as a positive integer (``default`` if absent and given), else a :class:`LeaderboardError`."""
    value = protocol.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LeaderboardError(f"summary.json protocol.{key} is {value!r}: it must be a positive integer")
    return value


def scored_queries(protocol: dict[str, Any]) -> int:
    """Queries behind one episode's accuracy: ``n_way * n_query``, times the tasks an episode scores (MetaAugment)."""
    if protocol.get("dataset") != "omniglot":
        return 0
    per_task = protocol_count(protocol, "n_way") * protocol_count(protocol, "n_query")
    return per_task * protocol_count(protocol, "tasks_per_step", 1)


def parse_episodes(content: bytes, summary: Summary) -> list[EpisodeRecord]:
    """Validate ``episodes.jsonl``: the protocol's episodes, each exactly once, finite and in range."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise LeaderboardError("episodes.jsonl is not UTF-8 text") from None
    records, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            problems.append(f"line {number}: empty line")
            continue
        try:
            records.append(EpisodeRecord.model_validate(parse_json(line, f"line {number}")))
        except LeaderboardError as error:
            problems.append(str(error))
        except ValidationError as error:
            problems.append(f"line {number}: " + "; ".join(error_lines(error)))
        if len(problems) >= 5:
            break
    if problems:
        raise LeaderboardError("episodes.jsonl has invalid records:\n  - " + "\n  - ".join(problems))

    expected = protocol_count(summary.protocol, "episodes")
    counts = Counter(record.episode for record in records)
    duplicated = sorted(episode for episode, count in counts.items() if count > 1)
    missing = sorted(set(range(expected)) - set(counts))
    extra = sorted(episode for episode in counts if episode >= expected)
    if duplicated or missing or extra or len(records) != expected:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[:5]})")
        if duplicated:
            details.append(f"{len(duplicated)} repeated (e.g. {duplicated[:5]})")
        if extra:
            details.append(f"{len(extra)} outside the protocol (e.g. {extra[:5]})")
        raise LeaderboardError(
            f"episodes.jsonl must hold each of the protocol's {expected} episodes exactly once; "
            f"it has {len(records)} records: {', '.join(details) or 'wrong count'}"
        )

    classification = summary.protocol.get("dataset") == "omniglot"
    queries = scored_queries(summary.protocol)
    for record in records:
        if classification != (record.accuracy is not None):
            need = "needs" if classification else "must not have"
            raise LeaderboardError(f"episodes.jsonl: episode {record.episode} {need} an accuracy on {summary.env_id}")
        if classification and abs(record.accuracy * queries - round(record.accuracy * queries)) > 1e-3:
            raise LeaderboardError(
                f"episodes.jsonl: episode {record.episode} has accuracy {record.accuracy!r}, "
                f"which is not a whole number of its {queries} queries"
            )
    return sorted(records, key=lambda record: record.episode)


def check_results(summary: Summary, records: list[EpisodeRecord]) -> None:
    """The summary's results must equal those recomputed from its episodes (relative tolerance 1e-9)."""
    recomputed = recompute_results(records)
    claimed = summary.results.model_dump(exclude_none=True)
    for key in sorted(set(recomputed) | set(claimed)):
        if key not in claimed or key not in recomputed:
            raise LeaderboardError(
                f"summary.json results: {key} is {'missing' if key not in claimed else 'unexpected'}"
            )
        if not math.isclose(claimed[key], recomputed[key], rel_tol=SUMMARY_REL_TOL, abs_tol=1e-12):
            raise LeaderboardError(
                f"summary.json claims {key} = {claimed[key]!r} but its {len(records)} episodes give "
                f"{recomputed[key]!r}: the summary must be exactly what the episodes show"
            )


def check_tensors(value: Any, where: str) -> None:
    """Refuse any tensor in ``value`` (nested dicts, lists, tuples) that views more elements than its storage
    holds (a stride-0 ``expand``: materialising it could take terabytes), before anything is copied."""
    import torch

    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            needed = item.numel() * item.element_size()
            if needed > MAX_CHECKPOINT_BYTES or needed > item.untyped_storage().nbytes():
                raise LeaderboardError(
                    f"{where} holds a {tuple(item.shape)} tensor viewing {item.untyped_storage().nbytes()} bytes "
                    "of storage (an expanded or strided view): save plain tensors (.contiguous().clone())"
                )
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def load_checkpoint_dict(content: bytes, where: str) -> dict[str, Any]:
    """A checkpoint's content, loaded with ``torch.load(weights_only=True)`` and checked by :func:`check_tensors`."""
    import io

    import torch

    try:
        checkpoint = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        raise LeaderboardError(f"{where} is not a safely loadable checkpoint (weights_only=True): {error}") from None
    check_tensors(checkpoint, where)
    return checkpoint if isinstance(checkpoint, dict) else {}


def check_checkpoint(content: bytes, summary: Summary, where: str = "checkpoint") -> None:
    """The checkpoint must be the evaluated one (sha256), load with ``weights_only=True`` and match the summary."""
    from metabench.checkpoints import CHECKPOINT_FORMAT

    if len(content) > MAX_CHECKPOINT_BYTES:
        raise LeaderboardError(
            f"{where} is {len(content)} bytes; the leaderboard stores at most {MAX_CHECKPOINT_BYTES}"
        )
    digest = sha256_bytes(content)
    if digest != summary.checkpoint.sha256:
        raise LeaderboardError(
            f"{where} has sha256 {digest}, but summary.json evaluated {summary.checkpoint.sha256}: "
            "submit the checkpoint that was evaluated (--checkpoint FILE)"
        )
    checkpoint = load_checkpoint_dict(content, where)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise LeaderboardError(f"{where} is not a metabench checkpoint (format {CHECKPOINT_FORMAT})")
    try:
        expected_training = {
            **checkpoint["training"],
            "iterations": checkpoint["iteration"],
            "seed": checkpoint["seed"],
            "config": checkpoint["config"],
        }
        same = (checkpoint["agent"], checkpoint["env_id"]) == (summary.agent, summary.env_id)
    except (KeyError, TypeError) as error:
        raise LeaderboardError(f"{where} lacks {error}: not a complete metabench checkpoint") from None
    if not same:
        raise LeaderboardError(
            f"{where} holds {checkpoint['agent']} on {checkpoint['env_id']}, but summary.json is {summary.agent} "
            f"on {summary.env_id}"
        )
    if json.loads(json.dumps(expected_training)) != summary.training.model_dump():
        raise LeaderboardError(f"summary.json's training block (budget, seed, config) does not match {where}")
    design = None if summary.design is None else summary.design.model_dump()
    if json.loads(json.dumps(checkpoint.get("design"))) != design:
        raise LeaderboardError(f"summary.json's design (the agent's answer and its training) does not match {where}")


def check_transductive(summary: Summary) -> None:
    """A registered learner's ``transductive`` flag must be the one the summary reports."""
    from metabench.learners import available, load_learner_class

    if summary.agent in available():
        try:
            learner_class = load_learner_class(summary.agent)
        except (ValueError, ImportError) as error:
            raise LeaderboardError(f"learner {summary.agent!r} does not load: {error}") from None
        if learner_class.transductive != summary.transductive:
            raise LeaderboardError(
                f"summary.json says transductive={summary.transductive}, but {summary.agent} is "
                f"transductive={learner_class.transductive}"
            )


def gather_metadata(path: Path, overrides: dict[str, Any]) -> Metadata:
    """Merge ``PATH/metadata.json`` with the command-line ``overrides`` (which win) and validate."""
    values: dict[str, Any] = {}
    metadata_path = path / "metadata.json"
    if metadata_path.is_symlink() or metadata_path.exists():
        values = parse_json(read_submitted_file(metadata_path, "metadata.json", MAX_METADATA_BYTES), str(metadata_path))
        if not isinstance(values, dict):
            raise LeaderboardError(f"{metadata_path} must hold a JSON object")
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        metadata = Metadata.model_validate(values)
    except ValidationError as error:
        message = validation_message("metadata", error)
        raise LeaderboardError(
            f"{message}\n  (give --method, --code, --paper and --test-data-for-model-selection no, "
            f"or put them in {metadata_path})"
        ) from None
    return metadata


def check_selection(folder: Path, metadata: Metadata, checkpoint_sha256: str) -> Selection | None:
    """What the checkpoint's run folder records of test-split runs (``test_runs.jsonl``; None if it keeps none).

    A declared ``test_data_for_model_selection: false`` is refused when other checkpoints were run on test too.
    """
    record = folder / TEST_RUNS_FILE
    if not (record.is_symlink() or record.exists()):
        return None
    check_submitted_file(record, TEST_RUNS_FILE, MAX_TEST_RUNS_BYTES)
    try:
        runs = read_test_runs(folder) or []
    except (ValueError, RecursionError) as error:
        raise LeaderboardError(f"{record} is not a readable record of test runs: {error}") from None
    tested = {run["checkpoint_sha256"] for run in runs}
    others = tested - {checkpoint_sha256}
    if others and not metadata.test_data_for_model_selection:
        raise LeaderboardError(
            f"{record} shows {len(runs)} test-split run(s) of {len(tested)} checkpoints, {len(others)} of them not "
            "the submitted one, but test_data_for_model_selection is declared 'no': if the checkpoint was chosen on "
            "the val split, copy it into a fresh folder and evaluate it there; otherwise declare "
            "--test-data-for-model-selection yes (the entry is then shown flagged test-selected)"
        )
    return Selection(test_runs=len(runs), checkpoints_tested=len(tested))


def _find_checkpoint(path: Path, summary: Summary, checkpoint: str | Path | None) -> Path:
    if checkpoint is not None:
        candidates = [Path(checkpoint)]
    else:
        candidates = [path / "checkpoint.pt", path.parent / "checkpoint.pt", Path(summary.checkpoint.path)]
    for candidate in candidates:
        if candidate.is_symlink() or candidate.is_file():  # a link is refused when read
            return candidate
    raise LeaderboardError(
        f"no checkpoint found (looked at {', '.join(str(c) for c in candidates)}); pass --checkpoint FILE: "
        "the leaderboard stores it so the entry can be verified"
    )


def check_evaluation(
    summary: Summary, episodes: bytes, checkpoint: bytes, where: str = "checkpoint"
) -> list[EpisodeRecord]:
    """What ``submit`` and ``check`` both require of an evaluation (returns its parsed episodes): a registered
    env id, the registry's protocol, the protocol's episodes each once, a summary exactly what they give, the
    learner's own ``transductive`` flag, and the evaluated checkpoint, safely loadable and matching."""
    check_env_id(summary.env_id)
    check_protocol(summary)
    records = parse_episodes(episodes, summary)
    check_results(summary, records)
    check_transductive(summary)
    check_checkpoint(checkpoint, summary, where)
    return records


def validate_submission(
    path: str | Path,
    metadata: dict[str, Any] | None = None,
    *,
    checkpoint: str | Path | None = None,
    name: str | None = None,
) -> Submission:
    """Validate what ``metabench evaluate`` wrote into ``path``; raises :class:`LeaderboardError` on any problem."""
    path = Path(path)
    if not path.is_dir():
        raise LeaderboardError(f"{path} is not a folder written by `metabench evaluate`")
    summary_bytes = read_submitted_file(path / "summary.json", "summary.json", MAX_SUMMARY_BYTES)
    episodes_bytes = read_submitted_file(path / "episodes.jsonl", "episodes.jsonl", MAX_EPISODES_BYTES)
    summary = parse_summary(summary_bytes)
    check_env_id(summary.env_id)
    entry_metadata = gather_metadata(path, metadata or {})
    if name is not None:
        check_name(name)
    checkpoint_path = _find_checkpoint(path, summary, checkpoint)
    checkpoint_bytes = read_submitted_file(checkpoint_path, "checkpoint", MAX_CHECKPOINT_BYTES)
    records = check_evaluation(summary, episodes_bytes, checkpoint_bytes, str(checkpoint_path))
    selection = check_selection(checkpoint_path.parent, entry_metadata, summary.checkpoint.sha256)
    entry_name = name or f"{slug(entry_metadata.method)}-{sha256_bytes(episodes_bytes)[:10]}"
    check_name(entry_name)
    files = {"summary.json": summary_bytes, "episodes.jsonl": episodes_bytes, "checkpoint.pt": checkpoint_bytes}
    return Submission(summary, records, entry_metadata, files, entry_name, selection)
