"""Does this machine reproduce the stored entries episode by episode? Re-scores the first N test episodes of
every entry (of the given boards) at the thread count its evaluation recorded, and prints how many differ
beyond the per-episode tolerance, the largest and the mean difference: the measurement behind the leaderboard's
other-platform rule (``metabench.leaderboard.verification.as_paired_sample``).

    OMP_NUM_THREADS=1 python benchmarks/cross_platform.py 20 [BOARD ...]
"""

from __future__ import annotations

import argparse
import time

from metabench.checkpoints import load_checkpoint
from metabench.envs.common import device_name
from metabench.leaderboard.storage import default_root, load_entries
from metabench.leaderboard.verification import reproduces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("episodes", type=int, help="test episodes re-scored per entry (the first N)")
    parser.add_argument("boards", nargs="*", help="env ids (default: every board)")
    args = parser.parse_args()
    print(f"here: {device_name('cpu')}")
    for entry in load_entries(default_root()):
        if args.boards and entry.env_id not in args.boards:
            continue
        start = time.perf_counter()
        learner, _ = load_checkpoint(entry.path / "checkpoint.pt", "cpu", agent=entry.summary.agent)
        _, details = reproduces(entry, learner, list(range(args.episodes)), "cpu")
        print(
            f"{entry.env_id}/{entry.name} (evaluated on {entry.summary.run.device_name}, "
            f"{entry.summary.run.threads} thread(s)): {details['mismatched_episodes']} of {args.episodes} beyond "
            f"the tolerance, max {details['max_reward_abs_diff']:.3g}, mean {details['mean_reward_diff']:+.3g}, "
            f"{details['accuracy_differences']} accuracies differ ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
