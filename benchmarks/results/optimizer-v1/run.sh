#!/usr/bin/env bash
# The MetaOptimizer-Omniglot-5w1s-v1 board: tuned SGD (and the tuned-Adam reference), the LSTM optimizer, Meta-SGD
# and CMA-ES, every choice made on val (grid, early stopping, search), then one test evaluation per checkpoint and
# a leaderboard submission. Each stage is skipped once its output exists, so re-running the script resumes it.
# Usage: OMP_NUM_THREADS=1 nice -n 19 benchmarks/results/optimizer-v1/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
E=MetaOptimizer-Omniglot-5w1s-v1
R=benchmarks/results/optimizer-v1
source benchmarks/results/stages.sh

# tuned SGD and Adam: one log10 lr for every layer and step, grid over [-3.5, 0.5] on 20 val tasks per point
if [ ! -f $R/hand-designed/grid.csv ]; then
    log "grid search SGD + Adam"
    python -m metabench_baselines.hand_designed --env $E --val-episodes 20 --grid -3.5 0.5 --out $R/hand-designed
fi
# the learned optimizers: at most 100 meta-iterations of 4 train tasks, validated every 5 on 40 val tasks, early
# stopping after 6 validations without a lower val loss (the v0 runs were best at 25-40 iterations, then drifted)
for method in lstm-optimizer meta-sgd; do  # a finished run (stopped, or at 100) resumes to nothing
    log "train $method"
    metabench train $method --env $E --iterations 100 --config meta_batch=4 --val-interval 5 --val-episodes 40 \
        --patience 6 --seed 0 --out $R/$method
done
# CMA-ES over the per-step per-layer schedule: 64 evaluations of 4 val tasks, popsize 8; it answers its mean
if [ ! -f $R/cmaes/seed-0/checkpoint.pt ]; then
    log "search cmaes"
    metabench search cmaes --env $E --evaluations 64 --episodes 4 --seeds 0 --config popsize=8 --out $R/cmaes
fi

# the test protocol, once per checkpoint (1,000 episodes)
evaluate open-loop $R/hand-designed/sgd/checkpoint.pt
evaluate lstm-optimizer $R/lstm-optimizer/best.pt
evaluate meta-sgd $R/meta-sgd/best.pt
evaluate open-loop $R/cmaes/seed-0/checkpoint.pt
log "done"
