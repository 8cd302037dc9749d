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

import importlib
from typing import Any

#: What the package exports, and the module each name is defined in: a name's module is imported on first use,
#: so that ``metabench --help`` (which registers the leaderboard's commands) imports no torch.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["add_commands"], "cli"),
    **dict.fromkeys(["sha256_bytes"], "files"),
    **dict.fromkeys(["render_html", "render_markdown", "render_text", "render_views", "seed_groups"], "render"),
    **dict.fromkeys(
        [
            "ACCURACY_FLIP_FRACTION",
            "AUDIT_TASKS",
            "CROSS_DEVICE_REWARD_ATOL",
            "Entry",
            "EntryRecord",
            "EpisodeRecord",
            "LeaderboardError",
            "Metadata",
            "REWARD_ATOL",
            "REWARD_RTOL",
            "ROOT_ENV_VAR",
            "Summary",
            "Verification",
            "recompute_results",
        ],
        "schema",
    ),
    **dict.fromkeys(
        [
            "default_root",
            "duplicate_of",
            "entry_folders",
            "load_entries",
            "load_entry",
            "rebuild",
            "resolve_entry",
            "submit",
            "weights_fingerprint",
            "write_views",
        ],
        "storage",
    ),
    **dict.fromkeys(
        [
            "Submission",
            "check_checkpoint",
            "check_env_id",
            "check_evaluation",
            "check_name",
            "check_protocol",
            "check_results",
            "check_tensors",
            "compare_records",
            "parse_episodes",
            "parse_summary",
            "scored_queries",
            "slug",
            "validate_submission",
        ],
        "validation",
    ),
    **dict.fromkeys(
        [
            "CheckReport",
            "RETRAIN_ACCURACY_TOL",
            "audit_episodes",
            "check",
            "check_design",
            "check_entry",
            "check_views",
            "new_audit_seed",
            "verify",
        ],
        "verification",
    ),
}
_SUBMODULES = (
    "charts",
    "cli",
    "files",
    "formatting",
    "published",
    "render",
    "schema",
    "storage",
    "validation",
    "verification",
)
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
