"""MetaNAS answers for the test protocol: fixed designs, and the answers of finished searches.

* ``conv4``: the hand-designed Conv-4 (Vinyals et al. 2016; Snell et al. 2017), no search.
* ``random-architecture``: one architecture drawn uniformly from the space with
  ``numpy.random.default_rng(0)``: what an agent that does not search gets (the trivial agent).
* ``from-search RUN_DIR``: the best candidate of a finished ``metabench search`` run (its ``best.json``)
  as an open-loop checkpoint of ``--env``, e.g. a search on ``MetaNAS-Omniglot-5w1s-v0`` answered on
  the v1 board (same search space and recipe, v1 data). Its budget is the search's: evaluations,
  episodes per evaluation and wall seconds, with the search's settings recorded.

Each writes ``OUT/NAME/checkpoint.pt``, an ``open-loop`` agent that ``metabench evaluate`` trains and
scores by the env's test protocol (see :mod:`metabench.envs.nas`)::

    python -m metabench_baselines.nas_designs fixed --out DIR [--env MetaNAS-Omniglot-5w1s-v1]
    python -m metabench_baselines.nas_designs from-search RUN_DIR [RUN_DIR ...] --out DIR [--env ...]
    metabench evaluate --agent open-loop --checkpoint DIR/conv4/checkpoint.pt --env MetaNAS-Omniglot-5w1s-v1
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from metabench import nas
from metabench.envs.common import device_name
from metabench.search import open_loop_checkpoint

ENV_ID = "MetaNAS-Omniglot-5w1s-v1"
RANDOM_ARCHITECTURE_SEED = 0


def fixed_designs() -> dict[str, np.ndarray]:
    """The decision vectors of the fixed designs, by name."""
    return {
        "conv4": nas.encode(nas.CONV4),
        "random-architecture": np.random.default_rng(RANDOM_ARCHITECTURE_SEED).integers(
            nas.CHOICES, size=nas.N_DECISIONS
        ),
    }


def write_fixed(env_id: str, out: Path, command: str) -> list[Path]:
    """Open-loop checkpoints of the fixed designs (no search: zero budget)."""
    training = {
        "wall_seconds": 0.0,
        "meta_batch": 1,
        "episodes_seen": 0,
        "device": "cpu",
        "device_name": device_name("cpu"),
        "command": command,
    }
    return [
        open_loop_checkpoint(env_id, decisions, out / name / "checkpoint.pt", training=training)
        for name, decisions in fixed_designs().items()
    ]


def write_from_search(run_dir: Path, env_id: str, out: Path, command: str) -> Path:
    """The best candidate of the search run in ``run_dir`` as an open-loop checkpoint of ``env_id``."""
    best = json.loads((run_dir / "best.json").read_text())
    episodes = int(best["episodes_per_evaluation"])
    training = {
        "wall_seconds": float(best["wall_seconds"]),
        "meta_batch": episodes,
        "episodes_seen": int(best["evaluations"]) * episodes,
        "device": "cpu",
        "device_name": device_name("cpu"),
        "search": {
            "method": best["method"],
            "env_id": best["env_id"],
            "env_kwargs": best.get("env_kwargs", {}),
            "config": best.get("config", {}),
            "best_reward": best["best_reward"],
            "total_cost_train_episodes": best.get("total_cost_train_episodes"),
        },
        "command": command,
    }
    name = f"{best['method']}-seed{best['seed']}"
    return open_loop_checkpoint(
        env_id,
        best["best_candidate"],
        out / name / "checkpoint.pt",
        training=training,
        iterations=int(best["evaluations"]),
        seed=int(best["seed"]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fixed = commands.add_parser("fixed", help="checkpoints of Conv-4 and one uniformly drawn architecture")
    from_search = commands.add_parser("from-search", help="checkpoints of finished search runs' best candidates")
    from_search.add_argument("runs", nargs="+", type=Path, help="search run folders (holding best.json)")
    for sub in (fixed, from_search):
        sub.add_argument("--out", type=Path, required=True, help="folder of the checkpoints (one subfolder each)")
        sub.add_argument("--env", default=ENV_ID, help=f"the MetaNAS env id the answers are for (default {ENV_ID})")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "metabench_baselines.nas_designs", *(argv or sys.argv[1:])])
    if args.command == "fixed":
        paths = write_fixed(args.env, args.out, command)
    else:
        paths = [write_from_search(run, args.env, args.out, command) for run in args.runs]
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
