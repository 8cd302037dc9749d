"""The leaderboard's commands: ``metabench submit``, ``metabench leaderboard`` and ``leaderboard verify``."""

from __future__ import annotations

import argparse
import time
from typing import Any

from metabench.leaderboard.schema import AUDIT_TASKS, ROOT_ENV_VAR

# The commands import the rest of the leaderboard (torch, the evaluation harness) when they run, not when the
# parser is built: `metabench --help` stays fast.


def cmd_submit(args: argparse.Namespace) -> int:
    """``metabench submit PATH``: validate, store and re-render."""
    from metabench.leaderboard.render import render_text
    from metabench.leaderboard.storage import load_entries, root_or_default, submit

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
    root = root_or_default(args.root)
    print(f"stored {entry.path} (unverified until `metabench leaderboard verify {entry.env_id}/{entry.name}`)")
    if entry.test_selected:
        print("flagged test-selected: its model selection used the test split")
    print(render_text(load_entries(root), entry.env_id))
    print(f"views: {root / 'README.md'}, {root / 'index.html'}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """``metabench leaderboard [--env ID]``: print the ranked table(s) and rebuild the views."""
    from metabench.leaderboard.render import render_text
    from metabench.leaderboard.storage import rebuild, root_or_default
    from metabench.leaderboard.validation import check_env_id

    if args.env is not None:
        check_env_id(args.env)
    root = root_or_default(args.root)
    entries = rebuild(root)
    print(render_text(entries, args.env))
    broken = [f"{entry.env_id}/{entry.name}: {'; '.join(entry.problems)}" for entry in entries if entry.problems]
    if broken:
        print("\nentries changed since submission (shown as unverified):\n  " + "\n  ".join(broken))
    print(f"\nviews: {root / 'README.md'}, {root / 'index.html'}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """``metabench leaderboard verify ENTRY``: the full check of the entry; on success it is marked verified."""
    from metabench.leaderboard.verification import verify

    report = verify(args.entry, args.root, device=args.device)
    print(("verified: " if report.passed else f"NOT verified: {report.entry}: ") + report.message)
    return 0 if report.passed else 1


def cmd_check(args: argparse.Namespace) -> int:
    """``metabench leaderboard check``: validate every entry, audit its episodes (all with ``--full``), compare
    the committed views."""
    from metabench.leaderboard.verification import check, new_audit_seed

    seed = new_audit_seed() if args.seed is None else args.seed
    print(f"audit seed {seed} (reproduce this check with --seed {seed})", flush=True)
    failed, start = [], time.perf_counter()
    for report in check(args.root, seed, full=args.full, device=args.device):
        status = "ok  " if report.passed else "FAIL"
        print(f"{status} {report.entry}: {report.mode}, {report.message} ({report.seconds:.1f} s)", flush=True)
        if not report.passed:
            failed.append(report.entry)
    print(f"checked in {time.perf_counter() - start:.0f} s: {len(failed)} failed" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


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
        help="whether the test split was used for any model selection (early stopping, hyperparameters, "
        "checkpoint choice); 'yes' entries are flagged test-selected. Checked against the test_runs.jsonl that "
        "`metabench evaluate` keeps beside the checkpoint",
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
        help="fully check an entry (every episode re-run; a design re-trained) and mark it verified",
        description="Validate an entry as submit does, re-evaluate every episode from its stored checkpoint "
        "(loaded with weights_only=True) and compare the per-episode results; on a design board, re-train the "
        "design by the board's recipe. A pass marks the entry verified (verification.json).",
    )
    verify_parser.add_argument("entry", help="ENV_ID/NAME, NAME or the entry's folder")
    verify_parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    verify_parser.add_argument("--root", default=argparse.SUPPRESS, help=root_help)
    verify_parser.set_defaults(func=cmd_verify)
    check_parser = actions.add_parser(
        "check",
        help="validate every entry, re-score a random sample of its episodes, compare the views (what CI runs)",
        description="For every entry: submit's validation against the registry, the duplicate checks, and a "
        f"re-score of {AUDIT_TASKS} test tasks drawn from a fresh random seed (printed; all episodes of entries "
        "without verification evidence); then the committed views must be the regenerated ones. Writes nothing.",
    )
    check_parser.add_argument("--seed", type=int, help="the audit's seed, to reproduce a check (default: fresh)")
    check_parser.add_argument(
        "--full", action="store_true", help="re-score every episode and re-train design boards' designs (slow)"
    )
    check_parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    check_parser.add_argument("--root", default=argparse.SUPPRESS, help=root_help)
    check_parser.set_defaults(func=cmd_check)
