"""The leaderboard: validated submissions of ``metabench evaluate`` results, their views and their verification.

Layout of the leaderboard root (``<repo>/leaderboard`` by default; ``--root`` or ``$METABENCH_LEADERBOARD``)::

    README.md, index.html            generated views (never edit by hand)
    <env id>/<entry>/entry.json      submitter metadata, derived budget/seeds/command, sha256 of each file
    <env id>/<entry>/summary.json    exactly as written by ``metabench evaluate``
    <env id>/<entry>/episodes.jsonl  exactly as written by ``metabench evaluate``
    <env id>/<entry>/checkpoint.pt   the evaluated checkpoint (its sha256 is in summary.json)
    <env id>/<entry>/verification.json  written by ``metabench leaderboard verify`` when the re-run matches

:func:`submit` validates a submission completely before it writes anything (pydantic schemas, the
registered protocol, the per-episode records against the summary, the checkpoint, names,
duplicates), then moves the finished entry into place with one ``os.rename`` and re-renders the
views atomically: a refused submission leaves the leaderboard byte-identical. :func:`verify`
re-runs the evaluation from the stored checkpoint (``torch.load(weights_only=True)``) and compares
the per-episode results. Rendering depends only on the stored entries, so it is deterministic.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import html
import json
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StringConstraints,
    ValidationError,
    field_validator,
)

import metabench
from metabench.evaluation import CHUNK, TEST_EPISODES, mean_ci95

ROOT_ENV_VAR = "METABENCH_LEADERBOARD"
ENTRY_FORMAT = "metabench-leaderboard-entry/1"
VERIFICATION_FORMAT = "metabench-leaderboard-verification/1"
ENTRY_FILES = ("summary.json", "episodes.jsonl", "checkpoint.pt")
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024
SUMMARY_REL_TOL = 1e-9
#: Verification tolerances: re-run rewards may differ by float rounding across devices, and an
#: episode's accuracy by one query (a near-tie argmax) in at most 1% of the episodes.
REWARD_ATOL, REWARD_RTOL = 1e-4, 1e-4
#: Re-running on another device type (a GPU entry verified on CPU) accumulates more rounding through
#: inner loops and batch norm: measured up to 8e-4 per episode for MAML trained on an H100.
CROSS_DEVICE_REWARD_ATOL = 2e-3
ACCURACY_FLIP_FRACTION = 0.01
VERSIONED_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*-v[0-9]+$")
ENTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
REPOSITORY_FILE = re.compile(r"^baselines/[a-z0-9_]+\.py$")
METHOD_NAME = re.compile(r"^\w[\w .,:;+()#@&'-]{0,79}$")


class LeaderboardError(Exception):
    """A refused submission, a broken entry or a failed leaderboard operation, with a message saying why."""


# --------------------------------------------------------------------------------------------- schemas


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Url = Annotated[HttpUrl, Field(strict=False)]


class Results(_Strict):
    """The ``results`` block of a summary: what the per-episode records must reproduce."""

    episodes: int = Field(gt=0)
    reward_mean: float = Field(le=0)
    reward_ci95: float = Field(ge=0)
    accuracy_mean: float | None = Field(default=None, ge=0, le=1)
    accuracy_ci95: float | None = Field(default=None, ge=0)


class Run(_Strict):
    """Where and how the evaluation ran."""

    model_config = ConfigDict(extra="allow")
    device: str
    device_name: str
    wall_seconds: float = Field(ge=0)
    peak_memory_bytes: int = Field(ge=0)
    metabench_version: str
    torch_version: str


class Training(_Strict):
    """The training budget, copied by ``metabench evaluate`` from the checkpoint."""

    model_config = ConfigDict(extra="allow")
    wall_seconds: float = Field(ge=0)
    meta_batch: int = Field(ge=1)
    episodes_seen: int = Field(ge=0)
    device: str
    device_name: str
    iterations: int = Field(ge=0)
    seed: int
    config: dict[str, Any]


class CheckpointRef(_Strict):
    """The evaluated checkpoint file and its sha256."""

    path: str
    sha256: Sha256


class Summary(_Strict):
    """``summary.json`` as written by ``metabench evaluate``."""

    format: Literal["metabench-evaluation/1"]
    env_id: str = Field(min_length=1, max_length=100)
    agent: str = Field(min_length=1, max_length=200)
    transductive: bool
    protocol: dict[str, Any]
    results: Results
    run: Run
    training: Training
    checkpoint: CheckpointRef
    command: str = Field(min_length=1, max_length=4000)
    note: str | None = None


class EpisodeRecord(_Strict):
    """One line of ``episodes.jsonl``."""

    episode: int = Field(ge=0)
    reward: float = Field(le=0)
    accuracy: float | None = Field(default=None, ge=0, le=1)


def _check_text(value: str, what: str) -> str:
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError(f"{what} must not contain control characters (newline, NUL, ...)")
    return value


def _repository_file(value: str) -> str:
    """A file of metabench's own repository (its reference baselines), e.g. ``baselines/maml.py``."""
    if not REPOSITORY_FILE.match(value) or not (Path(metabench.__file__).resolve().parents[1] / value).is_file():
        raise ValueError(f"{value!r} is neither an http(s) URL nor a file under baselines/ of this repository")
    return value


RepositoryFile = Annotated[str, AfterValidator(_repository_file)]


class Metadata(_Strict):
    """What the submitter declares (flags of ``metabench submit`` or ``PATH/metadata.json``).

    ``code`` is an http(s) URL, or for metabench's own baselines the repository file (``baselines/X.py``).
    """

    method: str
    code: Url | RepositoryFile
    paper: Url | None = None
    test_data_for_model_selection: bool
    train_command: str | None = Field(default=None, max_length=4000)
    notes: str | None = Field(default=None, max_length=2000)

    @field_validator("method")
    @classmethod
    def _method_name(cls, value: str) -> str:
        _check_text(value, "method name")
        if ".." in value or "/" in value or "\\" in value:
            raise ValueError(f"method name {value!r} looks like a path ('..', '/' or '\\' are not allowed)")
        if not METHOD_NAME.match(value):
            raise ValueError(
                f"method name {value!r} must be 1-80 characters: letters, digits, spaces and .,:;+()#@&'- "
                "(starting with a letter or digit)"
            )
        return value

    @field_validator("train_command", "notes")
    @classmethod
    def _plain_text(cls, value: str | None) -> str | None:
        return None if value is None else _check_text(value, "text")


class Budget(_Strict):
    """The training budget of an entry (from the summary's ``training`` block)."""

    iterations: int = Field(ge=0)
    meta_batch: int = Field(ge=1)
    episodes_seen: int = Field(ge=0)
    wall_seconds: float = Field(ge=0)
    device: str
    device_name: str


class Seeds(_Strict):
    """The training seed and the seed of the test-episode list."""

    training: int
    test_episodes: int


class EntryRecord(_Strict):
    """``entry.json``: the submitter's metadata, facts derived from the summary, and each file's sha256."""

    format: Literal["metabench-leaderboard-entry/1"]
    name: str
    env_id: str
    submitted: Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    metadata: Metadata
    agent: str
    transductive: bool
    budget: Budget
    seeds: Seeds
    metabench_version: str
    command: str
    files: dict[str, Sha256]


class Verification(_Strict):
    """``verification.json``: a re-run of the stored checkpoint that matched the stored episodes."""

    model_config = ConfigDict(extra="allow")
    format: Literal["metabench-leaderboard-verification/1"]
    verified: bool
    checkpoint_sha256: Sha256
    episodes_sha256: Sha256
    device: str
    episodes: int


def _problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors(include_url=False)[:10]:
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        got = "" if item["type"] == "missing" else f" (got {repr(item['input'])[:60]})"
        problems.append(f"{location}: {item['msg']}{got}")
    return problems


def _validation_message(where: str, error: ValidationError) -> str:
    return f"{where}: {error.error_count()} problem(s)\n" + "\n".join(f"  - {p}" for p in _problems(error))


# --------------------------------------------------------------------------------------------- helpers


def default_root() -> Path:
    """``$METABENCH_LEADERBOARD``, else ``leaderboard/`` of the source checkout, else ``./leaderboard``."""
    if os.environ.get(ROOT_ENV_VAR):
        return Path(os.environ[ROOT_ENV_VAR])
    checkout = Path(metabench.__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "leaderboard"
    return Path("leaderboard")


def _root(root: str | Path | None) -> Path:
    return Path(root) if root is not None else default_root()


def sha256_bytes(content: bytes) -> str:
    """Hex sha256 of ``content``."""
    return hashlib.sha256(content).hexdigest()


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


def _write_atomic(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _read(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise LeaderboardError(f"{what} not found at {path}")
    return path.read_bytes()


# --------------------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Submission:
    """A fully validated submission, ready to be stored."""

    summary: Summary
    records: list[EpisodeRecord]
    metadata: Metadata
    files: dict[str, bytes]
    name: str

    @property
    def env_id(self) -> str:
        return self.summary.env_id


def parse_summary(content: bytes) -> Summary:
    """Validate ``summary.json`` against its schema."""
    try:
        return Summary.model_validate_json(content)
    except ValidationError as error:
        raise LeaderboardError(_validation_message("summary.json", error)) from None


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


def scored_queries(protocol: dict[str, Any]) -> int:
    """Queries behind one episode's accuracy: ``n_way * n_query``, times the tasks an episode scores (MetaAugment)."""
    per_task = int(protocol.get("n_way", 0)) * int(protocol.get("n_query", 0))
    return per_task * int(protocol.get("tasks_per_step", 1))


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
            records.append(EpisodeRecord.model_validate_json(line))
        except ValidationError as error:
            problems.append(f"line {number}: " + "; ".join(_problems(error)))
        if len(problems) >= 5:
            break
    if problems:
        raise LeaderboardError("episodes.jsonl has invalid records:\n  - " + "\n  - ".join(problems))

    expected = int(summary.protocol.get("episodes", TEST_EPISODES))
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


def recompute_results(records: list[EpisodeRecord]) -> dict[str, float]:
    """Means and 95% CIs (1.96 standard errors) of the per-episode records, as ``evaluate`` computes them."""
    results: dict[str, float] = {"episodes": len(records)}
    results["reward_mean"], results["reward_ci95"] = mean_ci95(np.array([r.reward for r in records]))
    if records and records[0].accuracy is not None:
        results["accuracy_mean"], results["accuracy_ci95"] = mean_ci95(np.array([r.accuracy for r in records]))
    return results


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


def _load_checkpoint_dict(content: bytes, where: str) -> dict[str, Any]:
    import io

    import torch

    try:
        checkpoint = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        raise LeaderboardError(f"{where} is not a safely loadable checkpoint (weights_only=True): {error}") from None
    return checkpoint if isinstance(checkpoint, dict) else {}


def check_checkpoint(content: bytes, summary: Summary, where: str = "checkpoint") -> None:
    """The checkpoint must be the evaluated one (sha256), load with ``weights_only=True`` and match the summary."""
    from metabench.training import CHECKPOINT_FORMAT

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
    checkpoint = _load_checkpoint_dict(content, where)
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


def check_transductive(summary: Summary) -> None:
    """A registered learner's ``transductive`` flag must be the one the summary reports."""
    from metabench.learners import available, load_learner_class

    if summary.agent in available():
        learner_class = load_learner_class(summary.agent)
        if learner_class.transductive != summary.transductive:
            raise LeaderboardError(
                f"summary.json says transductive={summary.transductive}, but {summary.agent} is "
                f"transductive={learner_class.transductive}"
            )


def gather_metadata(path: Path, overrides: dict[str, Any]) -> Metadata:
    """Merge ``PATH/metadata.json`` with the command-line ``overrides`` (which win) and validate."""
    values: dict[str, Any] = {}
    metadata_path = path / "metadata.json"
    if metadata_path.is_file():
        try:
            values = json.loads(metadata_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise LeaderboardError(f"{metadata_path} is not valid JSON: {error}") from None
        if not isinstance(values, dict):
            raise LeaderboardError(f"{metadata_path} must hold a JSON object")
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        metadata = Metadata.model_validate(values)
    except ValidationError as error:
        message = _validation_message("metadata", error)
        raise LeaderboardError(
            f"{message}\n  (give --method, --code, --paper and --test-data-for-model-selection no, "
            f"or put them in {metadata_path})"
        ) from None
    if metadata.test_data_for_model_selection:
        raise LeaderboardError(
            "entries whose model selection (early stopping, hyperparameters, checkpoint choice) used the test "
            "split are not accepted: select on the val split and re-evaluate"
        )
    return metadata


def _find_checkpoint(path: Path, summary: Summary, checkpoint: str | Path | None) -> Path:
    if checkpoint is not None:
        candidates = [Path(checkpoint)]
    else:
        candidates = [path / "checkpoint.pt", path.parent / "checkpoint.pt", Path(summary.checkpoint.path)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise LeaderboardError(
        f"no checkpoint found (looked at {', '.join(str(c) for c in candidates)}); pass --checkpoint FILE: "
        "the leaderboard stores it so the entry can be verified"
    )


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
    summary_bytes = _read(path / "summary.json", "summary.json")
    episodes_bytes = _read(path / "episodes.jsonl", "episodes.jsonl")
    summary = parse_summary(summary_bytes)
    check_env_id(summary.env_id)
    entry_metadata = gather_metadata(path, metadata or {})
    if name is not None:
        check_name(name)
    check_protocol(summary)
    records = parse_episodes(episodes_bytes, summary)
    check_results(summary, records)
    check_transductive(summary)
    checkpoint_path = _find_checkpoint(path, summary, checkpoint)
    checkpoint_bytes = checkpoint_path.read_bytes()
    check_checkpoint(checkpoint_bytes, summary, str(checkpoint_path))
    entry_name = name or f"{slug(entry_metadata.method)}-{sha256_bytes(episodes_bytes)[:10]}"
    check_name(entry_name)
    files = {"summary.json": summary_bytes, "episodes.jsonl": episodes_bytes, "checkpoint.pt": checkpoint_bytes}
    return Submission(summary, records, entry_metadata, files, entry_name)


# --------------------------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class Entry:
    """A stored leaderboard entry."""

    path: Path
    record: EntryRecord
    summary: Summary
    verification: Verification | None = None
    problems: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def env_id(self) -> str:
        return self.record.env_id

    @property
    def verified(self) -> bool:
        return self.verification is not None and self.verification.verified and not self.problems

    @property
    def score(self) -> tuple[float, float]:
        """The ranked metric (mean accuracy, else mean reward) and its 95% CI half-width."""
        results = self.summary.results
        if results.accuracy_mean is not None:
            return results.accuracy_mean, results.accuracy_ci95 or 0.0
        return results.reward_mean, results.reward_ci95


def _derived(summary: Summary) -> dict[str, Any]:
    """The facts ``entry.json`` repeats from ``summary.json``."""
    training = summary.training
    return {
        "env_id": summary.env_id,
        "agent": summary.agent,
        "transductive": summary.transductive,
        "budget": Budget(
            iterations=training.iterations,
            meta_batch=training.meta_batch,
            episodes_seen=training.episodes_seen,
            wall_seconds=training.wall_seconds,
            device=training.device,
            device_name=training.device_name,
        ),
        "seeds": Seeds(training=training.seed, test_episodes=int(summary.protocol.get("episode_seed", -1))),
        "metabench_version": summary.run.metabench_version,
        "command": summary.command,
    }


def _entry_record(submission: Submission, submitted: str) -> EntryRecord:
    return EntryRecord(
        format=ENTRY_FORMAT,
        name=submission.name,
        submitted=submitted,
        metadata=submission.metadata,
        files={file: sha256_bytes(content) for file, content in submission.files.items()},
        **_derived(submission.summary),
    )


def load_entry(path: Path) -> Entry:
    """Read a stored entry; integrity problems (a file changed since submission) are listed in ``problems``."""
    try:
        record = EntryRecord.model_validate_json(_read(path / "entry.json", "entry.json"))
    except ValidationError as error:
        raise LeaderboardError(_validation_message(f"{path / 'entry.json'}", error)) from None
    if record.name != path.name or record.env_id != path.parent.name:
        raise LeaderboardError(f"{path}/entry.json names {record.env_id}/{record.name}: it was moved or edited")
    summary_bytes = _read(path / "summary.json", f"{path.name}/summary.json")
    summary = parse_summary(summary_bytes)
    problems = []
    if any(getattr(record, key) != value for key, value in _derived(summary).items()):
        problems.append("entry.json disagrees with summary.json (budget, seeds, agent or command edited)")
    for file in ENTRY_FILES:
        target = path / file
        if target.is_symlink():
            problems.append(f"{file} is a symbolic link")
        elif not target.is_file():
            problems.append(f"{file} is missing")
        elif sha256_bytes(target.read_bytes()) != record.files.get(file):
            problems.append(f"{file} was modified after submission (sha256 differs from entry.json)")
    verification = None
    if (path / "verification.json").is_file():
        try:
            verification = Verification.model_validate_json((path / "verification.json").read_bytes())
        except ValidationError as error:
            problems.append("verification.json: " + "; ".join(_problems(error)))
        else:
            if (verification.checkpoint_sha256, verification.episodes_sha256) != (
                record.files.get("checkpoint.pt"),
                record.files.get("episodes.jsonl"),
            ):
                problems.append("verification.json is for other files")
    return Entry(path, record, summary, verification, tuple(problems))


def load_entries(root: str | Path | None = None, env_id: str | None = None) -> list[Entry]:
    """Every stored entry under ``root`` (or of one env), in a fixed order (env, name)."""
    root = _root(root)
    entries = []
    if not root.is_dir():
        return entries
    for env_dir in sorted(root.iterdir()):
        if not env_dir.is_dir() or env_dir.name.startswith(".") or (env_id is not None and env_dir.name != env_id):
            continue
        for entry_dir in sorted(env_dir.iterdir()):
            if entry_dir.is_dir() and not entry_dir.name.startswith("."):
                entries.append(load_entry(entry_dir))
    return entries


def _check_duplicates(submission: Submission, entries: list[Entry], root: Path) -> None:
    episodes = sha256_bytes(submission.files["episodes.jsonl"])
    checkpoint = sha256_bytes(submission.files["checkpoint.pt"])
    for entry in entries:
        if entry.env_id != submission.env_id:
            continue
        if entry.record.files.get("episodes.jsonl") == episodes:
            raise LeaderboardError(
                f"duplicate: {entry.env_id}/{entry.name} already holds these exact per-episode results"
            )
        if entry.record.files.get("checkpoint.pt") == checkpoint:
            raise LeaderboardError(f"duplicate: {entry.env_id}/{entry.name} already holds this checkpoint")
    if (root / submission.env_id / submission.name).exists():
        raise LeaderboardError(f"an entry named {submission.env_id}/{submission.name} already exists; choose --name")


def submit(
    path: str | Path,
    metadata: dict[str, Any] | None = None,
    *,
    root: str | Path | None = None,
    checkpoint: str | Path | None = None,
    name: str | None = None,
    today: str | None = None,
) -> Entry:
    """Validate the evaluation in ``path``, store it as a new entry and re-render the views.

    ``metadata`` (method, code, paper, test_data_for_model_selection, train_command, notes)
    overrides ``path/metadata.json``. Nothing under ``root`` changes unless every check passes.
    """
    root = _root(root)
    submission = validate_submission(path, metadata, checkpoint=checkpoint, name=name)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        entries = load_entries(root)
        _check_duplicates(submission, entries, root)
        record = _entry_record(submission, today or datetime.date.today().isoformat())
        entry = Entry(root / submission.env_id / submission.name, record, submission.summary)
        views = render_views([*entries, entry])
        _store(root, entry.path, {**submission.files, "entry.json": _json_bytes(record.model_dump(mode="json"))})
        write_views(root, views)
    return entry


def _store(root: Path, target: Path, files: dict[str, bytes]) -> None:
    """Build the entry folder in a hidden staging folder inside ``root``, then rename it into place at once."""
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".incoming-"))
    try:
        for name, content in files.items():
            (staging / name).write_bytes(content)
            os.chmod(staging / name, 0o644)
        os.chmod(staging, 0o755)
        new_env_dir = not target.parent.exists()
        target.parent.mkdir(exist_ok=True)
        try:
            if target.exists():
                raise LeaderboardError(f"an entry named {target.parent.name}/{target.name} already exists")
            os.rename(staging, target)
        except BaseException:
            if new_env_dir and not any(target.parent.iterdir()):
                target.parent.rmdir()
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialise the writers of one leaderboard: an advisory ``flock`` on the root folder (no lock file)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    handle = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


# --------------------------------------------------------------------------------------------- verification


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


def resolve_entry(entry: str | Path, root: str | Path | None = None) -> Path:
    """An entry folder from ``ENV_ID/NAME``, a unique ``NAME`` or a path; it must lie inside the leaderboard root."""
    text = str(entry)
    if "\0" in text:
        raise LeaderboardError("entry contains a NUL byte")
    candidate = Path(text)
    if root is None and (candidate / "entry.json").is_file():
        return candidate.resolve()
    base = _root(root).resolve()
    if candidate.is_dir() and (candidate / "entry.json").is_file():
        resolved = candidate.resolve()
        if base not in resolved.parents:
            raise LeaderboardError(f"{candidate} is not inside the leaderboard root {base}")
        return resolved
    parts = text.split("/")
    if len(parts) == 2:
        check_name(parts[0], "env id")
        check_name(parts[1])
        matches = [base / parts[0] / parts[1]]
    elif len(parts) == 1:
        check_name(text)
        matches = sorted(base.glob(f"*/{text}"))
    else:
        raise LeaderboardError(f"entry {text!r}: give ENV_ID/NAME, a NAME or an entry folder")
    matches = [match for match in matches if (match / "entry.json").is_file()]
    if len(matches) != 1:
        found = "no entry" if not matches else f"{len(matches)} entries"
        raise LeaderboardError(f"{found} named {text!r} under {base}")
    return matches[0]


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
        learner, _ = load_checkpoint(path / "checkpoint.pt", device)
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
    with _locked(root_path):
        _write_atomic(path / "verification.json", _json_bytes(verification))
        write_views(root_path, render_views(load_entries(root_path)))
    return VerificationReport(label, True, f"{label}: {details['episodes']} episodes reproduced on {device}", details)


# --------------------------------------------------------------------------------------------- rendering


def _ranked(entries: list[Entry]) -> dict[str, list[Entry]]:
    envs = sorted({entry.env_id for entry in entries}, key=lambda e: (e not in metabench.ENV_IDS, _env_order(e)))
    return {
        env: sorted(
            (entry for entry in entries if entry.env_id == env),
            key=lambda entry: (-entry.score[0], -entry.summary.results.reward_mean, entry.name),
        )
        for env in envs
    }


def _env_order(env_id: str) -> tuple[int, str]:
    return (metabench.ENV_IDS.index(env_id), "") if env_id in metabench.ENV_IDS else (len(metabench.ENV_IDS), env_id)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _metric_text(value: float, ci: float, accuracy: bool) -> str:
    return f"{100 * value:.2f} ± {100 * ci:.2f} %" if accuracy else f"{value:.4f} ± {ci:.4f}"


def _row(rank: int, entry: Entry) -> dict[str, str]:
    results = entry.summary.results
    budget = entry.record.budget
    flags = []
    if entry.summary.transductive:
        flags.append("transductive")
    flags.append("verified" if entry.verified else "unverified")
    if entry.problems:
        flags.append("modified")
    accuracy = results.accuracy_mean
    return {
        "rank": str(rank),
        "method": entry.record.metadata.method,
        "entry": entry.name,
        "accuracy": "—" if accuracy is None else _metric_text(accuracy, results.accuracy_ci95 or 0.0, True),
        "reward": _metric_text(results.reward_mean, results.reward_ci95, False),
        "budget": f"{budget.iterations:,} it × {budget.meta_batch} = {budget.episodes_seen:,} episodes, "
        f"{_duration(budget.wall_seconds)}",
        "hardware": f"{budget.device_name} ({budget.device})",
        "flags": ", ".join(flags),
        "paper": str(entry.record.metadata.paper or ""),
        "code": _link(entry.record.metadata.code),
    }


def _link(code: Any) -> str:
    """The code link as seen from the leaderboard folder (repository files are relative links)."""
    text = str(code)
    return f"../{text}" if REPOSITORY_FILE.match(text) else text


COLUMNS = ("rank", "method", "accuracy", "reward", "budget", "hardware", "flags")
HEADERS = {
    "rank": "#",
    "method": "method",
    "accuracy": "accuracy (95% CI)",
    "reward": "reward (95% CI)",
    "budget": "training budget",
    "hardware": "training hardware",
    "flags": "flags",
    "links": "links",
}


def _md(text: str) -> str:
    return re.sub(r"([\\`*_\[\]|<>&])", r"\\\1", text)


def render_markdown(entries: list[Entry]) -> str:
    """``leaderboard/README.md``: one ranked table per environment."""
    ranked = _ranked(entries)
    lines = [
        "# Leaderboard",
        "",
        "Generated by `metabench leaderboard` from the entries in this folder: do not edit by hand.",
        "Every entry was validated by `metabench submit` (schema, registered protocol hashes, the 1,000",
        "test episodes recomputed into the summary); **verified** entries were re-run from their stored",
        "checkpoint by `metabench leaderboard verify`. Ranked by mean accuracy (regression: mean reward);",
        "95% CI = 1.96 standard errors over the test episodes. **transductive**: query predictions use",
        "statistics of the whole query set. Charts: [index.html](index.html). How to submit:",
        "[Submitting to the leaderboard](../README.md#submitting-to-the-leaderboard).",
        "",
    ]
    for env_id in sorted(set(metabench.ENV_IDS) | set(ranked), key=_env_order):
        lines += [f"## {env_id}", ""]
        env_entries = ranked.get(env_id, [])
        if not env_entries:
            lines += ["No entries yet.", ""]
            continue
        lines.append("| " + " | ".join(HEADERS[column] for column in (*COLUMNS, "links")) + " |")
        lines.append("|" + "---|" * (len(COLUMNS) + 1))
        for rank, entry in enumerate(env_entries, start=1):
            row = _row(rank, entry)
            cells = [_md(row[column]) for column in COLUMNS]
            cells[1] = f"{cells[1]}<br>`{row['entry']}`"
            links = [f"[code](<{row['code']}>)"] + ([f"[paper](<{row['paper']}>)"] if row["paper"] else [])
            lines.append("| " + " | ".join([*cells, " ".join(links)]) + " |")
        lines.append("")
    return "\n".join(lines)


def render_text(entries: list[Entry], env_id: str | None = None) -> str:
    """The ranked tables as aligned plain text, for the terminal."""
    ranked = _ranked(entries)
    envs = [env_id] if env_id is not None else list(ranked)
    blocks = []
    for env in envs:
        rows = [_row(rank, entry) for rank, entry in enumerate(ranked.get(env, []), start=1)]
        if not rows:
            blocks.append(f"{env}: no entries yet")
            continue
        columns = ("rank", "method", "entry", "accuracy", "reward", "budget", "hardware", "flags")
        table = [[HEADERS.get(column, column) for column in columns]] + [[row[c] for c in columns] for row in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
        text = "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in table
        )
        blocks.append(f"{env}\n{text}")
    return "\n\n".join(blocks) if blocks else "the leaderboard has no entries yet"


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    span = max(high - low, 1e-12)
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=10 * magnitude)
    start = math.ceil(low / step) * step
    ticks, value = [], start
    while value <= high + 1e-9 * span:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _fmt(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _compute_label(episodes: float) -> str:
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if episodes >= threshold:
            return f"{_fmt(episodes / threshold)}{suffix}"
    return _fmt(episodes)


def _svg_accuracy(env_id: str, entries: list[Entry], accuracy: bool) -> str:
    """Horizontal dot plot: each method's mean with its 95% CI as an error bar."""
    scale = 100.0 if accuracy else 1.0
    longest = max(len(entry.record.metadata.method) for entry in entries)
    left = 20 + 7 * longest  # room for the method names (about 7 px per character at 12 px)
    width, right, top, row = left + 530, 30, 20, 26
    height = top + row * len(entries) + 44
    lows = [scale * (e.score[0] - e.score[1]) for e in entries]
    highs = [scale * (e.score[0] + e.score[1]) for e in entries]
    low, high = min(lows), max(highs)
    pad = max((high - low) * 0.08, 0.5 if accuracy else 0.01)
    low, high = low - pad, high + pad
    if accuracy:
        low, high = max(low, 0.0), min(high, 100.0)

    def x(value: float) -> float:
        return left + (value - low) / (high - low) * (width - left - right)

    label = "accuracy (%)" if accuracy else "reward (minus mean query loss)"
    parts = [
        f'<svg class="chart chart-accuracy" data-env="{html.escape(env_id)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{html.escape(env_id)}: {label} with 95% confidence intervals">',
        f"<title>{html.escape(env_id)}: {label}, 95% CI</title>",
    ]
    axis_y = top + row * len(entries) + 6
    for tick in _nice_ticks(low, high):
        parts.append(
            f'<line class="grid" x1="{x(tick):.1f}" y1="{top - 6}" x2="{x(tick):.1f}" y2="{axis_y}"/>'
            f'<text class="tick" x="{x(tick):.1f}" y="{axis_y + 14}" text-anchor="middle">{_fmt(tick)}</text>'
        )
    parts.append(
        f'<text class="axis" x="{(left + width - right) / 2:.1f}" y="{height - 4}" text-anchor="middle">{label}</text>'
    )
    for index, entry in enumerate(entries):
        y = top + row * index + row / 2
        mean, ci = (scale * value for value in entry.score)
        css = "point verified" if entry.verified else "point unverified"
        name = html.escape(entry.record.metadata.method)
        parts.append(
            f'<g class="bar" data-entry="{html.escape(entry.name)}">'
            f"<title>{name}: {html.escape(_metric_text(*entry.score, accuracy))}</title>"
            f'<text class="label" x="{left - 10}" y="{y + 4:.1f}" text-anchor="end">{name}</text>'
            f'<line class="ci" x1="{x(mean - ci):.1f}" y1="{y:.1f}" x2="{x(mean + ci):.1f}" y2="{y:.1f}"/>'
            f'<line class="ci" x1="{x(mean - ci):.1f}" y1="{y - 5:.1f}" x2="{x(mean - ci):.1f}" y2="{y + 5:.1f}"/>'
            f'<line class="ci" x1="{x(mean + ci):.1f}" y1="{y - 5:.1f}" x2="{x(mean + ci):.1f}" y2="{y + 5:.1f}"/>'
            f'<circle class="{css}" cx="{x(mean):.1f}" cy="{y:.1f}" r="4.5"/></g>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _svg_compute(env_id: str, entries: list[Entry], accuracy: bool) -> str:
    """Scatter of the ranked metric (with 95% CI) against meta-training episodes (log scale)."""
    scale = 100.0 if accuracy else 1.0
    width, height, left, right, top, bottom = 760, 340, 70, 30, 20, 50
    xs = [math.log10(max(entry.record.budget.episodes_seen, 1)) for entry in entries]
    x_low, x_high = math.floor(min(xs) - 0.25), math.ceil(max(xs) + 0.25)
    lows = [scale * (e.score[0] - e.score[1]) for e in entries]
    highs = [scale * (e.score[0] + e.score[1]) for e in entries]
    y_low, y_high = min(lows), max(highs)
    pad = max((y_high - y_low) * 0.1, 0.5 if accuracy else 0.01)
    y_low, y_high = y_low - pad, y_high + pad
    if accuracy:
        y_low, y_high = max(y_low, 0.0), min(y_high, 100.0)

    def px(value: float) -> float:
        return left + (value - x_low) / (x_high - x_low) * (width - left - right)

    def py(value: float) -> float:
        return top + (y_high - value) / (y_high - y_low) * (height - top - bottom)

    label = "accuracy (%)" if accuracy else "reward"
    parts = [
        f'<svg class="chart chart-compute" data-env="{html.escape(env_id)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{html.escape(env_id)}: {label} against meta-training episodes">',
        f"<title>{html.escape(env_id)}: {label} against meta-training episodes</title>",
    ]
    for decade in range(x_low, x_high + 1):
        parts.append(
            f'<line class="grid" x1="{px(decade):.1f}" y1="{top}" x2="{px(decade):.1f}" y2="{height - bottom}"/>'
            f'<text class="tick" x="{px(decade):.1f}" y="{height - bottom + 16}" text-anchor="middle">'
            f"{_compute_label(10.0**decade)}</text>"
        )
    for tick in _nice_ticks(y_low, y_high):
        parts.append(
            f'<line class="grid" x1="{left}" y1="{py(tick):.1f}" x2="{width - right}" y2="{py(tick):.1f}"/>'
            f'<text class="tick" x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">{_fmt(tick)}</text>'
        )
    parts.append(
        f'<text class="axis" x="{(left + width - right) / 2:.1f}" y="{height - 8}" text-anchor="middle">'
        "meta-training episodes (log scale)</text>"
        f'<text class="axis" x="14" y="{(top + height - bottom) / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(top + height - bottom) / 2:.1f})">{label}</text>'
    )
    for entry, log_x in zip(entries, xs, strict=True):
        mean, ci = (scale * value for value in entry.score)
        cx = px(log_x)
        css = "point verified" if entry.verified else "point unverified"
        name = html.escape(entry.record.metadata.method)
        budget = entry.record.budget
        tip = html.escape(
            f"{entry.record.metadata.method}: {_metric_text(*entry.score, accuracy)}; {budget.episodes_seen:,} "
            f"meta-training episodes, {_duration(budget.wall_seconds)} on {budget.device_name}"
        )
        right_half = cx > (left + width - right) / 2
        label_x, anchor = (cx - 8, "end") if right_half else (cx + 8, "start")
        parts.append(
            f'<g class="dot" data-entry="{html.escape(entry.name)}"><title>{tip}</title>'
            f'<line class="ci" x1="{cx:.1f}" y1="{py(mean - ci):.1f}" x2="{cx:.1f}" y2="{py(mean + ci):.1f}"/>'
            f'<circle class="{css}" cx="{cx:.1f}" cy="{py(mean):.1f}" r="4.5"/>'
            f'<text class="label" x="{label_x:.1f}" y="{py(mean) - 6:.1f}" text-anchor="{anchor}">{name}</text></g>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
table.leaderboard { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
table.leaderboard th, table.leaderboard td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; }
table.leaderboard td.num { text-align: right; white-space: nowrap; }
code { font-size: 12px; color: #555; }
.flag { font-size: 12px; padding: 1px 5px; border-radius: 3px; margin-right: 3px; }
.flag-verified { background: #d7f0d8; } .flag-unverified { background: #f7e1c4; }
.flag-transductive { background: #dde6f7; } .flag-modified { background: #f4b4b4; }
svg.chart { display: block; margin: 0.5em 0 1.5em; font-size: 12px; }
svg .grid { stroke: #e5e5e5; } svg .ci { stroke: #333; stroke-width: 1.5; }
svg .point.verified { fill: #2b6cb0; stroke: #2b6cb0; }
svg .point.unverified { fill: #fff; stroke: #c05621; stroke-width: 2; }
svg .tick { fill: #666; } svg .axis { fill: #333; } svg .label { fill: #222; }
""".strip()


def render_html(entries: list[Entry]) -> str:
    """``leaderboard/index.html``: self-contained page with each environment's table and charts (inline SVG)."""
    ranked = _ranked(entries)
    body = [
        "<h1>metabench leaderboard</h1>",
        "<p>Generated by <code>metabench leaderboard</code>. Ranked by mean accuracy over the 1,000 protocol test "
        "episodes (regression: mean reward), with 95% confidence intervals (1.96 standard errors). Filled points "
        "are verified entries (re-run from their stored checkpoint); hollow points are unverified.</p>",
    ]
    for env_id in sorted(set(metabench.ENV_IDS) | set(ranked), key=_env_order):
        env_entries = ranked.get(env_id, [])
        body.append(f'<section id="{html.escape(env_id)}" class="env"><h2>{html.escape(env_id)}</h2>')
        if not env_entries:
            body.append('<p class="empty">No entries yet.</p></section>')
            continue
        accuracy = env_entries[0].summary.results.accuracy_mean is not None
        body.append('<table class="leaderboard"><thead><tr>')
        body.append("".join(f"<th>{html.escape(HEADERS[c])}</th>" for c in (*COLUMNS, "links")))
        body.append("</tr></thead><tbody>")
        for rank, entry in enumerate(env_entries, start=1):
            row = _row(rank, entry)
            flags = "".join(
                f'<span class="flag flag-{flag}">{flag}</span>' for flag in row["flags"].split(", ") if flag
            )
            links = f'<a href="{html.escape(row["code"])}" rel="nofollow">code</a>'
            if row["paper"]:
                links += f' <a href="{html.escape(row["paper"])}" rel="nofollow">paper</a>'
            body.append(
                f'<tr class="entry" data-entry="{html.escape(entry.name)}"><td class="num">{rank}</td>'
                f"<td>{html.escape(row['method'])}<br><code>{html.escape(entry.name)}</code></td>"
                f'<td class="num">{html.escape(row["accuracy"])}</td><td class="num">{html.escape(row["reward"])}</td>'
                f"<td>{html.escape(row['budget'])}</td><td>{html.escape(row['hardware'])}</td>"
                f"<td>{flags}</td><td>{links}</td></tr>"
            )
        body.append("</tbody></table>")
        metric = "Accuracy" if accuracy else "Reward"
        body.append(f"<h3>{metric} per method (95% CI)</h3>")
        body.append(_svg_accuracy(env_id, env_entries, accuracy))
        body.append(f"<h3>{metric} against training compute</h3>")
        body.append(_svg_compute(env_id, env_entries, accuracy))
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>metabench leaderboard</title>\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        f"<style>\n{STYLE}\n</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def render_views(entries: list[Entry]) -> dict[str, bytes]:
    """The generated files of the leaderboard root, by name."""
    return {"README.md": render_markdown(entries).encode(), "index.html": render_html(entries).encode()}


def write_views(root: str | Path, views: dict[str, bytes]) -> list[Path]:
    """Write the views atomically, skipping those whose content is unchanged; returns the paths written."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in sorted(views.items()):
        target = root / name
        if target.is_file() and target.read_bytes() == content:
            continue
        _write_atomic(target, content)
        written.append(target)
    return written


def rebuild(root: str | Path | None = None) -> list[Entry]:
    """Re-render ``README.md`` and ``index.html`` from the stored entries; returns the entries."""
    root = _root(root)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        entries = load_entries(root)
        write_views(root, render_views(entries))
    return entries


# --------------------------------------------------------------------------------------------- command line


def cmd_submit(args: argparse.Namespace) -> int:
    """``metabench submit PATH``: validate, store and re-render."""
    selection = {"no": False, "yes": True, None: None}[args.test_data_for_model_selection]
    metadata = {
        "method": args.method,
        "paper": args.paper,
        "code": args.code,
        "test_data_for_model_selection": selection,
        "train_command": args.train_command,
        "notes": args.notes,
    }
    entry = submit(args.path, metadata, root=args.root, checkpoint=args.checkpoint, name=args.name)
    root = _root(args.root)
    print(f"stored {entry.path} (unverified until `metabench leaderboard verify {entry.env_id}/{entry.name}`)")
    print(render_text(load_entries(root), entry.env_id))
    print(f"views: {root / 'README.md'}, {root / 'index.html'}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """``metabench leaderboard [--env ID]``: print the ranked table(s) and rebuild the views."""
    if args.env is not None:
        check_env_id(args.env)
    root = _root(args.root)
    entries = rebuild(root)
    print(render_text(entries, args.env))
    broken = [f"{entry.env_id}/{entry.name}: {'; '.join(entry.problems)}" for entry in entries if entry.problems]
    if broken:
        print("\nentries changed since submission (shown as unverified):\n  " + "\n  ".join(broken))
    print(f"\nviews: {root / 'README.md'}, {root / 'index.html'}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """``metabench leaderboard verify ENTRY``: re-run the stored checkpoint and mark the entry verified."""
    report = verify(args.entry, args.root, device=args.device, progress=True)
    print(("verified: " if report.verified else "NOT verified: ") + report.message)
    return 0 if report.verified else 1


def add_commands(subparsers: Any) -> None:
    """Register ``submit`` and ``leaderboard`` (with ``leaderboard verify ENTRY``) on argparse ``subparsers``."""
    root_help = f"leaderboard folder (default: ${ROOT_ENV_VAR} or the checkout's leaderboard/)"
    submit_parser = subparsers.add_parser(
        "submit",
        help="validate what `metabench evaluate` wrote and add it to the leaderboard",
        description="Validate a `metabench evaluate` output folder (summary.json, episodes.jsonl) against the "
        "registered protocol, store it with its checkpoint as a new leaderboard entry and re-render the views. "
        "Metadata comes from the flags or PATH/metadata.json. Nothing is written if any check fails.",
    )
    submit_parser.add_argument("path", help="folder written by `metabench evaluate`")
    submit_parser.add_argument("--method", help="method name shown on the leaderboard")
    submit_parser.add_argument("--paper", help="paper URL (http/https)")
    submit_parser.add_argument("--code", help="code URL (http/https)")
    submit_parser.add_argument(
        "--test-data-for-model-selection",
        choices=("no", "yes"),
        help="whether the test split was used for any model selection (it must be 'no')",
    )
    submit_parser.add_argument("--checkpoint", help="the evaluated checkpoint (default: found beside PATH)")
    submit_parser.add_argument("--train-command", help="the `metabench train ...` command of the run")
    submit_parser.add_argument("--notes", help="a short free-text note")
    submit_parser.add_argument("--name", help="entry folder name (default: derived from the method and results)")
    submit_parser.add_argument("--root", help=root_help)
    submit_parser.set_defaults(func=cmd_submit)

    board = subparsers.add_parser(
        "leaderboard",
        help="print the leaderboard and rebuild its views; `leaderboard verify ENTRY` re-runs an entry",
        description="Print the ranked leaderboard table(s) and rebuild leaderboard/README.md and index.html.",
    )
    board.add_argument("--env", help="only this versioned env id")
    board.add_argument("--root", help=root_help)
    board.set_defaults(func=cmd_leaderboard)
    actions = board.add_subparsers(dest="leaderboard_command", metavar="ACTION")
    verify_parser = actions.add_parser(
        "verify",
        help="re-run an entry's stored checkpoint and mark it verified if its episodes match",
        description="Re-evaluate an entry from its stored checkpoint (loaded with weights_only=True) and compare "
        "the per-episode results; a match marks the entry verified.",
    )
    verify_parser.add_argument("entry", help="ENV_ID/NAME, NAME or the entry's folder")
    verify_parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    verify_parser.add_argument("--root", default=argparse.SUPPRESS, help=root_help)
    verify_parser.set_defaults(func=cmd_verify)
