"""The baseline table on protocol v1: every leaderboard entry of the v1 boards beside the published figure.

    python benchmarks/table_v1.py [--root leaderboard] [--out benchmarks/results/table_v1.md]

Reads the stored entries (made by ``benchmarks/table_v1.sh``), groups a method's seeds (mean over seeds and
across-seed s.d. beside the test-episode CI) and writes a Markdown table with each entry's training budget in
iterations, episodes and seconds, whether it is verified, and the published figure of the same protocol
(full-length training; the citations are in the README).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from metabench.leaderboard import load_entries, seed_groups

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
#: Published test accuracy (%) on the same protocol, full training: ProtoNets (Snell et al. 2017, table 1),
#: MAML and first-order MAML (Finn et al. 2017, table 1), Reptile non-transductive / transductive (Nichol et
#: al. 2018, table 1), ANIL (Raghu et al. 2020, table 2), Lake et al. (2015): Bayesian program learning.
PUBLISHED = {
    ("MetaOmniglot-5w1s-v1", "protonet"): "98.8",
    ("MetaOmniglot-5w5s-v1", "protonet"): "99.7",
    ("MetaOmniglot-20w1s-v1", "protonet"): "96.0",
    ("MetaOmniglot-20w5s-v1", "protonet"): "98.9",
    ("MetaOmniglot-5w1s-v1", "maml"): "98.7 ± 0.4",
    ("MetaOmniglot-5w5s-v1", "maml"): "99.9 ± 0.1",
    ("MetaOmniglot-20w1s-v1", "maml"): "95.8 ± 0.3",
    ("MetaOmniglot-20w5s-v1", "maml"): "98.9 ± 0.2",
    ("MetaOmniglot-5w1s-v1", "fomaml"): "98.3 ± 0.5",
    ("MetaOmniglot-5w5s-v1", "fomaml"): "99.2 ± 0.2",
    ("MetaOmniglot-20w1s-v1", "fomaml"): "89.4 ± 0.5",
    ("MetaOmniglot-20w5s-v1", "fomaml"): "97.9 ± 0.1",
    ("MetaOmniglot-5w1s-v1", "reptile"): "95.39 ± 0.09 (non-transductive)",
    ("MetaOmniglot-20w1s-v1", "anil"): "96.2 ± 0.5",
    ("MetaOmniglot-20w5s-v1", "anil"): "98.0 ± 0.3",
    ("MetaOmniglot-LakeWithinAlphabet-20w1s-v1", "*"): "BPL 96.7, people 95.5 (Lake et al. 2015)",
    ("MetaSinusoid-5shot-v0", "maml"): "0.67 MSE after 1 step (figure 2)",
}


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
            published = PUBLISHED.get((board, first.record.agent), PUBLISHED.get((board, "*"), "—"))
            verified = "yes" if all(e.verified for e in group) else "no"
            seeds = ", ".join(str(e.record.seeds.training) for e in group)
            lines.append(
                f"| {board} | {first.record.metadata.method} | {seeds} "
                f"| {scores.mean():.2f} ± {cis.mean():.2f}{unit} | {spread} | {budgets} | {verified} "
                f"| {'yes' if first.summary.transductive else 'no'} | {published} |"
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
