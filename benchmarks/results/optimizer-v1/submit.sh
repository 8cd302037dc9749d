#!/usr/bin/env bash
# Submit and verify the MetaOptimizer-Omniglot-5w1s-v1 entries that run.sh evaluated (each checkpoint's test protocol
# ran once); an entry already on the board is skipped, so re-running the script resumes.
# Usage: OMP_NUM_THREADS=1 nice -n 19 benchmarks/results/optimizer-v1/submit.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
E=MetaOptimizer-Omniglot-5w1s-v1
R=benchmarks/results/optimizer-v1
source benchmarks/results/stages.sh
T="metabench train {agent} --env $E --iterations 100 --config meta_batch=4 --val-interval 5 --val-episodes 40 --patience 6 --seed 0"
V="best of the validations (40 val tasks every 5 meta-iterations of 4 train tasks), early stopping with patience 6"

submit_verified sgd-tuned $R/hand-designed/sgd/evaluation $R/hand-designed/sgd/checkpoint.pt \
    --method "SGD, one log10 lr tuned on val by grid search" --code baselines/hand_designed.py \
    --test-data-for-model-selection no \
    --train-command "python -m metabench_baselines.hand_designed --env $E --val-episodes 20 --grid -3.5 0.5"
submit_verified lstm-optimizer-seed0 $R/lstm-optimizer/evaluation $R/lstm-optimizer/best.pt \
    --method "LSTM optimizer, per-layer log lr (Andrychowicz et al. 2016)" --paper https://arxiv.org/abs/1606.04474 \
    --code baselines/learned_optimizer.py --test-data-for-model-selection no --train-command "${T/"{agent}"/lstm-optimizer}" \
    --notes "$V"
submit_verified meta-sgd-seed0 $R/meta-sgd/evaluation $R/meta-sgd/best.pt \
    --method "Meta-SGD, per-step per-layer log lr table (Li et al. 2017)" --paper https://arxiv.org/abs/1707.09835 \
    --code baselines/meta_sgd.py --test-data-for-model-selection no --train-command "${T/"{agent}"/meta-sgd}" --notes "$V"
submit_verified cmaes-seed0 $R/cmaes/seed-0/evaluation $R/cmaes/seed-0/checkpoint.pt \
    --method "CMA-ES per-step per-layer log lr schedule, distribution mean" \
    --paper https://doi.org/10.1162/106365601750190398 --code baselines/search.py --test-data-for-model-selection no \
    --train-command "metabench search cmaes --env $E --evaluations 64 --episodes 4 --seeds 0 --config popsize=8"
log "done"
