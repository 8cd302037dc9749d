"""Score a finished reproduction once on test and put it on its boards, verified.

    python reproductions/score.py METHOD ENV_ID SEED [--boards OTHER_ENV_ID ...]

The run in ``reproductions/ENV_ID/METHOD-seedSEED/`` must have ended (early stopping triggered, or every
planned iteration done): the test split is read once per finished run. Its model (``best.pt`` with early
stopping, else ``checkpoint.pt``) is scored with ``metabench evaluate`` on ENV_ID and on each of
``--boards`` (a ProtoNets model validated on 5-way goes on its 20-way board too) into ``test-BOARD/``
beside it, submitted as ``METHOD-seedSEED-paper-recipe`` with the run's full length in the notes, and
verified. A board already scored or already holding the entry is skipped, so re-running resumes.

A run without early stopping is scored at the iteration its last slice was planned to end on, so a long run
can be scored at a milestone (``run.sh maml ... --iterations 30000``) and again when resumed to its recipe's
end: each such checkpoint is its own entry, ``METHOD-seedSEED-paper-recipe-Nit``, in ``test-BOARD-Nit/``.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import torch

from metabench.leaderboard.storage import default_root

ROOT = Path(__file__).parent
#: Each run.sh method's paper and the baselines/ file its learner lives in.
SOURCES = {
    "protonet": ("https://arxiv.org/abs/1703.05175", "baselines/protonet.py"),
    "maml": ("https://arxiv.org/abs/1703.03400", "baselines/maml.py"),
    "fomaml": ("https://arxiv.org/abs/1703.03400", "baselines/maml.py"),
    "anil": ("https://arxiv.org/abs/1909.09157", "baselines/anil.py"),
    "maml++": ("https://arxiv.org/abs/1810.09502", "baselines/maml.py"),
    "reptile": ("https://arxiv.org/abs/1803.02999", "baselines/reptile.py"),
    "matching": ("https://arxiv.org/abs/1606.04080", "baselines/matching.py"),
    "relation": ("https://arxiv.org/abs/1711.06025", "baselines/relation.py"),
    "pretrain": ("https://arxiv.org/abs/1904.04232", "baselines/pretrain.py"),
}


def ended(state: dict) -> bool:
    """Whether the run has nothing left to train: early stopping triggered or its planned iterations done."""
    stopping = state.get("early_stopping")
    if stopping is not None and stopping["stopped"]:
        return True
    last = state["training"]["slices"][-1]
    if "planned_iterations" in last:
        return state["iteration"] >= last["planned_iterations"]
    command = last["command"].split()  # slices run before planned_iterations was recorded
    return state["iteration"] >= int(command[command.index("--iterations") + 1])


def milestone(state: dict) -> str:
    """The suffix naming what is scored: "" for the best validation's model, "-Nit" for the checkpoint at N."""
    return "" if state.get("early_stopping") is not None else f"-{state['iteration']}it"


def notes(state: dict) -> str:
    """The run's whole length: what the entry's budget (the scored model's) does not show."""
    training, history = state["training"], state["history"]
    text = (
        f"Paper recipe (reproductions/run.sh), trained in {len(training.get('slices', []))} resumed slices: "
        f"{state['iteration']:,} iterations x {training['meta_batch']} = {training['episodes_seen']:,} episodes, "
        f"{len(history)} validations, {training['wall_seconds']:,.0f} s wall / "
        f"{training.get('cpu_seconds', 0):,.0f} s CPU of training"
    )
    stopping = state.get("early_stopping")
    if stopping is not None:
        text += f"; the scored model is the best validation's (iteration {stopping['best_iteration']:,})"
    return text + "."


def run(*command: str) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method")
    parser.add_argument("env_id")
    parser.add_argument("seed", type=int)
    parser.add_argument("--boards", nargs="*", default=[], help="other boards the model is scored on")
    parser.add_argument("--runs", default=str(ROOT), help="folder of the runs (default: reproductions/)")
    args = parser.parse_args()
    folder = Path(args.runs) / args.env_id / f"{args.method}-seed{args.seed}"
    state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
    if not ended(state):
        raise SystemExit(f"score.py: {folder} has not ended (iteration {state['iteration']:,}); resume it with run.sh")
    suffix = milestone(state)
    model = folder / ("checkpoint.pt" if suffix else "best.pt")
    name = f"{args.method}-seed{args.seed}-paper-recipe{suffix}"
    command = f"reproductions/run.sh {args.method} {args.env_id} {args.seed}"
    if suffix:
        command += f" --iterations {state['iteration']}"
    leaderboard = default_root()  # $METABENCH_LEADERBOARD or the checkout's, as submit's
    for board in [args.env_id, *args.boards]:
        out = folder / f"test-{board}{suffix}"
        if not (out / "summary.json").exists():
            run(
                "metabench",
                "evaluate",
                "--agent",
                args.method,
                "--checkpoint",
                str(model),
                "--env",
                board,
                "--out",
                str(out),
            )
        evaluated = model if board == args.env_id else out / "checkpoint.pt"  # evaluate moves it to another way
        if not (leaderboard / board / name).exists():
            run(
                "metabench",
                "submit",
                str(out),
                "--name",
                name,
                "--checkpoint",
                str(evaluated),
                "--method",
                f"{args.method} (Conv-4), paper recipe",
                "--paper",
                SOURCES[args.method][0],
                "--code",
                SOURCES[args.method][1],
                "--test-data-for-model-selection",
                "no",
                "--train-command",
                command,
                "--notes",
                notes(state),
            )
            run("metabench", "leaderboard", "verify", f"{board}/{name}")


if __name__ == "__main__":
    main()
