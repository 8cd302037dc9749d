#!/usr/bin/env bash
# DARTS on MetaNAS-Omniglot-5w1s-v1 (first order, the width-16 proxy, 120 supernet steps), seeds 0-2: each answers its
# argmax design (one candidate evaluation at the registered fidelity), which the env's test protocol trains (500
# episodes of 60-way ProtoNets) and scores on 1,000 test tasks, as every MetaNAS entry. Re-running resumes.
# Usage: OMP_NUM_THREADS=1 nice -n 19 benchmarks/results/nas/darts.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
E=MetaNAS-Omniglot-5w1s-v1
R=benchmarks/results/nas/darts
for seed in 0 1 2; do
    if [ ! -f $R/seed-$seed/checkpoint.pt ]; then
        metabench search darts --env $E --evaluations 1 --seeds $seed --config steps=120 --out $R
    fi
done
for seed in 0 1 2; do
    if [ ! -f $R/seed-$seed/evaluation/summary.json ]; then
        metabench evaluate --agent open-loop --checkpoint $R/seed-$seed/checkpoint.pt --env $E --out $R/seed-$seed/evaluation
    fi
done
