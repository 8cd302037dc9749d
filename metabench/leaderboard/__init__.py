"""The leaderboard: validated submissions of ``metabench evaluate`` results, their views and their verification.

:func:`submit` validates a submission completely before it writes anything (pydantic schemas, the
registered protocol, the per-episode records against the summary, the checkpoint, names,
duplicates), then stores it and re-renders the views; a refused submission leaves the leaderboard
byte-identical. :func:`verify` re-runs the evaluation from the stored checkpoint and compares the
per-episode results. Rendering depends only on the stored entries, so it is deterministic.

Modules: :mod:`.schema` (constants and the schema of every file), :mod:`.files` (hashing, atomic
writes, the lock), :mod:`.validation` (the checks of a submission), :mod:`.storage` (the folder's
layout, entries, submit), :mod:`.verification` (re-runs), :mod:`.render` (tables and the HTML page),
:mod:`.charts` (its matplotlib charts), :mod:`.formatting` and :mod:`.cli` (the commands).
"""

from metabench.leaderboard.cli import add_commands
from metabench.leaderboard.files import sha256_bytes
from metabench.leaderboard.render import render_html, render_markdown, render_text, render_views, seed_groups
from metabench.leaderboard.schema import (
    ACCURACY_FLIP_FRACTION,
    CROSS_DEVICE_REWARD_ATOL,
    REWARD_ATOL,
    REWARD_RTOL,
    ROOT_ENV_VAR,
    Entry,
    EntryRecord,
    EpisodeRecord,
    LeaderboardError,
    Metadata,
    Summary,
    Verification,
)
from metabench.leaderboard.storage import (
    default_root,
    duplicate_of,
    entry_folders,
    load_entries,
    load_entry,
    rebuild,
    resolve_entry,
    submit,
    weights_fingerprint,
    write_views,
)
from metabench.leaderboard.validation import (
    Submission,
    check_checkpoint,
    check_env_id,
    check_evaluation,
    check_name,
    check_protocol,
    check_results,
    check_tensors,
    compare_records,
    parse_episodes,
    parse_summary,
    recompute_results,
    scored_queries,
    slug,
    validate_submission,
)
from metabench.leaderboard.verification import (
    AUDIT_TASKS,
    RETRAIN_ACCURACY_TOL,
    CheckReport,
    audit_episodes,
    check,
    check_design,
    check_entry,
    check_views,
    new_audit_seed,
    verify,
)

__all__ = [
    "ACCURACY_FLIP_FRACTION",
    "CROSS_DEVICE_REWARD_ATOL",
    "REWARD_ATOL",
    "REWARD_RTOL",
    "ROOT_ENV_VAR",
    "Entry",
    "EntryRecord",
    "EpisodeRecord",
    "LeaderboardError",
    "Metadata",
    "Submission",
    "Summary",
    "Verification",
    "add_commands",
    "check_checkpoint",
    "check_env_id",
    "check_name",
    "AUDIT_TASKS",
    "RETRAIN_ACCURACY_TOL",
    "CheckReport",
    "check",
    "check_entry",
    "check_protocol",
    "check_results",
    "compare_records",
    "default_root",
    "load_entries",
    "load_entry",
    "parse_episodes",
    "parse_summary",
    "rebuild",
    "recompute_results",
    "render_html",
    "render_markdown",
    "render_text",
    "render_views",
    "resolve_entry",
    "scored_queries",
    "seed_groups",
    "sha256_bytes",
    "slug",
    "audit_episodes",
    "check_design",
    "check_views",
    "new_audit_seed",
    "duplicate_of",
    "entry_folders",
    "check_evaluation",
    "check_tensors",
    "submit",
    "validate_submission",
    "verify",
    "weights_fingerprint",
    "write_views",
]
