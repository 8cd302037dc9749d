#!/usr/bin/env bash
# Submit the MetaOptimizer-Omniglot-5w1s-v1 entries that run.sh evaluated (each checkpoint's test protocol ran once).
set -euo pipefail
cd "$(dirname "$0")/../../.."
R=benchmarks/results/optimizer-v1
T="metabench train {agent} --env MetaOptimizer-Omniglot-5w1s-v1 --iterations 100 --config meta_batch=4 --val-interval 5 --val-episodes 40 --patience 6 --seed 0"
metabench submit $R/hand-designed/sgd/evaluation --name sgd-tuned --checkpoint $R/hand-designed/sgd/checkpoint.pt \
    --method "SGD, one log10 lr tuned on val by grid search" --code baselines/hand_designed.py \
    --test-data-for-model-selection no \
    --train-command "python -m metabench_baselines.hand_designed --env MetaOptimizer-Omniglot-5w1s-v1 --val-episodes 20 --grid -3.5 0.5"
metabench submit $R/lstm-optimizer/evaluation --name lstm-optimizer-seed0 --checkpoint $R/lstm-optimizer/best.pt \
    --method "LSTM optimizer, per-layer log lr (Andrychowicz et al. 2016)" --paper https://arxiv.org/abs/1606.04474 \
    --code baselines/learned_optimizer.py --test-data-for-model-selection no --train-command "${T/"{agent}"/lstm-optimizer}" \
    --notes "best of the validations (40 val tasks every 5 meta-iterations of 4 train tasks), early stopping with patience 6"
metabench submit $R/meta-sgd/evaluation --name meta-sgd-seed0 --checkpoint $R/meta-sgd/best.pt \
    --method "Meta-SGD, per-step per-layer log lr table (Li et al. 2017)" --paper https://arxiv.org/abs/1707.09835 \
    --code baselines/meta_sgd.py --test-data-for-model-selection no --train-command "${T/"{agent}"/meta-sgd}" \
    --notes "best of the validations (40 val tasks every 5 meta-iterations of 4 train tasks), early stopping with patience 6"
metabench submit $R/cmaes/seed-0/evaluation --name cmaes-seed0 --checkpoint $R/cmaes/seed-0/checkpoint.pt \
    --method "CMA-ES per-step per-layer log lr schedule, distribution mean" \
    --paper https://doi.org/10.1162/106365601750190398 --code baselines/search.py --test-data-for-model-selection no \
    --train-command "metabench search cmaes --env MetaOptimizer-Omniglot-5w1s-v1 --evaluations 64 --episodes 4 --seeds 0 --config popsize=8"
