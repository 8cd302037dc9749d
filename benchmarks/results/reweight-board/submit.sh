#!/usr/bin/env bash
# Submit and verify the MetaReweight-Omniglot-5w10s-v1 entries that run.sh evaluated (each checkpoint's test protocol
# ran once); an agent not evaluated yet, or already on the board, is skipped, so re-running the script resumes.
# Usage: OMP_NUM_THREADS=1 nice -n 19 benchmarks/results/reweight-board/submit.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
E=MetaReweight-Omniglot-5w10s-v1
R=benchmarks/results/reweight-board
source benchmarks/results/stages.sh
TUNE="python -m metabench_baselines.reweight --env $E --methods uniform small-loss weighting-function --val-episodes 6 --cmaes-evaluations 14 --cmaes-episodes 2 --checkpoints --test-episodes 0"
S=(--code baselines/reweight.py --test-data-for-model-selection no)

submit_verified uniform-weights $R/uniform/evaluation $R/uniform/checkpoint.pt "${S[@]}" \
    --method "Uniform weights (every training example weighs 1)" --train-command "$TUNE"
for seed in 0 1 2; do
    submit_verified meta-weight-net-seed$seed $R/meta-weight-net-seed$seed/evaluation \
        $R/meta-weight-net-seed$seed/checkpoint.pt "${S[@]}" \
        --method "Meta-Weight-Net, 25 meta-iterations x 4 tasks (Shu et al. 2019)" --paper https://arxiv.org/abs/1902.07379 \
        --train-command "metabench train meta-weight-net --env $E --iterations 25 --val-interval 5 --val-episodes 20 --seed $seed"
done
submit_verified small-loss $R/small-loss/evaluation $R/small-loss/checkpoint.pt "${S[@]}" \
    --method "Small-loss trick: weight 0 on the largest losses, drop rate and ramp tuned on val" --train-command "$TUNE"
submit_verified weighting-function $R/weighting-function/evaluation $R/weighting-function/checkpoint.pt "${S[@]}" \
    --method "CMA-ES over w = sigmoid(a + (b + c t/T) z) of the standardised loss z, on val tasks" --train-command "$TUNE"
log "done"
