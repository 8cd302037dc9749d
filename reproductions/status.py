"""Where every reproduction run stands: writes the table of reproductions/README.md from the run folders.

    python reproductions/status.py [--root reproductions]

Reads each ``ENV_ID/METHOD-seedK/checkpoint.pt`` (the state a slice leaves: iterations, validations,
early stopping, wall and CPU seconds per slice) and rewrites the part of ``README.md`` between the
status markers: budget as iterations x tasks = episodes beside the published run's, the last and best
validation, the seconds and machines of the slices, and the size of what is committed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from metabench.leaderboard.published import PUBLISHED, budget_fraction

BEGIN, END = "<!-- status: begin (written by reproductions/status.py) -->", "<!-- status: end -->"


def run_row(folder: Path) -> str:
    """One Markdown table row for the run in ``folder``."""
    state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
    training, history = state["training"], state["history"]
    env_id, agent = state["env_id"], state["agent"]
    episodes = training["episodes_seen"]
    budget = f"{state['iteration']:,} it × {training['meta_batch']} = {episodes:,}"
    published = PUBLISHED.get((env_id, agent))
    if published is not None:
        fraction = budget_fraction(published, episodes)
        budget += f" ({published.budget})" if fraction is None else f" ({100 * fraction:.1f}% of the paper's)"
    last = history[-1]
    stopping = state.get("early_stopping")
    if stopping is not None:
        best = next(row for row in history if row["iteration"] == stopping["best_iteration"])
        best_text = f"{100 * best['val_accuracy']:.2f} % at it {best['iteration']:,}"
        best_text += ", stopped" if stopping["stopped"] else f", {last['validations_since_best']} since"
    else:
        best_text = "—"
    slices = training.get("slices", [])
    machines = ", ".join(sorted({f"{s['machine']}, {s['threads']} thread(s)" for s in slices}))
    sizes = " + ".join(
        f"{name} {(folder / name).stat().st_size / 1e6:.2f} MB"
        for name in ("checkpoint.pt", "best.pt")
        if (folder / name).exists()
    )
    return (
        f"| [{env_id}/{folder.name}]({env_id}/{folder.name}/curve.png) | {budget} | {len(history)} "
        f"| {100 * last['val_accuracy']:.2f} ± {100 * last['val_accuracy_ci95']:.2f} % | {best_text} "
        f"| {training['wall_seconds']:,.0f} / {training.get('cpu_seconds', 0):,.0f} | {len(slices)} | {machines} "
        f"| {published.text() if published else '—'} | {sizes} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).parent), help="folder of the runs and README.md")
    args = parser.parse_args()
    root = Path(args.root)
    rows = [run_row(path.parent) for path in sorted(root.glob("*/*/checkpoint.pt"))]
    table = "\n".join(
        [
            BEGIN,
            "| run (curve) | budget: iterations × tasks = episodes | validations | last val accuracy "
            "| best val (early stopping) | training wall / CPU s | slices | machine | published | committed |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            END,
        ]
    )
    readme = root / "README.md"
    text = readme.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    readme.write_text(text[:start] + table + text[end:])
    print(table)


if __name__ == "__main__":
    main()
