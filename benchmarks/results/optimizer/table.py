"""Print the MetaOptimizer results table (markdown) from evaluation folders.

Usage: ``python benchmarks/results/optimizer/table.py "METHOD=path/to/evaluation_folder" ...``; each
folder holds ``summary.json`` and ``episodes.jsonl`` (``metabench evaluate`` or
``baselines/hand_designed.py``). The query loss is minus the reward (final reward mode). The last
columns are paired over the same test episodes: the mean per-episode query-loss difference to the
first and second methods given (negative: lower loss than that reference), with 95% CIs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from metabench.evaluation import mean_ci95


def load(folder: Path) -> tuple[dict, np.ndarray]:
    """The summary and the per-episode query losses (ordered by episode) of an evaluation folder."""
    summary = json.loads((folder / "summary.json").read_text())
    records = [json.loads(line) for line in (folder / "episodes.jsonl").read_text().splitlines()]
    losses = np.array([-record["reward"] for record in sorted(records, key=lambda record: record["episode"])])
    return summary, losses


def main(argv: list[str]) -> int:
    methods = [(item.partition("=")[0], Path(item.partition("=")[2])) for item in argv]
    loaded = [(name, *load(folder)) for name, folder in methods]
    references = loaded[:2]
    header = ["method", "test query loss", "test accuracy", *(f"loss - {name} (paired)" for name, *_ in references)]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for name, summary, losses in loaded:
        results = summary["results"]
        cells = [name, f"{-results['reward_mean']:.4f} ± {results['reward_ci95']:.4f}"]
        accuracy = results.get("accuracy_mean")
        cells.append("–" if accuracy is None else f"{100 * accuracy:.2f} ± {100 * results['accuracy_ci95']:.2f} %")
        for _, _, reference in references:
            if len(reference) != len(losses):
                raise ValueError(f"{name}: {len(losses)} episodes, the reference has {len(reference)}")
            mean, half = mean_ci95(losses - reference)
            cells.append("0" if not np.any(losses - reference) else f"{mean:+.4f} ± {half:.4f}")
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
