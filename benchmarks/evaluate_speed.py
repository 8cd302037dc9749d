"""Wall, user and system time of one `metabench evaluate` test protocol, with and without
`metabench.allocator.keep_freed_memory` (what the command line applies), in fresh processes.

    python benchmarks/evaluate_speed.py CHECKPOINT --agent protonet --env MetaOmniglot-5w1s-v1 [--threads 2]

Writes ``results/evaluate_speed-<env>.json``; both runs must write identical episode records.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine

RUN = """
import sys
import metabench.allocator
if sys.argv[1] == "default-malloc":
    metabench.allocator.keep_freed_memory = lambda: False
from metabench.cli import main
sys.exit(main(sys.argv[2:]))
"""


def timed(mode: str, command: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", RUN, mode, *command], check=True, env=env, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "malloc": mode,
        "wall_seconds": round(time.perf_counter() - start, 2),
        "user_seconds": round(after.ru_utime - before.ru_utime, 2),
        "system_seconds": round(after.ru_stime - before.ru_stime, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--agent", required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows, records = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for mode in ("default-malloc", "keep-freed-memory"):
            out = Path(scratch, mode)
            command = ["evaluate", "--agent", args.agent, "--checkpoint", args.checkpoint, "--env", args.env]
            rows.append(timed(mode, [*command, "--out", str(out)], args.threads))
            records.append((out / "episodes.jsonl").read_text())
            print(rows[-1])
    if records[0] != records[1]:
        raise SystemExit("the two runs wrote different episode records")
    result = {"command": " ".join(sys.argv), "machine": machine("cpu"), "threads": args.threads, "runs": rows}
    result["machine"]["torch_threads"] = args.threads
    path = Path(__file__).parent / "results" / f"evaluate_speed-{args.env}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
