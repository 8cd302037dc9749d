"""The leaderboard folder: where it is, reading its entries, storing a new one and writing its views.

Layout of the leaderboard root (``<repo>/leaderboard`` by default; ``--root`` or ``$METABENCH_LEADERBOARD``)::

    README.md, index.html            generated views (never edit by hand)
    <env id>/<entry>/entry.json      submitter metadata, derived budget/seeds/command, sha256 of each file
    <env id>/<entry>/summary.json    exactly as written by ``metabench evaluate``
    <env id>/<entry>/episodes.jsonl  exactly as written by ``metabench evaluate``
    <env id>/<entry>/checkpoint.pt   the evaluated checkpoint (its sha256 is in summary.json)
    <env id>/<entry>/verification.json  written by ``metabench leaderboard verify`` when the re-run matches

:func:`submit` validates a submission completely before it writes anything, then moves the finished
entry into place with one ``os.rename`` and re-renders the views atomically: a refused submission
leaves the leaderboard byte-identical. Writers hold an advisory lock on the root folder.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import metabench
from metabench.leaderboard.files import json_bytes, locked, read_submitted_file, sha256_bytes, write_atomic
from metabench.leaderboard.render import render_views
from metabench.leaderboard.schema import (
    CROSS_DEVICE_REWARD_ATOL,
    ENTRY_FILES,
    ENTRY_FORMAT,
    MAX_ENTRY_BYTES,
    REWARD_RTOL,
    ROOT_ENV_VAR,
    Budget,
    Entry,
    EntryRecord,
    EpisodeRecord,
    LeaderboardError,
    Seeds,
    Summary,
    Verification,
    error_lines,
    validation_message,
)
from metabench.leaderboard.validation import (
    Submission,
    check_name,
    check_results,
    check_transductive,
    compare_records,
    load_checkpoint_dict,
    parse_episodes,
    parse_json,
    parse_summary,
    scored_queries,
    validate_submission,
)


def default_root() -> Path:
    """``$METABENCH_LEADERBOARD``, else ``leaderboard/`` of the source checkout, else an existing ``./leaderboard``.

    Outside a checkout, without the variable and without ``./leaderboard``, there is no leaderboard to use:
    raises :class:`LeaderboardError` asking for ``--root`` or ``$METABENCH_LEADERBOARD`` rather than creating
    ``./leaderboard`` wherever the command happens to run.
    """
    if os.environ.get(ROOT_ENV_VAR):
        return Path(os.environ[ROOT_ENV_VAR])
    checkout = Path(metabench.__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "leaderboard"
    if Path("leaderboard").is_dir():
        return Path("leaderboard")
    raise LeaderboardError(
        "no leaderboard folder: metabench is not running from its source checkout and ./leaderboard does not "
        f"exist; pass --root FOLDER or set ${ROOT_ENV_VAR} (submit creates the folder it is given)"
    )


def root_or_default(root: str | Path | None) -> Path:
    """``root`` as a path, or :func:`default_root` when it is None."""
    return Path(root) if root is not None else default_root()


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
        selection=submission.selection,
        **_derived(submission.summary),
    )


def load_entry(path: Path) -> Entry:
    """Read a stored entry, every file as untrusted as a submission's (regular files within their limits, strict
    JSON, safe folder names); what changed since submission, or disagrees within the entry (a summary that is
    not what its episodes give, an edited budget, a wrong ``transductive`` flag), is listed in ``problems``."""
    check_name(path.parent.name, "env folder name")
    check_name(path.name, "entry folder name")
    entry_bytes = read_submitted_file(path / "entry.json", f"{path.name}/entry.json", MAX_ENTRY_BYTES)
    try:
        record = EntryRecord.model_validate(parse_json(entry_bytes, f"{path.name}/entry.json"))
    except ValidationError as error:
        raise LeaderboardError(validation_message(f"{path / 'entry.json'}", error)) from None
    if record.name != path.name or record.env_id != path.parent.name:
        raise LeaderboardError(f"{path}/entry.json names {record.env_id}/{record.name}: it was moved or edited")
    content = {name: read_submitted_file(path / name, f"{path.name}/{name}", cap) for name, cap in ENTRY_FILES.items()}
    summary = parse_summary(content["summary.json"])
    records = parse_episodes(content["episodes.jsonl"], summary)
    problems = []
    if any(getattr(record, key) != value for key, value in _derived(summary).items()):
        problems.append("entry.json disagrees with summary.json (budget, seeds, agent or command edited)")
    problems += [
        f"{file} was modified after submission (sha256 differs from entry.json)"
        for file in ENTRY_FILES
        if sha256_bytes(content[file]) != record.files.get(file)
    ]
    for consistent in (lambda: check_results(summary, records), lambda: check_transductive(summary)):
        try:
            consistent()
        except LeaderboardError as error:
            problems.append(str(error))
    selection = record.selection
    if selection is not None and selection.checkpoints_tested > 1 and not record.metadata.test_data_for_model_selection:
        problems.append(
            f"entry.json records test runs of {selection.checkpoints_tested} checkpoints but declares no model "
            "selection on test"
        )
    verification = None
    if (path / "verification.json").is_symlink() or (path / "verification.json").exists():
        try:
            verification_bytes = read_submitted_file(path / "verification.json", "verification.json", MAX_ENTRY_BYTES)
            verification = Verification.model_validate(parse_json(verification_bytes, "verification.json"))
        except LeaderboardError as error:
            problems.append(str(error))
        except ValidationError as error:
            problems.append("verification.json: " + "; ".join(error_lines(error)))
        else:
            if (verification.checkpoint_sha256, verification.episodes_sha256) != (
                record.files.get("checkpoint.pt"),
                record.files.get("episodes.jsonl"),
            ):
                problems.append("verification.json is for other files")
    return Entry(path, record, summary, verification, tuple(problems), tuple(records))


def entry_folders(root: str | Path | None = None, env_id: str | None = None) -> list[Path]:
    """The entry folders under ``root`` (``<env id>/<entry>``, hidden ones skipped; of one env), sorted."""
    root = root_or_default(root)
    if not root.is_dir():
        return []
    return [
        entry_dir
        for env_dir in sorted(root.iterdir())
        if env_dir.is_dir() and not env_dir.name.startswith(".") and env_id in (None, env_dir.name)
        for entry_dir in sorted(env_dir.iterdir())
        if entry_dir.is_dir() and not entry_dir.name.startswith(".")
    ]


def load_entries(root: str | Path | None = None, env_id: str | None = None) -> list[Entry]:
    """Every stored entry under ``root`` (or of one env), in a fixed order (env, name)."""
    return [load_entry(path) for path in entry_folders(root, env_id)]


def weights_fingerprint(checkpoint: bytes) -> Counter[str]:
    """What a checkpoint holds, as a multiset of sha256: one per tensor of its learner state (dtype, shape,
    values), one per other value there, and one for its agent and configuration (where an open-loop agent
    keeps its candidate). Names and order are ignored, so renaming, reordering, re-saving or adding keys does
    not change it. Loaded by :func:`load_checkpoint_dict` (a tensor viewing more than its storage is refused)."""
    import torch

    content = load_checkpoint_dict(checkpoint, "checkpoint.pt")
    fingerprint: Counter[str] = Counter()
    identity = json.dumps(
        {"agent": content.get("agent"), "config": content.get("config")}, sort_keys=True, default=repr
    )
    fingerprint[hashlib.sha256(identity.encode()).hexdigest()] += 1

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous().reshape(-1)
            digest = hashlib.sha256(f"{tensor.dtype}{tuple(value.shape)}".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes())
            fingerprint[digest.hexdigest()] += 1
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple) and any(
            isinstance(item, dict | list | tuple | torch.Tensor) for item in value
        ):
            for item in value:
                walk(item)
        else:  # a plain value or a list of them, as one unit
            fingerprint[hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()] += 1

    walk(content.get("learner", {}))
    return fingerprint


def same_behaviour(records: list[EpisodeRecord], other: list[EpisodeRecord], queries: int) -> bool:
    """Whether two entries' per-episode results agree as a re-run of one checkpoint on another device would:
    every reward within ``CROSS_DEVICE_REWARD_ATOL + REWARD_RTOL * |reward|``, accuracies within one query in
    at most 1% of the episodes (:func:`compare_records`)."""
    rerun = [record.model_dump(exclude_none=True) for record in records]
    return len(records) == len(other) and compare_records(other, rerun, queries, CROSS_DEVICE_REWARD_ATOL)[0]


def duplicate_of(
    env_id: str, files: dict[str, bytes], records: list[EpisodeRecord], queries: int, earlier: list[Entry]
) -> tuple[Entry, str] | None:
    """The first of the ``earlier`` entries on its board that an entry of ``env_id`` with these ``files`` and
    ``records`` duplicates (the same episodes file, the same weights by content, or the same behaviour), and
    why; None if there is none."""
    episodes = sha256_bytes(files["episodes.jsonl"])
    weights = weights_fingerprint(files["checkpoint.pt"])
    for entry in earlier:
        if entry.env_id != env_id:
            continue
        label = f"{entry.env_id}/{entry.name}"
        if entry.record.files.get("episodes.jsonl") == episodes:
            return entry, f"duplicate: {label} already holds these exact per-episode results"
        try:
            stored = weights_fingerprint((entry.path / "checkpoint.pt").read_bytes())
        except LeaderboardError:  # a broken stored checkpoint fails its own check; it blocks no one else
            stored = Counter()
        if stored and (not stored - weights or not weights - stored):
            return entry, (
                f"duplicate: {label} already holds this checkpoint's weights (compared by content: extra keys, "
                "renamed or re-saved tensors do not make a checkpoint new)"
            )
        if same_behaviour(records, list(entry.records), queries):
            return entry, (
                f"duplicate: {label} already holds these per-episode results (every reward within "
                f"{CROSS_DEVICE_REWARD_ATOL:g} + {REWARD_RTOL:g}·|reward|): a copy of its weights, however altered"
            )
    return None


def _check_duplicates(submission: Submission, entries: list[Entry], root: Path) -> None:
    """Refuse a submission that duplicates an entry on its board (:func:`duplicate_of`), or a taken name."""
    queries = scored_queries(submission.summary.protocol)
    duplicate = duplicate_of(submission.env_id, submission.files, submission.records, queries, entries)
    if duplicate is not None:
        raise LeaderboardError(duplicate[1])
    if (root / submission.env_id / submission.name).exists():
        raise LeaderboardError(f"an entry named {submission.env_id}/{submission.name} already exists; choose --name")


def submit(
    path: str | Path,
    metadata: dict[str, Any] | None = None,
    *,
    root: str | Path | None = None,
    checkpoint: str | Path | None = None,
    name: str | None = None,
    submitted: str | None = None,
) -> Entry:
    """Validate the evaluation in ``path``, store it as a new entry and re-render the views.

    ``metadata`` (method, code, paper, test_data_for_model_selection, train_command, notes)
    overrides ``path/metadata.json``; ``submitted`` (default: now, UTC) is recorded. Nothing under ``root``
    changes unless every check passes.
    """
    root = root_or_default(root)
    submission = validate_submission(path, metadata, checkpoint=checkpoint, name=name)
    root.mkdir(parents=True, exist_ok=True)
    with locked(root):
        entries = load_entries(root)
        _check_duplicates(submission, entries, root)
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        record = _entry_record(submission, submitted or now)
        path = root / submission.env_id / submission.name
        entry = Entry(path, record, submission.summary, records=tuple(submission.records))
        views = render_views([*entries, entry])
        _store(root, entry.path, {**submission.files, "entry.json": json_bytes(record.model_dump(mode="json"))})
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


def resolve_entry(entry: str | Path, root: str | Path | None = None) -> Path:
    """An entry folder from ``ENV_ID/NAME``, a unique ``NAME`` or a path; it must lie inside the leaderboard root."""
    text = str(entry)
    if "\0" in text:
        raise LeaderboardError("entry contains a NUL byte")
    candidate = Path(text)
    base = root_or_default(root).resolve()
    if candidate.is_dir() and (candidate / "entry.json").is_file():
        resolved = candidate.resolve()
        if resolved.parent.parent != base:
            raise LeaderboardError(f"{candidate} is not an entry folder of the leaderboard root {base} (give --root)")
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


def write_views(root: str | Path, views: dict[str, bytes]) -> list[Path]:
    """Write the views atomically, skipping those whose content is unchanged; returns the paths written."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in sorted(views.items()):
        target = root / name
        if target.is_file() and target.read_bytes() == content:
            continue
        write_atomic(target, content)
        written.append(target)
    return written


def rebuild(root: str | Path | None = None) -> list[Entry]:
    """Re-render ``README.md`` and ``index.html`` from the stored entries; returns the entries."""
    root = root_or_default(root)
    root.mkdir(parents=True, exist_ok=True)
    with locked(root):
        entries = load_entries(root)
        write_views(root, render_views(entries))
    return entries
