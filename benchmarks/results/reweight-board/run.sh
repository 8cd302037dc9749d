#!/usr/bin/env bash
# The MetaReweight-Omniglot-5w10s-v1 board: uniform weights, Meta-Weight-Net (3 seeds), the small-loss trick, a
# CMA-ES weighting function and SB3 PPO, every choice made on val or train tasks, then one test evaluation (the
# protocol's 1,000 episodes) per checkpoint. Each stage is skipped once its output exists, so re-running resumes.
# Usage: OMP_NUM_THREADS=1 nice -n 19 benchmarks/results/reweight-board/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
E=MetaReweight-Omniglot-5w10s-v1
R=benchmarks/results/reweight-board
source benchmarks/results/stages.sh

# the tuned agents, each unless its checkpoint or its evaluation is there: small-loss (drop, ramp) by grid on 6 val
# tasks per point; the weighting function by CMA-ES, 14 candidates of 2 val tasks (the settings of
# benchmarks/README.md's reference comparison). Each method's tuning is independent of the others'.
for method in uniform small-loss weighting-function; do
    if [ ! -f $R/$method/checkpoint.pt ] && [ ! -f $R/$method/evaluation/summary.json ]; then
        log "tune $method"
        python -m metabench_baselines.reweight --env $E --methods $method --val-episodes 6 --cmaes-evaluations 14 \
            --cmaes-episodes 2 --checkpoints --test-episodes 0 --out $R
    fi
done
# Meta-Weight-Net: 25 meta-iterations of 4 train tasks (the recipe that beat uniform weights with both seeds tried
# in the reference comparison), validated every 5 on 20 val tasks
for seed in 0 1 2; do  # a finished run resumes to nothing; an evaluated one is not trained again
    if [ ! -f $R/meta-weight-net-seed$seed/evaluation/summary.json ]; then
        log "train meta-weight-net seed $seed"
        metabench train meta-weight-net --env $E --iterations 25 --val-interval 5 --val-episodes 20 --seed $seed \
            --out $R/meta-weight-net-seed$seed
    fi
done
# the RL agent: SB3 PPO (MlpPolicy on the flattened per-example statistics), 5,000 env steps = 500 train tasks of 10
# steps, an update every 500 steps; the last policy is the agent (no selection)
if [ ! -f $R/ppo/checkpoint.pt ] && [ ! -f $R/ppo/evaluation/summary.json ]; then
    log "train ppo"
    python -m metabench_baselines.ppo --env $E --timesteps 5000 --seed 0 --out $R/ppo --config n_steps=500 batch_size=50
fi

evaluate uniform-weights $R/uniform/checkpoint.pt
for seed in 0 1 2; do evaluate meta-weight-net $R/meta-weight-net-seed$seed/checkpoint.pt; done
evaluate small-loss $R/small-loss/checkpoint.pt
evaluate weighting-function $R/weighting-function/checkpoint.pt
evaluate ppo $R/ppo/checkpoint.pt
log "done"
