"""What the leaderboard stores: its constants, pydantic schemas of every file, and :class:`Entry`.

The schemas are strict (no coercion, no extra keys, no NaN or infinity) and frozen, so a file that
validates holds exactly the types and ranges declared here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

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

ROOT_ENV_VAR = "METABENCH_LEADERBOARD"
ENTRY_FORMAT = "metabench-leaderboard-entry/1"
VERIFICATION_FORMAT = "metabench-leaderboard-verification/1"
#: Size limits of the submitted files, checked before a file is read, and the deepest nesting of its JSON.
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024
MAX_SUMMARY_BYTES = 1024 * 1024
MAX_EPISODES_BYTES = 16 * 1024 * 1024
#: The files of an entry that ``entry.json`` hashes, with their size limits.
ENTRY_FILES = {
    "summary.json": MAX_SUMMARY_BYTES,
    "episodes.jsonl": MAX_EPISODES_BYTES,
    "checkpoint.pt": MAX_CHECKPOINT_BYTES,
}
MAX_METADATA_BYTES = 64 * 1024
MAX_ENTRY_BYTES = 1024 * 1024
MAX_TEST_RUNS_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 32
SUMMARY_REL_TOL = 1e-9
#: Tasks an audit re-scores per entry: that many episodes of the one-task-per-episode boards (drawn uniformly
#: without replacement from the protocol's), and ceil(AUDIT_TASKS / tasks_per_step) episodes where an episode
#: scores several tasks (MetaAugment v1: 4 of its 32 episodes). A forgery of a fraction f of an entry's
#: episodes escapes one audit of n episodes with probability C(N - fN, n) / C(N, n) <= (1 - f) ** n.
AUDIT_TASKS = 100
#: Verification tolerances: re-run rewards may differ by float rounding across devices, and an
#: episode's accuracy by one query (a near-tie argmax) in at most 1% of the episodes. The relative part
#: covers run-to-run rounding on one CPU: a MetaAugment v2 ProtoNets entry re-scored its episode 709
#: (reward -1.4156) 5.4e-4 away, 3.8e-4 relative, in about 1 of 10 processes.
REWARD_ATOL, REWARD_RTOL = 1e-4, 5e-4
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


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


def _check_text(value: str, what: str) -> str:
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError(f"{what} must not contain control characters (newline, NUL, ...)")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (it holds an unpaired surrogate)") from None
    return value


def _table_safe(url: HttpUrl) -> HttpUrl:
    if "|" in str(url):
        raise ValueError("a link must not contain '|' (it would split the leaderboard's table; write it as %7C)")
    return url


Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Url = Annotated[HttpUrl, Field(strict=False), AfterValidator(_table_safe)]
#: Text shown on the leaderboard: no control characters (a newline would break the tables).
PlainText = Annotated[str, AfterValidator(lambda value: _check_text(value, "text"))]


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
    device: PlainText
    device_name: PlainText
    wall_seconds: float = Field(ge=0)
    threads: int | None = Field(default=None, ge=1, le=4096)  # None: an entry from before it was recorded
    cpu_capability: PlainText | None = None  # torch's CPU kernel set (AVX2, AVX512): other kernels round otherwise
    peak_memory_bytes: int = Field(ge=0)
    metabench_version: str
    torch_version: str


class Training(_Strict):
    """The training budget, copied by ``metabench evaluate`` from the checkpoint."""

    model_config = ConfigDict(extra="allow")
    wall_seconds: float = Field(ge=0)
    meta_batch: int = Field(ge=1)
    episodes_seen: int = Field(ge=0)
    device: PlainText
    device_name: PlainText
    iterations: int = Field(ge=0)
    seed: int
    config: dict[str, Any]


class CheckpointRef(_Strict):
    """The evaluated checkpoint file and its sha256."""

    path: PlainText
    sha256: Sha256


class Design(_Strict):
    """What a design env's agent answered (MetaNAS: an architecture) and how the env trained it for the test."""

    agent: PlainText = Field(min_length=1, max_length=200)
    agent_config: dict[str, Any]
    answer: PlainText = Field(min_length=1, max_length=2000)
    recipe: dict[str, Any]
    recipe_wall_seconds: float = Field(ge=0)
    recipe_device_name: PlainText


class Summary(_Strict):
    """``summary.json`` as written by ``metabench evaluate``."""

    format: Literal["metabench-evaluation/1"]
    env_id: str = Field(min_length=1, max_length=100)
    agent: PlainText = Field(min_length=1, max_length=200)
    transductive: bool
    protocol: dict[str, Any]
    results: Results
    run: Run
    training: Training
    checkpoint: CheckpointRef
    command: str = Field(min_length=1, max_length=4000)
    note: str | None = None
    design: Design | None = None


class EpisodeRecord(_Strict):
    """One line of ``episodes.jsonl``."""

    episode: int = Field(ge=0)
    reward: float = Field(le=0)
    accuracy: float | None = Field(default=None, ge=0, le=1)


def _repository_file(value: str) -> str:
    """A file of metabench's own repository (its reference baselines), e.g. ``baselines/maml.py``."""
    if not REPOSITORY_FILE.match(value) or not (Path(metabench.__file__).resolve().parents[1] / value).is_file():
        raise ValueError(f"{value!r} is neither an http(s) URL nor a file under baselines/ of this repository")
    return value


RepositoryFile = Annotated[str, AfterValidator(_repository_file)]


class Metadata(_Strict):
    """What the submitter declares (flags of ``metabench submit`` or ``PATH/metadata.json``).

    ``code`` is an http(s) URL, or for metabench's own baselines the repository file (``baselines/X.py``).
    ``test_data_for_model_selection: true`` entries are stored but flagged test-selected.
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


class Selection(_Strict):
    """The checkpoint's run folder's record of test-split runs (``test_runs.jsonl``) at submission."""

    test_runs: int = Field(ge=0)
    checkpoints_tested: int = Field(ge=0)


class EntryRecord(_Strict):
    """``entry.json``: the submitter's metadata, facts derived from the summary, and each file's sha256."""

    format: Literal["metabench-leaderboard-entry/1"]
    name: str
    env_id: str
    #: UTC submission time (``2026-12-01T23:59:59Z``; a date alone for entries submitted before times were kept).
    submitted: Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}Z)?$")]
    metadata: Metadata
    agent: str
    transductive: bool
    budget: Budget
    seeds: Seeds
    metabench_version: str
    command: str
    files: dict[str, Sha256]
    #: None when the run folder kept no record (and for entries submitted before it was kept).
    selection: Selection | None = None


class Verification(_Strict):
    """``verification.json``: a re-run of the stored checkpoint that matched the stored episodes."""

    model_config = ConfigDict(extra="allow")
    format: Literal["metabench-leaderboard-verification/1"]
    verified: bool
    checkpoint_sha256: Sha256
    episodes_sha256: Sha256
    device: str
    episodes: int


def error_lines(error: ValidationError) -> list[str]:
    """The first ten problems of a pydantic error, one line each: location, message and the value given."""
    problems = []
    for item in error.errors(include_url=False)[:10]:
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        got = "" if item["type"] == "missing" else f" (got {repr(item['input'])[:60]})"
        problems.append(f"{location}: {item['msg']}{got}")
    return problems


def validation_message(where: str, error: ValidationError) -> str:
    """A readable message for a pydantic error in ``where``: the count, then one problem per line."""
    return f"{where}: {error.error_count()} problem(s)\n" + "\n".join(f"  - {p}" for p in error_lines(error))


@dataclass(frozen=True)
class Entry:
    """A stored entry as read back: its records, its verification, and what changed since submission."""

    path: Path
    record: EntryRecord
    summary: Summary
    verification: Verification | None = None
    problems: tuple[str, ...] = field(default=())
    #: The per-episode records of ``episodes.jsonl``: every number shown is computed from them.
    records: tuple[EpisodeRecord, ...] = field(default=())

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
    def submission_order(self) -> tuple[str, str]:
        """When the entry was submitted (then its name, for entries of one day before times were kept): what
        ranks ties and decides which of two duplicates came first."""
        return self.record.submitted, self.name

    @property
    def test_selected(self) -> bool:
        """Declared to have used the test split for model selection: shown flagged "test-selected"."""
        return self.record.metadata.test_data_for_model_selection

    @cached_property
    def results(self) -> Results:
        """Means and 95% CIs recomputed from :attr:`records` (never read from ``summary.json``)."""
        return Results.model_validate(recompute_results(list(self.records)))

    @property
    def score(self) -> tuple[float, float]:
        """The ranked metric (mean accuracy, else mean reward) and its 95% CI half-width, from the episodes."""
        results = self.results
        if results.accuracy_mean is not None:
            return results.accuracy_mean, results.accuracy_ci95 or 0.0
        return results.reward_mean, results.reward_ci95


def recompute_results(records: list[EpisodeRecord]) -> dict[str, float]:
    """Means and 95% CIs (1.96 standard errors) of the per-episode records, as ``evaluate`` computes them."""
    import numpy as np

    from metabench.evaluation import mean_ci95  # imports torch: only once results are needed

    results: dict[str, float] = {"episodes": len(records)}
    results["reward_mean"], results["reward_ci95"] = mean_ci95(np.array([r.reward for r in records]))
    if records and records[0].accuracy is not None:
        results["accuracy_mean"], results["accuracy_ci95"] = mean_ci95(np.array([r.accuracy for r in records]))
    return results
