"""The baseline table on protocol v1: every leaderboard entry of the v1 boards beside the published figure.

    python benchmarks/table_v1.py [--root leaderboard] [--out benchmarks/results/table_v1.md]

Reads the stored entries (made by ``benchmarks/table_v1.sh``), groups a method's seeds (mean over seeds and
across-seed s.d. beside the test-episode CI) and writes a Markdown table with each entry's training budget in
iterations, episodes and seconds, whether it is verified, and the published figure of the same protocol
(``metabench.leaderboard.published``: full-length training, and the share of its budget the entry used).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from metabench.leaderboard import load_entries, seed_groups
from metabench.leaderboard.published import PUBLISHED, budget_fraction

BOARDS = (
    "MetaOmniglot-5w1s-v1",
    "MetaOmniglot-5w5s-v1",
    "MetaOmniglot-20w1s-v1",
    "MetaOmniglot-20w5s-v1",
    "MetaOmniglot-Lake-20w1s-v1",
    "MetaOmniglot-LakeWithinAlphabet-20w1s-v1",
    "MetaSinusoid-5shot-v0",
    "MetaSinusoid-10shot-v0",
)
#: Published figures beside the boards that have no metabench.leaderboard.published record.
OTHER_PUBLISHED = {
    ("MetaOmniglot-LakeWithinAlphabet-20w1s-v1", "*"): "BPL 96.7, people 95.5 (Lake et al. 2015)",
    ("MetaSinusoid-5shot-v0", "maml"): "0.67 MSE after 1 step (figure 2)",
}


def published_text(board: str, agent: str, episodes: int) -> str:
    """The published figure of ``agent`` on ``board``, with the share of its training budget that ``episodes`` is."""
    record = PUBLISHED.get((board, agent))
    if record is None:
        return OTHER_PUBLISHED.get((board, agent), OTHER_PUBLISHED.get((board, "*"), "—"))
    fraction = budget_fraction(record, episodes)
    share = record.budget if fraction is None else f"{100 * fraction:.2g}% of its budget"
    return f"{record.text()} ({share})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="leaderboard")
    parser.add_argument("--out", default="benchmarks/results/table_v1.md")
    args = parser.parse_args()
    entries = load_entries(args.root)
    lines = [
        "| board | method | seeds | test score (95% CI over episodes) | across-seed s.d. | training budget (per seed) "
        "| verified | transductive | published |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for board in BOARDS:
        for group in seed_groups([entry for entry in entries if entry.env_id == board]):
            first = group[0]
            accuracy = first.summary.results.accuracy_mean is not None
            scores = np.array([e.score[0] for e in group]) * (100 if accuracy else -1)
            cis = np.array([e.score[1] for e in group]) * 100 if accuracy else np.array([e.score[1] for e in group])
            unit = " %" if accuracy else " MSE"
            spread = f"{scores.std(ddof=1):.2f}{unit}" if len(group) > 1 else "—"
            sizes = {
                (e.record.budget.iterations, e.record.budget.meta_batch, e.record.budget.episodes_seen) for e in group
            }
            walls = " / ".join(f"{e.record.budget.wall_seconds:.0f}" for e in group)
            if len(sizes) == 1:  # the seeds of an entry repeat its iteration count: state it once
                ((iterations, meta_batch, episodes),) = sizes
                budgets = f"{iterations:,} it × {meta_batch} = {episodes:,} episodes, {walls} s"
            else:
                budgets = "; ".join(
                    f"{e.record.budget.iterations:,} it × {e.record.budget.meta_batch} = "
                    f"{e.record.budget.episodes_seen:,} episodes, {e.record.budget.wall_seconds:.0f} s"
                    for e in group
                )
            published = published_text(board, first.record.agent, first.record.budget.episodes_seen)
            verified = "yes" if all(e.verified for e in group) else "no"
            seeds = ", ".join(str(e.record.seeds.training) for e in group)
            lines.append(
                f"| {board} | {first.record.metadata.method} | {seeds} "
                f"| {scores.mean():.2f} ± {cis.mean():.2f}{unit} | {spread} | {budgets} | {verified} "
                f"| {'yes' if first.summary.transductive else 'no'} | {published} |"
            )
    lines += ["", "| published figures | protocol | ± means | training budget |", "|---|---|---|---|"]
    for source in dict.fromkeys(record.source for record in PUBLISHED.values()):
        record = next(record for record in PUBLISHED.values() if record.source == source)
        lines.append(f"| {source} | {record.protocol} | {record.plus_minus_means} | {record.budget} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
