"""Sinusoid test MSE after 1, 5 and 10 adaptation steps, beside the MAML paper's figures.

    python benchmarks/sinusoid_steps.py CHECKPOINT [CHECKPOINT ...] [--steps 1 5 10] [--out FILE]

Each checkpoint (MAML or pretrain on ``MetaSinusoid-*``) is scored on its env's frozen test protocol
(the same 1,000 seeded tasks as ``metabench evaluate``) with its test-time step count set to each of
``--steps`` (MAML: ``inner_steps_test``, pretrain: ``finetune_steps``; step size unchanged). The
number of steps is a reporting axis fixed in advance, as in Finn et al. (2017, figure 2), not a
choice made on test. Writes JSON with the mean test MSE and its 95% CI per step count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from metabench.checkpoints import load_checkpoint
from metabench.evaluation import evaluate

STEP_FIELD = {"maml": "inner_steps_test", "fomaml": "inner_steps_test", "pretrain": "finetune_steps"}
#: Finn et al. (2017), 5-shot sinusoid, MSE after 1 / 5 / 10 gradient steps at test (as cited in issue 11).
PUBLISHED_5SHOT = {"maml": {1: 0.67, 5: 0.38, 10: 0.35}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--out", default="benchmarks/results/sinusoid_steps.json")
    args = parser.parse_args()
    rows = []
    for path in args.checkpoints:
        learner, checkpoint = load_checkpoint(path)
        field = STEP_FIELD[learner.name]
        base = learner.config
        for steps in args.steps:
            learner.config = dataclasses.replace(base, **{field: steps})
            summary, _ = evaluate(learner, checkpoint["env_id"], progress=False)
            results = summary["results"]
            rows.append(
                {
                    "checkpoint": str(path),
                    "agent": learner.name,
                    "env_id": checkpoint["env_id"],
                    "steps": steps,
                    "test_mse": -results["reward_mean"],
                    "test_mse_ci95": results["reward_ci95"],
                    "training_iterations": checkpoint["iteration"],
                    "training_seconds": round(checkpoint["training"]["wall_seconds"], 1),
                    "episodes_sha256": summary["protocol"]["episodes_sha256"],
                }
            )
            print(
                f"{learner.name} {checkpoint['env_id']} steps={steps}: MSE {rows[-1]['test_mse']:.3f} ± "
                f"{results['reward_ci95']:.3f}"
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"published_5shot": PUBLISHED_5SHOT, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
