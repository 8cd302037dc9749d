#!/usr/bin/env bash
# Submit and verify the MetaReweight-Omniglot-5w10s-v1 entries that run.sh evaluated (each checkpoint's test protocol
# ran once); an agent not evaluated yet, or already on the board, is skipped, so re-running the script resumes.
# Usage: OMP_NUM_THREADS=1 nice -n 19 benchmarks/results/reweight-board/submit.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
E=MetaReweight-Omniglot-5w10s-v1
R=benchmarks/results/reweight-board
source benchmarks/results/stages.sh
tune() { echo "python -m metabench_baselines.reweight --env $E --methods $* --val-episodes 6 --cmaes-evaluations 14 --cmaes-episodes 2 --checkpoints --test-episodes 0"; }
S=(--code baselines/reweight.py --test-data-for-model-selection no)

submit_verified uniform-weights $R/uniform/evaluation $R/uniform/checkpoint.pt "${S[@]}" \
    --method "Uniform weights (every training example weighs 1)" --train-command "$(tune uniform small-loss weighting-function)"
for seed in 0 1 2; do
    submit_verified meta-weight-net-seed$seed $R/meta-weight-net-seed$seed/evaluation \
        $R/meta-weight-net-seed$seed/checkpoint.pt "${S[@]}" \
        --method "Meta-Weight-Net, 25 meta-iterations x 4 tasks (Shu et al. 2019)" --paper https://arxiv.org/abs/1902.07379 \
        --train-command "metabench train meta-weight-net --env $E --iterations 25 --val-interval 5 --val-episodes 20 --seed $seed"
done
submit_verified small-loss $R/small-loss/evaluation $R/small-loss/checkpoint.pt "${S[@]}" \
    --method "Small-loss trick (drop rate and ramp tuned on val)" --paper https://arxiv.org/abs/1804.06872 \
    --notes "Weight 0 on the drop * min(1, (t/T) / ramp) largest losses of the batch, 1 on the rest (Co-teaching's rising drop rate); (drop, ramp) = (0.2, 1.0), the best of a 19-point grid on 6 val tasks each." \
    --train-command "$(tune small-loss)"
submit_verified weighting-function $R/weighting-function/evaluation $R/weighting-function/checkpoint.pt "${S[@]}" \
    --method "CMA-ES over a weighting function of the loss (val tasks)" \
    --notes "w = sigmoid(a + (b + c t/T) z), z the example's loss standardised over the batch; (a, b, c) = (3.19, -2.61, -2.94), CMA-ES's mean after 14 candidates of 2 val tasks each." \
    --train-command "$(tune weighting-function)"
submit_verified ppo-seed0 $R/ppo/evaluation $R/ppo/checkpoint.pt --code baselines/ppo.py --test-data-for-model-selection no \
    --method "SB3 PPO (MlpPolicy), 5,000 env steps on train tasks" --paper https://arxiv.org/abs/1707.06347 \
    --train-command "python -m metabench_baselines.ppo --env $E --timesteps 5000 --seed 0 --out $R/ppo --config n_steps=500 batch_size=50"
log "done"
