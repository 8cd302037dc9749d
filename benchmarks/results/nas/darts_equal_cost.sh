#!/usr/bin/env bash
# Random search at DARTS's cost on MetaNAS-Omniglot-5w1s-v1: DARTS spent 161-177 CPU seconds on its supernet plus one
# candidate evaluation (darts.sh), about what 8 evaluations of random architectures cost at the registered fidelity
# (a random architecture has 0.38x Conv-4's FLOPs on average); seeds 0-2, each best design scored by the test protocol.
# Usage: OMP_NUM_THREADS=1 nice -n 19 benchmarks/results/nas/darts_equal_cost.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
E=MetaNAS-Omniglot-5w1s-v1
R=benchmarks/results/nas/random-equal-cost
for seed in 0 1 2; do
    if [ ! -f $R/seed-$seed/checkpoint.pt ]; then
        metabench search random --env $E --evaluations 8 --seeds $seed --out $R
    fi
    if [ ! -f $R/seed-$seed/evaluation/summary.json ]; then
        metabench evaluate --agent open-loop --checkpoint $R/seed-$seed/checkpoint.pt --env $E --out $R/seed-$seed/evaluation
    fi
done
