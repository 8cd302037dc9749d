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
    check_name,
    check_protocol,
    check_results,
    parse_episodes,
    parse_summary,
    recompute_results,
    scored_queries,
    slug,
    validate_submission,
)
from metabench.leaderboard.verification import (
    SPOT_CHECK_TASKS,
    CheckReport,
    VerificationReport,
    check,
    check_entry,
    compare_records,
    spot_check_episodes,
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
    "VerificationReport",
    "add_commands",
    "check_checkpoint",
    "check_env_id",
    "check_name",
    "SPOT_CHECK_TASKS",
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
    "spot_check_episodes",
    "submit",
    "validate_submission",
    "verify",
    "weights_fingerprint",
    "write_views",
]
